"""OpenMP waiting and thread counts: decode speed on a quiet and on a loaded machine.

llama-cpp-python is built with OpenMP (GNU libgomp); llama.cpp's threads meet
at an OpenMP barrier after every operation of the graph, hundreds of times per
token. How a waiting thread waits is ``OMP_WAIT_POLICY``: ``PASSIVE`` sleeps at
once, ``ACTIVE`` spins, and unset (libgomp's default) spins for about 300,000
iterations before it sleeps; ``--spin N`` adds cells with ``GOMP_SPINCOUNT=N``.
Each cell (a policy and a thread count) runs in a fresh process with that
environment: the worker imports ``llama_cpp`` before llm4all, so libgomp reads
exactly what the cell set, not llm4all's default. libgomp's own report of the
spin count it took (``OMP_DISPLAY_ENV=VERBOSE``) is kept with every run.

Two phases: ``quiet`` (whatever else runs on the machine) and ``loaded``
(one busy-loop process per other core, started here). Within a phase the
cells take turns (A B C … A B C …, the first rotating each round); figures are
medians with min–max, and each cell's speed is also a ratio to libgomp's
default at the same thread count, taken round by round. The load average is
recorded before and after every run.

Example: ``python benchmarks/bench_omp.py --quick``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _harness as h

NAME = "omp"
#: cell policy -> OMP_WAIT_POLICY (None: unset, libgomp's default); ``spinN`` cells
#: (``--spin N``) leave it unset and set GOMP_SPINCOUNT=N: spin briefly, then sleep.
POLICIES: dict[str, str | None] = {"passive": "PASSIVE", "default": None, "active": "ACTIVE"}
REFERENCE = "default"
PROMPT = (
    "# library.py: a complete library management system with many classes and functions.\n"
    "# Books, members, loans, fines, reservations and reports; every class has docstrings,\n"
    "# type hints and a __repr__; the database layer uses sqlite3 with migrations.\n\nimport"
)


# -- the worker: one cell, one fresh process ---------------------------------------------------
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model with ``spec["threads"]`` threads; prompt and decode speed of one answer."""
    import llama_cpp  # noqa: F401  # libgomp loads now, with this process's environment

    from llm4all.engine import load_engine
    from llm4all.params import GenerationParams, LoadParams

    engine = load_engine(
        Path(spec["model"]),
        LoadParams(n_ctx=spec["n_ctx"], n_threads=spec["threads"], check_memory=False),
    )
    greedy = GenerationParams(temperature=0, repeat_penalty=1.0, max_tokens=4)
    for _ in engine.generate(engine.tokenize("Once upon a time"), greedy):  # threads up, pages in
        pass
    tokens = engine.tokenize(PROMPT)
    deadline = time.monotonic() + spec["max_seconds"]
    last = None
    for chunk in engine.generate(
        tokens,
        greedy.replace(max_tokens=spec["tokens"]),
        should_continue=lambda: time.monotonic() < deadline,
    ):
        last = chunk
    assert last is not None and last.timings is not None
    t = last.timings
    return {
        "prompt_tokens": len(tokens),
        "prefill_tps": len(tokens) / t.prompt_seconds if t.prompt_seconds > 0 else 0.0,
        "decode_tps": t.tokens_per_second,
        "tokens": t.completion_tokens,
        "capped": last.finish_reason == "cancelled",
    }


def run_cell(policy: str, threads: int, spec: dict[str, Any]) -> dict[str, Any]:
    env = h.child_env()
    env.pop("GOMP_SPINCOUNT", None)
    env.pop("OMP_WAIT_POLICY", None)
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin")
    elif POLICIES[policy]:
        env["OMP_WAIT_POLICY"] = POLICIES[policy]
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    cmd = [sys.executable, __file__, "--worker", json.dumps({**spec, "threads": threads})]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    result: dict[str, Any] = {"load_before": load_before, "load_after": os.getloadavg()[0]}
    if proc.returncode != 0:
        return {**result, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", proc.stderr)
    result["spincount"] = int(spin[1]) if spin else None
    return result


# -- the load -------------------------------------------------------------------------------
def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_cores(n: int) -> Iterator[None]:
    """``n`` processes that each keep one core busy until the block ends."""
    procs = [mp.get_context("fork").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


# -- one phase, and the report -----------------------------------------------------------------
def run_phase(
    phase: str, cells: list[tuple[str, int]], rounds: int, spec: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {label(*c): [] for c in cells}
    for r in range(rounds):
        order = cells[r % len(cells) :] + cells[: r % len(cells)]
        for policy, threads in order:
            h.note(
                f"{phase} round {r + 1}/{rounds}: {label(policy, threads)} (load {h.load_average()})"
            )
            result = run_cell(policy, threads, spec)
            if "error" in result:
                h.note(f"  failed: {result['error']}")
            else:
                h.note(f"  {result['decode_tps']:.1f} tok/s, spin count {result['spincount']}")
            runs[label(policy, threads)].append(result)
    return runs


def label(policy: str, threads: int) -> str:
    return f"{policy}/{threads}"


def shown(policy: str) -> str:
    """How a cell's environment reads in the table."""
    if policy.startswith("spin"):
        return f"GOMP_SPINCOUNT={policy.removeprefix('spin')}"
    return POLICIES[policy] or "unset"


def report(
    phase: str, runs: dict[str, list[dict[str, Any]]], cells: list[tuple[str, int]], default: int
) -> dict[str, Any]:
    """Print one phase's table (Markdown, as it goes into docs/benchmarks.md); its summaries."""
    rows, summaries = [], {}
    for policy, threads in cells:
        key, ref = label(policy, threads), label(REFERENCE, threads)
        rs = runs[key]
        s = summaries[key] = {
            "decode_tps": h.figure(rs, "decode_tps"),
            "vs_default": h.paired(runs, "decode_tps", key, ref),
            "prefill_tps": h.figure(rs, "prefill_tps"),
            "load_before": h.figure(rs, "load_before"),
            "load_after": h.figure(rs, "load_after"),
            "capped": sum(bool(r.get("capped")) for r in rs),
        }
        name = f"`{shown(policy)}`"
        rows.append(
            [
                name,
                f"{threads}{' (default)' if threads == default else ''}",
                h.fmt(s["decode_tps"]),
                h.fmt(s["vs_default"], 2),
                h.fmt(s["prefill_tps"]),
                f"{s['load_before']['median']:.2f} → {s['load_after']['median']:.2f}",
            ]
        )
    headers = ["waiting", "threads", "decode tok/s", "× unset", "prompt tok/s", "load"]
    print(f"\n{phase}\n")
    print("| " + " | ".join(headers) + " |")
    print("| " + " | ".join("---" for _ in headers) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return summaries


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap on one run's decoding")
    p.add_argument("--phase", choices=["quiet", "loaded", "both"], default="both")
    p.add_argument(
        "--spin",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="also a cell with GOMP_SPINCOUNT=N (repeatable)",
    )
    p.add_argument(
        "--thread-counts",
        type=int,
        nargs="+",
        metavar="N",
        help="thread counts to measure (default: 1, 2 and the default)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one cell, in the process it runs in
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        os._exit(0)  # skip native destructors
    if args.quick:
        args.rounds, args.tokens = 1, 16
    from llm4all.engine.llamacpp import default_threads

    default = default_threads()
    thread_counts = args.thread_counts or sorted({1, 2, default})
    policies = [*POLICIES, *(f"spin{n}" for n in args.spin)]
    cells = [(policy, n) for n in thread_counts for policy in policies]
    name = (
        NAME + ("" if args.phase == "both" else f".{args.phase}") + (".spin" if args.spin else "")
    )
    bench = h.Bench.start(name, args, ())
    spec = {
        "model": str(bench.model),
        "n_ctx": args.ctx,
        "tokens": args.tokens,
        "max_seconds": args.max_seconds,
    }
    phases = ["quiet", "loaded"] if args.phase == "both" else [args.phase]
    results: dict[str, Any] = {}
    busy = max(1, (os.cpu_count() or 2) - 1)
    for phase in phases:
        load = {"before": h.load_average()}
        if phase == "loaded":
            with busy_cores(busy):
                runs = run_phase(phase, cells, args.rounds, spec)
        else:
            runs = run_phase(phase, cells, args.rounds, spec)
        load["after"] = h.load_average()
        results[phase] = {
            "load": load,
            "summary": report(phase, runs, cells, default),
            "runs": runs,
        }
    settings = {
        "new_tokens": args.tokens,
        "max_seconds": args.max_seconds,
        "default_threads": default,
        "busy_processes": busy,
        "prompt": PROMPT,
    }
    bench.save(settings, results)


if __name__ == "__main__":
    main()
