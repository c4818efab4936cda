"""Speculative decoding: the 1.5B target alone, with the 0.5B draft, with prompt lookup, vs raw llama.cpp.

One process, every contender loaded once, rounds interleaved (raw, plain, draft,
draft_forced, lookup on the same prompt, then the next prompt), greedy, no repeat
penalty (so every contender computes the same answer as the raw loop's greedy
sampler). ``draft`` and ``lookup`` choose their draft length from the costs they
measure (``speculative.DraftLength``); ``draft_forced`` has its costs pinned to
"verifying is free", so it always drafts: its acceptance and tokens per pass are
what the draft model could give, and its speed what drafting costs here.

Before the rounds it measures the costs the speed-up depends on (``--costs``):
one target ``llama_decode`` of n = 1..9 tokens (the last sampled token and k =
n - 1 drafts) and one draft-model decode of 1 token, interleaved, median of
``--cost-reps``, wall-clock and CPU. From those and each kind's measured tokens
per pass it predicts the forced draft's speed-up, tokens per pass x t1 /
(k x draft + verify(k + 1)), and the best k for the measured acceptance.

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
from llm4all.engine._native import NativeModel
from llm4all.engine.llamacpp import LlamaCppEngine
from llm4all.engine.speculative import Drafter, PassCosts
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
SPECULATING = ("draft", "draft_forced", "lookup")
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
        self.costs = inner.costs

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        t = cpu_seconds()
        try:
            return self.inner.propose(context, k)
        finally:
            self.cpu += cpu_seconds() - t
            self.prefill_seconds = self.inner.prefill_seconds

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
        draft_ms = 1000 * (drafter.cpu - draft_cpu0)
        out["draft_cpu_ms"], out["verify_cpu_ms"] = draft_ms, 1000 * cpu - draft_ms
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


def pass_cost(native: NativeModel, tokens: list[int], n: int) -> tuple[float, float]:
    """Seconds (wall, CPU) of one decode of ``n`` tokens after ``tokens``, all with logits
    (as a verify pass asks); the KV cells are dropped again afterwards."""
    batch, pos0 = native.batch, len(tokens)
    batch.clear()
    for i in range(n):
        batch.add(tokens[i % len(tokens)], pos0 + i, 0, True)
    c0, t0 = cpu_seconds(), time.perf_counter()
    native.decode()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    native.forget(0, pos0)
    return wall, cpu


def measure_costs(target: str, draft: str, threads: int, reps: int) -> dict[str, Any]:
    """Median wall and CPU ms of a target pass of n = 1..9 tokens and a draft pass of 1."""
    load = LoadParams(n_ctx=2048)
    models = {"target": NativeModel(Path(target), load, threads)}
    models["draft"] = NativeModel(Path(draft), load, threads)
    sizes = {"target": list(range(1, 10)), "draft": [1]}
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    prompts = {}
    for name, native in models.items():
        prompts[name] = native.tokenize(chat(CODE[0]), True, True)
        native.batch.clear()
        for i, t in enumerate(prompts[name]):
            native.batch.add(t, i, 0, i == len(prompts[name]) - 1)
        native.decode()
    for rep in range(reps):  # interleaved, so that a change of load hits every size alike
        for name, native in models.items():
            for n in sizes[name] if rep % 2 else sizes[name][::-1]:
                samples.setdefault((name, n), []).append(pass_cost(native, prompts[name], n))
    for native in models.values():
        native.close()
    out: dict[str, Any] = {}
    for (name, n), got in sorted(samples.items()):
        out.setdefault(name, {})[str(n)] = {
            "wall_ms": 1000 * statistics.median(w for w, _ in got),
            "cpu_ms": 1000 * statistics.median(c for _, c in got),
        }
    return out


def expected_tokens(k: float, a: float) -> float:
    return sum(a**i for i in range(int(k) + 1)) + (k - int(k)) * a ** (int(k) + 1)


def acceptance_for(tokens_per_pass: float, k: float) -> float:
    """The per-proposal acceptance a with 1 + a + ... + a^k = tokens per pass (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(k, mid) < tokens_per_pass else (lo, mid)
    return lo


def cost_model(costs: dict[str, Any], summary: dict[str, Any], unit: str) -> dict[str, Any]:
    """The speed-up model of the forced draft and of lookup per kind, in ``unit`` costs."""
    target = {int(n): v[unit] for n, v in costs["target"].items()}
    t1, d = target[1], costs["draft"]["1"][unit]
    extra = (target[9] - t1) / 8  # the linear fit's slope: what one more token adds
    out: dict[str, Any] = {
        "t1_ms": t1,
        "extra_ms_per_token": extra,
        "draft_ms_per_token": d,
        "verify_x_one_token": {n: target[n] / t1 for n in sorted(target)},
        "draft_x_target_token": d / t1,
    }
    for kind, s in summary.items():
        for name, per_token in (("draft_forced", d), ("lookup", 0.0)):
            tpp, k = s.get(f"{name}_tokens_per_pass"), s.get(f"{name}_drafts_per_pass")
            if not tpp or not k:
                continue
            predicted = tpp * t1 / (k * per_token + t1 + extra * k)
            a = acceptance_for(tpp, k)
            model = PassCosts.pinned_to(t1, extra, per_token)
            best_k, best_gain = model.best(a, 16)
            out[f"{kind}_{name}"] = {
                "drafts_per_pass": k,
                "tokens_per_pass": tpp,
                "acceptance_per_proposal": a,
                "predicted_x_plain": predicted,
                "measured_x_plain": s.get(f"{name}_x_plain_{unit.removesuffix('_ms')}"),
                "best_k": best_k,
                "best_k_predicted_x_plain": best_gain,
            }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--chat", type=int, default=3, help="vicuna-80 questions (the first N)")
    p.add_argument("--code", type=int, default=len(CODE), help="code prompts (the first N)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--cost-reps", type=int, default=7, help="repeats of each cost measurement")
    p.add_argument("--out", default="benchmarks/results/speculative.json")
    args = p.parse_args()
    store = ModelStore()
    target = str(store.resolve(TARGET, allow_download=False).path)
    draft = str(store.resolve(DRAFT, allow_download=False).path)
    n_ctx = 2048
    load_before = os.getloadavg()
    uptime_before = _uptime()
    costs = measure_costs(target, draft, args.threads, args.cost_reps)
    print(json.dumps(costs), flush=True)
    load = LoadParams(n_ctx=n_ctx, n_threads=args.threads)
    contenders: dict[str, Any] = {
        "raw": RawLlamaCpp(target, args.threads, n_ctx),
        "plain": LlamaCppEngine(target, load),
        "draft": LlamaCppEngine(target, load.replace(draft=draft)),
        "draft_forced": LlamaCppEngine(target, load.replace(draft=draft)),
        "lookup": LlamaCppEngine(target, load.replace(lookup=True)),
    }
    for name in SPECULATING:
        engine = contenders[name]
        engine.drafter = TimedDrafter(engine.drafter)
    contenders["draft_forced"].drafter.costs = PassCosts.pinned_to(1.0, 0.0, 0.0)
    questions = [json.loads(line)["text"] for line in VICUNA.read_text().splitlines()]
    prompts = (
        [("code", chat(q)) for q in CODE[: args.code]]
        + [("chat", chat(q)) for q in questions[: args.chat]]
        + [("quote", chat(QUOTE))]
    )
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for kind, prompt in prompts:
            row: dict[str, Any] = {"round": rnd, "kind": kind, "prompt": prompt[:60]}
            for name, c in contenders.items():
                if name == "raw":
                    row[name] = run_raw(c, prompt, args.tokens)
                else:
                    row[name] = run_engine(c, prompt, args.tokens)
            same = {n: row[n]["ids"] == row["plain"]["ids"] for n in SPECULATING}
            row["same_as_plain"] = same
            for n in ("plain", *SPECULATING):
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
        "uptime_before": uptime_before,
        "uptime_after": _uptime(),
        "costs": costs,
        "model_cpu": cost_model(costs, summary, "cpu_ms"),
        "model_wall": cost_model(costs, summary, "wall_ms"),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        **{n: round(row[n]["decode_tps"], 2) for n in ("raw", "plain", *SPECULATING)},
        **{f"{n}_tpp": round(row[n].get("tokens_per_pass", 0), 2) for n in SPECULATING},
        "same": row["same_as_plain"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in runs}):
        rows = [r for r in runs if r["kind"] == kind]
        s: dict[str, Any] = {}
        for name in ("raw", "plain", *SPECULATING):
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
                s[f"{name}_x_plain_wall"] = statistics.median(
                    r[name]["decode_tps"] / r["plain"]["decode_tps"] for r in rows
                )
                s[f"{name}_x_plain_cpu"] = statistics.median(
                    r["plain"]["cpu_per_token_ms"] / r[name]["cpu_per_token_ms"] for r in rows
                )
        for name in SPECULATING:
            s[f"{name}_tokens_per_pass"] = statistics.median(
                r[name].get("tokens_per_pass", 0) for r in rows
            )
            acc = [r[name]["acceptance"] for r in rows if r[name].get("acceptance") is not None]
            s[f"{name}_acceptance"] = statistics.median(acc) if acc else None
            tokens = sum(r[name]["tokens"] for r in rows)
            drafted = sum(r[name].get("drafted", 0) for r in rows)
            passes = sum(r[name].get("passes", 0) for r in rows)
            s[f"{name}_drafts_per_pass"] = drafted / passes if passes else 0.0
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
