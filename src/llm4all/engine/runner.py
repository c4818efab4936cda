"""Runners: how concurrent requests reach one engine.

A server never checks an engine's class to decide how to run requests; it
asks the engine for its runner (:meth:`Engine.runner`) and queues every
request on it. Three kinds exist:

- llama.cpp's continuous-batching scheduler (``engine/scheduler.py``): many
  requests share each ``llama_decode``;
- :class:`ThreadRunner` with ``concurrency=1`` (the default for any engine):
  one request at a time, the rest wait in order;
- :class:`ThreadRunner` with a larger ``concurrency`` (a pass-through runner,
  for a remote endpoint that batches on its side): each request streams on its
  own worker thread.

Callers consume a request either as a blocking iterator (:meth:`Runner.submit`)
or as an async iterator (:meth:`Runner.stream`, for an asyncio server). The
runner's thread hands each chunk to a ``put`` callback: a ``queue.Queue`` in
the first case, ``loop.call_soon_threadsafe`` in the second. Closing either
early cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from llm4all.engine.base import Chunk, Engine, PromptInput
from llm4all.errors import Llm4allError
from llm4all.params import GenerationParams

Item = Chunk | BaseException
Put = Callable[[Item], None]


class Overloaded(Llm4allError):
    """A runner's queue is full; try again shortly."""

    def __init__(self, queued: int, retry_after: float = 1.0) -> None:
        self.queued = queued
        self.retry_after = retry_after
        super().__init__(f"the server is busy ({queued} requests waiting); retry in a moment")


@dataclass(frozen=True)
class RunnerStats:
    slots: int  # requests that can run at once
    running: int
    waiting: int
    steps: int  # batched decode steps (the scheduler), or requests finished (thread runners)


#: Kept for callers of the scheduler's old name.
SchedulerStats = RunnerStats


class Runner(ABC):
    """Queue generations on one engine; see the module docstring."""

    engine: Engine

    @property
    @abstractmethod
    def n_slots(self) -> int:
        """How many requests run at once."""

    @abstractmethod
    def _enqueue(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        put: Put,
        logprobs: int | None,
        reuse_prefix: bool,
    ) -> Callable[[], None]:
        """Queue one request whose chunks go to ``put``; returns its cancel function.

        Errors that concern the request itself (a prompt that cannot fit, a full
        queue: :class:`Overloaded`) are raised here, before anything runs.
        """

    @abstractmethod
    def stats(self) -> RunnerStats: ...

    @abstractmethod
    def close(self) -> None: ...

    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        s = self.stats()
        return s.running, s.waiting

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (for logprob reports)."""
        return self.engine.token_bytes(token)

    def submit(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        logprobs: int | None = None,
        reuse_prefix: bool = True,
    ) -> Iterator[Chunk]:
        """Queue a generation; iterate the result for its chunks (the last has usage).

        Raises :class:`Overloaded` at once when the queue is full and
        :class:`~llm4all.errors.ContextOverflow` when the prompt cannot fit.
        Closing the iterator early cancels the request. With ``logprobs=k``
        every chunk is a :class:`~llm4all.engine.base.ScoredChunk`.
        ``reuse_prefix=False`` evaluates the whole prompt even when a slot holds
        its beginning (for measurements).
        """
        out: queue.Queue[Item] = queue.Queue()
        cancel = self._enqueue(prompt, params, out.put, logprobs, reuse_prefix)
        return _results(out, cancel)

    def stream(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        logprobs: int | None = None,
        reuse_prefix: bool = True,
    ) -> AsyncStream:
        """:meth:`submit` for asyncio: call it on the event loop, ``async for`` the result.

        Errors that concern the request itself are raised here, before the
        first ``await``. ``close()`` (synchronous, so it is safe in a
        ``finally`` of a cancelled task) cancels the request.
        """
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Item] = asyncio.Queue()

        def put(item: Item) -> None:
            loop.call_soon_threadsafe(out.put_nowait, item)

        return AsyncStream(out, self._enqueue(prompt, params, put, logprobs, reuse_prefix))


def _results(out: queue.Queue[Item], cancel: Callable[[], None]) -> Iterator[Chunk]:
    try:
        while True:
            item = out.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return
    finally:
        cancel()  # no-op when finished; frees the slot when abandoned


class AsyncStream:
    """The chunks of one request, for ``async for``; ``close()`` cancels it."""

    def __init__(self, out: asyncio.Queue[Item], cancel: Callable[[], None]) -> None:
        self._out = out
        self._cancel = cancel
        self._done = False

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._out.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def close(self) -> None:
        """Stop the request (a no-op once it has finished)."""
        self._done = True
        self._cancel()


class ThreadRunner(Runner):
    """Requests run on up to ``concurrency`` worker threads, the rest wait in order.

    ``concurrency=1`` is the one-at-a-time runner every engine gets by default;
    a larger value is a pass-through runner for an engine whose other side
    batches (a remote endpoint). Each request is the engine's own
    :meth:`~Engine.generate` stream; with one worker it always uses KV slot 0,
    so a chat's next turn reuses its prefix.
    """

    def __init__(self, engine: Engine, concurrency: int = 1, max_queue: int = 64) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.max_queue = max_queue
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="llm4all-runner")
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._done = 0
        self._closed = threading.Event()  # set by close(): waiting requests fail, running stop

    @property
    def n_slots(self) -> int:
        return self.concurrency

    def stats(self) -> RunnerStats:
        with self._lock:
            return RunnerStats(self.concurrency, self._running, self._waiting, self._done)

    def _enqueue(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        put: Put,
        logprobs: int | None,
        reuse_prefix: bool,
    ) -> Callable[[], None]:
        cancelled = threading.Event()

        def go_on() -> bool:
            return not cancelled.is_set() and not self._closed.is_set()

        if not reuse_prefix:
            self.engine.reset(0)
        # generate() validates at once and does its work on the first next().
        chunks = self.engine.generate(prompt, params, should_continue=go_on, logprobs=logprobs)
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("runner is closed")
            if self._waiting >= self.max_queue:
                raise Overloaded(self._waiting)
            self._waiting += 1

        def job() -> None:
            with self._lock:
                self._waiting -= 1
                self._running += 1
            try:
                if cancelled.is_set():
                    return
                if self._closed.is_set():
                    raise RuntimeError("runner closed")
                for chunk in chunks:
                    try:
                        put(chunk)
                    except RuntimeError:  # the caller's event loop is gone
                        cancelled.set()
            except BaseException as exc:  # handed to the caller, who raises it
                with contextlib.suppress(RuntimeError):
                    put(exc)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                with self._lock:
                    self._running -= 1
                    self._done += 1

        self._pool.submit(job)
        return cancelled.set

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=True)
