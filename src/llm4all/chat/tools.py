"""Tool definitions in a prompt, for templates that do not take ``tools``.

Chat templates that support tool calling (Qwen, Llama 3.1+, Mistral, Hermes)
render the ``tools`` variable themselves; :meth:`llm4all.Model.render` hands
them the definitions. A template that never mentions ``tools`` would drop
them, so for those the definitions and the call format go into the system
message instead, with the widespread Hermes convention::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Earlier tool calls in the conversation are then written back in that format
too, so the model sees its own calls the way it was told to make them.

Calls come back out of an answer through :func:`parse` (that convention, and
calls written as bare JSON), whichever front end asked: the OpenAI route
(:mod:`llm4all.server.tools`) and the LangChain integration. A call that must
be made is constrained by :func:`call_schema`'s JSON schema.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm4all.chat.template import Message

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_takes_tools(template: str) -> bool:
    """Whether a chat template renders the ``tools`` variable (a cheap, conservative test)."""
    return "tools" in template


def describe_in_system(
    messages: Sequence[Message], tools: Sequence[dict[str, Any]]
) -> list[Message]:
    """The definitions and the call format in the system turn; earlier calls as Hermes text.

    Example: ``describe_in_system([Message("user", "hi")], [spec])[0].role == "system"``.
    """
    text = _INSTRUCTIONS.format(tools="\n".join(json.dumps(t) for t in tools))
    calls_as_text = [_calls_as_text(m) for m in messages]
    if calls_as_text and calls_as_text[0].role == "system":
        head = calls_as_text[0]
        return [Message("system", f"{head.content}\n\n{text}"), *calls_as_text[1:]]
    return [Message("system", text), *calls_as_text]


def _calls_as_text(m: Message) -> Message:
    if not m.tool_calls:
        return m
    blocks = [
        f"{OPEN}\n{json.dumps({'name': c['function']['name'], 'arguments': c['function']['arguments']})}\n{CLOSE}"
        for c in m.tool_calls
    ]
    return Message(m.role, "\n".join([m.content, *blocks]).strip())


# -- calls out ---------------------------------------------------------------------------------
def call_schema(tools: Sequence[dict[str, Any]]) -> str:
    """The JSON schema of exactly one call of one of ``tools`` (OpenAI-shaped definitions).

    Example: ``call_schema([spec])`` constrains an answer to ``{"name": …, "arguments": …}``.
    """
    options = [_one_call_schema(t) for t in tools]
    return json.dumps(options[0] if len(options) == 1 else {"anyOf": options})


def _one_call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


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


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.DOTALL)


def _bare_calls(text: str, known: set[str]) -> list[dict[str, Any]]:
    """Calls written as JSON without tags: one object, a list of them, or one per line.

    A Markdown code fence around them is allowed (Qwen2.5-0.5B answers so).
    """
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
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
