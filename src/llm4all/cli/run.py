"""``llm4all run``: one prompt, one streamed answer on stdout.

Only the answer goes to stdout (so it pipes cleanly); progress, statistics
and errors go to stderr. Ctrl-C stops the answer and exits with code 130.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llm4all.api import merge_params
from llm4all.cli._common import err_console, load_model
from llm4all.cli.docs import docs_option, print_sources
from llm4all.cli.options import (
    backend_options,
    backend_overrides,
    generation_options,
    generation_overrides,
    load_options,
    load_overrides,
)
from llm4all.params import GenerationParams


@click.command("run")
@click.argument("prompt", required=False)
@click.option(
    "-m",
    "--model",
    "model_name",
    help="Model name, file name or path (default: the default model).",
)
@click.option("-s", "--system", help="System prompt.")
@click.option(
    "--raw",
    is_flag=True,
    help="Plain completion: no chat template (always so for a base model).",
)
@click.option(
    "--lora",
    type=click.Path(exists=True),
    help="Apply a LoRA adapter at load: a GGUF (from `llm4all train export`) for llama.cpp, "
    "a PEFT adapter folder for --backend transformers.",
)
@click.option("--stats", is_flag=True, help="Print tokens/s and token counts to stderr.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (text, usage, timings) instead of streaming.",
)
@docs_option
@generation_options
@load_options
@backend_options
@click.pass_context
def run_command(
    ctx: click.Context,
    /,
    prompt: str | None,
    model_name: str | None,
    system: str | None,
    raw: bool,
    lora: str | None,
    stats: bool,
    as_json: bool,
    collections: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Answer PROMPT (or standard input) and exit.

    Example: llm4all run "Write a haiku about autumn" --temp 0.2

    A base model (see `llm4all models info`) completes PROMPT as given.
    """
    params = generation_overrides(kwargs)
    load = load_overrides(kwargs)
    if lora is not None:
        load["lora"] = lora
    merge_params(GenerationParams(), params)  # a bad value fails before the model loads
    backend, backend_load = backend_overrides(kwargs, load)
    if prompt is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT or pipe one on standard input")
        prompt = sys.stdin.read()
    model = load_model(model_name, load, backend, backend_load)
    response = model.stream(
        prompt, raw=raw, system_prompt=system, collections=collections, **params
    )
    if as_json:
        text = response.text()
        out = {"model": model.name, "text": text, **response.stats.as_dict()}
        if collections:
            out["sources"] = response.sources
        click.echo(json.dumps(out, ensure_ascii=False))
        return
    try:
        for piece in response:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        ctx.exit(130)
    sys.stdout.write("\n")
    print_sources(response.sources)
    if stats and response.completion is not None:
        err_console.print(  # one line, for scripts that read it
            response.stats.line() + _where(model.info.device),
            style="dim",
            markup=False,
            soft_wrap=True,
        )


def _where(device: str) -> str:
    """``, on CUDA (24/24 layers)`` or ``, on remote http://…``; nothing for the CPU."""
    from rich.markup import escape

    return "" if device == "cpu" else f", on {escape(device)}"
