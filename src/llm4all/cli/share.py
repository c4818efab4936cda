"""``llm4all share``: opt in to sharing rated chats as public training data (off by default).

``share on`` shows the notice and asks before turning sharing on; ``share
chat ID --preview`` prints the exact JSON a chat would be sent as (stdout,
so it can be piped) and sends nothing; ``share chat ID`` queues it and tries
to send it at once; ``share flush`` sends what is queued; ``share withdraw``
asks the datalake to delete what this machine shared; ``share rate`` and
``share suggest`` rate an answer and keep a better one beside it (the web
chat has buttons for both). Notes go to stderr.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from llm4all.cli._common import echo_json, err_console
from llm4all.datalake import client
from llm4all.datalake.queue import ShareQueue
from llm4all.errors import InvalidParameter
from llm4all.store import ChatStore

RATINGS = {"good": 1, "bad": -1, "none": None}


def _note(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


@click.group(name="share")
def share_group() -> None:
    """Opt in to sharing rated chats as public training data (off by default)."""


@share_group.command("on")
@click.option("--name", "attribution", metavar="NAME", help="Credit shared chats to this name.")
@click.option("--endpoint", metavar="URL", help="The datalake service to send to.")
@click.option("--yes", "-y", is_flag=True, help="Accept the notice without asking.")
def on_command(attribution: str | None, endpoint: str | None, yes: bool) -> None:
    """Turn sharing on (after the notice); nothing is sent until you share a chat."""
    if endpoint is not None:
        client.check_endpoint(endpoint)  # a typo fails before the question
    _note(client.NOTICE)
    if not yes:
        click.confirm("Share the chats you choose as public training data?", abort=True, err=True)
    with ChatStore() as store:
        settings = client.update_settings(
            store, enabled=True, attribution=attribution, endpoint=endpoint
        )
    _note("sharing is on: `llm4all share chat ID` shares a chat (add --preview to see it first)")
    if not settings.configured:
        _note(f"no endpoint yet: {client.off_reason(settings)}")


@share_group.command("off")
def off_command() -> None:
    """Turn sharing off; chats still queued are withdrawn (never sent)."""
    with ChatStore() as store:
        with ShareQueue(store.path) as queue:
            pending = queue.counts()["pending"]
        client.update_settings(store, enabled=False)
    _note("sharing is off: nothing will be sent")
    if pending:
        _note(f"withdrew {pending} queued chat{'s' * (pending != 1)}")


@share_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Whether sharing is on, where to, under which name, and the queue."""
    with ChatStore() as store:
        settings = client.load_settings(store)
        with ShareQueue(store.path) as queue:
            counts, items = queue.counts(), queue.items()
    if as_json:
        echo_json(
            {
                "settings": settings.as_dict(),
                "queue": counts,
                "chats": [
                    {
                        "chat_id": i.chat_id,
                        "state": i.state,
                        "attempts": i.attempts,
                        "last_error": i.last_error,
                        "queued_at": i.queued_at,
                        "sent_at": i.sent_at,
                    }
                    for i in items
                ],
            }
        )
        return
    out = Console(highlight=False)
    out.print(f"sharing:     {'on' if settings.enabled else 'off'}", markup=False)
    where = settings.endpoint if settings.configured else "not set (nothing can be sent)"
    out.print(f"endpoint:    {where}", markup=False)
    out.print(f"attribution: {settings.attribution or '(none)'}", markup=False)
    out.print(
        f"submitter:   {settings.submitter_id or '(made when you first share)'}", markup=False
    )
    out.print("queue:       " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    if items:
        table = Table(box=None, pad_edge=False)
        for column in ("chat", "state", "tries", "note"):
            table.add_column(column)
        for item in items[:20]:
            note = item.last_error or (f"sent {item.sent_at[:16]}" if item.sent_at else "")
            table.add_row(item.chat_id, item.state, str(item.attempts), note)
        out.print(table)


@share_group.command("chat")
@click.argument("chat_id")
@click.option(
    "--preview", is_flag=True, help="Print the exact JSON that would be sent; send nothing."
)
@click.option(
    "--scrub", is_flag=True, help="Replace e-mail addresses, phone numbers, paths, document names."
)
@click.option("--queue-only", is_flag=True, help="Queue it; `share flush` sends it later.")
def chat_command(chat_id: str, preview: bool, scrub: bool, queue_only: bool) -> None:
    """Share one chat (an id or a unique prefix), or --preview what would be sent."""
    with ChatStore() as store:
        if preview:
            shown = client.build_preview(store, chat_id, scrub=scrub)
            click.echo(shown.body)
            if scrub:
                _note(f"scrubbed: {shown.findings.summary()}")
            return
        outcome = client.share_chat(store, chat_id, scrub=scrub, send=not queue_only)
    if scrub:
        _note(f"scrubbed: {outcome.preview.findings.summary()}")
    _note(f"chat {outcome.preview.chat.id}: {outcome.message}")
    if outcome.state == "refused":
        sys.exit(1)


@share_group.command("flush")
def flush_command() -> None:
    """Send the queued chats now (also those waiting to retry)."""
    with ChatStore() as store:
        report = client.flush(store, force=True)
        with ShareQueue(store.path) as queue:
            left = queue.counts()["pending"]
    for chat_id, why in report.refused.items():
        _note(f"chat {chat_id}: refused by the datalake: {why}")
    _note(f"sent {len(report.sent)}, {left} still queued")
    if report.stopped:
        _note(report.stopped)
    if report.failed or (left and report.stopped):
        sys.exit(1)


@share_group.command("withdraw")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def withdraw_command(yes: bool) -> None:
    """Ask the datalake to delete every chat shared from this machine."""
    if not yes:
        click.confirm(
            "Delete every chat you shared from the datalake? (Copies others made stay.)",
            abort=True,
            err=True,
        )
    with ChatStore() as store:
        deleted = client.withdraw(store)
    _note(f"the datalake deleted {deleted} chat{'s' * (deleted != 1)} shared from here")


@share_group.command("rate")
@click.argument("message_id")
@click.argument("rating", type=click.Choice(sorted(RATINGS)))
def rate_command(message_id: str, rating: str) -> None:
    """Rate an answer good or bad (none clears it); ids: `llm4all chats show`."""
    with ChatStore() as store:
        message = store.get_message(message_id)
        if message.role != "assistant":
            raise InvalidParameter("message_id", message_id, "an answer (an assistant message)")
        store.rate_message(message.id, RATINGS[rating])
    _note(f"answer {message.id}: {'no rating' if rating == 'none' else 'rated ' + rating}")


@share_group.command("suggest")
@click.argument("message_id")
@click.argument("text", required=False)
@click.option("--clear", is_flag=True, help="Remove the suggestion.")
def suggest_command(message_id: str, text: str | None, clear: bool) -> None:
    """Suggest a better answer for an answer (ids: `llm4all chats show`); TEXT - reads stdin."""
    if clear == (text is not None):
        raise click.UsageError("give the better answer as TEXT (or - for stdin), or --clear")
    if text == "-":
        text = sys.stdin.read()
    with ChatStore() as store:
        message = store.suggest_answer(message_id, None if clear else text)
    said = "removed the suggestion" if message.edited_content is None else "kept the suggestion"
    _note(f"{said} for answer {message.id}")
