"""The datalake's chats as training data: rows of :mod:`llm4all.data.schema`, in JSONL or Parquet.

Each stored chat becomes one :class:`~llm4all.data.schema.Conversation`
(what ``llm4all data curate`` reads): source ``datalake/<client source>``, the
turns as messages that keep their ``rating``, ``edited_content`` and
``stopped`` (only when set), and in ``meta`` the model (``agent_id``), the
chat template, the attribution name, the time received, and the submitter as
a pseudonym (the raw submitter id is what lets a user withdraw, so it never
leaves the service). Identical chats sent by several submitters are exported
once.

Two flags make the common training choices:

- ``edited_as_better``: an answer the user edited ("suggested a better
  answer") is replaced by the edit; the original moves to
  ``original_content`` (and its rating to ``original_rating``), so a
  preference trainer still has the pair.
- ``only_positive``: keep only chats with at least one positively rated answer
  and no negatively rated one, cut after the last positive answer (an
  unrated answer after it is of unknown quality). With ``edited_as_better`` an
  edited answer counts as positive: the user wrote it.

Parquet is the layout of :func:`llm4all.data.formats.write_rows` (the
messages' extra keys and ``meta`` as JSON text), which curation reads back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

from llm4all.data.formats import write_rows
from llm4all.data.schema import Conversation, write_jsonl
from llm4all.datalake.storage import Storage, StoredChat, pseudonym

Format = Literal["jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "parquet")


def conversation(chat: StoredChat, *, edited_as_better: bool = False) -> Conversation:
    """The training row of one stored chat."""
    payload = chat.payload
    messages = [_message(item, edited_as_better) for item in payload["conversation"]]
    meta: dict[str, Any] = {
        "agent_id": payload["agent_id"],
        "submitter": pseudonym(chat.submitter_id),
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(chat.updated_at)),
    }
    template = payload.get("chat_template") or payload.get("prompt_template")
    if template:
        meta["template"] = template
    if payload.get("attribution"):
        meta["attribution"] = payload["attribution"]
    return Conversation(messages=messages, source=f"datalake/{payload['source']}", meta=meta)


def _message(item: dict[str, Any], edited_as_better: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": item["role"], "content": item["content"]}
    edited = item.get("edited_content")
    if edited and edited_as_better:
        message["content"] = edited
        message["original_content"] = item["content"]
        if item.get("rating"):
            message["original_rating"] = item["rating"]
    else:
        if item.get("rating"):
            message["rating"] = item["rating"]
        if edited:
            message["edited_content"] = edited
        if item.get("stopped"):  # of the original: the user's edit was not cut short
            message["stopped"] = True
    return message


def positive_part(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The messages up to the last positive answer, or None when the chat has no positive
    answer or a negative one (an edit counts as positive: see the module docstring).

    Example: ``[user, assistant rated positive, user, assistant unrated]`` -> the first two.
    """
    last = None
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if message.get("rating") == "negative":
            return None
        if message.get("rating") == "positive" or "original_content" in message:
            last = index
    return None if last is None else messages[: last + 1]


def rows(
    storage: Storage, *, only_positive: bool = False, edited_as_better: bool = False
) -> Iterator[Conversation]:
    """Every stored chat as a training row (each content once), filtered by the flags."""
    seen: set[str] = set()
    for chat in storage.chats():
        if chat.content_hash in seen:
            continue
        seen.add(chat.content_hash)
        row = conversation(chat, edited_as_better=edited_as_better)
        if only_positive:
            kept = positive_part(row.messages)
            if kept is None:
                continue
            if len(kept) != len(row.messages):
                row = Conversation(messages=kept, source=row.source, meta=row.meta)
        yield row


def write(conversations: Iterable[Conversation], out: Path | TextIO, fmt: Format) -> int:
    """Write the rows to ``out`` (a path; JSONL may also go to a text stream); returns how many.

    Parquet is written by :func:`llm4all.data.formats.write_rows`, the one Parquet
    layout of llm4all's training data, which ``llm4all data curate`` reads back.
    """
    if isinstance(out, Path):
        if (out.suffix == ".parquet") != (fmt == "parquet"):
            raise ValueError(
                f"{out}: a {fmt} file's name must{'' if fmt == 'parquet' else ' not'} "
                "end in .parquet"
            )
        return write_rows(conversations, out)
    if fmt != "jsonl":
        raise ValueError("Parquet is written to a file, not a stream")
    return write_jsonl(conversations, out)
