"""``llm4all run``: one prompt, one streamed answer on stdout.

Only the answer goes to stdout (so it pipes cleanly); progress, statistics,
tool calls and errors go to stderr. Ctrl-C stops the answer and exits with
code 130. With MCP servers configured (``$LLM4ALL_HOME/mcp.toml`` or
``--mcp``), their tools are offered and the tool loop runs (see
:mod:`llm4all.cli.mcp_tools`): a ``confirm`` tool is asked about on the
terminal, and without one (stdin piped) it is not run unless ``--yes``.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import click

from llm4all.api import merge_params
from llm4all.cli._common import err_console, load_model
from llm4all.cli.docs import docs_option, print_sources
from llm4all.cli.mcp_tools import ToolConsole, mcp_options, open_tools, tool_flags
from llm4all.cli.options import (
    backend_options,
    backend_overrides,
    generation_options,
    generation_overrides,
    load_options,
    load_overrides,
    lora_option,
)
from llm4all.params import GenerationParams

if TYPE_CHECKING:
    from llm4all.api import Model, Response
    from llm4all.mcp.client import McpTools


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
@lora_option
@click.option("--stats", is_flag=True, help="Print tokens/s and token counts to stderr.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (text, usage, timings) instead of streaming.",
)
@docs_option
@mcp_options
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
    mcp_config, no_tools, servers, yes = tool_flags(kwargs)
    merge_params(GenerationParams(), params)  # a bad value fails before the model loads
    backend, backend_load = backend_overrides(kwargs, load)
    if prompt is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT or pipe one on standard input")
        prompt = sys.stdin.read()
    model = load_model(model_name, load, backend, backend_load)
    with ExitStack() as stack:
        tools = None
        if not (no_tools or raw or not model.has_chat_template):
            tools = open_tools(mcp_config, servers)
            if tools is not None:
                stack.callback(tools.close)
        if tools is not None and tools.specs():
            merged = merge_params(model.params, params)
            final = _answer_with_tools(
                ctx, model, prompt, system, tools, merged, collections, yes, as_json
            )
        else:
            final = model.stream(
                prompt, raw=raw, system_prompt=system, collections=collections, **params
            )
            if as_json:
                _print_json(model, final, collections)
                return
            _print_stream(ctx, final)
    if final is not None:
        _finish(final, stats, model)


def _print_json(model: Model, response: Response, collections: tuple[str, ...]) -> None:
    text = response.text()
    out = {"model": model.name, "text": text, **response.stats.as_dict()}
    if collections:
        out["sources"] = response.sources
    click.echo(json.dumps(out, ensure_ascii=False))


def _print_stream(ctx: click.Context, response: Response) -> None:
    try:
        for piece in response:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        ctx.exit(130)
    sys.stdout.write("\n")


def _finish(response: Response, stats: bool, model: Model) -> None:
    print_sources(response.sources)
    if stats and response.completion is not None:
        err_console.print(  # one line, for scripts that read it
            response.stats.line() + _where(model.info.device),
            style="dim",
            markup=False,
            soft_wrap=True,
        )


def _answer_with_tools(
    ctx: click.Context,
    model: Model,
    prompt: str,
    system: str | None,
    tools: McpTools,
    params: GenerationParams,
    collections: tuple[str, ...],
    yes: bool,
    as_json: bool,
) -> Response | None:
    """The tool loop: calls shown on stderr as they happen, the final answer streamed to stdout.

    The last model turn, for the statistics (None with ``--json``: all printed).
    """
    from llm4all.chat.template import Message
    from llm4all.mcp.loop import answer_with_tools

    messages = [Message("user", prompt)]
    chosen = model.system_prompt_for(system)
    if chosen:
        messages.insert(0, Message("system", chosen))
    shown = ToolConsole(ask=sys.stdin.isatty(), yes=yes)

    def token(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        result = answer_with_tools(
            model,
            messages,
            tools,
            consent=shown.consent,
            on_start=shown.started,
            on_call=shown.done,
            params=params,
            on_token=None if as_json else token,
            collections=collections,
        )
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        ctx.exit(130)
    if as_json:
        assert result.response is not None
        out = {"model": model.name, "text": result.text, **result.response.stats.as_dict()}
        out["tool_calls"] = [
            {"server": c.server, "name": c.name, "arguments": c.arguments, "ran": c.ran}
            | {"result": c.result}
            for c in result.calls
        ]
        if collections:
            out["sources"] = result.response.sources
        click.echo(json.dumps(out, ensure_ascii=False))
        return None
    sys.stdout.write("\n")
    return result.response


def _where(device: str) -> str:
    """``, on CUDA (24/24 layers)`` or ``, on remote http://…``; nothing for the CPU."""
    from rich.markup import escape

    return "" if device == "cpu" else f", on {escape(device)}"
