"""Concurrent streams through the HTTP server: llm4all's continuous batching vs llama-cpp-python's server.

Each contender is a real server process on 127.0.0.1 with the same model file,
threads and per-request context: ``llm4all serve`` (``--parallel 8``: eight KV
slots decoded together) and ``python -m llama_cpp.server`` (one request at a
time; ``--interrupt_requests False`` so that a new request waits instead of
cutting the running one short). For 1, 2, 4 and 8 concurrent clients, each
client streams chat completions one after another (greedy, no repeat penalty,
``max_tokens`` capped) for ``--seconds``; we record every request's time to
first token and the aggregate tokens per second that arrive inside the window
(tokens are counted by re-tokenizing the streamed text with the model's own
vocabulary, the same way for both servers).

The ceiling is measured too: raw ``llama_decode`` of batches of 1, 2, 4 and 8
sequences (one token each, no sampling, no server) in a process of its own,
because how much a batch of N costs compared with N single steps is a property
of llama.cpp's CPU kernels for this model, not of any server.

A second part measures the second turn of a chat with a long system prompt
through each server: llm4all with prefix reuse (the default) and without
(``cache_prompt: false``, llama.cpp's name for the knob), and llama-cpp-python's
server (which reuses the prefix of its previous prompt).

Contenders take turns (A B, B A, …), a fresh server process per round.

Example: ``python benchmarks/bench_concurrency.py --quick``
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

import _harness as h

NAME = "concurrency"
CONTENDERS = ("llm4all", "llama-cpp-server", "raw-batch")
LABELS = {
    "llm4all": "llm4all serve",
    "llama-cpp-server": "llama_cpp.server",
    "raw-batch": "raw llama.cpp batch (ceiling)",
}
LEVELS = (1, 2, 4, 8)
TOPICS = [
    "the history of the bicycle",
    "how volcanoes form",
    "the life of honey bees",
    "why the sky is blue",
    "how a steam engine works",
    "the rules of chess",
    "the water cycle",
    "how bread is baked",
    "the story of the printing press",
    "how airplanes fly",
    "the planets of the solar system",
    "how vaccines work",
    "the great wall of china",
    "how to grow tomatoes",
    "the invention of the telephone",
    "how rainbows appear",
]


def system_prompt(rules: int) -> str:
    """A long system prompt (about 25 tokens per rule) shared by both turns of a chat."""
    return (
        "You are a careful assistant for a public library. Answer briefly and politely. "
        + " ".join(
            f"Rule {i}: when a reader asks about section {i}, point them to shelf {i * 7 % 50} "
            "and mention the opening hours."
            for i in range(1, rules + 1)
        )
    )


GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "top_k": 1}


# -- the servers ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    contender: str, model: Path, args: Any, port: int, extra: Sequence[str] = ()
) -> list[str]:
    if contender == "llm4all":
        return [
            *(sys.executable, "-m", "llm4all", "serve", "--model", str(model)),
            *("--port", str(port), "--threads", str(args.threads)),
            *("--parallel", str(max(LEVELS)), "--ctx", str(args.ctx)),
            *("--keep-alive", "-1", "--log-level", "warning", *extra),
        ]
    return [
        *(sys.executable, "-m", "llama_cpp.server", "--model", str(model)),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)),
        *("--n_ctx", str(args.ctx), "--n_batch", "512", "--verbose", "False"),
        *("--interrupt_requests", "False"),
    ]


@contextmanager
def running_server(
    contender: str, model: Path, args: Any, extra: Sequence[str] = ()
) -> Iterator[str]:
    """A server process on a free port (``extra``: more ``llm4all serve`` options); its URL."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            server_command(contender, model, args, port, extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=h.child_env(),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-5:]
            raise RuntimeError(f"server exited with {proc.returncode}: " + " | ".join(tail))
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready in 180 s")


# -- the clients --------------------------------------------------------------------
async def stream_chat(
    client: httpx.AsyncClient, body: dict[str, Any], deadline: float = math.inf
) -> tuple[float | None, str, str]:
    """(time to first token, the whole text, the text that arrived before ``deadline``)."""
    t0 = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    in_time: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            for choice in data.get("choices") or ():
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    now = time.perf_counter()
                    if first is None:
                        first = now - t0
                    pieces.append(text)
                    if now <= deadline:
                        in_time.append(text)
    return first, "".join(pieces), "".join(in_time)


async def level(
    url: str, model: str, clients: int, seconds: float, max_tokens: int
) -> dict[str, Any]:
    """``clients`` clients, each streaming one answer after another for ``seconds``.

    Throughput counts the tokens that arrive inside the window, so the batch is
    as full at the end as in the middle (answers that stop early are replaced at
    once); requests still running at the end finish outside the window.
    """
    ttfts: list[float | None] = []
    texts: list[str] = []
    deadline = time.perf_counter() + seconds

    async def one_client(k: int, client: httpx.AsyncClient) -> None:
        r = 0
        while time.perf_counter() < deadline:
            topic = TOPICS[(k * 5 + r) % len(TOPICS)]
            r += 1
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Write a long essay about {topic}."}],
                "max_tokens": max_tokens,
                **GREEDY,
            }
            first, _, in_time = await stream_chat(client, body, deadline)
            ttfts.append(first)
            texts.append(in_time)

    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(one_client(k, client) for k in range(clients)))
    return {"seconds": seconds, "requests": len(ttfts), "ttft_s": ttfts, "texts": texts}


async def second_turn(url: str, model: str, reuse: bool, rep: int, rules: int) -> dict[str, float]:
    """Turn 1 then turn 2 of a chat with a long system prompt; the TTFT of each."""
    first = [
        {"role": "system", "content": system_prompt(rules)},
        {"role": "user", "content": f"Visitor {rep} here. Where do I find section {rep % 30 + 1}?"},
    ]
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        body = {"model": model, "messages": first, "max_tokens": 24, **GREEDY}
        ttft1, answer, _ = await stream_chat(client, body)
        turn2 = [*first, {"role": "assistant", "content": answer}]
        turn2.append({"role": "user", "content": "Thanks. And when are you open?"})
        body = {"model": model, "messages": turn2, "max_tokens": 4, **GREEDY}
        if not reuse:
            body["cache_prompt"] = False
        ttft2, _, _ = await stream_chat(client, body)
    return {"turn1_ttft_s": ttft1 or float("nan"), "turn2_ttft_s": ttft2 or float("nan")}


# -- the ceiling: raw batched decode ---------------------------------------------------
def raw_batch(model: str, threads: int, steps: int) -> dict[str, Any]:
    """Tokens/s of ``llama_decode`` on batches of 1, 2, 4, 8 sequences, one token each."""
    from llm4all.engine._native import NativeModel
    from llm4all.params import LoadParams

    native = NativeModel(Path(model), LoadParams(n_seq_max=8, n_ctx=8 * 512), threads)
    try:
        prompt = list(range(1000, 1016))
        for seq in range(8):
            native.batch.clear()
            for i, token in enumerate(prompt):
                native.batch.add(token, i, seq, i == len(prompt) - 1)
            native.decode()
        levels: dict[str, Any] = {}
        for c in LEVELS:
            t0 = time.perf_counter()
            for k in range(steps):
                native.batch.clear()
                for seq in range(c):
                    native.batch.add(2000 + k, len(prompt) + k, seq, True)
                native.decode()
            wall = time.perf_counter() - t0
            for seq in range(8):
                native.forget(seq, len(prompt))
            levels[str(c)] = {"wall_s": wall, "tokens": c * steps, "tokens_per_s": c * steps / wall}
        return {"levels": levels}
    finally:
        native.close()


def run_raw_batch(bench: h.Bench) -> dict[str, Any]:
    steps = 8 if bench.args.quick else 32
    cmd = [
        sys.executable,
        __file__,
        "--raw-batch",
        str(bench.model),
        str(bench.args.threads),
        str(steps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=h.child_env(), check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(proc.stdout)
    for c, lv in result["levels"].items():
        h.note(f"  batch of {c}: {lv['tokens_per_s']:.1f} tok/s")
    return result


# -- one round of one contender -------------------------------------------------------
def run_contender(contender: str, bench: h.Bench, count: Callable[[str], int]) -> dict[str, Any]:
    if contender == "raw-batch":
        return run_raw_batch(bench)
    args = bench.args
    out: dict[str, Any] = {"levels": {}, "turns": {}}
    try:
        with running_server(contender, bench.model, args) as url:
            model = served_name(url)
            asyncio.run(level(url, model, 1, 0.1, 8))  # warm-up: page cache, first decode
            for c in LEVELS:
                lv = asyncio.run(level(url, model, c, args.seconds, args.max_tokens))
                tokens = sum(count(t) for t in lv.pop("texts"))
                lv.update(tokens=tokens, tokens_per_s=tokens / lv["seconds"])
                out["levels"][str(c)] = lv
                h.note(
                    f"  {c} streams: {lv['tokens_per_s']:.1f} tok/s, "
                    f"p50 TTFT {1000 * (_pct(lv['ttft_s'], 50) or 0):.0f} ms"
                )
            variants = [("reuse", True)] + ([("no_reuse", False)] if contender == "llm4all" else [])
            for name, reuse in variants:
                turns = [
                    asyncio.run(second_turn(url, model, reuse, i, args.rules))
                    for i in range(args.turn_reps)
                ]
                out["turns"][name] = turns
    except Exception as exc:  # a failed contender is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    return out


def served_name(url: str) -> str:
    data = httpx.get(url + "/v1/models", timeout=10).json()["data"]
    return (
        str(data[0]["id"])
        if len(data) == 1
        else next((str(m["id"]) for m in data if m.get("loaded")), str(data[0]["id"]))
    )


def _pct(values: list[float | None], q: float) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    return float(statistics.quantiles(vals, n=100, method="inclusive")[int(q) - 1])


def counter(model: Path) -> Callable[[str], int]:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))


# -- the report -------------------------------------------------------------------------
def report(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    rows = []
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        per: dict[str, Any] = {}
        for c in LEVELS:
            lvs = [r["levels"][str(c)] for r in ok]
            per[str(c)] = {
                "tokens_per_s": h.summary([lv["tokens_per_s"] for lv in lvs]),
                "ttft_p50_s": h.summary([_pct(lv.get("ttft_s", [None]), 50) for lv in lvs]),
                "ttft_p95_s": h.summary([_pct(lv.get("ttft_s", [None]), 95) for lv in lvs]),
            }
        summary[name] = per
        for c in LEVELS:
            s = per[str(c)]
            rows.append(
                [
                    LABELS[name],
                    str(c),
                    h.fmt(s["tokens_per_s"]),
                    h.fmt(s["ttft_p50_s"], 0, 1000),
                    h.fmt(s["ttft_p95_s"], 0, 1000),
                ]
            )
    headers = ["server", "streams", "tokens/s (all streams)", "TTFT p50 ms", "TTFT p95 ms"]
    h.print_table("Concurrent streams - median (min-max) over rounds", headers, rows)
    ratios = _ratios(runs)
    turns = _turns(runs)
    targets = {
        "llm4all: 4 streams >= 1.8 x 1 stream": h.at_least(ratios.get("llm4all_4_over_1"), 1.8),
        "llm4all >= 0.95 x llama_cpp.server at 1 stream": h.at_least(ratios.get("vs_peer_1"), 0.95),
        **{
            f"llm4all > llama_cpp.server at {c} streams": h.at_least(
                ratios.get(f"vs_peer_{c}"), 1.0
            )
            for c in LEVELS[1:]
        },
    }
    return {
        "summary": summary,
        "ratios": ratios,
        "second_turn": turns,
        "targets": h.print_targets(targets),
    }


def _ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-round ratios (each pair ran in the same round, so drift cancels)."""
    ours = [r for r in runs.get("llm4all", []) if "error" not in r]
    peer = [r for r in runs.get("llama-cpp-server", []) if "error" not in r]
    out: dict[str, Any] = {}
    for name in ("llm4all", "raw-batch"):
        ok = [r for r in runs.get(name, []) if "error" not in r]
        for c in LEVELS[1:]:
            if ok:
                out[f"{name}_{c}_over_1"] = h.summary(
                    [
                        r["levels"][str(c)]["tokens_per_s"] / r["levels"]["1"]["tokens_per_s"]
                        for r in ok
                    ]
                )
    for c in LEVELS:
        vals = [
            a["levels"][str(c)]["tokens_per_s"] / b["levels"][str(c)]["tokens_per_s"]
            for a, b in zip(ours, peer, strict=False)
        ]
        if vals:
            out[f"vs_peer_{c}"] = h.summary(vals)
    rows = [[k, h.fmt(v, 2)] for k, v in out.items()]
    h.print_table("Throughput ratios - median (min-max) over rounds", ["ratio", "value"], rows)
    return out


def _turns(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = []
    for name, rs in runs.items():
        for variant in ("reuse", "no_reuse"):
            values = [
                t for r in rs if "error" not in r for t in r.get("turns", {}).get(variant, [])
            ]
            if not values:
                continue
            s1 = h.summary([v["turn1_ttft_s"] for v in values])
            s2 = h.summary([v["turn2_ttft_s"] for v in values])
            out[f"{name}/{variant}"] = {"turn1_ttft_s": s1, "turn2_ttft_s": s2}
            label = f"{LABELS[name]}, {'prefix reuse' if variant == 'reuse' else 'no prefix reuse'}"
            rows.append([label, h.fmt(s1, 0, 1000), h.fmt(s2, 0, 1000)])
    h.print_table(
        "Second turn of a chat with a long system prompt - TTFT ms, median (min-max)",
        ["server", "turn 1", "turn 2"],
        rows,
    )
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-batch":  # the ceiling's own process
        print(json.dumps(raw_batch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    p = h.parser(__doc__.splitlines()[0], rounds=2)
    p.add_argument("--max-tokens", type=int, default=96, help="answer length cap")
    p.add_argument("--seconds", type=float, default=40, help="measuring window per level")
    p.add_argument("--turn-reps", type=int, default=3, help="second-turn measurements per round")
    p.add_argument("--rules", type=int, default=40, help="system prompt length (x ~25 tokens)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.max_tokens, args.seconds, args.turn_reps, args.rules = 1, 24, 2.5, 1, 8
    bench = h.Bench.start(NAME, args, CONTENDERS)
    count = counter(bench.model)
    runs = h.interleave(bench.names, args.rounds, lambda c: run_contender(c, bench, count))
    settings = {
        "levels": list(LEVELS),
        "max_tokens": args.max_tokens,
        "seconds_per_level": args.seconds,
        "turn_reps": args.turn_reps,
        "system_prompt_tokens": count(system_prompt(args.rules)),
        "llm4all_parallel": max(LEVELS),
        "sampling": GREEDY,
    }
    bench.save(settings, {**report(runs), "runs": runs})


if __name__ == "__main__":
    main()
