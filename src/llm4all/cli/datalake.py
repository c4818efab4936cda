"""``llm4all datalake``: the datalake service that receives shared chats, and its admin commands.

``serve`` runs the HTTP service (:mod:`llm4all.datalake.service`); ``stats``,
``export`` and ``delete`` work on its database directly (SQLite file or
``postgresql://`` URL), so an operator needs no token on the machine that
holds the data.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from llm4all import paths
from llm4all.cli._common import echo_json, err_console

FORMATS = ("jsonl", "parquet")


def default_database() -> str:
    """``datalake.db`` in the llm4all home folder."""
    return str(paths.home() / "datalake.db")


database_option = click.option(
    "--database",
    "-d",
    envvar="LLM4ALL_DATALAKE_DATABASE",
    metavar="PATH|URL",
    help="A SQLite file (default: datalake.db in the llm4all home) or a postgresql:// URL "
    "(env LLM4ALL_DATALAKE_DATABASE).",
)


def _open(database: str | None):  # type: ignore[no-untyped-def]
    from llm4all.datalake.storage import Storage

    return Storage.open(database or default_database())


@click.group(name="datalake")
def datalake_group() -> None:
    """The datalake service that receives shared chats."""


@datalake_group.command("serve")
@database_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=4895, show_default=True, help="Port.")
@click.option(
    "--admin-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the admin token (or set LLM4ALL_DATALAKE_ADMIN_TOKEN); "
    "without one the admin API is off.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Submissions per minute a submitter may make once its burst is spent.",
)
@click.option(
    "--burst", type=click.IntRange(min=1), default=30, show_default=True, help="Burst size."
)
def serve_command(
    database: str | None,
    host: str,
    port: int,
    admin_token_file: Path | None,
    rate: float,
    burst: int,
) -> None:
    """Run the ingest service (POST /v1/ingest/chat) until interrupted."""
    from llm4all.datalake.service import TOKEN_ENV, ServiceSettings, serve

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if admin_token_file is not None:
        token = admin_token_file.read_text(encoding="utf-8").strip() or None
        if token is None:
            raise click.UsageError(f"{admin_token_file} is empty")
    settings = ServiceSettings(
        database=database or default_database(),
        host=host,
        port=port,
        admin_token=token,
        rate_per_minute=rate,
        burst=burst,
    )
    admin = "on" if token else f"off (set {TOKEN_ENV} or --admin-token-file)"
    err_console.print(
        f"datalake on http://{host}:{port}/v1/ingest/chat · database {settings.database} · "
        f"admin API {admin}",
        markup=False,
        highlight=False,
    )
    serve(settings)


@datalake_group.command("stats")
@database_option
def stats_command(database: str | None) -> None:
    """Counts of what the datalake holds, as JSON."""
    storage = _open(database)
    try:
        echo_json(storage.stats())
    finally:
        storage.close()


@datalake_group.command("export")
@database_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write (JSONL: default stdout; Parquet needs a file).",
)
@click.option(
    "--only-positive",
    is_flag=True,
    help="Only chats with a positively rated answer and no negative one, cut after the "
    "last positive answer.",
)
@click.option(
    "--edited-as-better",
    is_flag=True,
    help="An edited answer replaces the original as the response (kept as original_content).",
)
def export_command(
    database: str | None,
    fmt: str,
    output: Path | None,
    only_positive: bool,
    edited_as_better: bool,
) -> None:
    """Write the shared chats as training data (the format `llm4all data curate` reads)."""
    from llm4all.datalake import export

    if fmt == "parquet" and (output is None or output.suffix != ".parquet"):
        raise click.UsageError("--format parquet needs -o FILE.parquet")
    if fmt == "jsonl" and output is not None and output.suffix == ".parquet":
        raise click.UsageError(f"{output} ends in .parquet: use --format parquet")
    storage = _open(database)
    try:
        rows = export.rows(storage, only_positive=only_positive, edited_as_better=edited_as_better)
        target = output if output is not None else sys.stdout
        count = export.write(rows, target, "parquet" if fmt == "parquet" else "jsonl")
    finally:
        storage.close()
    where = f" to {output}" if output else ""
    err_console.print(f"exported {_chats(count)}{where}", markup=False, highlight=False)


@datalake_group.command("delete")
@database_option
@click.option("--submitter", required=True, metavar="ID", help="The submitter whose chats go.")
def delete_command(database: str | None, submitter: str) -> None:
    """Delete every chat of one submitter (a withdrawal)."""
    storage = _open(database)
    try:
        deleted = storage.delete_submitter(submitter)
    finally:
        storage.close()
    click.echo(f"deleted {_chats(deleted)} of submitter {submitter}")


def _chats(n: int) -> str:
    """Example: ``_chats(1)`` -> ``"1 chat"``."""
    return f"{n} chat" if n == 1 else f"{n} chats"
