"""The ``llm4all`` command: one entry point, subcommands grouped by concern.

Errors are translated here, at the CLI edge, into a one-line message on
stderr and a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys

import click

from llm4all.cli._common import quiet_native_logs, run_guarded
from llm4all.cli.chat import chat_command
from llm4all.cli.chats import chats_group
from llm4all.cli.docs import docs_group
from llm4all.cli.models import models_group
from llm4all.cli.run import run_command
from llm4all.cli.serve import serve_command
from llm4all.cli.ui import ui_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


cli.add_command(run_command)
cli.add_command(chat_command)
cli.add_command(models_group)
cli.add_command(chats_group)
cli.add_command(docs_group)
cli.add_command(serve_command)
cli.add_command(ui_command)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_guarded(cli, debug="--debug" in sys.argv))
