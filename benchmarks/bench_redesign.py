"""Before and after the engine redesign (issue 10), in one interleaved run.

Two figures must not get worse: single-stream decode speed (``Model.stream``,
the ``decode`` task of ``_workers.py``) and the throughput of four concurrent
streams through ``llm4all serve`` (``bench_concurrency``'s clients). The same
benchmark code runs against two source trees: the checkout before the
redesign (``--before``, e.g. ``git worktree add /tmp/before 3c7935e``, its
``src``) and this one. Every measurement is a fresh process whose
``PYTHONPATH`` is one tree's ``src``; the two take turns (A B, B A, ...), and
each round's after/before ratio is taken from measurements made back to back.

Example: ``python benchmarks/bench_redesign.py --before /tmp/before/src --rounds 5``
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import _harness as h
import bench_concurrency as bc

NAME = "redesign"
SIDES = ("before", "after")
PROMPT = (
    "# library.py: a complete library management system with many classes and functions\n\nimport"
)
_current: dict[str, str] = {}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _current["src"]
    return env


def decode(bench: h.Bench, tokens: int) -> dict[str, Any]:
    return h.run_worker(
        "decode", "llm4all", bench.spec("llm4all", prompt=PROMPT, max_tokens=tokens)
    )


def streams(bench: h.Bench, clients: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    count = bc.counter(bench.model)
    with bc.running_server("llm4all", bench.model, bench.args) as url:
        model = bc.served_name(url)
        asyncio.run(bc.level(url, model, 1, 0.1, 8))  # warm-up: page cache, first decode
        lv = asyncio.run(bc.level(url, model, clients, seconds, max_tokens))
    tokens = sum(count(t) for t in lv.pop("texts"))
    ttfts = sorted(t for t in lv["ttft_s"] if t is not None)
    return {
        "tokens_per_s": tokens / lv["seconds"],
        "requests": lv["requests"],
        "ttft_p50_s": ttfts[len(ttfts) // 2] if ttfts else None,
    }


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=5)
    p.add_argument("--before", required=True, type=Path, help="src folder of the older tree")
    p.add_argument("--tokens", type=int, default=256, help="new tokens per decode run")
    p.add_argument("--clients", type=int, default=4, help="concurrent streams")
    p.add_argument("--seconds", type=float, default=30, help="measuring window per server run")
    p.add_argument("--max-tokens", type=int, default=96, help="answer length cap (server)")
    p.add_argument("--rules", type=int, default=40, help=argparse_hidden())
    args = p.parse_args()
    if args.quick:
        args.rounds, args.tokens, args.seconds = 1, 32, 5
    srcs = {"before": str(args.before.resolve()), "after": str(h.SRC)}
    h.child_env = _env  # every process this benchmark starts runs one tree's source
    bench = h.Bench.start(NAME, args, ["llm4all"])
    bench.names = list(SIDES)
    h.LABELS.update({"before": "before the redesign", "after": "after the redesign"})

    def one(task: str) -> Any:
        def run(side: str) -> dict[str, Any]:
            _current["src"] = srcs[side]
            try:
                if task == "decode":
                    return decode(bench, args.tokens)
                return streams(bench, args.clients, args.seconds, args.max_tokens)
            except Exception as exc:  # a failed run is reported, not fatal
                return {"error": f"{type(exc).__name__}: {exc}"}

        return run

    dec = h.interleave(SIDES, args.rounds, one("decode"))
    srv = h.interleave(SIDES, max(1, args.rounds // 2 + 1), one("streams"))
    results = {
        "decode_tps": {s: h.figure(dec[s], "decode_tps") for s in SIDES},
        "decode_ratio": h.paired(dec, "decode_tps", "after", "before"),
        "streams_tps": {s: h.figure(srv[s], "tokens_per_s") for s in SIDES},
        "streams_ratio": h.paired(srv, "tokens_per_s", "after", "before"),
        "streams_ttft_p50_s": {s: h.figure(srv[s], "ttft_p50_s") for s in SIDES},
    }
    h.print_table(
        f"{bench.model.name}, {args.threads} threads",
        ["", "before", "after", "after / before (paired)"],
        [
            [
                "single-stream decode, tok/s",
                h.fmt(results["decode_tps"]["before"]),
                h.fmt(results["decode_tps"]["after"]),
                h.fmt(results["decode_ratio"], 3),
            ],
            [
                f"{args.clients} streams via llm4all serve, tok/s",
                h.fmt(results["streams_tps"]["before"]),
                h.fmt(results["streams_tps"]["after"]),
                h.fmt(results["streams_ratio"], 3),
            ],
            [
                f"{args.clients} streams, p50 time to first token, ms",
                h.fmt(results["streams_ttft_p50_s"]["before"], 0, 1000),
                h.fmt(results["streams_ttft_p50_s"]["after"], 0, 1000),
                "",
            ],
        ],
    )
    settings = {"before": srcs["before"], "tokens": args.tokens, "clients": args.clients}
    bench.save(settings | {"seconds": args.seconds}, {**results, "decode": dec, "streams": srv})


def argparse_hidden() -> str:
    return "system prompt length for bench_concurrency's helpers (unused here)"


if __name__ == "__main__":
    main()
