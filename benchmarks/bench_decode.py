"""Single-stream decode speed: tokens/s after the first token, greedy, batch of 1.

Every contender continues the same plain-text prompt (no chat template) for
256 new tokens on the same model file and threads. Decode speed counts the
tokens each contender actually produced, minus the first (which carries the
prompt), over the time from the first to the last token. It is given as a
ratio to raw llama.cpp and to gpt4all 2.8.2 measured in the same run, and as a
share of the memory-bandwidth ceiling (read bandwidth / model bytes).

Example: ``python benchmarks/bench_decode.py --quick``
"""

from __future__ import annotations

from typing import Any

import _harness as h

NAME = "decode"
CONTENDERS = ("raw", "hl", "gpt4all", "llm4all")
# A code model keeps writing code: this runs past 256 tokens on Qwen2.5-Coder and SmolLM2.
PROMPT = (
    "# library.py: a complete library management system with many classes and functions\n\nimport"
)
TARGET_RAW, TARGET_GPT4ALL = 0.95, 1.3


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=5)
    p.add_argument("--tokens", type=int, default=256, help="new tokens per run")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.tokens = 1, 32
    bench = h.Bench.start(NAME, args, CONTENDERS)
    bw = h.bandwidth(args.threads, args.quick)
    runs = bench.run("decode", prompt=PROMPT, max_tokens=args.tokens)
    results = report(runs, bw, bench.model.stat().st_size, args.tokens)
    bench.save({"new_tokens": args.tokens, "prompt": PROMPT}, {**results, "runs": runs})


def report(
    runs: dict[str, list[dict[str, Any]]], bw: dict[str, float], model_bytes: int, tokens: int
) -> dict[str, Any]:
    """Print the tables; the summaries, ratios and verdicts for the JSON."""
    ceiling = max(bw.values()) * 1e9 / model_bytes
    rows, summaries = [], {}
    for name, rs in runs.items():
        s = summaries[name] = {
            "decode_tps": h.figure(rs, "decode_tps"),
            "vs_raw": h.paired(runs, "decode_tps", name, "raw"),
            "vs_gpt4all": h.paired(runs, "decode_tps", name, "gpt4all"),
            "tokens": h.figure(rs, "tokens"),
            "ttft_s": h.figure(rs, "ttft_s"),
            "peak_rss_mb": h.figure(rs, "peak_rss_mb"),
        }
        s["of_ceiling"] = s["decode_tps"]["median"] / ceiling
        rows.append(
            [
                h.LABELS[name],
                h.fmt(s["decode_tps"]),
                h.fmt(s["vs_raw"], 2),
                h.fmt(s["vs_gpt4all"], 2),
                f"{s['of_ceiling']:.0%}",
                h.fmt(s["tokens"], 0),
                h.fmt(s["ttft_s"], 0, 1000),
                h.fmt(s["peak_rss_mb"], 0),
            ]
        )
        if s["tokens"].get("n") and s["tokens"]["min"] < tokens:
            h.note(f"{h.LABELS[name]} stopped early: {s['tokens']['min']:.0f} of {tokens} tokens")
    h.note(f"read bandwidth {bw} GB/s; ceiling {ceiling:.1f} tok/s (bandwidth / model bytes)")
    headers = [
        "contender",
        "tok/s",
        "x raw",
        "x gpt4all",
        "of ceiling",
        "tokens",
        "TTFT ms",
        "peak RSS MB",
    ]
    h.print_table(f"Decode, {tokens} new tokens - median (min-max)", headers, rows)
    mine = summaries.get("llm4all", {})
    targets = {
        f"llm4all >= {TARGET_RAW} x raw": h.at_least(mine.get("vs_raw"), TARGET_RAW),
        f"llm4all >= {TARGET_GPT4ALL} x gpt4all": h.at_least(
            mine.get("vs_gpt4all"), TARGET_GPT4ALL
        ),
    }
    return {
        "bandwidth_gbs": bw,
        "ceiling_tps": ceiling,
        "summary": summaries,
        "targets": h.print_targets(targets),
    }


if __name__ == "__main__":
    main()
