"""What chat and text completions share: parameters, limits, running ``n`` choices.

A request becomes one :class:`GenerationParams` per choice (server defaults,
then the request's knobs; with ``n > 1`` and a seed, choice *i* gets
``seed + i``). :func:`start` queues every choice on the model's runner and
waits for each one's first chunk, so that a problem found on admission (a
grammar llama.cpp rejects) is still an HTTP error and not a broken stream.
:class:`Run` then yields ``(choice index, chunk)`` pairs as they come.
Cleanup is synchronous (``close``) so that it is safe in the ``finally`` of
a task the server cancels when a client disconnects.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import StreamingResponse

from llm4all.answer import CitedStream, Prepared
from llm4all.api import Model, merge_params
from llm4all.engine.base import Chunk, PromptInput, ScoredChunk, TokenLogprob, Usage
from llm4all.engine.runner import AsyncStream, Runner
from llm4all.errors import ContextOverflow
from llm4all.params import GenerationParams
from llm4all.server.errors import ApiError, ClientGone
from llm4all.server.manager import Loaded
from llm4all.server.settings import ServerSettings

T = TypeVar("T")
FINGERPRINT = "fp_llm4all"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


# -- parameters and limits ------------------------------------------------------------
def max_tokens_for(settings: ServerSettings, requested: int | None) -> int | None:
    """The answer's token limit: the request's, under the server's cap (which is the default)."""
    cap = settings.max_tokens_cap
    if requested is not None and cap is not None and requested > cap:
        raise ApiError(
            400,
            f"max_tokens is {requested} but this server allows at most {cap} tokens per answer",
            param="max_tokens",
            code="invalid_value",
        )
    if requested is not None:
        return requested
    return cap if cap is not None else settings.defaults.max_tokens


def choice_params(
    settings: ServerSettings,
    knobs: dict[str, Any],
    n: int,
    *,
    max_tokens: int | None,
    json_schema: str | None = None,
    model: Model | None = None,
) -> list[GenerationParams]:
    """One :class:`GenerationParams` per choice (validated against ``params.py``'s ranges)."""
    overrides = {**knobs, "max_tokens": max_tokens}
    if json_schema is not None:
        if overrides.get("grammar") is not None:
            raise ApiError(
                400, "give either grammar or response_format/tools, not both", param="grammar"
            )
        overrides["json_schema"] = json_schema
    defaults = settings.defaults if model is None else model.default_params(settings.defaults)
    base = merge_params(defaults, overrides)
    if n == 1 or base.seed is None:
        return [base] * n
    return [base.replace(seed=(base.seed + i) % 2**32) for i in range(n)]


def check_n(settings: ServerSettings, n: int | None) -> int:
    """The number of choices, within the server's limit."""
    if n is not None and n > settings.max_n:
        raise ApiError(400, f"n is {n}; this server allows at most {settings.max_n}", param="n")
    return n or 1


def check_context(n_ctx: int, prompt_tokens: int, max_tokens: int | None, param: str) -> None:
    """A prompt (plus an explicit answer budget) that cannot fit is a 400, with the counts."""
    if prompt_tokens >= n_ctx:
        raise ContextOverflow(prompt_tokens, n_ctx)
    if max_tokens is not None and prompt_tokens + max_tokens > n_ctx:
        raise ApiError(
            400,
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, "
            f"{max_tokens} in the completion). Please reduce the length of the {param} "
            "or the completion.",
            param=param,
            code="context_length_exceeded",
        )


# -- running the choices ------------------------------------------------------------------
async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # body bytes of a pipelined request: not ours, keep waiting


async def guarded(request: Request, work: Awaitable[T]) -> T:
    """``await work``, unless the client disconnects first (then :class:`ClientGone`)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    raise ClientGone


@dataclass
class Choice:
    """What one choice has produced so far."""

    index: int
    prompt: PromptInput
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None

    def add(self, chunk: Chunk) -> None:
        self.text.append(chunk.text)
        if isinstance(chunk, ScoredChunk):
            self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = (
                "stop" if chunk.finish_reason == "cancelled" else chunk.finish_reason
            )
            self.usage = chunk.usage


class Run:
    """The streams of one request's choices, each with its first chunk already in hand."""

    def __init__(
        self,
        loaded: Loaded,
        streams: list[AsyncStream],
        firsts: list[Chunk],
        prompts: Sequence[PromptInput],
    ) -> None:
        self.loaded = loaded
        self.streams = streams
        self._firsts = firsts
        self.choices = [Choice(i, p) for i, p in enumerate(prompts)]
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def runner(self) -> Runner:
        assert self.loaded.runner is not None
        return self.loaded.runner

    async def chunks(self) -> AsyncIterator[tuple[int, Chunk]]:
        """``(choice index, chunk)`` as they arrive, each choice's in order."""
        if len(self.streams) == 1:
            yield 0, self._firsts[0]
            async for chunk in self.streams[0]:
                yield 0, chunk
            return
        queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]] = asyncio.Queue()
        for i, first in enumerate(self._firsts):
            queue.put_nowait((i, first))
            self._tasks.append(asyncio.create_task(_pump(i, self.streams[i], queue)))
        open_streams = len(self.streams)
        while open_streams:
            i, item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item

    async def collect(self) -> list[Choice]:
        async for i, chunk in self.chunks():
            self.choices[i].add(chunk)
        return self.choices

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage object for the whole request (the prompt counted once per prompt)."""
        seen: set[int] = set()
        prompt = completion = cached = 0
        for choice in self.choices:
            u = choice.usage
            if u is None:
                continue
            completion += u.completion_tokens
            if id(choice.prompt) not in seen:
                seen.add(id(choice.prompt))
                prompt += u.prompt_tokens
                cached += u.cached_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def close(self) -> None:
        """Cancel whatever is still running and give the model back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for stream in self.streams:
            stream.close()
        self.loaded.release()


async def _pump(
    index: int, stream: AsyncStream, queue: asyncio.Queue[tuple[int, Chunk | BaseException | None]]
) -> None:
    try:
        async for chunk in stream:
            queue.put_nowait((index, chunk))
        queue.put_nowait((index, None))
    except Exception as exc:  # handed to the reader, which raises it
        queue.put_nowait((index, exc))


async def start(
    request: Request,
    loaded: Loaded,
    prompts: Sequence[PromptInput],
    params: Sequence[GenerationParams],
    logprobs: int | None,
    *,
    reuse_prefix: bool = True,
    prepared: Prepared | None = None,
) -> Run:
    """Queue one generation per (prompt, params) and wait for every first chunk.

    ``prepared``: the request as the answer pipeline built it; an answer from
    documents then gets the citation step (:class:`~llm4all.answer.CitedStream`).

    Owns ``loaded``'s lease from here on: the returned :class:`Run` gives it
    back on ``close()``, and so does any failure here.
    """
    runner = loaded.runner
    assert runner is not None
    streams: list[AsyncStream] = []
    run: Run | None = None
    try:
        for prompt, p in zip(prompts, params, strict=True):
            stream = runner.stream(prompt, p, logprobs=logprobs, reuse_prefix=reuse_prefix)
            if prepared is not None and prepared.cite:
                stream = CitedStream(loaded.model, prepared, stream, runner)
            streams.append(stream)
        firsts = await guarded(request, _first_chunks(streams))
        run = Run(loaded, streams, firsts, prompts)
        return run
    finally:
        if run is None:
            for stream in streams:
                stream.close()
            loaded.release()


async def _first_chunks(streams: list[AsyncStream]) -> list[Chunk]:
    tasks = [asyncio.ensure_future(s.__anext__()) for s in streams]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # when one failed, the others are still waiting
            task.cancel()


# -- server-sent events -----------------------------------------------------------------
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


def sse_response(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def wants_usage(stream_options: Any) -> bool:
    return bool(stream_options is not None and stream_options.include_usage)
