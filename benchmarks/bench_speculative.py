"""Speculative decoding: the 1.5B target alone, with the 0.5B draft, with prompt lookup, vs raw llama.cpp.

One process, every contender loaded once, rounds interleaved (raw, plain, draft,
lookup on the same prompt, then the next prompt), greedy, no repeat penalty (so
every contender computes the same answer as the raw loop's greedy sampler).

Per run it records wall-clock decode speed (tokens after the first over the time
from the first to the last token) and what a loaded machine does not change
much: the process's CPU seconds per generated token (``resource.getrusage``,
all threads), tokens per target pass and the acceptance rate; for the draft
model, the CPU time spent drafting vs verifying.

Example: ``python benchmarks/bench_speculative.py --tokens 64 --rounds 1``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _workers import RawLlamaCpp
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.engine.speculative import Drafter
from llm4all.models import ModelStore
from llm4all.params import GenerationParams, LoadParams

TARGET, DRAFT = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
VICUNA = Path("/work/shared/data/eval/vicuna_questions_80.jsonl")
CODE = ["Write a Fibonacci function in Python.", "Write a Python function that checks for primes."]
PASSAGE = (
    "LocalDocs indexes the files of a folder into a collection. Each file is split into "
    "chunks of about 512 characters with an overlap of 64. Each chunk is embedded with "
    "all-MiniLM-L6-v2 and stored in SQLite next to a full-text index. A question is "
    "answered from the five best chunks, found by fusing the BM25 and cosine scores, and "
    "the answer cites them by number."
)
QUOTE = (
    f"Excerpt [1]:\n{PASSAGE}\n\nQuoting the excerpt word for word, explain how LocalDocs "
    "splits, embeds and stores files and how it answers a question."
)
TARGETS = {"draft_code": 1.4, "draft_chat": 1.15, "lookup_quote": 1.5, "lookup_none": 0.95}


def chat(text: str) -> str:
    """Qwen2.5's chat format around one user message (every contender sees the same text)."""
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TimedDrafter(Drafter):
    """Wraps a drafter to count the process CPU time spent drafting."""

    def __init__(self, inner: Drafter) -> None:
        self.inner, self.method, self.cpu = inner, inner.method, 0.0

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        t = cpu_seconds()
        try:
            return self.inner.propose(context, k)
        finally:
            self.cpu += cpu_seconds() - t

    def close(self) -> None:
        self.inner.close()


def run_engine(engine: LlamaCppEngine, prompt: str, tokens: int) -> dict[str, Any]:
    params = GenerationParams(temperature=0, repeat_penalty=1.0, max_tokens=tokens)
    drafter = engine.drafter
    draft_cpu0 = drafter.cpu if isinstance(drafter, TimedDrafter) else 0.0
    engine.reset()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    first = end = None
    ids: list[int] = []
    timings = None
    for chunk in engine.generate(prompt, params):
        now = time.perf_counter()
        if chunk.token_ids and first is None:
            first = now
        ids.extend(chunk.token_ids)
        end = now
        timings = chunk.timings or timings
    cpu = cpu_seconds() - cpu0
    assert timings is not None
    out = {
        "tokens": len(ids),
        "decode_tps": (len(ids) - 1) / (end - first) if first and end and end > first else 0.0,
        "wall_s": time.perf_counter() - t0,
        "cpu_per_token_ms": 1000 * cpu / max(1, len(ids)),
        "ids": ids,
    }
    if timings.target_passes:
        out["tokens_per_pass"] = timings.completion_tokens / timings.target_passes
        out["passes"] = timings.target_passes
        out["acceptance"] = (
            timings.accepted_tokens / timings.drafted_tokens if timings.drafted_tokens else None
        )
        out["drafted"] = timings.drafted_tokens
    if isinstance(drafter, TimedDrafter):
        out["draft_cpu_ms"] = 1000 * (drafter.cpu - draft_cpu0)
        out["verify_cpu_ms"] = 1000 * cpu - out["draft_cpu_ms"]
    return out


def run_raw(raw: RawLlamaCpp, prompt: str, tokens: int) -> dict[str, Any]:
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    first = end = None
    n = 0
    for _piece in raw.stream(prompt, tokens):
        now = time.perf_counter()
        first = first or now
        end = now
        n += 1
    cpu = cpu_seconds() - cpu0
    return {
        "tokens": n,
        "decode_tps": (n - 1) / (end - first) if first and end and end > first else 0.0,
        "wall_s": time.perf_counter() - t0,
        "cpu_per_token_ms": 1000 * cpu / max(1, n),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--chat", type=int, default=3, help="vicuna-80 questions (the first N)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--out", default="benchmarks/results/speculative.json")
    args = p.parse_args()
    store = ModelStore()
    target = str(store.resolve(TARGET, allow_download=False).path)
    draft = str(store.resolve(DRAFT, allow_download=False).path)
    n_ctx = 2048
    load = LoadParams(n_ctx=n_ctx, n_threads=args.threads)
    contenders: dict[str, Any] = {
        "raw": RawLlamaCpp(target, args.threads, n_ctx),
        "plain": LlamaCppEngine(target, load),
        "draft": LlamaCppEngine(target, load.replace(draft=draft)),
        "lookup": LlamaCppEngine(target, load.replace(lookup=True)),
    }
    for name in ("draft", "lookup"):
        engine = contenders[name]
        engine.drafter = TimedDrafter(engine.drafter)
    questions = [json.loads(line)["text"] for line in VICUNA.read_text().splitlines()]
    prompts = (
        [("code", chat(q)) for q in CODE]
        + [("chat", chat(q)) for q in questions[: args.chat]]
        + [("quote", chat(QUOTE))]
    )
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for kind, prompt in prompts:
            row: dict[str, Any] = {"round": rnd, "kind": kind, "prompt": prompt[:60]}
            for name, c in contenders.items():
                if name == "raw":
                    row[name] = run_raw(c, prompt, args.tokens)
                else:
                    row[name] = run_engine(c, prompt, args.tokens)
            same = {n: row[n]["ids"] == row["plain"]["ids"] for n in ("draft", "lookup")}
            row["same_as_plain"] = same
            for n in ("plain", "draft", "lookup"):
                row[n].pop("ids")
            runs.append(row)
            print(json.dumps(_brief(row)), flush=True)
    summary = summarise(runs)
    result = {
        "target": TARGET,
        "draft": DRAFT,
        "tokens": args.tokens,
        "threads": args.threads,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        **{n: round(row[n]["decode_tps"], 2) for n in ("raw", "plain", "draft", "lookup")},
        "draft_tpp": round(row["draft"].get("tokens_per_pass", 0), 2),
        "lookup_tpp": round(row["lookup"].get("tokens_per_pass", 0), 2),
        "same": row["same_as_plain"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in runs}):
        rows = [r for r in runs if r["kind"] == kind]
        s: dict[str, Any] = {}
        for name in ("raw", "plain", "draft", "lookup"):
            s[f"{name}_tps"] = statistics.median(r[name]["decode_tps"] for r in rows)
            s[f"{name}_cpu_ms_per_token"] = statistics.median(
                r[name]["cpu_per_token_ms"] for r in rows
            )
            if name != "raw":
                s[f"{name}_x_raw_wall"] = statistics.median(
                    r[name]["decode_tps"] / r["raw"]["decode_tps"] for r in rows
                )
                s[f"{name}_x_raw_cpu"] = statistics.median(
                    r["raw"]["cpu_per_token_ms"] / r[name]["cpu_per_token_ms"] for r in rows
                )
        for name in ("draft", "lookup"):
            s[f"{name}_tokens_per_pass"] = statistics.median(
                r[name].get("tokens_per_pass", 0) for r in rows
            )
            acc = [r[name]["acceptance"] for r in rows if r[name].get("acceptance") is not None]
            s[f"{name}_acceptance"] = statistics.median(acc) if acc else None
            tokens = sum(r[name]["tokens"] for r in rows)
            drafted = sum(r[name].get("drafted", 0) for r in rows)
            passes = sum(r[name].get("passes", 0) for r in rows)
            draft_cpu = sum(r[name].get("draft_cpu_ms", 0) for r in rows)
            verify_cpu = sum(r[name].get("verify_cpu_ms", 0) for r in rows)
            s[f"{name}_draft_cpu_ms_per_drafted"] = draft_cpu / drafted if drafted else None
            s[f"{name}_verify_cpu_ms_per_pass"] = verify_cpu / passes if passes else None
            s[f"{name}_cpu_ms_per_token"] = (draft_cpu + verify_cpu) / tokens if tokens else None
        s["identical_to_plain"] = all(all(r["same_as_plain"].values()) for r in rows)
        out[kind] = s
    return out


if __name__ == "__main__":
    main()
