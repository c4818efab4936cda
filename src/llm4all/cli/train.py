"""``llm4all train``: fine-tune a model with LoRA, and export it as a GGUF the chat loads.

``llm4all train CONFIG`` runs the config (``--resume`` continues it from its
newest checkpoint), ``llm4all train --print-config`` writes a commented config
with every key, and ``llm4all train export RUN`` merges a finished run into a
GGUF in the model store. The progress bar (loss, tokens/s) goes to stderr.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import err_console


class _TrainGroup(click.Group):
    """``train CONFIG`` and ``train export RUN``: a first word that is no subcommand is a config."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[CONFIG] [--resume] [--print-config] | export RUN")


@click.group(name="train", cls=_TrainGroup)
def train_command() -> None:
    """Fine-tune a model with LoRA, and export it as a GGUF the chat loads.

    \b
    llm4all train --print-config > run.toml   # every key, commented
    llm4all train run.toml                    # train (Ctrl-C or a crash: add --resume)
    llm4all train export runs/lora            # merge, GGUF, Q4_K_M, add to the models

    Options of a run (--resume, --max-steps, -o): llm4all train CONFIG --help.
    Many GPUs: accelerate launch -m llm4all train run.toml
    """


@train_command.command("start", hidden=True)
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue the run from its newest checkpoint.")
@click.option(
    "--print-config", is_flag=True, help="Print a commented config with every key and exit."
)
@click.option("--max-steps", type=int, help="Override the config's max_steps.")
@click.option("-o", "--output", help="Override the config's output folder.")
def start_command(
    config: Path | None, resume: bool, print_config: bool, max_steps: int | None, output: str | None
) -> None:
    """Train the LoRA run CONFIG describes (TOML or YAML)."""
    from llm4all.train.config import config_template, load_config

    if print_config:
        click.echo(config_template(), nl=False)
        return
    if config is None:
        raise click.UsageError("give a CONFIG file (llm4all train --print-config writes one)")
    overrides: dict[str, Any] = {}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if output is not None:
        overrides["output"] = output
    cfg = load_config(config, **overrides)
    _quiet_transformers()
    from llm4all.train.trainer import train

    with _StepBar() as bar:
        result = train(cfg, resume=resume, report=bar.update)
    before, after = result.heldout_loss_before, result.heldout_loss_after
    err_console.print(
        f"{result.steps} steps, {result.trained_tokens} tokens at {result.tokens_per_s:.0f} tokens/s; "
        f"held-out loss {_fmt(before)} -> {_fmt(after)} (perplexity {_ppl(before)} -> {_ppl(after)})",
        highlight=False,
    )
    err_console.print(
        f"run: {result.folder} · next: llm4all train export {result.folder}", highlight=False
    )


@train_command.command("export")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--outtype",
    type=click.Choice(["f16", "q8_0"], case_sensitive=False),
    default="f16",
    show_default=True,
    help="Type of the merged GGUF written with the gguf package.",
)
@click.option(
    "--quantize",
    "quant",
    default="Q4_K_M",
    show_default=True,
    help="Then quantize with llama.cpp's quantizer (Q4_K_M, Q5_K_M, Q8_0…; 'none' to skip).",
)
@click.option(
    "--name", help="Model name in the store (default: the config's name or the run folder's)."
)
@click.option(
    "--no-register", is_flag=True, help="Write the files only; don't add them to the models."
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Measure top-1 agreement with transformers on held-out texts.",
)
def export_command(
    run: Path, outtype: str, quant: str, name: str | None, no_register: bool, check: bool
) -> None:
    """Merge RUN's adapter into its base and write GGUF files (merged and adapter-only).

    The merged model is registered in the model store, so `llm4all chat -m NAME`
    works; the adapter GGUF applies to the base at load: `llm4all run -m BASE --lora FILE`.
    """
    _quiet_transformers()
    from llm4all.train.export import export_run

    quantize = None if quant.lower() == "none" else quant.upper()
    exported = export_run(
        run,
        outtype=outtype.lower(),
        quantize=quantize,
        name=name,
        register=not no_register,
        check=check,
        progress=lambda text: err_console.print(text, highlight=False, markup=False),
    )
    for line in exported.summary():
        click.echo(line)


class _StepBar:
    """A rich progress bar of optimizer steps with the loss and tokens/s."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} · {task.fields[speed]} tok/s{task.fields[held]}"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self._task: Any = None

    def __enter__(self) -> _StepBar:
        return self  # the bar starts with the first step, so an early error is one clean line

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._bar.stop()

    def update(self, report: Any) -> None:
        held = f" · held-out {report.heldout_loss:.3f}" if report.heldout_loss is not None else ""
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(
                "train", total=report.total_steps, loss="", speed="", held=""
            )
        self._bar.update(
            self._task,
            completed=report.step,
            loss=f"{report.loss:.3f}",
            speed=f"{report.tokens_per_s:.0f}",
            held=held,
        )


def _fmt(loss: float | None) -> str:
    return "n/a" if loss is None or math.isnan(loss) else f"{loss:.3f}"


def _ppl(loss: float | None) -> str:
    return "n/a" if loss is None or math.isnan(loss) else f"{math.exp(loss):.2f}"


def _quiet_transformers() -> None:
    """transformers' own progress bars and advice would drown the one bar shown."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
