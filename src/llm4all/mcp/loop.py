"""The tool loop run for the user: ask, run the calls the user allows, answer from the results.

:func:`answer_with_tools` asks the model with the MCP tools offered; each
call it makes is shown (``on_call``), checked against the tool's permission —
``allow`` runs, ``deny`` is refused, ``confirm`` (the default) runs only when
``consent(call)`` says yes, and with no way to ask nothing runs — and its
result (or the refusal) goes back to the model, until it answers in text or
``max_rounds`` calls were made. After a refusal the model is asked once more
with no tools offered, so it answers rather than trying the other tools. Every front end that runs tools uses it:
``llm4all chat``, ``llm4all run``, ``llm4all mcp ask``, the web UI and the
Python API (``llm4all.mcp.loop``).

A front end follows the loop through callbacks, all optional: ``on_token``
(the answer's text as it streams; a call the model writes is held back, not
shown as text), ``on_start`` (a call is about to be asked about or run),
``on_call`` (it ran or was refused: its result), ``on_message`` (each message
the loop adds to the conversation, so a chat can save it at once) and
``on_response`` (each model turn as it starts, so Ctrl-C can cancel it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm4all.chat.template import Message

if TYPE_CHECKING:
    from llm4all.answer import Response
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
    id: str = ""  # the call's id, as the tool message that answers it carries

    def line(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.server}.{self.name}({args})"


@dataclass
class ToolAnswer:
    text: str
    calls: list[ToolCall] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # the whole exchange, calls included
    response: Response | None = None  # the last model turn (its stats, sources, cancelled)


def answer_with_tools(
    model: Model,
    messages: Sequence[Message] | str,
    tools: McpTools,
    *,
    consent: Callable[[ToolCall], bool] | None = None,
    on_call: Callable[[ToolCall], None] | None = None,
    params: GenerationParams | None = None,
    max_rounds: int = 5,
    on_token: Callable[[str], None] | None = None,
    on_start: Callable[[ToolCall], None] | None = None,
    on_message: Callable[[Message], None] | None = None,
    on_response: Callable[[Response], None] | None = None,
    collections: Sequence[str] = (),
) -> ToolAnswer:
    """Answer ``messages`` (or one question) with ``tools``, running the calls the user allows.

    Example: ``answer_with_tools(Model("qwen2.5-coder-1.5b-instruct"), "Weather in Oslo?",
    tools, consent=lambda c: input(f"run {c.line()}? ") == "y").text``.
    """
    from llm4all import answer

    history = [Message("user", messages)] if isinstance(messages, str) else list(messages)

    def add(message: Message) -> None:
        history.append(message)
        if on_message is not None:
            on_message(message)

    specs = tools.specs()
    made: list[ToolCall] = []
    seen: set[str] = set()
    answer_now = False
    p = params if params is not None else model.params
    response: Response | None = None
    text = ""
    for _ in range(max_rounds + 2):
        # Out of rounds, the model repeats a call it has the result of (Qwen2.5-Coder-1.5B
        # does), or a call was refused (the 0.5B then tries the other tools, one by one):
        # no tools this time, so it answers from what it has.
        offered = [] if answer_now or len(made) >= max_rounds else specs
        prepared = answer.prepare(model, history, params=p, tools=offered, collections=collections)
        response = answer.stream(model, prepared)
        if on_response is not None:
            on_response(response)
        text = _streamed(response, specs, on_token)
        calls = [] if response.cancelled else response.tool_calls
        if not calls:
            if not offered:  # a call written anyway (small models imitate the history): dropped
                text = _without_calls(text, specs)
            add(Message("assistant", text))
            return ToolAnswer(text, made, history, response)
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
        add(Message("assistant", content, shown))
        for c, s in zip(calls, shown, strict=True):
            call = ToolCall(
                "?", s["function"]["name"], _arguments(s), "deny", id=str(c.get("id", ""))
            )
            _run(tools, call, consent, on_start, on_call)
            made.append(call)
            answer_now = answer_now or not call.ran
            add(Message("tool", call.result, (), c["id"]))
    add(Message("assistant", text))
    return ToolAnswer(text, made, history, response)  # still calling with no tools offered


def _streamed(
    response: Response, specs: list[dict[str, Any]], on_token: Callable[[str], None] | None
) -> str:
    """Run ``response``, passing its content to ``on_token`` and holding back what may be a call.

    The splitter is the one the OpenAI route streams with; what it held back and
    turns out to be no call of ``specs`` is given at the end (nothing is lost).
    """
    if on_token is None:
        return response.text()
    if not specs:
        for piece in response:
            on_token(piece)
        return response.text()
    from llm4all.server.tool_stream import ContentSplitter

    splitter = ContentSplitter(False)
    for piece in response:
        shown = splitter.feed(piece)
        if shown:
            on_token(shown)
    rest = splitter.flush()
    if splitter.held and _without_calls(splitter.held, specs) == splitter.held:
        rest += splitter.held  # it only looked like a call
    if rest:
        on_token(rest)
    return response.text()


def _without_calls(text: str, specs: list[dict[str, Any]]) -> str:
    """``text`` with any call of one of ``specs`` taken out."""
    from llm4all.chat.tools import parse, schemas_of

    parsed = parse(text, forced=False, known=schemas_of(specs))
    return (parsed.content or "").strip() if parsed.calls else text


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call["function"]["arguments"]
    return arguments if isinstance(arguments, dict) else {}


def _run(
    tools: McpTools,
    call: ToolCall,
    consent: Callable[[ToolCall], bool] | None,
    on_start: Callable[[ToolCall], None] | None,
    on_call: Callable[[ToolCall], None] | None,
) -> None:
    """Run ``call`` as its tool's permission says, filling in its server, permission and result."""
    from llm4all.mcp.client import McpError

    tool = tools.find(call.name)
    if tool is not None:
        call.server, call.permission = tool.server, tool.permission
    if on_start is not None:
        on_start(call)
    if tool is None or tool.permission == "deny":
        call.result = DENIED
    elif tool.permission == "confirm" and not (consent is not None and consent(call)):
        call.result = DECLINED
    else:
        try:
            call.result = tools.call(call.name, call.arguments)
        except McpError as exc:
            call.result = f"error: {exc}"
        call.ran = True
    if on_call is not None:
        on_call(call)
