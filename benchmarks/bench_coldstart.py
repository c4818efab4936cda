"""Cold start and memory: process start to first token, and peak RSS while serving.

Cold start: ``python -m llm4all run "hi" --max-tokens 1`` is started as a
subprocess and timed from ``Popen`` to the first byte on its stdout. The
reference is raw llama.cpp in a fresh Python process doing the same work: load
the model, evaluate the same chat-formatted "hi" (rendered once here with the
model's template) and print the first token. llama-cpp-python's high-level API
and gpt4all 2.8.2 get the same text; gpt4all cannot parse special tokens in a
plain prompt, so it tokenizes the ChatML markers as text (a few more tokens).
The page cache is warm: this is the start-up cost, not the disk.

Memory: each contender serves one longer answer (256 tokens) with llm4all's
default context (4,096); its peak RSS (``wait4``) counts the mapped model
pages it touched. Target: at most the model file size + 400 MB.

Example: ``python benchmarks/bench_coldstart.py --quick``
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import _harness as h

NAME = "coldstart"
CONTENDERS = ("raw", "llm4all-cli", "hl", "gpt4all")
FIRST_PROMPT = "hi"
SERVE_PROMPT = "Write a long story about a lighthouse keeper and a storm."
SERVE_CTX = 4096
TARGET_RATIO = 1.5
TARGET_EXTRA_MB = 400


@functools.cache
def chat_text(model: Path, text: str) -> str:
    """``text`` as a user message in the model's chat format, as ``llm4all run`` sends it."""
    from llm4all import Message, Model

    with Model(model, n_ctx=256, n_threads=1) as m:
        return m.render([Message("user", text)])


def cli_cmd(model: Path, prompt: str, max_tokens: int, threads: int, n_ctx: int) -> list[str]:
    flags = {
        "--max-tokens": max_tokens,
        "-m": model,
        "--threads": threads,
        "--ctx": n_ctx,
        "--temp": 0,
    }
    return [
        sys.executable,
        "-m",
        "llm4all",
        "run",
        prompt,
        *(str(x) for kv in flags.items() for x in kv),
    ]


def run_first(
    bench: h.Bench, name: str, prompt: str, max_tokens: int, n_ctx: int
) -> dict[str, Any]:
    """One fresh process: time to its first byte on stdout, and its peak RSS.

    ``llm4all run`` gets ``prompt`` and renders it itself; the other contenders
    get the text it renders to (``chat_text``), so all evaluate the same tokens.
    """
    if name == "llm4all-cli":
        proc = h.spawn(cli_cmd(bench.model, prompt, max_tokens, bench.args.threads, n_ctx))
        if proc.rc != 0:
            return {"error": f"exit {proc.rc}: {proc.stderr.strip().splitlines()[-1:]}"}
        return {
            "first_byte_s": proc.first_byte_s,
            "wall_s": proc.wall_s,
            "peak_rss_mb": round(proc.peak_rss_mb, 1),
        }
    spec = bench.spec(
        name, prompt=chat_text(bench.model, prompt), max_tokens=max_tokens, n_ctx=n_ctx
    )
    return h.run_worker("first", name, spec)


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=5)
    p.add_argument("--serve-tokens", type=int, default=256, help="answer length of the memory run")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.serve_tokens = 1, 16
    bench = h.Bench.start(NAME, args, CONTENDERS)
    runs = h.interleave(
        bench.names, args.rounds, lambda c: run_first(bench, c, FIRST_PROMPT, 1, args.ctx)
    )
    h.note("memory: one serving run per contender")
    serving = h.interleave(
        bench.names, 1, lambda c: run_first(bench, c, SERVE_PROMPT, args.serve_tokens, SERVE_CTX)
    )
    settings = {
        "first_prompt": FIRST_PROMPT,
        "serve_prompt": SERVE_PROMPT,
        "serve_tokens": args.serve_tokens,
        "serve_ctx": SERVE_CTX,
    }
    results = report(runs, serving, bench.model.stat().st_size)
    bench.save(settings, {**results, "runs": runs, "serving_runs": serving})


def report(
    runs: dict[str, list[dict[str, Any]]],
    serving: dict[str, list[dict[str, Any]]],
    model_bytes: int,
) -> dict[str, Any]:
    limit_mb = model_bytes / 2**20 + TARGET_EXTRA_MB
    rows, summaries = [], {}
    for name, rs in runs.items():
        s = summaries[name] = {
            "first_byte_s": h.figure(rs, "first_byte_s"),
            "vs_raw": h.paired(runs, "first_byte_s", name, "raw"),
            "cold_peak_rss_mb": h.figure(rs, "peak_rss_mb"),
            "serve_peak_rss_mb": h.figure(serving.get(name, []), "peak_rss_mb"),
        }
        rows.append(
            [
                h.LABELS[name],
                h.fmt(s["first_byte_s"], 0, 1000),
                h.fmt(s["vs_raw"], 2),
                h.fmt(s["cold_peak_rss_mb"], 0),
                h.fmt(s["serve_peak_rss_mb"], 0),
            ]
        )
    headers = ["contender", "first token ms", "x raw", "peak RSS MB, cold", "peak RSS MB, serving"]
    h.print_table("Cold start to first token, and peak RSS - median (min-max)", headers, rows)
    mine = summaries.get("llm4all-cli", {})
    rss = mine.get("serve_peak_rss_mb", {})
    targets = {
        f"llm4all run: first token <= {TARGET_RATIO} x raw": h.at_most(
            mine.get("vs_raw"), TARGET_RATIO
        ),
        f"llm4all peak RSS <= model + {TARGET_EXTRA_MB} MB = {limit_mb:.0f} MB": (
            None if not rss.get("n") else rss["max"] <= limit_mb
        ),
    }
    return {"summary": summaries, "targets": h.print_targets(targets), "rss_limit_mb": limit_mb}


if __name__ == "__main__":
    main()
