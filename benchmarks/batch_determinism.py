"""Greedy output alone vs. beside seven others: does batching change what the model says?

llama.cpp's kernels for a batch of several sequences may round differently
from the single-sequence ones, so a greedy (temperature 0) answer could in
principle change when it is decoded next to other requests. This measures it
on the scheduler that serves HTTP requests: every prompt is answered once
alone, then in groups of eight submitted together, and once more in groups
whose members arrive at staggered moments (so each one meets different batch
compositions: prompt chunks of newcomers, sequences that finish early). For
each answer we report whether its tokens are identical to the lone run and,
if not, the index of the first differing token.

Example: ``python benchmarks/batch_determinism.py --quick``
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import _harness as h
from llm4all.api import Model
from llm4all.chat.template import Message
from llm4all.engine.base import collect
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.engine.scheduler import BatchScheduler
from llm4all.params import GenerationParams, LoadParams

NAME = "batch_determinism"
SUBJECTS = [
    "the ocean",
    "a lighthouse",
    "autumn leaves",
    "a robot",
    "the moon",
    "a city at night",
    "a mountain village",
    "a train journey",
    "a library",
    "a thunderstorm",
    "a garden",
    "an old clock",
    "a desert",
    "a market",
    "a river",
    "a winter morning",
]
KINDS = ["Write a short story about", "Explain to a child", "List facts about", "Describe"]


def prompts(engine: LlamaCppEngine, n: int) -> list[list[int]]:
    """``n`` different chat prompts in the model's own chat format."""
    model = Model.from_engine(engine, "bench")
    return [
        model.chat_tokens(
            [Message("user", f"{KINDS[i % len(KINDS)]} {SUBJECTS[i % len(SUBJECTS)]}.")]
        )
        for i in range(n)
    ]


def together(
    sched: BatchScheduler, group: list[list[int]], params: GenerationParams, stagger: float
) -> list[tuple[int, ...]]:
    results: list[tuple[int, ...]] = [()] * len(group)

    def run(i: int) -> None:
        time.sleep(i * stagger)
        results[i] = collect(sched.submit(group[i], params)).token_ids

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(group))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(alone: list[tuple[int, ...]], other: list[tuple[int, ...]]) -> dict[str, Any]:
    diffs = [first_difference(a, b) for a, b in zip(alone, other, strict=True)]
    diverged = [d for d in diffs if d is not None]
    return {
        "answers": len(diffs),
        "identical": len(diffs) - len(diverged),
        "diverged": len(diverged),
        "first_difference_at": diverged,
        "median_first_difference": statistics.median(diverged) if diverged else None,
        "tokens_compared": sum(len(a) for a in alone),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 prompts, 32 tokens")
    p.add_argument("--model", help=f"default: {h.DEFAULT_MODEL} ({h.FAST_MODEL} with --quick)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 8, 32
    model = h.resolve_model(args.model, args.quick)
    engine = LlamaCppEngine(model, LoadParams(n_seq_max=8, n_ctx=8 * 1024, n_threads=args.threads))
    sched = BatchScheduler(engine)
    params = GenerationParams(temperature=0, repeat_penalty=1.0, max_tokens=args.max_tokens)
    try:
        all_prompts = prompts(engine, args.prompts)
        alone = [collect(sched.submit(pr, params)).token_ids for pr in all_prompts]
        groups = [all_prompts[i : i + 8] for i in range(0, len(all_prompts), 8)]
        eight = [t for g in groups for t in together(sched, g, params, 0.0)]
        staggered = [t for g in groups for t in together(sched, g, params, 0.15)]
    finally:
        sched.close()
        engine.close()
    results = {"eight_at_once": compare(alone, eight), "staggered": compare(alone, staggered)}
    rows = [
        [
            name,
            str(r["answers"]),
            str(r["identical"]),
            str(r["diverged"]),
            str(r["first_difference_at"]),
        ]
        for name, r in results.items()
    ]
    h.print_table(
        f"Greedy answers vs the same prompt alone: {model.name}, {args.max_tokens} tokens",
        ["batching", "answers", "identical", "diverged", "first differing token"],
        rows,
    )
    h.write_json(
        NAME,
        args.quick,
        {
            "benchmark": NAME,
            "machine": h.machine_info(),
            "model": model.name,
            "settings": vars(args),
            **results,
        },
    )


if __name__ == "__main__":
    main()
