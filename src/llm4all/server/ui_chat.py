"""Answering in a stored chat: the web UI's generation path, streamed as server-sent events.

The page sends a message; :func:`answer_response` claims the chat (a second
send meanwhile is a 409) and saves the message before the response starts (a
locked or full database is a 503), then :func:`answer_events` leases the
chat's model from the server's :class:`ModelManager`, hands the chat's
history to the answer pipeline (:func:`llm4all.answer.prepare`: system
prompt, LocalDocs, chat template, context-window policy) and queues the
prompt on the model's runner, exactly like ``/v1/chat/completions``. Events
(``data: {json}``):

- ``user``: the saved user message (with its id);
- ``start``: the model is loaded and the answer is queued;
- ``delta``: new text, plain and untrusted (the page shows it as text);
- ``html``: the whole answer so far as sanitized HTML, at most every
  :data:`HTML_EVERY` seconds (the page swaps it in);
- ``done``: the saved answer with its stats (and final HTML);
- ``error``: an OpenAI-style error object.

With MCP tools (:mod:`ui_tools`; the chat's switch on and servers configured)
an answer is tool rounds, as in :func:`llm4all.mcp.loop.answer_with_tools`:
the model is offered the tools; a call it writes is held back from the text
(the splitter of the OpenAI route), then

- ``reset``: what was shown of that turn is not the answer (clear it);
- ``tool_call``: a call, ``asking`` (a ``confirm`` tool: the page shows Allow /
  Deny and the call waits for it) or ``running``;
- ``tool_result``: its result (or why it did not run), and the saved ``tool``
  message that holds it;
- ``notice``: one line about a server that could not start;

and the model is asked again with the results, until it answers in text (at
most :data:`~llm4all.mcp.loop.MAX_ROUNDS` calls; a repeated or refused call ends
the calling: the same :class:`~llm4all.mcp.loop.Rounds` policy as the terminal's loop). The final answer streams and is saved like any other.

When the chat has LocalDocs collections, the question is searched in them and
the numbered excerpts go into that turn of the prompt (as with ``ChatSession``);
the answer keeps their references as its ``sources``.

The answer is saved as it grows (created at its first token, updated every
:data:`SAVE_EVERY` seconds, completed at the end), so a stopped answer, a
closed tab or a crash keeps what was said. Stopping (``POST …/stop`` or a
client that goes away) cancels the request on the scheduler at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from llm4all import answer
from llm4all.answer import AnswerStats, Prepared
from llm4all.api import Model, merge_params
from llm4all.engine.base import Chunk
from llm4all.engine.runner import AsyncStream
from llm4all.localdocs.context import annotate
from llm4all.mcp.loop import Rounds
from llm4all.params import GenerationParams
from llm4all.server.errors import ApiError, translate
from llm4all.server.generation import SSE_HEADERS, max_tokens_for
from llm4all.server.manager import Loaded, ModelManager
from llm4all.server.markdown import render_markdown
from llm4all.server.settings import ServerSettings
from llm4all.server.tool_stream import ContentSplitter
from llm4all.server.tools import new_call_id
from llm4all.server.ui_tools import (
    RESULT_CHARS,
    ChatTools,
    call_of,
    prompt_messages,
)
from llm4all.store import Chat, ChatStore, StoredMessage
from llm4all.store.answers import AnswerRecorder

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs
    from llm4all.mcp.client import McpTools
    from llm4all.mcp.loop import ToolCall

HTML_EVERY = 0.15  # seconds between rendered snapshots of a growing answer
SAVE_EVERY = 2.0  # seconds between saves of a growing answer
PARAM_NAMES = frozenset(f.name for f in dataclasses.fields(GenerationParams))


def message_out(message: StoredMessage) -> dict[str, Any]:
    """A stored message as the page wants it: answers carry their sanitized HTML."""
    out = message.as_dict()
    out["html"] = render_markdown(message.content) if message.role == "assistant" else None
    out["call"] = call_of(message)
    return out


def event(kind: str, **data: Any) -> str:
    return f"data: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"


class Answering:
    """Which chats are answering right now (at most one answer per chat), to stop them.

    Its methods may be called from any thread (FastAPI runs plain ``def``
    endpoints in a pool): claiming is one atomic check-and-set, so of two sends
    to one chat at once exactly one gets the chat and the other a 409.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, Claim] = {}

    def busy(self, chat_id: str) -> bool:
        return chat_id in self._claims

    def claim(self, chat_id: str) -> Claim:
        """The chat for one answer, until :meth:`Claim.release`; 409 if it is answering."""
        with self._lock:
            if chat_id in self._claims:
                raise ApiError(
                    409, "this chat is already answering; stop it first", code="chat_busy"
                )
            claim = self._claims[chat_id] = Claim(self, chat_id)
        return claim

    def stop(self, chat_id: str) -> bool:
        """Ask the chat's answer to stop; False when none is running."""
        with self._lock:
            claim = self._claims.get(chat_id)
        if claim is not None:
            claim.request_stop()
        return claim is not None

    def _release(self, claim: Claim) -> None:
        with self._lock:
            if self._claims.get(claim.chat_id) is claim:  # never a later answer's claim
                del self._claims[claim.chat_id]


class Claim:
    """One chat's answer, from the request that claimed it to the end of its stream.

    A stop may be asked for from any thread, even before the stream has started;
    the event the stream waits on is made on its loop when it starts.
    """

    def __init__(self, owner: Answering, chat_id: str) -> None:
        self.chat_id = chat_id
        self._owner = owner
        self._lock = threading.Lock()
        self._stop_requested = False
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def stop_event(self) -> asyncio.Event:
        """The event set when the answer is asked to stop (called on the stream's loop)."""
        stop = asyncio.Event()
        with self._lock:
            self._waiting = (asyncio.get_running_loop(), stop)
            if self._stop_requested:
                stop.set()
        return stop

    def request_stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            waiting = self._waiting
        if waiting is not None:
            loop, stop = waiting
            loop.call_soon_threadsafe(stop.set)

    def release(self) -> None:
        """Let the chat answer again (idempotent)."""
        self._owner._release(self)


# -- from a stored chat to a prompt -----------------------------------------------------------
def chat_params(
    settings: ServerSettings, stored: Mapping[str, Any], model: Model | None = None
) -> GenerationParams:
    """The server's defaults (with ``model``'s catalog sampling), then the chat's own parameters.

    None in ``stored`` means "not set".
    """
    overrides = {k: v for k, v in stored.items() if k in PARAM_NAMES and v is not None}
    if isinstance(overrides.get("stop"), list):
        overrides["stop"] = tuple(overrides["stop"])
    defaults = settings.defaults if model is None else model.default_params(settings.defaults)
    params = merge_params(defaults, overrides)
    return params.replace(max_tokens=max_tokens_for(settings, params.max_tokens))


def chat_prompt(
    model: Model,
    chat: Chat,
    history: list[StoredMessage],
    params: GenerationParams,
    collections: list[str] | None = None,
    localdocs: LocalDocs | None = None,
    tools: list[dict[str, Any]] | None = None,
    calls: bool = False,
) -> Prepared:
    """The stored chat through the answer pipeline (the oldest turns dropped if they do not fit).

    With ``collections`` the last question is searched in them and its turn
    carries the excerpts in the prompt (not in the store), as ``ChatSession`` does.
    ``tools`` are offered to the model; ``calls``: the stored tool calls and
    their results are in the prompt (else left out, as for a chat without tools).
    """
    messages = prompt_messages(history, with_tools=calls)
    asks = bool(collections) and bool(messages) and messages[-1].role == "user"
    return answer.prepare(
        model,
        messages,
        params=params,
        system_prompt=chat.system_prompt,
        collections=collections if asks and collections else (),
        localdocs=localdocs if asks else None,
        tools=tools or (),
    )


# -- the stream -------------------------------------------------------------------------------
async def _until_stopped(stream: AsyncStream, stop: asyncio.Event) -> AsyncGenerator[Chunk]:
    """The stream's chunks until it ends or ``stop`` is set (then the request is cancelled)."""
    stopping = asyncio.ensure_future(stop.wait())
    pending: asyncio.Future[Chunk] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(stream.__anext__())
            await asyncio.wait({pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                return
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            yield chunk
            if chunk.finish_reason is not None:
                return
    finally:
        stopping.cancel()
        if pending is not None:
            pending.cancel()
        stream.close()


@dataclass
class AnswerRequest:
    """What one answer needs: where to save it and what to answer."""

    store: ChatStore
    manager: ModelManager
    settings: ServerSettings
    answering: Answering
    chat: Chat
    model: str | None  # None: the server's model
    user_text: str | None  # None: answer the history as it is (regenerate)
    collections: list[str] = field(default_factory=list)  # LocalDocs, searched for the question
    localdocs: Callable[[], LocalDocs] | None = None  # opens them (only when there are some)
    tools: ChatTools | None = None  # the MCP servers, when the chat offers their tools


def answer_response(req: AnswerRequest, prepare: Callable[[], object] | None = None) -> Response:
    """Claim the chat, change the store (``prepare``, then the question), then stream.

    Whatever has a status of its own fails before the response starts, as that
    status: a chat that is already answering is a 409, a database locked by
    another writer or a full disk a 503 with ``Retry-After`` (the claim is let go).
    """
    claim = req.answering.claim(req.chat.id)
    try:
        if prepare is not None:
            prepare()
        user = None
        if req.user_text is not None:
            user = req.store.add_message(req.chat.id, "user", req.user_text)
    except BaseException:
        claim.release()
        raise
    return _ClaimedStream(answer_events(req, claim, user), claim)


class _ClaimedStream(StreamingResponse):
    """The answer's events; the claim is let go when the response ends, however it ends
    (the stream may never start when the client has gone)."""

    def __init__(self, events: AsyncGenerator[str], claim: Claim) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self._events = events
        self._claim = claim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._events.aclose()  # its clean-up saves the answer so far
            finally:
                self._claim.release()


async def answer_events(
    req: AnswerRequest, claim: Claim, user: StoredMessage | None
) -> AsyncGenerator[str]:
    """The server-sent events of one answer (see the module docstring)."""
    stop = claim.stop_event()
    try:
        if user is not None:
            yield event("user", message=message_out(user))
        loaded: Loaded = await req.manager.acquire(req.model, "chat")
        try:
            async for item in _generate(req, loaded, stop):
                yield item
        finally:
            loaded.release()
    except Exception as exc:  # after the headers: the error goes in the stream
        yield event("error", **translate(exc, req.manager.installed_names()).body())
    finally:
        claim.release()


@dataclass
class _Round:
    """One model turn of an answer: its prompt, what it wrote, and the answer it may become."""

    prompt: Prepared
    recorder: AnswerRecorder
    text: str = ""  # everything the model wrote (a call included)
    final: Chunk | None = None
    finished: bool = False

    def calls(self) -> list[dict[str, Any]]:
        """The tool calls it made (none when it was stopped or offered no tools)."""
        parsed = self.prompt.parse_tools(self.text) if self.final is not None else None
        return parsed.calls if parsed is not None else []

    def finish(self) -> StoredMessage | None:
        """Save the answer with its stats (or as stopped), its LocalDocs sources checked."""
        self.finished = True
        recorder, final = self.recorder, self.final
        if self.prompt.references:
            annotate(recorder.text, self.prompt.references)
        if final is not None and final.usage is not None and final.timings is not None:
            stats = AnswerStats.of(final.finish_reason or "stop", final.usage, final.timings)
            return recorder.finish(stats.finish_reason, **stats.store_fields())
        return recorder.finish("cancelled")  # stopped: the recorder measured what it saw


async def _generate(req: AnswerRequest, loaded: Loaded, stop: asyncio.Event) -> AsyncIterator[str]:
    """The answer: one model turn, or tool rounds when the chat offers MCP tools."""
    model = loaded.model
    params = chat_params(req.settings, req.chat.params, model)
    tools = None
    if req.tools is not None:
        tools = await asyncio.to_thread(req.tools.start)  # the servers start on first use
        for line in req.tools.problems():
            yield event("notice", text=line)
    if req.chat.model != loaded.name:
        req.store.set_model(req.chat.id, loaded.name)  # the chat remembers who answered
    yield event("start", model=loaded.name)
    rounds = Rounds(tools.specs() if tools is not None else [])
    rnd: _Round | None = None
    try:
        while True:
            offered = rounds.offered()
            rnd = await _round(req, loaded.name, model, params, offered, tools is not None)
            async for item in _stream_round(loaded, rnd, rounds, stop):
                yield item
            calls = rnd.calls()
            if not calls:
                break
            if rnd.recorder.message is not None:  # words before a call are not the answer
                req.store.truncate_from(rnd.recorder.message.id)
            rnd.finished = True
            yield event("reset")
            if not rounds.accept(calls):
                continue
            assert tools is not None and req.tools is not None
            said = rnd.recorder.text  # words beside the calls: kept with the first one
            for c in calls:
                async for item in _call(req, req.tools, tools, c, stop, rounds, said):
                    yield item
                said = ""
    finally:  # also when the client went away: cancel the request, keep what was said
        saved = rnd.finish() if rnd is not None and not rnd.finished else None
    yield event("done", message=message_out(saved) if saved else None)


async def _round(
    req: AnswerRequest,
    name: str,
    model: Model,
    params: GenerationParams,
    offered: list[dict[str, Any]],
    with_calls: bool,
) -> _Round:
    """The next model turn, from the chat as stored now (calls and results included)."""
    history = req.store.messages(req.chat.id)
    if req.collections and req.localdocs is not None:  # searching embeds: off the event loop
        opener = req.localdocs
        prompt = await asyncio.to_thread(
            lambda: chat_prompt(
                model, req.chat, history, params, req.collections, opener(), offered, with_calls
            )
        )
    else:
        prompt = chat_prompt(model, req.chat, history, params, tools=offered, calls=with_calls)
    recorder = AnswerRecorder(
        req.store,
        req.chat.id,
        model=name,
        prompt_tokens=prompt.prompt_tokens or None,
        sources=prompt.references,
        every=SAVE_EVERY,
    )
    return _Round(prompt, recorder)


async def _stream_round(
    loaded: Loaded, rnd: _Round, rounds: Rounds, stop: asyncio.Event
) -> AsyncIterator[str]:
    """Stream one model turn's text to the page; a call it writes is held back, not shown
    (also one written when no tools were offered: small models imitate the history)."""
    runner = loaded.runner
    assert runner is not None
    splitter = ContentSplitter(rnd.prompt.forced) if rounds.specs else None
    recorder = rnd.recorder
    shown_at = 0.0
    stream = runner.stream(rnd.prompt.prompt, rnd.prompt.params)
    if rnd.prompt.cite:  # an answer from documents that cites nothing gets the citation step
        stream = answer.CitedStream(loaded.model, rnd.prompt, stream, runner)
    try:
        async with contextlib.aclosing(_until_stopped(stream, stop)) as chunks:
            async for chunk in chunks:
                rnd.text += chunk.text
                shown = splitter.feed(chunk.text) if splitter is not None else chunk.text
                recorder.add(shown, len(chunk.token_ids))  # saved every SAVE_EVERY s
                rnd.final = chunk if chunk.finish_reason is not None else None
                if shown:
                    yield event("delta", text=shown)
                due = time.perf_counter() - shown_at >= HTML_EVERY
                if due and shown and rnd.final is None:
                    shown_at = time.perf_counter()
                    yield event("html", html=render_markdown(recorder.text))
    finally:
        stream.close()
    if splitter is not None:  # what was held back and is no call is the answer's too
        rest = splitter.flush() + rounds.shown(splitter.held)
        if rest:
            recorder.add(rest)
            yield event("delta", text=rest)


async def _call(
    req: AnswerRequest,
    chat_tools: ChatTools,
    tools: McpTools,
    request: dict[str, Any],
    stop: asyncio.Event,
    rounds: Rounds,
    said: str = "",
) -> AsyncIterator[str]:
    """One tool call: shown, run as its permission says (asking the page for ``confirm``), saved."""
    from llm4all.mcp.history import tool_record
    from llm4all.mcp.loop import DECLINED, execute, new_call, refusal

    call = new_call(tools, request)
    call.id = call.id or new_call_id()
    asking = call.permission == "confirm"
    yield event("tool_call", call=call_out(call, call.id, "asking" if asking else "running"))
    refused = refusal(call)
    if refused is not None:
        call.result = refused
    elif asking and not await chat_tools.consents.ask(
        req.chat.id, call.id, stop, chat_tools.consent_seconds
    ):
        call.result = DECLINED
    else:
        if asking:
            yield event("tool_call", call=call_out(call, call.id, "running"))
        await asyncio.to_thread(execute, tools, call)
    rounds.done(call)
    saved = req.store.add_message(req.chat.id, "tool", tool_record(call, said))
    yield event("tool_result", call=call_out(call, call.id, "done"), message=message_out(saved))


def call_out(call: ToolCall, call_id: str | None = None, status: str = "done") -> dict[str, Any]:
    """A call as the page shows it (see ``ToolCallOut``)."""
    return {
        "id": call_id,
        "server": call.server,
        "name": call.name,
        "arguments": call.arguments,
        "permission": call.permission,
        "status": status,
        "ran": call.ran,
        "result": call.result[:RESULT_CHARS] if status == "done" else None,
    }
