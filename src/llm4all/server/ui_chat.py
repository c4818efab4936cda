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
from llm4all.chat.template import Message
from llm4all.engine.base import Chunk
from llm4all.engine.runner import AsyncStream
from llm4all.params import GenerationParams
from llm4all.server.errors import ApiError, translate
from llm4all.server.generation import SSE_HEADERS, max_tokens_for
from llm4all.server.manager import Loaded, ModelManager
from llm4all.server.markdown import render_markdown
from llm4all.server.settings import ServerSettings
from llm4all.store import Chat, ChatStore, StoredMessage
from llm4all.store.answers import AnswerRecorder

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs

HTML_EVERY = 0.15  # seconds between rendered snapshots of a growing answer
SAVE_EVERY = 2.0  # seconds between saves of a growing answer
PARAM_NAMES = frozenset(f.name for f in dataclasses.fields(GenerationParams))


def message_out(message: StoredMessage) -> dict[str, Any]:
    """A stored message as the page wants it: answers carry their sanitized HTML."""
    out = message.as_dict()
    out["html"] = render_markdown(message.content) if message.role == "assistant" else None
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
) -> Prepared:
    """The stored chat through the answer pipeline (the oldest turns dropped if they do not fit).

    With ``collections`` the last question is searched in them and its turn
    carries the excerpts in the prompt (not in the store), as ``ChatSession`` does.
    """
    messages = [
        Message("user" if m.role == "user" else "assistant", m.content)
        for m in history
        if m.role in ("user", "assistant")
    ]
    asks = bool(collections) and bool(messages) and messages[-1].role == "user"
    return answer.prepare(
        model,
        messages,
        params=params,
        system_prompt=chat.system_prompt,
        collections=collections if asks and collections else (),
        localdocs=localdocs if asks else None,
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


async def _generate(req: AnswerRequest, loaded: Loaded, stop: asyncio.Event) -> AsyncIterator[str]:
    model, runner = loaded.model, loaded.runner
    assert runner is not None
    params = chat_params(req.settings, req.chat.params, model)
    history = req.store.messages(req.chat.id)
    if req.collections and req.localdocs is not None:  # searching embeds: off the event loop
        opener = req.localdocs
        prompt = await asyncio.to_thread(
            lambda: chat_prompt(model, req.chat, history, params, req.collections, opener())
        )
    else:
        prompt = chat_prompt(model, req.chat, history, params)
    sources = prompt.references
    if req.chat.model != loaded.name:
        req.store.set_model(req.chat.id, loaded.name)  # the chat remembers who answered
    yield event("start", model=loaded.name)
    recorder = AnswerRecorder(
        req.store,
        req.chat.id,
        model=loaded.name,
        prompt_tokens=prompt.prompt_tokens or None,
        sources=sources,
        every=SAVE_EVERY,
    )
    final: Chunk | None = None
    shown_at = 0.0
    stream = runner.stream(prompt.prompt, prompt.params)
    try:
        async with contextlib.aclosing(_until_stopped(stream, stop)) as chunks:
            async for chunk in chunks:
                recorder.add(chunk.text, len(chunk.token_ids))  # saved every SAVE_EVERY s
                final = chunk if chunk.finish_reason is not None else None
                if chunk.text:
                    yield event("delta", text=chunk.text)
                if time.perf_counter() - shown_at >= HTML_EVERY and final is None:
                    shown_at = time.perf_counter()
                    yield event("html", html=render_markdown(recorder.text))
    finally:  # also when the client went away: cancel the request, keep what was said
        stream.close()
        if final is not None and final.usage is not None and final.timings is not None:
            stats = AnswerStats.of(final.finish_reason or "stop", final.usage, final.timings)
            saved = recorder.finish(stats.finish_reason, **stats.store_fields())
        else:  # stopped: the recorder measured what it saw
            saved = recorder.finish("cancelled")
    yield event("done", message=message_out(saved) if saved else None)
