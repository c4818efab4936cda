"""``llm4all chats``: list, show, export, rename and delete stored chats.

Every command takes a chat id or any unique prefix of one (as shown by
``chats list``). Output meant for pipes (a transcript, an export, ``--json``)
goes to stdout; confirmations and notes go to stderr. Errors are llm4all
errors, turned into one line by the CLI edge in :mod:`llm4all.cli._common`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from llm4all.cli._common import echo_json, err_console
from llm4all.store import EXPORT_FORMATS, Chat, ChatStore, export_chat
from llm4all.store.export import message_heading

ROLE_STYLES = {
    "system": "magenta",
    "user": "cyan",
    "assistant": "green",
    "tool": "yellow",
}


@click.group("chats")
def chats_group() -> None:
    """List, show, export and delete stored chats."""


@chats_group.command("list")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--search", "-s", metavar="TEXT", help="Only chats whose title or messages match.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(limit: int, search: str | None, as_json: bool) -> None:
    """Stored chats, most recently updated first."""
    with ChatStore() as store:
        chats = store.list_chats(limit=limit, query=search)
    if as_json:
        echo_json([chat.as_dict() for chat in chats])
        return
    if not chats:
        err_console.print("no chats match" if search else "no chats yet")
        return
    table = Table(box=None, pad_edge=False)
    # Ids and dates must stay whole (users type the ids); on a narrow terminal
    # the title and model columns shrink, their text cut short with an ellipsis.
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("title")
    table.add_column("model", max_width=24)
    table.add_column("messages", justify="right", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for chat in chats:
        table.add_row(
            chat.id,
            Text(_title(chat), no_wrap=True, overflow="ellipsis"),
            Text(chat.model or "-", no_wrap=True, overflow="ellipsis"),
            str(chat.message_count),
            _local(chat.updated_at),
        )
    Console(highlight=False).print(table)


@chats_group.command("show")
@click.argument("chat_id")
def show_command(chat_id: str) -> None:
    """Print a chat's transcript."""
    with ChatStore() as store:
        chat = store.get_chat(chat_id)
        messages = store.messages(chat.id)
    console = Console(highlight=False)
    console.print(Text(_title(chat), style="bold"))
    facts = [chat.id, chat.model or "no model", f"updated {_local(chat.updated_at)}"]
    console.print(Text(" · ".join(facts), style="dim"))
    if chat.system_prompt:
        console.print()
        console.print(Text("System prompt", style=f"bold {ROLE_STYLES['system']}"))
        console.print(Text(chat.system_prompt))
    for message in messages:
        console.print()
        heading = Text(message_heading(message), style=f"bold {ROLE_STYLES[message.role]}")
        heading.append(f"  {message.id}", style="dim")
        console.print(heading)
        # Text, not markup: a message's brackets must print as typed.
        console.print(Text(message.content))


@chats_group.command("export")
@click.argument("chat_id")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="md",
    show_default=True,
    help="jsonl: one JSON object per message (training data); md: a transcript.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of stdout.",
)
def export_command(chat_id: str, fmt: str, output: Path | None) -> None:
    """Export a chat as JSON Lines or Markdown."""
    with ChatStore() as store:
        chat = store.get_chat(chat_id)
        text = export_chat(chat, store.messages(chat.id), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err_console.print(
        f"wrote {chat.message_count} messages to {output}", highlight=False, markup=False
    )


@chats_group.command("rm")
@click.argument("chat_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_command(chat_id: str, yes: bool) -> None:
    """Delete a chat and its messages."""
    with ChatStore() as store:
        chat = store.get_chat(chat_id)
        if not yes:
            click.confirm(
                f"Delete chat {chat.id} {_title(chat)!r} ({chat.message_count} messages)?",
                abort=True,
                err=True,
            )
        store.delete_chat(chat.id)
    err_console.print(f"deleted chat {chat.id}", highlight=False)


@chats_group.command("rename")
@click.argument("chat_id")
@click.argument("title", nargs=-1, required=True)
def rename_command(chat_id: str, title: tuple[str, ...]) -> None:
    """Give a chat a new title (the words after the id, quoted or not)."""
    new_title = " ".join(title).strip()
    if not new_title:
        raise click.BadParameter("the title is empty", param_hint="TITLE")
    with ChatStore() as store:
        chat = store.rename_chat(store.get_chat(chat_id).id, new_title)
    err_console.print(f"renamed chat {chat.id} to {new_title!r}", highlight=False, markup=False)


def _title(chat: Chat) -> str:
    return chat.title or "(untitled)"


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")
