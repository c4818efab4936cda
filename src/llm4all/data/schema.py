"""The one conversation format of llm4all's training data.

Every reader (GPT4All JSONL, Alpaca, ShareGPT, OpenAI messages, P3, chat
exports, the datalake) turns its rows into :class:`Conversation`; curation,
the data map, fine-tuning and evaluation read only this. On disk it is JSON
Lines, one conversation per line::

    {"id": "3f2a…", "source": "gpteacher_roleplay",
     "messages": [{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}],
     "meta": {"line": 12}}

- ``id`` is stable: a hash of the source and the messages, so the same row
  read twice (or by another machine) gets the same id, and a keep/drop list
  made on the data map still applies after a re-run.
- ``source`` names where the row came from (a file stem, a dataset name).
- ``messages`` use the roles ``system``, ``user`` and ``assistant``; a
  message may carry extra keys (``rating``, ``edited_content``, ``stopped``)
  that readers keep and the trainer ignores.
- ``meta`` holds whatever else a reader wants to keep (line number, template
  name, language); nothing downstream depends on its keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROLES = ("system", "user", "assistant")
"""The roles a conversation's messages may have."""

ID_LENGTH = 16
"""Hex digits of an id: 64 bits, no collision in any realistic set."""


def conversation_id(source: str, messages: Iterable[dict[str, Any]]) -> str:
    """The stable id of a conversation: a hash of its source and its messages' roles and text."""
    digest = hashlib.sha256(source.encode("utf-8"))
    for message in messages:
        digest.update(b"\x00" + str(message["role"]).encode("utf-8"))
        digest.update(b"\x01" + str(message["content"]).encode("utf-8"))
    return digest.hexdigest()[:ID_LENGTH]


@dataclass
class Conversation:
    """One training example: messages in order, where they came from, and a stable id."""

    messages: list[dict[str, Any]]
    source: str
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for message in self.messages:
            if message.get("role") not in ROLES:
                raise ValueError(f"a message's role must be one of {', '.join(ROLES)}")
            if not isinstance(message.get("content"), str):
                raise ValueError("a message's content must be text")
        if not self.id:
            self.id = conversation_id(self.source, self.messages)

    @property
    def prompt(self) -> str:
        """The first user message ("" when there is none): what the map and the rules read."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def response(self) -> str:
        """The last assistant message ("" when there is none)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one line."""
        return {"id": self.id, "source": self.source, "messages": self.messages, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        """A conversation from one line's object; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a row must be a JSON object")
        messages = data.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("'messages' must be a list of objects")
        source = data.get("source", "")
        meta = data.get("meta") or {}
        if not isinstance(source, str) or not isinstance(meta, dict):
            raise ValueError("'source' must be text and 'meta' an object")
        return cls(messages=messages, source=source, id=str(data.get("id") or ""), meta=meta)


def write_jsonl(conversations: Iterable[Conversation], out: TextIO) -> int:
    """Write one conversation per line; returns how many."""
    count = 0
    for conversation in conversations:
        out.write(json.dumps(conversation.to_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def read_jsonl(path: Path) -> Iterator[Conversation]:
    """Conversations from a file in this format, streamed.

    A line that is not a conversation raises ``ValueError`` naming the file and
    line; the format readers of curation report and skip such rows instead.
    """
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield Conversation.from_dict(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
