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


def measure(t0: float, cpu0: float, stamps: list[float], completion_tokens: int) -> dict[str, Any]:
    """The figures of one answer; ``cpu0`` is this process's CPU time when it was sent.

    ``client_cpu_us_per_token``: CPU time the client itself spent per token
    (reading the stream, parsing, building chunks). Unlike wall-clock rates it
    hardly depends on what else the machine is doing.
    """
    cpu = time.process_time() - cpu0
    first, last = stamps[0], stamps[-1]
    tps = (
        (completion_tokens - 1) / (last - first) if completion_tokens > 1 and last > first else None
    )
    return {
        "ttft_ms": (first - t0) * 1000,
        "tokens_per_second": tps,
        "tokens": completion_tokens,
        "client_cpu_us_per_token": cpu / max(completion_tokens, 1) * 1e6,
    }


def direct(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    stamps: list[float] = []
    usage: dict[str, Any] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
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
    return measure(t0, cpu0, stamps, int(usage.get("completion_tokens", len(stamps))))


class Tap:
    """Timestamps inside one request of the remote backend, to isolate what llm4all adds.

    ``sent``: when httpx sends the request (an httpx event hook); ``arrived``: when
    each event carrying text leaves the transport (``RemoteClient.stream_events``,
    its JSON already parsed, which a direct client does too). Against the times
    the caller gets each text piece, they give llm4all's own latency per token
    and before the request goes out, free of the server's speed and the
    machine's load.
    """

    def __init__(self, client: Any) -> None:
        self.sent: float | None = None
        self.arrived: list[float] = []
        client._http.event_hooks["request"].append(self._on_request)
        inner = client.stream_events

        def tapped(*args: Any, **kwargs: Any) -> Any:
            for event in inner(*args, **kwargs):
                choices = event.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    self.arrived.append(time.perf_counter())
                yield event

        client.stream_events = tapped

    def _on_request(self, request: Any) -> None:
        self.sent = time.perf_counter()

    def reset(self) -> None:
        self.sent, self.arrived = None, []

    def figures(self, t0: float, stamps: list[float]) -> dict[str, Any]:
        delays = [y - a for y, a in zip(stamps, self.arrived, strict=False)]
        before = (self.sent - t0) if self.sent is not None else None
        first = delays[0] if delays else None
        return {
            "added_us_per_token": statistics.median(delays) * 1e6 if delays else None,
            "added_ttft_ms": (before + first) * 1000 if before is not None and first else None,
        }


def through_engine(engine: Any, max_tokens: int, tap: Tap) -> dict[str, Any]:
    from llm4all.engine.base import ChatInput
    from llm4all.params import GenerationParams

    prompt = ChatInput(({"role": "user", "content": PROMPT},))
    stamps: list[float] = []
    tokens = 0
    tap.reset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for chunk in engine.generate(prompt, GenerationParams(temperature=0, max_tokens=max_tokens)):
        if chunk.text:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return measure(t0, cpu0, stamps, tokens) | tap.figures(t0, stamps)


def through_api(model: Any, max_tokens: int, tap: Tap) -> dict[str, Any]:
    stamps: list[float] = []
    tap.reset()
    t0, cpu0 = time.perf_counter(), time.process_time()
    response = model.stream(PROMPT, system_prompt="", temperature=0, max_tokens=max_tokens)
    for piece in response:
        if piece:
            stamps.append(time.perf_counter())
    tokens = response.completion.usage.completion_tokens
    return measure(t0, cpu0, stamps, tokens) | tap.figures(t0, stamps)


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

    keys = (
        "ttft_ms",
        "tokens_per_second",
        "tokens",
        "client_cpu_us_per_token",
        "added_us_per_token",
        "added_ttft_ms",
    )
    return {key: med(key) for key in keys}


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
        engine_tap = Tap(engine.client)
        api_tap = Tap(api.engine.client) if api is not None else engine_tap
        run = {
            "direct": lambda: direct(http, body),
            "remote": lambda: through_engine(engine, args.max_tokens, engine_tap),
            "remote-api": lambda: through_api(api, args.max_tokens, api_tap),
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


def _inside(runs: dict[str, list[dict[str, Any]]], out: dict[str, Any]) -> dict[str, bool | None]:
    """The table of what llm4all adds inside a request, and its targets.

    A token's time is taken at the fastest rate any client saw (the shortest
    token, so the largest share): the added latency per token as a share of
    it bounds the tokens/s the remote backend can lose, whatever the load did
    to the wall-clock rounds.
    """
    rates = [
        r["tokens_per_second"] for rs in runs.values() for r in rs if r.get("tokens_per_second")
    ]
    token_us = 1e6 / max(rates) if rates else None
    rows, targets = [], {}
    for name in (n for n in runs if n != "direct"):
        per_token = h.figure(runs[name], "added_us_per_token")
        first = h.figure(runs[name], "added_ttft_ms")
        share = per_token["median"] / token_us if token_us and per_token["n"] else None
        out["inside"] = out.get("inside", {}) | {
            name: {"added_us_per_token": per_token, "added_ttft_ms": first, "share": share}
        }
        shown = f"{share * 100:.2f} %" if share is not None else "–"
        rows.append([LABELS[name], h.fmt(per_token, 0), shown, h.fmt(first, 2)])
        targets[f"{LABELS[name]}: adds <= 5 % to a token's time"] = (
            None if share is None else share <= 0.05
        )
        targets[f"{LABELS[name]}: adds <= 30 ms before the first token"] = h.at_most(first, 30)
    h.print_table(
        "What llm4all adds inside a request (median, min–max over rounds)",
        ["client", "µs per token", "of a token's time", "ms before the first token"],
        rows,
    )
    return targets


def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows = []
    out: dict[str, Any] = {"runs": runs, "figures": {}, "paired": {}}
    for name, results in runs.items():
        tps, ttft = h.figure(results, "tokens_per_second"), h.figure(results, "ttft_ms")
        cpu = h.figure(results, "client_cpu_us_per_token")
        out["figures"][name] = {
            "tokens_per_second": tps,
            "ttft_ms": ttft,
            "client_cpu_us_per_token": cpu,
        }
        ratio = h.paired(runs, "tokens_per_second", name, "direct")
        deltas = [
            r["ttft_ms"] - d["ttft_ms"]
            for r, d in zip(results, runs["direct"], strict=False)
            if r.get("ttft_ms") is not None and d.get("ttft_ms") is not None
        ]
        extra = h.summary(deltas)
        out["paired"][name] = {"tokens_per_second_ratio": ratio, "ttft_extra_ms": extra}
        row = [LABELS[name], h.fmt(tps), h.fmt(ttft, 0), h.fmt(cpu, 0)]
        rows.append([*row, h.fmt(ratio, 3), h.fmt(extra, 1)])
    h.print_table(
        "Remote backend overhead (median, min–max over rounds)",
        [
            "client",
            "tokens/s",
            "TTFT ms",
            "client CPU µs/token",
            "tok/s vs direct",
            "TTFT extra ms",
        ],
        rows,
    )
    targets = _inside(runs, out)
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
