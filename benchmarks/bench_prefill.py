"""Prompt processing speed: tokens/s to evaluate a ~1,000-token prompt.

Every contender gets the same plain-text prompt (no chat template) and is
timed from the call to its first generated token, which is when the whole
prompt has been evaluated. Each process first runs a short, unrelated prompt
so that thread start-up and page faults are not counted, and the measured
prompt shares no prefix with it (no contender can reuse a cached prefix).
gpt4all 2.8.2 evaluates at most 128 prompt tokens per batch; the others 512.

Example: ``python benchmarks/bench_prefill.py --quick``
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import _harness as h

NAME = "prefill"
CONTENDERS = ("raw", "hl", "gpt4all", "llm4all")
TARGET = 0.95
_PARTS = [
    "The engineer|A small robot|The old librarian|Our neighbour|The captain|A tired student"
    "|The committee|My grandmother|The night train|A stray cat",
    "carefully repaired|quietly described|never understood|painted|measured|argued about"
    "|wrote a letter about|forgot|celebrated|studied",
    "the broken clock in the tower|a map of the northern islands|the price of bread"
    "|the rules of an ancient game|seventeen kinds of apples|the silence after the storm"
    "|a recipe for lemon cake|the history of the harbour|the colour of the sea in winter",
    "before sunrise|during the long summer|after the meeting|every second Tuesday"
    "|while the kettle boiled|in the spring of 1987|without telling anyone|at last",
]


def make_prompt(tokenize: Callable[[str], list[int]], n_tokens: int) -> tuple[str, int]:
    """Deterministic prose of at most ``n_tokens`` tokens, and its exact length."""
    rng = random.Random(1000)
    words = [part.split("|") for part in _PARTS]
    text, n = "", 0
    while True:
        longer = text + " ".join(rng.choice(w) for w in words) + ". "
        m = len(tokenize(longer))
        if m > n_tokens:
            return text, n
        text, n = longer, m


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=5)
    p.add_argument("--prompt-tokens", type=int, default=1000, help="prompt length in tokens")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.prompt_tokens = 1, 300
    bench = h.Bench.start(NAME, args, CONTENDERS)
    prompt, n_prompt = make_prompt(h.tokenizer(bench.model), args.prompt_tokens)
    runs = bench.run("prefill", prompt=prompt, prompt_tokens=n_prompt)
    settings = {"prompt_tokens": n_prompt, "prompt_head": prompt[:120]}
    bench.save(settings, {**report(runs, n_prompt), "runs": runs})


def report(runs: dict[str, list[dict[str, Any]]], n_prompt: int) -> dict[str, Any]:
    rows, summaries = [], {}
    for name, rs in runs.items():
        s = summaries[name] = {
            "prefill_tps": h.figure(rs, "prefill_tps"),
            "vs_raw": h.paired(runs, "prefill_tps", name, "raw"),
            "ttft_s": h.figure(rs, "ttft_s"),
            "prompt_tokens": h.figure(rs, "prompt_tokens"),
        }
        rows.append(
            [
                h.LABELS[name],
                h.fmt(s["prefill_tps"]),
                h.fmt(s["vs_raw"], 2),
                h.fmt(s["ttft_s"], 0, 1000),
                h.fmt(s["prompt_tokens"], 0),
            ]
        )
    headers = ["contender", "prompt tok/s", "x raw", "time to first token ms", "prompt tokens"]
    h.print_table(f"Prefill, {n_prompt}-token prompt - median (min-max)", headers, rows)
    mine = summaries.get("llm4all", {})
    targets = {f"llm4all >= {TARGET} x raw": h.at_least(mine.get("vs_raw"), TARGET)}
    return {"summary": summaries, "targets": h.print_targets(targets)}


if __name__ == "__main__":
    main()
