"""Tool calls in the chat store, so that ``chat --continue`` (and the web UI) keeps them.

The store's messages hold a role and text. A tool call is saved as one
``tool`` message whose text is a JSON record of the call and its result::

    {"id": "call_1", "server": "weather", "name": "get_forecast",
     "arguments": {"city": "Oslo"}, "permission": "allow", "ran": true,
     "result": "Oslo: 12 C, rain", "said": ""}

(``said``: what the model wrote beside its calls, on the first call of a
turn.) The assistant message that made the calls is not stored on its own:
:func:`restore` rebuilds it from the run of records, so the model sees the
exchange again as it happened (``assistant`` with ``tool_calls``, then one
``tool`` message per call). Example::

    store.add_message(chat_id, "tool", tool_record(call))
    history = restore((m.role, m.content) for m in store.messages(chat_id))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from llm4all.chat.template import Message
from llm4all.mcp.loop import ToolCall


def tool_record(call: ToolCall, said: str = "") -> str:
    """The stored text of one call: JSON with the call, its outcome and its result."""
    return json.dumps(
        {
            "id": call.id,
            "server": call.server,
            "name": call.name,
            "arguments": call.arguments,
            "permission": call.permission,
            "ran": call.ran,
            "result": call.result,
            "said": said,
        },
        ensure_ascii=False,
    )


def read_record(content: str) -> ToolCall | None:
    """The call a stored ``tool`` message holds (None when it is not such a record)."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not (isinstance(data, dict) and isinstance(data.get("name"), str)):
        return None
    arguments = data.get("arguments")
    return ToolCall(
        str(data.get("server", "?")),
        data["name"],
        arguments if isinstance(arguments, dict) else {},
        str(data.get("permission", "")),
        bool(data.get("ran", False)),
        str(data.get("result", "")),
        str(data.get("id", "")),
    )


def restore(stored: Iterable[tuple[str, str]]) -> list[Message]:
    """The conversation from stored ``(role, content)`` pairs, tool calls rebuilt.

    Each run of tool records becomes the assistant message that made the calls
    and one tool message per call; a tool message that is no record is left out
    (a template cannot show a result without its call). System messages are
    left out too (the chat keeps its system prompt apart).
    """
    out: list[Message] = []
    run: list[tuple[ToolCall, str]] = []

    def close_run() -> None:
        if not run:
            return
        calls = tuple(_call_dict(call, n) for n, (call, _) in enumerate(run))
        out.append(Message("assistant", run[0][1], calls))
        pairs = zip(run, calls, strict=True)
        out.extend(Message("tool", call.result, (), c["id"]) for (call, _), c in pairs)
        run.clear()

    for role, content in stored:
        if role == "tool":
            call = read_record(content)
            if call is not None:
                run.append((call, _said(content) if not run else ""))
            continue
        close_run()
        if role == "user":
            out.append(Message("user", content))
        elif role == "assistant":
            out.append(Message("assistant", content))
    close_run()
    return out


def _said(content: str) -> str:
    said = json.loads(content).get("said", "")
    return said if isinstance(said, str) else ""


def _call_dict(call: ToolCall, n: int) -> dict[str, Any]:
    return {
        "id": call.id or f"call_{n}",
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
