"""Exporting a stored chat: JSON Lines for training data, Markdown for people.

Both are pure functions of a :class:`Chat` and its messages, so they serve
the CLI, the web UI and the datalake alike.

- ``jsonl``: one JSON object per message, in order, each with ``role`` and
  ``content`` (what a fine-tuning script needs) plus the chat id and the
  message's metadata (model, token counts, speed, sources, rating). The chat's
  system prompt, when it has one, comes first as a ``system`` line, so the
  file holds the whole conversation the model saw.
- ``md``: a transcript with a header (title, model, dates) and one section
  per message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from llm4all.errors import InvalidParameter
from llm4all.store.chats import Chat, StoredMessage

EXPORT_FORMATS = ("jsonl", "md")


def export_chat(chat: Chat, messages: Sequence[StoredMessage], fmt: str) -> str:
    """The chat as text in ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    if fmt == "jsonl":
        return to_jsonl(chat, messages)
    if fmt == "md":
        return to_markdown(chat, messages)
    raise InvalidParameter("format", fmt, " or ".join(EXPORT_FORMATS))


def to_jsonl(chat: Chat, messages: Sequence[StoredMessage]) -> str:
    """One JSON object per line. Example: ``{"role": "user", "content": "Hi", ...}``."""
    records = [jsonl_record(m) for m in messages]
    if chat.system_prompt and not (messages and messages[0].role == "system"):
        records.insert(0, {"role": "system", "content": chat.system_prompt, "chat_id": chat.id})
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def jsonl_record(message: StoredMessage) -> dict[str, Any]:
    """``role`` and ``content`` first (for readers of the raw file), then the metadata."""
    data = message.as_dict()
    return {"role": data.pop("role"), "content": data.pop("content"), **data}


def to_markdown(chat: Chat, messages: Sequence[StoredMessage]) -> str:
    """A readable transcript: a header, the system prompt, then each message."""
    lines = [
        f"# {chat.title or 'Untitled chat'}",
        "",
        f"- Chat: `{chat.id}`",
        f"- Model: {chat.model or 'unknown'}",
        f"- Created: {_when(chat.created_at)}",
        f"- Updated: {_when(chat.updated_at)}",
        "",
    ]
    if chat.system_prompt:
        lines += ["## System prompt", "", chat.system_prompt.strip(), ""]
    for message in messages:
        lines += [f"## {message_heading(message)}", "", message.content.strip(), ""]
        lines += [f"{i}. {_source_line(s)}" for i, s in enumerate(message.sources or [], 1)]
        if message.sources:
            lines.append("")
    return "\n".join(lines)


def message_heading(message: StoredMessage) -> str:
    """A message's role and the facts worth a glance. Example: ``Assistant · m.gguf · 12.5 tok/s``."""
    parts = [message.role.capitalize()]
    if message.role == "assistant" and message.model:
        parts.append(message.model)
    if message.tokens_per_second:
        parts.append(f"{message.tokens_per_second:.1f} tok/s")
    if message.rating:
        parts.append("rated good" if message.rating > 0 else "rated bad")
    return " · ".join(parts)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _source_line(source: dict[str, Any]) -> str:
    # LocalDocs citations are dicts; show what identifies them, whatever their keys.
    name = source.get("title") or source.get("path") or source.get("file") or "source"
    return str(name)
