"""Tool calling: requests' tools and messages in, calls out of the answer.

Tool definitions are rendered by ``Model.chat_tokens(messages, tools=...)``:
the model's own chat template (the Hugging Face convention that Qwen, Llama
3.1+, Mistral and Hermes templates follow), or, for a template that ignores
``tools``, a description in the system message (:mod:`llm4all.chat.tools`).
The parser (:func:`llm4all.chat.tools.parse`, shared with the LangChain
integration) reads the Hermes convention those templates share, and calls
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
from typing import Any

from llm4all.chat.template import Message
from llm4all.chat.tools import Parsed as Parsed  # re-exported: the route and tool_stream use them
from llm4all.chat.tools import call_schema
from llm4all.chat.tools import new_call_id as new_call_id
from llm4all.chat.tools import parse as parse
from llm4all.server.errors import ApiError
from llm4all.server.schemas import ChatMessage, NamedToolChoice, Tool, ToolChoice


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
    return call_schema([t.model_dump(exclude_none=True) for t in chosen])
