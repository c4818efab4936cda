"""Fuzz ``llm4all serve``: thousands of schema-valid requests, every 5xx and memory jump kept.

The test suite's schemathesis test sends 40 requests per operation and stops
at the first 5xx. This runs far more (``--examples`` per operation) against a
real server process (SmolLM2, answers of at most 4 tokens, 8 slots), and goes
on after a finding, so that one run surveys everything. Kept, with the request that caused it:

- every 5xx answer and every transport error (a dropped connection);
- every request after which the server's RSS grew by more than ``--grow-mb``;
- the server dying (a crash or the OOM killer), with the last request sent.

Random sampling (no seed in most requests) makes findings that depend on
the answer show up too. It found a request that made the server allocate
gigabytes (``repeat_last_n``) and an answer that was a 500 (a tool-call name
written as a list).

Example: ``python benchmarks/fuzz_server.py --examples 2000 --only /v1/chat``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

import _harness as h
from bench_concurrency import running_server
from llm4all.server import ServerSettings, create_app
from load_test import server_process

CAPS = ("--max-tokens-cap", "4")  # answers of at most 4 tokens keep every request quick


def spec() -> dict[str, Any]:
    """The app's own OpenAPI document (built without loading a model)."""
    with tempfile.TemporaryDirectory() as empty:
        app = create_app(ServerSettings(preload=False, models_dir=Path(empty)))
        return app.openapi()


def fuzz_operation(
    operation: Any,
    url: str,
    proc: psutil.Process,
    args: argparse.Namespace,
    found: list[dict[str, Any]],
) -> Counter[str]:
    """Send ``args.examples`` generated requests to one operation; what came back, by class."""
    key = f"{operation.method.upper()} {operation.path}"
    seen: Counter[str] = Counter()

    def keep(kind: str, case: Any, **detail: Any) -> None:
        found.append(
            {"kind": kind, "operation": key, "body": case.body, "query": case.query, **detail}
        )
        print(f"  {kind}: {json.dumps(detail, default=str)[:300]}", flush=True)

    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: every finding is kept as it was sent
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def send(case: Any) -> None:
        if not proc.is_running():
            return
        before = proc.memory_info().rss
        try:
            response = case.call(base_url=url, timeout=120)
        except Exception as exc:  # a dropped connection, or the server gone
            seen["error"] += 1
            keep("transport error", case, error=f"{type(exc).__name__}: {exc}")
            return
        seen[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            keep("5xx", case, status=response.status_code, answer=response.text[:500])
        if proc.is_running():
            grown = (proc.memory_info().rss - before) / 2**20
            if grown > args.grow_mb:
                keep("memory", case, grown_mb=round(grown))

    send()
    return seen


def warm_up(url: str) -> None:
    """Load the chat and the embedding model, so that loading them is not a memory finding."""
    hello = {"max_tokens": 1}
    httpx.post(
        url + "/v1/chat/completions",
        json={**hello, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )
    httpx.post(url + "/v1/completions", json={**hello, "prompt": "Hi"}, timeout=120)
    httpx.post(url + "/v1/embeddings", json={"input": "Hi"}, timeout=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=1000, help="requests per operation")
    p.add_argument("--only", default="/", help="operations whose path contains this")
    p.add_argument("--model", help=f"model (default: {h.FAST_MODEL})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=512, help="context per request")
    p.add_argument("--grow-mb", type=float, default=100, help="RSS growth worth a report")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fuzz_server.json"))
    args = p.parse_args()
    model = h.resolve_model(args.model or h.FAST_MODEL, True)
    schema = schemathesis.openapi.from_dict(spec()).include(path_regex=r"^/(v1/|health)")
    found: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    with running_server("llm4all", model, args, CAPS) as url:
        proc = server_process(url)
        warm_up(url)
        baseline = proc.memory_info().rss / 2**20
        for result in schema.get_all_operations():
            operation = result.ok()
            if args.only not in operation.path:
                continue
            key = f"{operation.method.upper()} {operation.path}"
            print(key, flush=True)
            counts[key] = dict(fuzz_operation(operation, url, proc, args, found))
            print(f"  {counts[key]}", flush=True)
            if not proc.is_running():
                found.append({"kind": "server died", "operation": key})
                break
        rss = proc.memory_info().rss / 2**20 if proc.is_running() else None
    payload = {
        "machine": h.machine_info(),
        "model": model.name,
        "examples_per_operation": args.examples,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "answers": counts,
        "server_rss_mb_after_warm_up": round(baseline),
        "server_rss_mb_at_end": None if rss is None else round(rss),
        "findings": found,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")
    print(f"{len(found)} findings; written to {args.out}")


if __name__ == "__main__":
    main()
