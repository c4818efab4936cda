"""MCP tools in the terminal: the flags, the servers started once, every call shown and asked.

``llm4all chat``, ``llm4all run`` and ``llm4all mcp ask`` share this:

- :func:`mcp_options` adds ``--mcp PATH``, ``--no-tools``, ``--server NAME``
  and ``--yes``;
- :func:`open_tools` starts the servers of the configuration (the default
  ``$LLM4ALL_HOME/mcp.toml``/``mcp.json`` when it exists): a server that
  fails is one line on stderr and the rest go on;
- :class:`ToolConsole` shows each call as it happens
  (``tool weather.get_forecast(city='Oslo')``), asks ``Run …? [y/N]`` before
  a ``confirm`` tool runs, and shows the result, shortened;
- :class:`LiveText` streams the answer's text between those lines.

Everything is written to stderr, so ``run``'s stdout stays the answer alone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from llm4all.cli._common import err_console
from llm4all.errors import Llm4allError

if TYPE_CHECKING:
    from llm4all.mcp.client import McpTools
    from llm4all.mcp.loop import ToolCall

F = TypeVar("F", bound=Callable[..., Any])

#: How much of a tool's result is shown (the model gets all of it).
SHOWN_RESULT = 200


def mcp_options(func: F) -> F:
    """Add ``--mcp``, ``--no-tools``, ``--server`` and ``--yes`` (popped by :func:`tool_flags`)."""
    options = [
        click.option(
            "--mcp",
            "mcp_config",
            type=click.Path(path_type=Path),
            metavar="PATH",
            help="MCP servers' configuration (default: $LLM4ALL_HOME/mcp.toml, or mcp.json, "
            "when it exists); their tools are offered to the model.",
        ),
        click.option("--no-tools", "mcp_no_tools", is_flag=True, help="Offer no MCP tools."),
        click.option(
            "--server",
            "mcp_servers",
            multiple=True,
            metavar="NAME",
            help="Only this MCP server's tools (repeatable).",
        ),
        click.option(
            "--yes",
            "mcp_yes",
            is_flag=True,
            help="Run 'confirm' MCP tools without asking ('deny' ones never run).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def tool_flags(kwargs: dict[str, Any]) -> tuple[Path | None, bool, tuple[str, ...], bool]:
    """Pop the MCP flags: ``(config path, no tools, servers, yes)``."""
    return (
        kwargs.pop("mcp_config"),
        kwargs.pop("mcp_no_tools"),
        kwargs.pop("mcp_servers"),
        kwargs.pop("mcp_yes"),
    )


def open_tools(config_path: Path | None, servers: tuple[str, ...] = ()) -> McpTools | None:
    """The configured servers, started; None when there are none (or none could start).

    A configuration given with ``--mcp`` must work (its errors end the command);
    the default one, or the ``mcp`` package missing, is a warning: the command
    goes on without tools. Each server that fails is one line.
    """
    from llm4all.mcp.config import load_config

    try:
        config = load_config(config_path)
    except Llm4allError as exc:
        if config_path is not None:
            raise
        warn(f"{exc}; going on without MCP tools")
        return None
    if not config.servers:
        if servers:
            raise click.UsageError(f"--server: no MCP servers configured ({config.path})")
        return None
    from importlib.util import find_spec

    from llm4all.mcp.client import McpTools

    if find_spec("mcp") is None:
        from llm4all.cli._common import missing_module

        if config_path is not None or servers:
            raise Llm4allError(missing_module("mcp", "MCP tools"))
        warn(f"{config.path} lists MCP servers, but {missing_module('mcp', 'MCP tools')}")
        return None
    tools = McpTools(config, servers=list(servers) or None, skip_failed=True)
    for why in tools.failed.values():
        warn(f"{why}; going on without it")
    return tools


def warn(text: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", text), soft_wrap=True)


class ToolConsole:
    """Shows the tool loop on stderr and asks before a ``confirm`` tool runs.

    ``ask``: whether the user can be asked (a terminal, or chat input piped
    line by line); without it a ``confirm`` call is not run and the model is
    told. ``yes``: run ``confirm`` tools without asking. ``before``: called
    before anything is shown (the chat ends its live view of the answer there).
    """

    def __init__(self, *, ask: bool, yes: bool, before: Callable[[], None] | None = None) -> None:
        self.ask, self.yes, self.before = ask, yes, before

    def started(self, call: ToolCall) -> None:
        if self.before is not None:
            self.before()
        err_console.print(Text.assemble(("tool", "bold"), " ", call.line()), soft_wrap=True)

    def consent(self, call: ToolCall) -> bool:
        if self.yes:
            return True
        if not self.ask:
            warn(f"{call.line()} not run: no terminal to ask on (--yes runs 'confirm' tools)")
            return False
        err_console.print(Text(f"Run {call.line()}? [y/N] "), end="", soft_wrap=True)
        reply = sys.stdin.readline()  # "" at the end of input: no
        if not reply.endswith("\n"):
            err_console.print()
        return reply.strip().lower() in ("y", "yes")

    def done(self, call: ToolCall) -> None:
        if call.ran:
            err_console.print(Text(f"  → {shorten(call.result)}", style="dim"), soft_wrap=True)
        else:
            why = "denied" if call.permission == "deny" else "declined"
            err_console.print(Text(f"  not run ({why})", style="dim"), soft_wrap=True)


def shorten(text: str, limit: int = SHOWN_RESULT) -> str:
    """``text`` on one line, cut to ``limit`` characters. Example: ``shorten("a\\nb") == "a b"``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def call_line(call: dict[str, Any]) -> str:
    """``get_weather(city='Oslo')`` for a call in OpenAI's shape (arguments a dict or JSON)."""
    function = call.get("function", {})
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return f"{function.get('name')}({args})"
    listed = ", ".join(f"{k}={v!r}" for k, v in args.items()) if isinstance(args, dict) else ""
    return f"{function.get('name')}({listed})"


class LiveText:
    """The streamed text of a tool-loop answer, shown in pieces between the calls' lines."""

    def __init__(self, out: Console, markdown: bool) -> None:
        self.out, self.markdown = out, markdown
        self.live: Live | None = None
        self.shown = ""

    def add(self, piece: str) -> None:
        self.shown += piece
        if not self.markdown:
            self.out.out(piece, end="")
            return
        if self.live is None:
            self.live = Live(
                Markdown(""), console=self.out, refresh_per_second=12, vertical_overflow="visible"
            )
            self.live.start()
        self.live.update(Markdown(self.shown))

    def end(self) -> None:
        """Finish the text shown so far (before a call's line, and at the end)."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.shown and not self.markdown:
            self.out.out("")
        self.shown = ""


def describe_tools(tools: McpTools | None) -> list[str]:
    """One line per tool (``server.name  permission  description``), or why there are none."""
    if tools is None:
        return ["no MCP tools (none configured, or --no-tools)"]
    lines = [
        f"{t.server}.{t.name}  {t.permission}  "
        + (t.description.splitlines()[0] if t.description else "")
        for t in tools.tools
    ]
    lines += [f"{name}: not started ({why})" for name, why in tools.failed.items()]
    return lines or ["the MCP servers offer no tools"]
