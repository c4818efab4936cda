"""Tool calling: requests' tools and messages in, calls out of the answer.

Tool definitions are rendered by ``Model.chat_tokens(messages, tools=...)``:
the model's own chat template (the Hugging Face convention that Qwen, Llama
3.1+, Mistral and Hermes templates follow), or, for a template that ignores
``tools``, a description in the system message (:mod:`llm4all.chat.tools`).
The parser reads the Hermes convention those templates share, and calls
written as bare JSON::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

With ``tool_choice="required"`` or a named function, the answer is
constrained by a grammar (from a JSON schema) to exactly one such call, so a
small model cannot fail to make it. While streaming,
:mod:`llm4all.server.tool_stream` holds calls back from the content and sends
their arguments as they are written.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from llm4all.chat.template import Message
from llm4all.server.errors import ApiError
from llm4all.server.schemas import ChatMessage, NamedToolChoice, Tool, ToolChoice

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


# -- messages in -------------------------------------------------------------------------
def to_messages(messages: list[ChatMessage]) -> list[Message]:
    """OpenAI messages as template messages (tool-call arguments parsed back into objects)."""
    out = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        calls = tuple(
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": _loads(c.function.arguments)},
            }
            for c in m.tool_calls or ()
        )
        out.append(Message(role, m.text(), calls, m.tool_call_id))
    return out


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def tool_specs(tools: list[Tool] | None, choice: ToolChoice | None) -> list[dict[str, Any]]:
    """The definitions to show the model (none when ``tool_choice`` is ``"none"``)."""
    if not tools or choice == "none":
        return []
    return [t.model_dump(exclude_none=True) for t in tools]


# -- forcing a call -------------------------------------------------------------------------
def forced_schema(tools: list[Tool] | None, choice: ToolChoice | None) -> str | None:
    """The JSON schema an answer must follow when a call is required (else None)."""
    if not tools or choice in (None, "none", "auto"):
        if choice not in (None, "none", "auto"):
            raise ApiError(400, "tool_choice needs tools", param="tool_choice")
        return None
    if isinstance(choice, NamedToolChoice):
        chosen = [t for t in tools if t.function.name == choice.function.name]
        if not chosen:
            raise ApiError(
                400,
                f"tool_choice names {choice.function.name!r}, which is not among the tools",
                param="tool_choice",
            )
    else:
        chosen = tools
    options = [_call_schema(t) for t in chosen]
    return json.dumps(options[0] if len(options) == 1 else {"anyOf": options})


def _call_schema(tool: Tool) -> dict[str, Any]:
    parameters = tool.function.parameters or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


# -- calls out ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parsed:
    content: str | None
    calls: list[dict[str, Any]]


def parse(text: str, *, forced: bool, known: set[str], parallel: bool = True) -> Parsed:
    """Split an answer into content and tool calls (OpenAI's ``tool_calls`` shape).

    Example: ``parse('<tool_call>{"name": "f", "arguments": {}}</tool_call>', ...)``
    gives one call of ``f`` with arguments ``"{}"`` and no content.
    """
    if forced:
        call = _as_call(text, known)
        return Parsed(None, [call]) if call else Parsed(text, [])
    bare = _bare_calls(text, known)
    if bare:  # small models often drop the tags and answer with the JSON alone
        return Parsed(None, bare if parallel else bare[:1])
    calls: list[dict[str, Any]] = []
    for match in _BLOCK.finditer(text):
        call = _as_call(match.group(1), known)
        if call is None:
            return Parsed(text, [])  # not what it looked like: all of it is content
        calls.append(call)
    if not calls:
        return Parsed(text, [])
    content = _BLOCK.sub("", text).strip() or None
    return Parsed(content, calls if parallel else calls[:1])


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _bare_calls(text: str, known: set[str]) -> list[dict[str, Any]]:
    """Calls written as JSON without tags: one object, a list of them, or one per line."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        return []
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except ValueError:
        items = [line for line in text.splitlines() if line.strip()]
    calls = [_as_call(item, known) for item in items]
    return [c for c in calls if c is not None] if all(calls) else []


def _as_call(text: str | Any, known: set[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    # A model may write any JSON: a name that is a list or an object is no call (and unhashable).
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if data["name"] not in known:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {
            "name": data["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }
