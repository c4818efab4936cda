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


#: Tool calls one answer may make before the model must answer from what it has.
MAX_ROUNDS = 5


@dataclass
class Rounds:
    """When the model is offered tools and which of its calls run: one policy for every
    front end (this module's loop and the web UI's, which runs on the server's scheduler).

    The model gets no tools on its next turn once ``max_rounds`` calls were made, when it
    repeats calls it has the results of (Qwen2.5-Coder-1.5B does), or after a refused call
    (the 0.5B then tries the other tools one by one): it answers from what it has.
    """

    specs: list[dict[str, Any]]
    max_rounds: int = MAX_ROUNDS
    made: list[ToolCall] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    answer_now: bool = False

    def offered(self) -> list[dict[str, Any]]:
        """The tools to offer on the next turn (none: it must answer)."""
        return [] if self.answer_now or len(self.made) >= self.max_rounds else self.specs

    def accept(self, calls: Sequence[dict[str, Any]]) -> bool:
        """Whether to run ``calls`` (OpenAI ``tool_calls``); False when all were made
        before, and then the next turn gets no tools."""
        keys = {call_key(c) for c in calls}
        if keys <= self.seen:
            self.answer_now = True
            return False
        self.seen |= keys
        return True

    def done(self, call: ToolCall) -> None:
        """Note a call that ran or was refused."""
        self.made.append(call)
        self.answer_now = self.answer_now or not call.ran

    def shown(self, held: str) -> str:
        """What of text held back as a possible call is the answer's: all of it unless it
        holds a call of these tools (run, or written anyway when none was offered)."""
        return held if without_calls(held, self.specs) == held else ""


def call_key(call: dict[str, Any]) -> str:
    """A call's tool and arguments, the same however the arguments were spaced."""
    function = call["function"]
    arguments = function["arguments"]
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    return str(function["name"]) + json.dumps(arguments, sort_keys=True)


def new_call(tools: McpTools, request: dict[str, Any]) -> ToolCall:
    """The :class:`ToolCall` for one of the model's ``tool_calls``, with its tool's server
    and permission (an unknown tool: ``deny``)."""
    function = request["function"]
    arguments = function["arguments"]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}
    tool = tools.find(function["name"])
    return ToolCall(
        tool.server if tool else "?",
        function["name"],
        arguments if isinstance(arguments, dict) else {},
        tool.permission if tool else "deny",
        id=str(request.get("id") or ""),
    )


def refusal(call: ToolCall) -> str | None:
    """Why ``call`` may not run without asking: DENIED for a denied or unknown tool, else
    None (``confirm`` tools then need the user's yes: DECLINED when it is not given)."""
    return DENIED if call.permission == "deny" else None


def execute(tools: McpTools, call: ToolCall) -> None:
    """Run an allowed call, filling in its result (a server's error is the result)."""
    from llm4all.mcp.client import McpError

    try:
        call.result = tools.call(call.name, call.arguments)
    except McpError as exc:
        call.result = f"error: {exc}"
    call.ran = True


def answer_with_tools(
    model: Model,
    messages: Sequence[Message] | str,
    tools: McpTools,
    *,
    consent: Callable[[ToolCall], bool] | None = None,
    on_call: Callable[[ToolCall], None] | None = None,
    params: GenerationParams | None = None,
    max_rounds: int = MAX_ROUNDS,
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

    rounds = Rounds(tools.specs(), max_rounds)
    p = params if params is not None else model.params
    response: Response | None = None
    text = ""
    for _ in range(max_rounds + 2):
        offered = rounds.offered()
        prepared = answer.prepare(model, history, params=p, tools=offered, collections=collections)
        response = answer.stream(model, prepared)
        if on_response is not None:
            on_response(response)
        text = _streamed(response, rounds, on_token)
        calls = [] if response.cancelled else response.tool_calls
        if not calls:
            if not offered:  # a call written anyway (small models imitate the history): dropped
                text = without_calls(text, rounds.specs)
            add(Message("assistant", text))
            return ToolAnswer(text, rounds.made, history, response)
        if not rounds.accept(calls):
            continue
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
        for c in calls:
            call = new_call(tools, c)
            _run(tools, call, consent, on_start, on_call)
            rounds.done(call)
            add(Message("tool", call.result, (), c["id"]))
    add(Message("assistant", text))
    return ToolAnswer(text, rounds.made, history, response)  # still calling with no tools offered


def _streamed(response: Response, rounds: Rounds, on_token: Callable[[str], None] | None) -> str:
    """Run ``response``, passing its content to ``on_token`` and holding back what may be a call.

    The splitter is the one the OpenAI route streams with; what it held back and
    turns out to be no call of the tools is given at the end (nothing is lost).
    """
    if on_token is None:
        return response.text()
    if not rounds.specs:
        for piece in response:
            on_token(piece)
        return response.text()
    from llm4all.server.tool_stream import ContentSplitter

    splitter = ContentSplitter(False)
    for piece in response:
        shown = splitter.feed(piece)
        if shown:
            on_token(shown)
    rest = splitter.flush() + rounds.shown(splitter.held)
    if rest:
        on_token(rest)
    return response.text()


def without_calls(text: str, specs: list[dict[str, Any]]) -> str:
    """``text`` with any call of one of ``specs`` taken out."""
    from llm4all.chat.tools import parse, schemas_of

    parsed = parse(text, forced=False, known=schemas_of(specs))
    return (parsed.content or "").strip() if parsed.calls else text


def _run(
    tools: McpTools,
    call: ToolCall,
    consent: Callable[[ToolCall], bool] | None,
    on_start: Callable[[ToolCall], None] | None,
    on_call: Callable[[ToolCall], None] | None,
) -> None:
    """Run ``call`` as its tool's permission says, filling in its result."""
    if on_start is not None:
        on_start(call)
    refused = refusal(call)
    if refused is not None:
        call.result = refused
    elif call.permission == "confirm" and not (consent is not None and consent(call)):
        call.result = DECLINED
    else:
        execute(tools, call)
    if on_call is not None:
        on_call(call)
