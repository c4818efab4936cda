"""The remote backend's overhead: a model on ``llm4all serve`` reached through llm4all vs directly.

One ``llm4all serve`` process on 127.0.0.1 holds the model. Two clients stream
the same greedy chat completion from it, taking turns (A B, B A, …):

- ``direct``: a minimal httpx client that posts the request and reads the
  server-sent events itself (what any OpenAI client does);
- ``remote``: llm4all's remote backend (``RemoteEngine`` over ``RemoteClient``)
  registered on that server, streaming through the :class:`Engine` contract;
- ``remote-api`` (when the Python API can load a remote): ``llm4all.Model(NAME)``
  and ``Model.stream``, the whole path a user takes.

Both send the very same JSON body (the remote backend's own
``request_params``), so the server does the same work; what differs is the
client side. For each request we take the time to first token (request sent
to first text) and the decode speed ((completion tokens - 1) / (last text -
first text), the tokens counted by the server's usage). Per round, the ratio
of tokens/s and the difference in time to first token are paired against the
direct client of the same round.

Targets (issue 10): ≤ 5 % fewer tokens/s and ≤ 30 ms more time to first token.

Example: ``python benchmarks/bench_remote.py --quick``
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import httpx

import _harness as h
from bench_concurrency import running_server

NAME = "remote"
CONTENDERS = ("direct", "remote", "remote-api")
LABELS = {
    "direct": "server called directly (httpx)",
    "remote": "llm4all remote backend (engine)",
    "remote-api": "llm4all.Model(remote).stream",
}
PROMPT = "Count from 1 to 300, separated by commas."
REMOTE_NAME = "bench-remote"


def body_for(model: str, max_tokens: int) -> dict[str, Any]:
    from llm4all.engine.remote.engine import request_params
    from llm4all.params import GenerationParams

    params = GenerationParams(temperature=0, max_tokens=max_tokens)
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        **request_params(params),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def measure(t0: float, stamps: list[float], completion_tokens: int) -> dict[str, Any]:
    first, last = stamps[0], stamps[-1]
    tps = (
        (completion_tokens - 1) / (last - first) if completion_tokens > 1 and last > first else None
    )
    return {"ttft_ms": (first - t0) * 1000, "tokens_per_second": tps, "tokens": completion_tokens}


def direct(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    stamps: list[float] = []
    usage: dict[str, Any] = {}
    t0 = time.perf_counter()
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
    return measure(t0, stamps, int(usage.get("completion_tokens", len(stamps))))


def through_engine(engine: Any, max_tokens: int) -> dict[str, Any]:
    from llm4all.engine.base import ChatInput
    from llm4all.params import GenerationParams

    prompt = ChatInput(({"role": "user", "content": PROMPT},))
    stamps: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    for chunk in engine.generate(prompt, GenerationParams(temperature=0, max_tokens=max_tokens)):
        if chunk.text:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return measure(t0, stamps, tokens)


def through_api(model: Any, max_tokens: int) -> dict[str, Any]:
    stamps: list[float] = []
    t0 = time.perf_counter()
    response = model.stream(PROMPT, system_prompt="", temperature=0, max_tokens=max_tokens)
    for piece in response:
        if piece:
            stamps.append(time.perf_counter())
    return measure(t0, stamps, response.completion.usage.completion_tokens)


def open_api_model(url: str, served: str) -> Any:
    """``llm4all.Model`` on the remote, or None when this checkout's API cannot load one yet."""
    import llm4all
    from llm4all.models import remotes

    remotes.add(remotes.Remote(REMOTE_NAME, url + "/v1", served), replace=True)
    try:
        return llm4all.Model(REMOTE_NAME)
    except Exception as exc:  # the pipeline may not take remotes in an older checkout
        h.note(f"remote-api: skipped ({type(exc).__name__}: {exc})")
        return None


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        values = [r[key] for r in results if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "ttft_ms": med("ttft_ms"),
        "tokens_per_second": med("tokens_per_second"),
        "tokens": med("tokens"),
    }


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=6)
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per answer")
    p.add_argument("--requests", type=int, default=3, help="requests per contender per round")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.requests, args.max_tokens = 2, 2, 48
    import os
    import tempfile

    os.environ.setdefault("LLM4ALL_HOME", tempfile.mkdtemp(prefix="llm4all-bench-remote-"))
    bench = h.Bench.start(NAME, args, CONTENDERS)
    from llm4all.engine.remote.client import Endpoint
    from llm4all.engine.remote.engine import RemoteEngine

    with running_server("llm4all", bench.model, args) as url:
        served = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        body = body_for(served, args.max_tokens)
        http = httpx.Client(base_url=url, timeout=120)
        engine = RemoteEngine(REMOTE_NAME, Endpoint(url + "/v1", served))
        api = open_api_model(url, served) if "remote-api" in bench.names else None
        names = [n for n in bench.names if n != "remote-api" or api is not None]
        run = {
            "direct": lambda: direct(http, body),
            "remote": lambda: through_engine(engine, args.max_tokens),
            "remote-api": lambda: through_api(api, args.max_tokens),
        }
        run["direct"]()  # warm the server (model load, first prompt) outside the figures
        runs = h.interleave(
            names, args.rounds, lambda c: median_of([run[c]() for _ in range(args.requests)])
        )
        http.close()
        engine.close()
        if api is not None:
            api.close()
    results = report(runs)
    bench.save(
        {"max_tokens": args.max_tokens, "requests": args.requests, "prompt": PROMPT}, results
    )


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows = []
    out: dict[str, Any] = {"runs": runs, "figures": {}, "paired": {}}
    for name, results in runs.items():
        tps, ttft = h.figure(results, "tokens_per_second"), h.figure(results, "ttft_ms")
        out["figures"][name] = {"tokens_per_second": tps, "ttft_ms": ttft}
        ratio = h.paired(runs, "tokens_per_second", name, "direct")
        deltas = [
            r["ttft_ms"] - d["ttft_ms"]
            for r, d in zip(results, runs["direct"], strict=False)
            if r.get("ttft_ms") is not None and d.get("ttft_ms") is not None
        ]
        extra = h.summary(deltas)
        out["paired"][name] = {"tokens_per_second_ratio": ratio, "ttft_extra_ms": extra}
        rows.append([LABELS[name], h.fmt(tps), h.fmt(ttft, 0), h.fmt(ratio, 3), h.fmt(extra, 1)])
    h.print_table(
        "Remote backend overhead (median, min–max over rounds)",
        ["client", "tokens/s", "TTFT ms", "tok/s vs direct", "TTFT extra ms"],
        rows,
    )
    targets: dict[str, bool | None] = {}
    for name in runs:
        if name == "direct":
            continue
        paired = out["paired"][name]
        targets[f"{LABELS[name]}: tokens/s >= 0.95 x direct"] = h.at_least(
            paired["tokens_per_second_ratio"], 0.95
        )
        targets[f"{LABELS[name]}: TTFT <= direct + 30 ms"] = h.at_most(paired["ttft_extra_ms"], 30)
    out["targets"] = h.print_targets(targets)
    return out


if __name__ == "__main__":
    main()
