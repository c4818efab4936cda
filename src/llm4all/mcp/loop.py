"""The tool loop run for the user: ask, run the calls the user allows, answer from the results.

:func:`answer_with_tools` asks the model with the MCP tools offered; each
call it makes is shown (``on_call``), checked against the tool's permission —
``allow`` runs, ``deny`` is refused, ``confirm`` (the default) runs only when
``consent(call)`` says yes, and with no way to ask nothing runs — and its
result (or the refusal) goes back to the model, until it answers in text or
``max_rounds`` calls were made. Every front end that runs tools uses it:
``llm4all mcp ask`` and the Python API (``llm4all.mcp.loop``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm4all.chat.template import Message

if TYPE_CHECKING:
    from llm4all.api import Model
    from llm4all.mcp.client import McpTools
    from llm4all.params import GenerationParams

DECLINED = "The user did not allow this tool call."
DENIED = "This tool is not allowed."


@dataclass
class ToolCall:
    """One call the model made: what, whether it ran, and what came back."""

    server: str
    name: str
    arguments: dict[str, Any]
    permission: str
    ran: bool = False
    result: str = ""

    def line(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.server}.{self.name}({args})"


@dataclass
class ToolAnswer:
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # the whole exchange, calls included


def answer_with_tools(
    model: Model,
    messages: Sequence[Message] | str,
    tools: McpTools,
    *,
    consent: Callable[[ToolCall], bool] | None = None,
    on_call: Callable[[ToolCall], None] | None = None,
    params: GenerationParams | None = None,
    max_rounds: int = 5,
) -> ToolAnswer:
    """Answer ``messages`` (or one question) with ``tools``, running the calls the user allows.

    Example: ``answer_with_tools(Model("qwen2.5-coder-1.5b-instruct"), "Weather in Oslo?",
    tools, consent=lambda c: input(f"run {c.line()}? ") == "y").text``.
    """
    from llm4all import answer

    history = [Message("user", messages)] if isinstance(messages, str) else list(messages)
    specs = tools.specs()
    made: list[ToolCall] = []
    seen: set[str] = set()
    answer_now = False
    p = params if params is not None else model.params
    for _ in range(max_rounds + 2):
        # Out of rounds, or the model repeats a call it has the result of (Qwen2.5-Coder-1.5B
        # does): no tools this time, so it answers from the results it has.
        offered = [] if answer_now or len(made) >= max_rounds else specs
        prepared = answer.prepare(model, history, params=p, tools=offered)
        response = answer.stream(model, prepared)
        text = response.text()
        calls = response.tool_calls
        if not calls:
            history.append(Message("assistant", text))
            return ToolAnswer(text, made, history)
        keys = {
            c["function"]["name"]
            + json.dumps(json.loads(c["function"]["arguments"]), sort_keys=True)
            for c in calls
        }
        if keys <= seen:
            answer_now = True
            continue
        seen |= keys
        parsed = prepared.parse_tools(text)
        content = parsed.content if parsed is not None and parsed.content else ""
        shown = tuple(
            {
                **c,
                "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])},
            }
            for c in calls
        )
        history.append(Message("assistant", content, shown))
        for c, s in zip(calls, shown, strict=True):
            call = _run(tools, s["function"]["name"], s["function"]["arguments"], consent, on_call)
            made.append(call)
            history.append(Message("tool", call.result, (), c["id"]))
    history.append(Message("assistant", text))
    return ToolAnswer(text, made, history)  # still calling with no tools offered: its text


def _run(
    tools: McpTools,
    name: str,
    arguments: Any,
    consent: Callable[[ToolCall], bool] | None,
    on_call: Callable[[ToolCall], None] | None,
) -> ToolCall:
    from llm4all.mcp.client import McpError

    tool = tools.find(name)
    args = arguments if isinstance(arguments, dict) else {}
    call = ToolCall(tool.server if tool else "?", name, args, tool.permission if tool else "deny")
    if tool is None or tool.permission == "deny":
        call.result = DENIED
    elif tool.permission == "confirm" and not (consent is not None and consent(call)):
        call.result = DECLINED
    else:
        try:
            call.result = tools.call(name, args)
        except McpError as exc:
            call.result = f"error: {exc}"
        call.ran = True
    if on_call is not None:
        on_call(call)
    return call
