"""Load test of ``llm4all serve``: many clients, some of them hanging up mid-stream.

500 requests from 16 concurrent clients against a real server process (by
default the fast model, ``--parallel 8``). The mix: streamed chat completions
(most, some with ``n=2``, logprobs or JSON mode), whole chat completions and
streamed text completions; 10% of the streams are abandoned after a few
chunks (the client closes the connection). Checked:

- no 5xx answer, and no answer other than 200 (a 429 would mean the queue overflowed);
- every completed stream is well formed: a role chunk first, one id, valid JSON
  chunks, one ``finish_reason`` per choice, the usage chunk when asked for,
  ``data: [DONE]`` last;
- afterwards no request is running or waiting and no lease is held;
- the server's memory (RSS) is back to its baseline.

Example: ``python benchmarks/load_test.py --quick``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

import _harness as h
from bench_concurrency import running_server, served_name

NAME = "load_test"


@dataclass
class Outcome:
    kind: str
    status: int = 0
    problems: list[str] = field(default_factory=list)
    abandoned: bool = False
    seconds: float = 0.0


def plan(i: int, rng: random.Random) -> dict[str, Any]:
    """What request ``i`` is: its kind, body and whether the client hangs up (10%, streams)."""
    abandon = i % 10 == 5  # exactly one request in ten
    roll = rng.random()
    topic = f"topic number {i}: " + rng.choice(["rivers", "stars", "bread", "music", "cats"])
    chat = {"messages": [{"role": "user", "content": f"Tell me about {topic}."}]}
    body: dict[str, Any] = {"max_tokens": rng.randint(8, 48), "temperature": rng.choice([0, 0.8])}
    if roll < 0.10 and not abandon:
        return {"kind": "chat", "body": {**body, **chat}, "abandon": False}
    if roll < 0.20:
        body |= {"prompt": f"A short note about {topic}:", "stream": True}
        return {"kind": "completion-stream", "body": body, "abandon": abandon}
    body |= {**chat, "stream": True, "stream_options": {"include_usage": rng.random() < 0.5}}
    if roll < 0.30:
        body |= {"n": 2}
    elif roll < 0.40:
        body |= {"logprobs": True, "top_logprobs": 2}
    elif roll < 0.45:
        body |= {"response_format": {"type": "json_object"}}
    return {"kind": "chat-stream", "body": body, "abandon": abandon}


def check_stream(events: list[str], body: dict[str, Any], kind: str) -> list[str]:
    """What is wrong with a completed stream (nothing: an empty list)."""
    problems = []
    if not events or events[-1] != "[DONE]":
        return ["does not end with [DONE]"]
    try:
        chunks = [json.loads(e) for e in events[:-1]]
    except ValueError:
        return ["a chunk is not JSON"]
    if any("error" in c for c in chunks):
        return ["an error event: " + json.dumps(next(c for c in chunks if "error" in c))]
    if len({c["id"] for c in chunks}) != 1:
        problems.append("more than one id")
    n = body.get("n", 1)
    finishes = Counter(
        ch["index"] for c in chunks for ch in c["choices"] if ch.get("finish_reason")
    )
    if finishes != Counter(range(n)):
        problems.append(f"finish reasons per choice: {dict(finishes)}")
    if kind == "chat-stream":
        roles = [ch["index"] for ch in chunks[0]["choices"] if ch["delta"].get("role")]
        if chunks[0]["choices"] and not roles:
            problems.append("the first chunk has no role")
    wants_usage = (body.get("stream_options") or {}).get("include_usage")
    if wants_usage and not (chunks[-1]["choices"] == [] and chunks[-1].get("usage")):
        problems.append("no usage chunk last")
    return problems


async def one(client: httpx.AsyncClient, req: dict[str, Any], rng: random.Random) -> Outcome:
    kind, body = req["kind"], req["body"]
    path = "/v1/completions" if kind.startswith("completion") else "/v1/chat/completions"
    out = Outcome(kind)
    t0 = time.perf_counter()
    if not body.get("stream"):
        r = await client.post(path, json=body)
        out.status = r.status_code
        if r.status_code == 200 and not r.json().get("choices"):
            out.problems.append("no choices")
        out.seconds = time.perf_counter() - t0
        return out
    events: list[str] = []
    cut_after = rng.randint(1, 5) if req["abandon"] else None
    async with client.stream("POST", path, json=body) as r:
        out.status = r.status_code
        if r.status_code != 200:
            await r.aread()
            return out
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if cut_after is not None and len(events) >= cut_after:
                    out.abandoned = True
                    break  # leaving the block closes the connection mid-stream
    if not out.abandoned:
        out.problems = check_stream(events, body, kind)
    out.seconds = time.perf_counter() - t0
    return out


async def run_load(url: str, model: str, requests: int, clients: int, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    plans = [plan(i, rng) for i in range(requests)]
    for p in plans:
        p["body"]["model"] = model
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for p in plans:
        queue.put_nowait(p)
    outcomes: list[Outcome] = []

    async def client_loop(k: int) -> None:
        crng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            while not queue.empty():
                req = queue.get_nowait()
                try:
                    outcomes.append(await one(client, req, crng))
                except httpx.HTTPError as exc:
                    outcomes.append(Outcome(req["kind"], 0, [f"{type(exc).__name__}: {exc}"]))

    await asyncio.gather(*(client_loop(k) for k in range(clients)))
    return outcomes


def server_process(url: str) -> psutil.Process:
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return psutil.Process(conn.pid)
    raise RuntimeError("cannot find the server process")


def rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss / 2**20)


def settle(url: str, proc: psutil.Process, seconds: float) -> dict[str, Any]:
    """Wait until nothing runs; the health then, and the RSS after ``seconds`` more."""
    deadline = time.monotonic() + 60
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = httpx.get(url + "/health", timeout=10).json()
        if not any(m["running"] or m["waiting"] or m["leases"] for m in health["models"]):
            break
        time.sleep(0.2)
    time.sleep(seconds)
    return {"health": health, "rss_mb": rss_mb(proc)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="60 requests, 8 clients")
    p.add_argument("--model", help=f"model (default: {h.FAST_MODEL})")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=1024, help="context per request")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients = 60, 8
    model = h.resolve_model(args.model or h.FAST_MODEL, True)
    machine = h.machine_info()
    with running_server("llm4all", model, args) as url:
        name = served_name(url)
        proc = server_process(url)
        # Warm-up with the same mix, so that allocator pools and caches reach their working size.
        asyncio.run(run_load(url, name, max(32, args.requests // 5), args.clients, seed=0))
        baseline = settle(url, proc, 2)["rss_mb"]
        peak = baseline
        t0 = time.perf_counter()

        async def with_sampling() -> list[Outcome]:
            nonlocal peak
            task = asyncio.create_task(run_load(url, name, args.requests, args.clients, args.seed))
            while not task.done():
                peak = max(peak, rss_mb(proc))
                await asyncio.sleep(0.25)
            return await task

        outcomes = asyncio.run(with_sampling())
        wall = time.perf_counter() - t0
        after = settle(url, proc, 3)
    report(args, machine, model.name, outcomes, wall, baseline, peak, after)


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    model: str,
    outcomes: list[Outcome],
    wall: float,
    baseline: float,
    peak: float,
    after: dict[str, Any],
) -> None:
    statuses = Counter(o.status for o in outcomes)
    completed = [o for o in outcomes if not o.abandoned and o.status == 200]
    malformed = [o for o in completed if o.problems]
    busy_after = [
        m for m in after["health"]["models"] if m["running"] or m["waiting"] or m["leases"]
    ]
    figures = {
        "requests": len(outcomes),
        "clients": args.clients,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(outcomes) / wall, 2),
        "status_codes": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "abandoned_mid_stream": sum(o.abandoned for o in outcomes),
        "completed": len(completed),
        "malformed_streams": len(malformed),
        "problems": [f"{o.kind}: {'; '.join(o.problems)}" for o in malformed][:20],
        "latency_s_p50": round(statistics.median(o.seconds for o in completed), 2)
        if completed
        else None,
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "rss_mb": {
            "baseline": round(baseline, 1),
            "peak": round(peak, 1),
            "after": round(after["rss_mb"], 1),
        },
        "busy_after": busy_after,
    }
    show(args, machine, model, figures, after["rss_mb"] <= baseline * 1.05 + 20)


def show(
    args: argparse.Namespace,
    machine: dict[str, Any],
    model: str,
    figures: dict[str, Any],
    back: bool,
) -> None:
    statuses = figures["status_codes"]
    targets = {
        "no 5xx": figures["server_errors_5xx"] == 0,
        "only 200s": set(statuses) == {"200"},
        "every completed stream well formed": figures["malformed_streams"] == 0,
        "nothing running or held afterwards": not figures["busy_after"],
        "memory back to baseline (+5% / 20 MB)": back,
    }
    rows = [
        [k, json.dumps(v) if isinstance(v, dict | list) else str(v)]
        for k, v in figures.items()
        if k != "problems"
    ]
    h.print_table(f"Load test: {model}", ["figure", "value"], rows)
    verdicts = h.print_targets(targets)
    payload = {
        "benchmark": NAME,
        "quick": args.quick,
        "machine": machine,
        "model": model,
        "settings": {"threads": args.threads, "ctx": args.ctx, "parallel": 8, "seed": args.seed},
        "figures": figures,
        "targets": verdicts,
    }
    h.write_json(NAME, args.quick, payload)


if __name__ == "__main__":
    main()
