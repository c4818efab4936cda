"""Chat templates: the model's own Jinja template, rendered in a sandbox.

There is one code path: every model's prompt is produced by rendering a Jinja
chat template (Hugging Face's convention) with the messages. The template
comes from the GGUF file (``tokenizer.chat_template``), or from the catalog
when a file has none or a broken one; base models without either get a plain
transcript template. Templates are untrusted input, so they run in Jinja's
immutable sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llm4all.errors import TemplateError

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

#: For base models (no template in the file, none in the catalog): a plain transcript.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}### Human:\n{{ m.content }}\n\n"
    "{% else %}### Assistant:\n{{ m.content }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
#: Stop strings that go with :data:`PLAIN_TEMPLATE` (a base model keeps writing turns).
PLAIN_STOPS = ("### Human:", "\n### ")
#: The user turn after tool results when the model answers next (see :func:`render`).
AFTER_TOOL_RESULTS = "Use the result above to answer my question."


@dataclass(frozen=True)
class Message:
    """One chat message. Identity and storage live elsewhere (``store/``)."""

    role: Role
    content: str
    tool_calls: tuple[dict[str, Any], ...] = field(default=())
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}: expected one of {', '.join(ROLES)}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.tool_calls:
            data.pop("tool_calls")
        else:
            data["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is None:
            data.pop("tool_call_id")
        return data


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the template does not compile: {exc}") from exc


def render(
    template: str,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """Render ``messages`` with a chat template.

    When the conversation ends with tool results and the model answers next,
    a short user turn (:data:`AFTER_TOOL_RESULTS`) follows them: given only its
    call and the ``<tool_response>`` turn its own template renders,
    Qwen2.5-Coder-1.5B calls the same tool again, every time; asked to use the
    result, it answers from it. A template that refuses two user turns in a
    row gets the conversation as it is.

    Example: ``render(PLAIN_TEMPLATE, [Message("user", "Hi")])`` ends with
    ``"### Assistant:\\n"``.
    """
    if add_generation_prompt and messages and messages[-1].role == "tool":
        asked = [*messages, Message("user", AFTER_TOOL_RESULTS)]
        try:
            return _render(template, asked, bos_token, eos_token, True, tools)
        except TemplateError:
            pass
    return _render(template, messages, bos_token, eos_token, add_generation_prompt, tools)


def _render(
    template: str,
    messages: Sequence[Message],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    tools: Sequence[dict[str, Any]] | None,
) -> str:
    try:
        return _compile(template).render(
            messages=[m.as_dict() for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=list(tools) if tools else None,
        )
    except TemplateError:
        raise
    except Exception as exc:  # a template can fail in many ways; all are template errors
        raise TemplateError(f"rendering failed: {type(exc).__name__}: {exc}") from exc
