"""Helpers shared by the CLI commands: the error edge and the console."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from llm4all.errors import Llm4allError

#: Messages and progress go to stderr so that stdout carries only answers.
err_console = Console(stderr=True)


def run_guarded(cli: click.Group, debug: bool) -> int:
    """Run the click group and turn every failure into one line on stderr."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Llm4allError as exc:
        if debug:
            raise
        _fail(str(exc))
        return 1
    except OSError as exc:
        if debug:
            raise
        _fail(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc))
        return 1
    return 0


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def load_model(name: str | None, load: dict[str, Any] | None = None) -> Any:
    """Resolve (pulling with a progress bar if needed) and load a model."""
    from llm4all.api import Model
    from llm4all.cli.progress import RichProgress

    with RichProgress(err_console) as progress:
        return Model(name, progress=progress, **(load or {}))


def quiet_native_logs(debug: bool) -> None:
    """llama.cpp is chatty at load time; show its log only with --debug."""
    import logging

    logging.getLogger("llm4all.llama_cpp").setLevel(logging.DEBUG if debug else logging.ERROR)
