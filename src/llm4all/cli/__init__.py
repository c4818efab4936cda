"""The ``llm4all`` command: one entry point, subcommands grouped by concern.

Errors are translated here, at the CLI edge, into a one-line message on
stderr and a non-zero exit code; ``--debug`` shows the traceback instead.
Command modules are imported only when their command runs, so that
``llm4all run`` does not pay for the server, LocalDocs or the web UI.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from llm4all.cli._common import quiet_native_logs, run_guarded

#: command name -> (module, attribute); the order is the order of ``--help``.
COMMANDS = {
    "run": ("llm4all.cli.run", "run_command"),
    "chat": ("llm4all.cli.chat", "chat_command"),
    "models": ("llm4all.cli.models", "models_group"),
    "chats": ("llm4all.cli.chats", "chats_group"),
    "docs": ("llm4all.cli.docs", "docs_group"),
    "serve": ("llm4all.cli.serve", "serve_command"),
    "ui": ("llm4all.cli.ui", "ui_command"),
    "data": ("llm4all.cli.data", "data_group"),
    "train": ("llm4all.cli.train", "train_command"),
    "eval": ("llm4all.cli.evaluate", "eval_group"),
    "share": ("llm4all.cli.share", "share_group"),
    "datalake": ("llm4all.cli.datalake", "datalake_group"),
    "mcp": ("llm4all.cli.mcp", "mcp_command"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use.

    ``lazy_commands`` maps a name to (module, attribute); a subgroup built with
    ``click.group(cls=LazyGroup, lazy_commands={...})`` works the same way.
    """

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = COMMANDS if lazy_commands is None else lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy_commands, *(n for n in self.commands if n not in self.lazy_commands)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy_commands:
            return super().get_command(ctx, name)
        module, attr = self.lazy_commands[name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llm4all")
@click.option("--debug", is_flag=True, help="Show tracebacks and native llama.cpp logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """llm4all: a private assistant that runs on your own computer."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_native_logs(debug)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_guarded(cli, debug="--debug" in sys.argv))
