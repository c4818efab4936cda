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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llm4all.chat.template import Message

OPEN, CLOSE = "<tool_call>", "</tool_call>"

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
