"""The LoRA training loop: one flat function over accelerate, for a CPU, one GPU or many.

:func:`train` reads the data, loads the base (:mod:`llm4all.hf`), wraps it in a
peft LoRA adapter and runs AdamW (or SGD) with a warm-up and a schedule under
``accelerate``: plain ``llm4all train CONFIG`` uses the CPU or the one GPU
there is; ``accelerate launch -m llm4all train CONFIG`` runs the same loop
data-parallel (DDP, or DeepSpeed/FSDP through an accelerate config).

The order of the examples is fixed by the seed and the epoch, and a run's
position is counted in optimizer steps, so ``--resume`` continues from the
newest complete checkpoint exactly where it left off (same batches, same
random state). The run folder holds:

- ``run.json``: the config and what the data gave (rows, examples, tokens);
- ``checkpoints/step-N``: see :mod:`llm4all.train.checkpoint`;
- ``loss.csv``/``loss.json``/``loss.png``: the curve, rewritten at each checkpoint;
- ``adapter/``: the final adapter (peft format) and ``result.json``, written
  last: a run without it is unfinished, and ``train export`` refuses it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm4all.errors import Llm4allError
from llm4all.train import checkpoint
from llm4all.train.config import TrainConfig
from llm4all.train.curve import write_curve
from llm4all.train.data import (
    Example,
    NoUsableRows,
    check_chat_template,
    collate,
    encode_all,
    heldout_loss,
    pad_id_of,
    read_conversations,
    split_heldout,
    token_loss_sum,
)

log = logging.getLogger(__name__)

RESULT = "result.json"


class RunExists(Llm4allError, FileExistsError):
    """The output folder already holds a run, and --resume was not given."""


@dataclass(frozen=True)
class StepReport:
    """What the progress bar shows after each optimizer step."""

    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_per_s: float
    heldout_loss: float | None = None
    message: str = ""


Reporter = Callable[[StepReport], None]


@dataclass(frozen=True)
class RunResult:
    folder: Path
    steps: int
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    tokens_per_s: float
    trained_tokens: int


def train(
    config: TrainConfig, *, resume: bool = False, report: Reporter | None = None
) -> RunResult:
    """Run (or with ``resume`` continue) the fine-tuning ``config`` describes."""
    from accelerate import Accelerator  # type: ignore[import-untyped]
    from accelerate.utils import set_seed  # type: ignore[import-untyped]

    out = Path(config.output)
    started = checkpoint.latest(out / "checkpoints")
    if not resume and (started is not None or (out / "adapter" / RESULT).exists()):
        raise RunExists(
            f"{out} already holds a run; add --resume to continue it or choose another output"
        )
    if resume and (out / "adapter" / RESULT).exists():
        raise RunExists(f"{out} is a finished run; export it with `llm4all train export {out}`")
    if not config.data:
        raise NoUsableRows('the config names no training data (data = ["file.jsonl", …])')
    accelerator = Accelerator(
        gradient_accumulation_steps=config.grad_accum, mixed_precision=config.precision
    )
    set_seed(config.seed)
    rows, problems = read_conversations(config.data, config.data_format, config.max_rows)
    if not rows:
        raise NoUsableRows(
            f"no usable rows in {', '.join(config.data)}: no conversation with a prompt and "
            f"an answer ({problems} rows could not be read; see `llm4all data curate`)"
        )
    train_rows, held_rows = split_heldout(rows, config.heldout_fraction, config.seed)

    from llm4all.hf import load_model

    model, tokenizer = load_model(config.base)
    if config.format == "chat":
        check_chat_template(tokenizer, config.base)
    options: dict[str, Any] = {
        "format": config.format,
        "mask_prompt": config.mask_prompt,
        "max_length": config.max_length,
    }
    examples = encode_all(train_rows, tokenizer, **options)
    if not examples:
        raise NoUsableRows(
            f"no usable rows in {', '.join(config.data)}: {len(rows)} conversations with an answer, "
            f"{problems} bad rows, none with an answer token within max_length={config.max_length}"
        )
    model = _with_lora(model, config)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(
        len(examples) / config.batch_size / accelerator.num_processes / config.grad_accum
    )
    total = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    scheduler = _scheduler(optimizer, config, total)
    model, optimizer = accelerator.prepare(model, optimizer)

    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "heldout_before": None}
    if resume and started is not None:
        state = checkpoint.load(
            started, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler
        )
        history = state.pop("history")
        log.info("resuming from %s", started)
    out.mkdir(parents=True, exist_ok=True)
    _write_run_info(
        out, config, rows=len(rows), problems=problems, examples=examples, heldout=len(held_rows)
    )

    def held() -> float | None:
        if not held_rows:
            return None
        return heldout_loss(
            accelerator.unwrap_model(model),
            tokenizer,
            held_rows,
            **options,
            batch_size=config.batch_size,
        )

    if state["step"] == 0 and accelerator.is_main_process:
        state["heldout_before"] = held()
        history = [{"step": 0, "heldout_loss": state["heldout_before"]}]
    loop = _Loop(accelerator, model, optimizer, scheduler, config, out, tokenizer, report)
    loop.run(examples, total, steps_per_epoch, state, history, held)

    final_held = held() if accelerator.is_main_process else None
    result = RunResult(
        folder=out,
        steps=int(state["step"]),
        heldout_loss_before=state["heldout_before"],
        heldout_loss_after=final_held,
        tokens_per_s=float(state["tokens"]) / max(float(state["elapsed_s"]), 1e-9),
        trained_tokens=int(state["tokens"]),
    )
    if accelerator.is_main_process:
        if history and history[-1]["step"] == result.steps:
            history[-1]["heldout_loss"] = final_held
        write_curve(history, out, title=f"LoRA on {config.base}")
        _save_final(accelerator.unwrap_model(model), tokenizer, out, config, result)
    accelerator.wait_for_everyone()
    return result


class _Loop:
    """The optimizer-step loop with its checkpoints (state lives in the caller's dicts)."""

    def __init__(
        self,
        accelerator: Any,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        config: TrainConfig,
        out: Path,
        tokenizer: Any,
        report: Reporter | None,
    ) -> None:
        self.acc, self.model, self.opt, self.sched = accelerator, model, optimizer, scheduler
        self.config, self.out, self.report = config, out, report
        self.pad = pad_id_of(tokenizer)

    def run(
        self,
        examples: list[Example],
        total: int,
        steps_per_epoch: int,
        state: dict[str, Any],
        history: list[dict[str, Any]],
        held: Callable[[], float | None],
    ) -> None:
        config, acc = self.config, self.acc
        self.model.train()
        per_epoch = steps_per_epoch * config.grad_accum
        batches = _micro_batches(
            examples,
            config,
            acc.num_processes,
            acc.process_index,
            per_epoch,
            start=state["step"] * config.grad_accum,
        )
        loss_sum, loss_tokens, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()
        while state["step"] < total:
            batch = {k: v.to(acc.device) for k, v in collate(next(batches), self.pad).items()}
            with acc.accumulate(self.model):
                summed, n = token_loss_sum(self.model, batch)
                acc.backward(summed / max(n, 1))
                self.opt.step()
                self.opt.zero_grad()
            loss_sum, loss_tokens = loss_sum + float(summed.detach()), loss_tokens + n
            window_tokens += int(batch["attention_mask"].sum())
            if not acc.sync_gradients:
                continue
            self.sched.step()
            elapsed = time.perf_counter() - t0
            state["step"] += 1
            state["tokens"] += window_tokens * acc.num_processes
            state["elapsed_s"] += elapsed
            point = {
                "step": state["step"],
                "loss": loss_sum / max(loss_tokens, 1),
                "lr": self.sched.get_last_lr()[0],
                "tokens": state["tokens"],
                "tokens_per_s": window_tokens * acc.num_processes / max(elapsed, 1e-9),
                "elapsed_s": round(state["elapsed_s"], 3),
            }
            if config.eval_every and state["step"] % config.eval_every == 0 and acc.is_main_process:
                point["heldout_loss"] = held()
                self.model.train()
            history.append(point)
            self._report(point, total)
            if state["step"] % config.checkpoint_every == 0 and state["step"] < total:
                self._checkpoint(state, history)
            loss_sum, loss_tokens, window_tokens, t0 = 0.0, 0, 0, time.perf_counter()

    def _report(self, point: dict[str, Any], total: int) -> None:
        if self.report is not None and self.acc.is_main_process:
            self.report(
                StepReport(
                    point["step"],
                    total,
                    point["loss"],
                    point["lr"],
                    point["tokens_per_s"],
                    point.get("heldout_loss"),
                )
            )

    def _checkpoint(self, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            checkpoint.save(
                self.out / "checkpoints",
                state["step"],
                model=self.acc.unwrap_model(self.model),
                optimizer=self.opt,
                scheduler=self.sched,
                state=state | {"history": history},
                keep=self.config.keep_checkpoints,
            )
            write_curve(history, self.out, title=f"LoRA on {self.config.base}")


def _micro_batches(
    examples: Sequence[Example],
    config: TrainConfig,
    processes: int,
    rank: int,
    per_epoch: int,
    start: int,
) -> Iterator[list[Example]]:
    """This process's micro-batches from global position ``start`` on, epoch after epoch.

    Epoch ``e`` shuffles with ``seed + e``; each process takes every
    ``processes``-th batch. The stream is the same whenever it is restarted.
    """
    import torch

    epoch, skip = divmod(start, per_epoch)
    while True:
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(config.seed + epoch)
        ).tolist()
        width = config.batch_size
        batches = [order[i : i + width] for i in range(0, len(order), width)]
        mine = batches[rank::processes]
        mine += mine[: max(0, per_epoch - len(mine))]  # every process steps as often
        for indices in mine[skip:per_epoch]:
            yield [examples[i] for i in indices]
        epoch, skip = epoch + 1, 0


def _with_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: Any = config.lora_targets
    if targets == ["all-linear"]:
        targets = "all-linear"
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        from llm4all.train.config import ConfigError

        raise ConfigError(f"lora_targets: {str(exc).splitlines()[0]}", key="lora_targets") from None


def _optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _scheduler(optimizer: Any, config: TrainConfig, total: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        config.lr_schedule,
        optimizer,
        num_warmup_steps=min(config.warmup_steps, total),
        num_training_steps=total,
    )


def _write_run_info(
    out: Path,
    config: TrainConfig,
    *,
    rows: int,
    problems: int,
    examples: list[Example],
    heldout: int,
) -> None:
    info = {
        "config": config.to_dict(),
        "rows": rows,
        "bad_rows": problems,
        "heldout_rows": heldout,
        "train_examples": len(examples),
        "train_tokens_per_epoch": sum(len(e.input_ids) for e in examples),
        "answer_tokens_per_epoch": sum(e.trained_tokens for e in examples),
    }
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n", "utf-8")


def _save_final(
    model: Any, tokenizer: Any, out: Path, config: TrainConfig, result: RunResult
) -> None:
    """The finished adapter; ``result.json`` last, which marks the run finished."""
    import datetime as dt

    adapter = out / "adapter"
    model.save_pretrained(adapter)
    template = getattr(tokenizer, "chat_template", None)
    done = {
        "base": config.base,
        "data": config.data,
        "steps": result.steps,
        "heldout_loss_before": result.heldout_loss_before,
        "heldout_loss_after": result.heldout_loss_after,
        "tokens_per_s": result.tokens_per_s,
        "trained_tokens": result.trained_tokens,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "chat_template": template if isinstance(template, str) else None,
    }
    (adapter / RESULT).write_text(json.dumps(done, indent=1) + "\n", "utf-8")
