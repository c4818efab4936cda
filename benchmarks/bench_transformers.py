"""transformers backend vs llama.cpp on the same model on the CPU: decode tok/s, first token, RSS.

Each (model, backend) runs in a fresh process (``spawn``, so the peak RSS is
that process's own, load included): load the model (the transformers backend
from the Hugging Face folder :mod:`llm4all.hf` dequantized once from the
GGUF, float32 on the CPU; llama.cpp from the GGUF itself), one warm-up
answer, then ``--rounds`` greedy answers of ``--tokens`` tokens to a fixed chat
prompt. Time to first token (the whole prompt evaluated: llama.cpp's KV slot is
reset first) and decode tokens/s come from the engines' own ``Timings``; the table gives medians and the transformers/llama.cpp ratio.
Run it twice after a new model: the first run's transformers load includes
dequantizing the GGUF (once, then cached). The machine's load average is recorded: on a shared machine absolute figures
move with it, the ratio much less.

Example: ``python benchmarks/bench_transformers.py --quick``
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import _harness as h

NAME = "transformers"
PROMPT = "Explain in a short paragraph why the sky is blue."
BACKENDS = ("llamacpp", "transformers")


def child(backend: str, model: str, n_ctx: int, threads: int, tokens: int, rounds: int) -> None:
    """One backend in this process: prints one JSON line of figures."""
    import torch

    from llm4all.engine import ModelRef, collect, load_engine
    from llm4all.params import GenerationParams, LoadParams

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if backend == "transformers":
        from llm4all import hf
        from llm4all.engine.transformers import TransformersOptions

        folder = hf.resolve(model).folder  # cached after the first run
        engine = load_engine(
            ModelRef.file(folder), TransformersOptions(n_ctx=n_ctx, device="cpu"), backend
        )
    else:
        engine = load_engine(
            ModelRef.file(model), LoadParams(n_ctx=n_ctx, n_threads=threads), backend
        )
    load_s = time.perf_counter() - t0
    # Both models use ChatML; the same text, tokenized by each engine (the same vocabulary).
    prompt = engine.tokenize(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n")
    params = GenerationParams(temperature=0, max_tokens=tokens, repeat_penalty=1.0)
    collect(engine.generate(prompt, params.replace(max_tokens=4)))  # warm-up
    runs = []
    for _ in range(rounds):
        engine.reset()  # no prefix reuse: both backends evaluate the whole prompt
        done = collect(engine.generate(prompt, params))
        runs.append(
            {
                "ttft_s": done.timings.time_to_first_token,
                "decode_tps": done.timings.tokens_per_second,
                "prompt_tokens": done.usage.prompt_tokens,
                "completion_tokens": done.usage.completion_tokens,
            }
        )
    engine.close()
    print(json.dumps({"load_s": load_s, "runs": runs}))


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    p.add_argument("--child", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.ctx, args.threads, args.tokens, args.rounds)
        return
    models = (
        [args.model]
        if args.model
        else [h.FAST_MODEL]
        if args.quick
        else [h.FAST_MODEL, h.DEFAULT_MODEL]
    )
    rounds = 1 if args.quick else args.rounds
    results: dict[str, Any] = {}
    rows = []
    for name in models:
        path = h.resolve_model(name, args.quick)
        per: dict[str, Any] = {}
        for backend in BACKENDS:
            load = h.load_average()
            cmd = [
                sys.executable,
                __file__,
                "--child",
                backend,
                str(path),
                "--ctx",
                str(args.ctx),
                "--threads",
                str(args.threads),
                "--tokens",
                str(args.tokens),
                "--rounds",
                str(rounds),
            ]
            h.note(f"{name}: {backend} (load {load})…")
            proc = h.spawn(cmd, timeout=1800)
            if proc.rc != 0:
                per[backend] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            per[backend] = {
                "load_s": round(data["load_s"], 2),
                "ttft_s": round(statistics.median(r["ttft_s"] for r in data["runs"]), 3),
                "decode_tps": round(statistics.median(r["decode_tps"] for r in data["runs"]), 2),
                "peak_rss_mb": round(proc.peak_rss_mb, 1),
                "load_average": [load, h.load_average()],
                "runs": data["runs"],
            }
        results[name] = per
        a, b = per.get("llamacpp", {}), per.get("transformers", {})
        if "decode_tps" in a and "decode_tps" in b:
            for key, label in (
                ("decode_tps", "decode tok/s"),
                ("ttft_s", "first token s"),
                ("peak_rss_mb", "peak RSS MB"),
                ("load_s", "load s"),
            ):
                rows.append([name, label, f"{a[key]:g}", f"{b[key]:g}", f"{b[key] / a[key]:.2f}x"])
    h.print_table(
        f"transformers vs llama.cpp, CPU, {args.threads} threads, {args.tokens} tokens greedy",
        ["model", "figure", "llama.cpp", "transformers", "ratio"],
        rows,
    )
    h.write_json(
        NAME,
        args.quick,
        {
            "machine": h.machine_info(),
            "threads": args.threads,
            "tokens": args.tokens,
            "rounds": rounds,
            "prompt": PROMPT,
            "results": results,
        },
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
