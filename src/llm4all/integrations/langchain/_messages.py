"""LangChain messages and tools as llm4all's, and llm4all's tool calls as LangChain's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call

from llm4all.chat.template import Message, Role

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "tool",
}


def text_of(content: str | list[str | dict[str, Any]]) -> str:
    """The text of a message's content (a string, or a list of blocks: text blocks kept).

    Example: ``text_of([{"type": "text", "text": "hi"}])`` → ``"hi"``.
    """
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def to_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages as the chat template's messages (tool calls and results kept)."""
    out = []
    for m in messages:
        text = text_of(m.content)
        if isinstance(m, SystemMessage):
            out.append(Message("system", text))
        elif isinstance(m, HumanMessage):
            out.append(Message("user", text))
        elif isinstance(m, AIMessage):
            calls = tuple(
                {
                    "id": c.get("id"),
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["args"]},
                }
                for c in m.tool_calls
            )
            out.append(Message("assistant", text, calls))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", text, tool_call_id=m.tool_call_id))
        elif isinstance(m, ChatMessage) and m.role in _ROLES:
            out.append(Message(_ROLES[m.role], text))
        else:
            raise ValueError(f"llm4all cannot take a {type(m).__name__} message")
    return out


def to_tool_calls(calls: Sequence[dict[str, Any]]) -> list[ToolCall]:
    """Calls in OpenAI's shape (arguments as JSON text) as LangChain's ``tool_calls``."""
    out = []
    for c in calls:
        try:
            args = json.loads(c["function"]["arguments"])
        except ValueError:
            args = {}
        out.append(
            tool_call(
                name=c["function"]["name"],
                args=args if isinstance(args, dict) else {"value": args},
                id=c["id"],
            )
        )
    return out
