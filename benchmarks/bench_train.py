"""LoRA fine-tuning on the CPU: training tokens/s and peak RSS of ``llm4all train``.

Each setting is one real ``llm4all train CONFIG`` in a fresh process on the
curated self-instruct seed tasks (``../shared/data/train``), with the base
model of the docs' demonstration (SmolLM2-135M-Instruct unless ``--model``).
Tokens/s is every token of the batches (prompt and answer; padding excluded)
over the optimizer steps' time, without the first step (warm-up, allocation)
or the model load; peak RSS is the process's own (``wait4``), load included.
The machine's load average is recorded with each figure: on a shared machine
the absolute numbers move with it.

Example: ``python benchmarks/bench_train.py --quick``
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

NAME = "train"
SEED_TASKS = h.REPO.parent / "shared" / "data" / "train" / "self_instruct_seed_tasks.jsonl"
#: (max_length, batch_size, LoRA targets): the demonstration's setting first.
SETTINGS = [
    (256, 4, "q_proj,k_proj,v_proj,o_proj"),
    (128, 4, "q_proj,k_proj,v_proj,o_proj"),
    (256, 4, "all-linear"),
    (512, 2, "q_proj,k_proj,v_proj,o_proj"),
]


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=1)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per setting")
    args = p.parse_args()
    model = h.resolve_model(args.model or h.FAST_MODEL, args.quick)
    settings = SETTINGS[:1] if args.quick else SETTINGS
    steps = 3 if args.quick else args.steps
    h.note(f"{NAME}: {model.name}, {steps} steps per setting, load {h.load_average()}")
    rows = []
    results = []
    for max_length, batch, targets in settings:
        for _ in range(args.rounds):
            r = one_run(model, max_length, batch, targets, steps)
            results.append(r)
            rows.append(
                [
                    f"{max_length} tok x {batch}, {targets}",
                    f"{r['tokens_per_s']:.0f}",
                    f"{r['peak_rss_mb']:.0f}",
                    f"{r['step_s']:.1f}",
                    f"{r['load_before']:.1f}-{r['load_after']:.1f}",
                ]
            )
            h.note(" | ".join(rows[-1]))
            # Written after every run: on a loaded machine a long sweep may be cut short.
            payload = {"machine": h.machine_info(), "model": model.name, "steps": steps}
            h.write_json(NAME, args.quick, payload | {"runs": results})
    h.print_table(
        "LoRA training on the CPU (llm4all train)",
        ["max length x batch, targets", "tokens/s", "peak RSS MB", "s/step", "load"],
        rows,
    )


def one_run(model: Path, max_length: int, batch: int, targets: str, steps: int) -> dict[str, Any]:
    """One ``llm4all train`` process; its figures from the run's loss.json."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = {
            "base": str(model),
            "data": [str(SEED_TASKS)],
            "max_length": max_length,
            "batch_size": batch,
            "grad_accum": 1,
            "lora_targets": targets.split(",") if "," in targets else [targets],
            "max_steps": steps,
            "checkpoint_every": steps + 1,
            "heldout_fraction": 0.0,
            "output": str(folder / "run"),
        }
        (folder / "run.toml").write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
        )
        load_before = h.load_average()
        cmd = [h.sys.executable, "-m", "llm4all", "train", str(folder / "run.toml")]
        proc = h.spawn(cmd, timeout=3600)
        if proc.rc != 0:
            raise SystemExit(f"llm4all train failed ({proc.rc}): {proc.stderr.strip()[-300:]}")
        curve = json.loads((folder / "run" / "loss.json").read_text())
    timed = [p for p in curve if p.get("step", 0) >= 2 and "tokens" in p]
    first = next(p for p in curve if p.get("step") == 1)
    tokens = timed[-1]["tokens"] - first["tokens"]
    seconds = timed[-1]["elapsed_s"] - first["elapsed_s"]
    return {
        "max_length": max_length,
        "batch_size": batch,
        "targets": targets,
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / len(timed),
        "peak_rss_mb": round(proc.peak_rss_mb, 1),
        "wall_s": round(proc.wall_s, 1),
        "final_loss": timed[-1]["loss"],
        "load_before": load_before,
        "load_after": h.load_average(),
    }


if __name__ == "__main__":
    main()
