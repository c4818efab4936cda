"""The datalake's ingest payload: one shared chat, as the client sends it and the service checks it.

The shape is GPT4All's own (its chat client posts it to ``/v1/ingest/chat``),
so GPT4All's clients and llm4all's send the same JSON::

    {"source": "llm4all", "submitter_id": "5f0c…", "agent_id": "qwen2.5-coder-0.5b-instruct",
     "ingest_id": "9d1e…", "chat_template": "{% for m in messages %}…",
     "attribution": "Ada",
     "conversation": [
        {"content": "Hi", "role": "user"},
        {"content": "Hello!", "role": "assistant", "rating": "positive",
         "stopped": false, "edited_content": "Hello! How can I help?"}]}

Compatibility with GPT4All's clients, from their code:

- older clients send ``prompt_template``, newer ones ``chat_template``; either
  (or both, or neither) is accepted;
- ``stopped`` arrives as the *string* ``"true"``; bool-like strings are read
  as booleans;
- the attribution name arrives as ``network/attribution``; ``attribution`` is
  read too;
- unknown keys are ignored, so a newer client is not refused for adding one.

Beyond types, every limit is checked here, so that the service and the client
(which validates before queueing) refuse the same things with the same
message: sizes and counts are capped (:data:`LIMITS`), roles are checked, and
an empty or garbage conversation (no user message, no answer, text with
control characters or unpaired surrogates that no database can store) is
refused with a message that names the field, e.g.
``conversation[3].content: is empty``.

:meth:`ChatIngest.content_hash` is the stable hash that de-duplication keys
on: the same content always hashes the same, on any machine and in any key
order, and the ids (``submitter_id``, ``ingest_id``) are not part of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from llm4all.errors import Llm4allError

Role = Literal["system", "user", "assistant"]
Rating = Literal["positive", "negative"]


@dataclass(frozen=True)
class Limits:
    """The caps on one payload; the service's body cap is :attr:`body_bytes`."""

    body_bytes: int = 1_048_576  # 1 MiB: the request body, checked before parsing
    messages: int = 256
    content_chars: int = 32_768  # per message (and per edited answer)
    conversation_chars: int = 400_000  # all messages together
    template_chars: int = 65_536  # chat templates of real models reach ~20 k
    id_chars: int = 128  # submitter_id, ingest_id
    name_chars: int = 256  # agent_id (a model file name), source
    attribution_chars: int = 128


LIMITS = Limits()

#: Ids are opaque tokens (GPT4All sends UUIDs): printable ASCII, no spaces.
_ID = re.compile(r"[\x21-\x7e]+")
#: Control characters no text field may hold (tab, newline and carriage return are fine).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PayloadError(Llm4allError, ValueError):
    """A payload was refused; ``problems`` lists each as ``field: what is wrong``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"invalid chat payload: {shown}{more}")


def _check_text(value: str, limit: int) -> str:
    """Refuse text longer than ``limit``, with control characters, or not encodable as UTF-8."""
    if len(value) > limit:
        raise ValueError(f"is {len(value)} characters, over the limit of {limit}")
    if _CONTROL.search(value):
        raise ValueError("contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (an unpaired surrogate)") from None
    return value


def _check_id(value: str) -> str:
    if len(value) > LIMITS.id_chars:
        raise ValueError(f"is {len(value)} characters, over the limit of {LIMITS.id_chars}")
    if not _ID.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces")
    return value


class ChatItem(BaseModel):
    """One turn of the conversation."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    content: str
    role: Role
    rating: Rating | None = None
    stopped: bool = False
    edited_content: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return _check_text(value, LIMITS.content_chars)

    @field_validator("edited_content")
    @classmethod
    def _edited(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # GPT4All leaves it out when there is no edit; "" means the same
        return _check_text(value, LIMITS.content_chars)

    @field_validator("rating", mode="before")
    @classmethod
    def _rating(cls, value: Any) -> Any:
        return None if value == "" else value


class ChatIngest(BaseModel):
    """One shared chat: who sent it (an opaque id), which model answered, and the turns."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    source: str = "unknown"
    submitter_id: str
    agent_id: str
    ingest_id: str | None = None
    prompt_template: str | None = None
    chat_template: str | None = None
    attribution: str | None = Field(
        default=None, validation_alias=AliasChoices("attribution", "network/attribution")
    )
    conversation: list[ChatItem]

    @field_validator("submitter_id", "ingest_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else _check_id(value)

    @field_validator("source", "agent_id")
    @classmethod
    def _names(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return _check_text(value, LIMITS.name_chars)

    @field_validator("prompt_template", "chat_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_text(value, LIMITS.template_chars)

    @field_validator("attribution")
    @classmethod
    def _attribution(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_text(value.strip(), LIMITS.attribution_chars)

    @field_validator("conversation")
    @classmethod
    def _conversation(cls, items: list[ChatItem]) -> list[ChatItem]:
        problems = conversation_problems(items)
        if problems:
            raise ValueError("; ".join(problems))
        return items

    def content_hash(self) -> str:
        """The sha256 (hex) of everything but the ids, in a canonical form.

        Example: two payloads that differ only in ``ingest_id`` (or key order)
        have the same hash; changing one rating changes it.
        """
        return hashlib.sha256(canonical_json(self.content_fields()).encode("utf-8")).hexdigest()

    def content_fields(self) -> dict[str, Any]:
        """What the content hash covers: the payload without ``submitter_id`` and ``ingest_id``."""
        return self.model_dump(mode="json", exclude={"submitter_id", "ingest_id"})

    def effective_ingest_id(self) -> str:
        """The ingest id, or one derived from the content when the client sent none.

        A client that sends no id gets the same id for the same content, so
        re-sending it is recognised as a repeat, not stored twice.
        """
        return self.ingest_id or f"h-{self.content_hash()[:32]}"

    @property
    def template(self) -> str | None:
        """The chat template sent, whichever field carried it (the newer one first)."""
        return self.chat_template or self.prompt_template


def conversation_problems(items: list[ChatItem]) -> list[str]:
    """What makes a list of turns unusable as training data ([] when it is fine).

    Example: ``conversation_problems([])`` -> ``["conversation: is empty"]``.
    """
    if not items:
        return ["conversation: is empty"]
    if len(items) > LIMITS.messages:
        return [f"conversation: has {len(items)} messages, over the limit of {LIMITS.messages}"]
    problems: list[str] = []
    total = sum(len(item.content) + len(item.edited_content or "") for item in items)
    if total > LIMITS.conversation_chars:
        problems.append(
            f"conversation: is {total} characters, over the limit of {LIMITS.conversation_chars}"
        )
    started = False
    for index, item in enumerate(items):
        where = f"conversation[{index}]"
        if item.role == "system" and started:
            problems.append(f"{where}.role: a system message may only open the conversation")
        started = started or item.role != "system"
        if item.role != "assistant":
            if not item.content.strip():
                problems.append(f"{where}.content: is empty")
            if item.rating is not None or item.edited_content is not None:
                problems.append(f"{where}: only an assistant message can be rated or edited")
        elif not item.content.strip() and item.edited_content is None:
            problems.append(f"{where}.content: is empty")
    first = next((item for item in items if item.role != "system"), None)
    if first is None or first.role != "user":
        problems.append("conversation: must start with a user message (after any system message)")
    if not any(item.role == "assistant" for item in items):
        problems.append("conversation: has no assistant answer")
    return problems


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no spaces: the same data always gives the same text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_payload(data: bytes | str | dict[str, Any]) -> ChatIngest:
    """A checked payload from JSON text or an object; raises :class:`PayloadError`.

    Example: ``parse_payload(b'{"agent_id": "m"}')`` raises with
    ``submitter_id: is required; conversation: is required``.
    """
    if isinstance(data, bytes | str):
        if len(data) > LIMITS.body_bytes:
            raise PayloadError([f"body: over the limit of {LIMITS.body_bytes} bytes"])
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise PayloadError([f"body: not JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise PayloadError(["body: must be a JSON object"])
    try:
        return ChatIngest.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(describe(exc)) from None


def describe(error: ValidationError) -> list[str]:
    """One ``field: what is wrong`` line per problem pydantic found.

    Example: a missing ``agent_id`` -> ``["agent_id: is required"]``.
    """
    lines = []
    for item in error.errors(include_url=False):
        where = _location(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "literal_error":
            message = f"must be {item['ctx']['expected']}, not {item['input']!r}"[:200]
        # The conversation's own check already names the field of each of its problems.
        named = not where or message.startswith(where)
        lines.append(message if named else f"{where}: {message}")
    return lines


def _location(loc: tuple[int | str, ...]) -> str:
    """``("conversation", 2, "role")`` -> ``"conversation[2].role"``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
