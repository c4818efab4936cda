"""Continuous batching: many concurrent generations on one llama.cpp context.

One background thread owns the context. Each step it builds a single batch:
one token for every sequence that is decoding, plus as many prompt tokens of
newly admitted requests as still fit, and runs one ``llama_decode``. Then
every sequence whose logits came out samples its next token with its own
sampler chain (its own temperature, seed, grammar) and hands text to its
caller. Requests join and leave between steps.

A request runs on the lowest free KV slot, so that the busy slots stay
consecutive (llama.cpp passes over the weights once per run of consecutive
sequence ids in a batch). Caches move instead of requests: the chat a reused
slot held is copied to the free slot used longest ago, and the longest prefix
of the prompt cached in any other slot is copied in, so a shared system prompt
or the next turn of a chat is evaluated once. A caller that stops reading (a
disconnected HTTP client) marks its request cancelled; the slot is freed at
the next step.

Callers consume a request either as a blocking iterator (:meth:`submit`) or
as an async iterator (:meth:`stream`, for an asyncio server): the scheduler
thread hands each chunk to a ``put`` callback, which is a ``queue.Queue`` in
the first case and ``loop.call_soon_threadsafe`` in the second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from llm4all.engine._native import common_prefix
from llm4all.engine.base import Chunk
from llm4all.engine.llamacpp import Generation, LlamaCppEngine
from llm4all.errors import Llm4allError
from llm4all.params import GenerationParams

log = logging.getLogger(__name__)

Item = Chunk | BaseException
#: Copy a busy slot's KV cells when it shares at least this many more prompt tokens than the
#: free slot does: a copy costs about a memcpy of one sequence's cache, far less than this many
#: tokens of prompt evaluation.
MIN_SHARED_COPY = 32
Put = Callable[[Item], None]


class Overloaded(Llm4allError):
    """The scheduler's queue is full; try again shortly."""

    def __init__(self, queued: int, retry_after: float = 1.0) -> None:
        self.queued = queued
        self.retry_after = retry_after
        super().__init__(f"the server is busy ({queued} requests waiting); retry in a moment")


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one sampled token and of the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class ScoredChunk(Chunk):
    """A chunk with one :class:`TokenLogprob` per token in ``token_ids``."""

    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class SchedulerStats:
    slots: int
    running: int
    waiting: int
    steps: int


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: GenerationParams
    put: Put
    logprobs: int | None = None  # None: not scored; k: the chosen token and the k best
    reuse_prefix: bool = True  # False: evaluate the whole prompt even if it is cached
    cancelled: bool = False
    generation: Generation | None = None
    cached: int = 0  # prompt tokens reused from the slot's KV cache
    next_prompt: int = 0  # prompt tokens already in the KV cache
    in_batch: int = 0  # tokens this request put in the current batch
    index: int = -1  # where this request's logits are in the current batch
    scores: list[TokenLogprob] = field(default_factory=list)
    scores_sent: int = 0


class BatchScheduler:
    """Serve many generations at once from one :class:`LlamaCppEngine`."""

    def __init__(self, engine: LlamaCppEngine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._pending: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._free = list(range(engine.params.n_seq_max))
        self._last_used = dict.fromkeys(self._free, 0.0)  # when each slot's cache was last served
        self._cv = threading.Condition()
        self._closed = False
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name="llm4all-scheduler", daemon=True)
        self._thread.start()

    @property
    def n_slots(self) -> int:
        return self.engine.params.n_seq_max

    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        with self._cv:
            return len(self._active), len(self._pending)

    def stats(self) -> SchedulerStats:
        running, waiting = self.load()
        return SchedulerStats(self.n_slots, running, waiting, self.steps)

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (for logprob reports)."""
        return self.engine._native.piece(token)

    # -- submitting ------------------------------------------------------------------
    def submit(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        *,
        logprobs: int | None = None,
        reuse_prefix: bool = True,
    ) -> Iterator[Chunk]:
        """Queue a generation; iterate the result for its chunks (the last has usage).

        Raises :class:`Overloaded` at once when the queue is full and
        :class:`~llm4all.errors.ContextOverflow` when the prompt cannot fit.
        Closing the iterator early cancels the request. With ``logprobs=k``
        every chunk is a :class:`ScoredChunk`. ``reuse_prefix=False`` evaluates
        the whole prompt even when a slot holds its beginning (for measurements).
        """
        out: queue.Queue[Item] = queue.Queue()
        request = self._enqueue(_Request(list(prompt), params, out.put, logprobs, reuse_prefix))
        return self._results(request, out)

    def stream(
        self,
        prompt: Sequence[int],
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

        request = self._enqueue(_Request(list(prompt), params, put, logprobs, reuse_prefix))
        return AsyncStream(self, request, out)

    def _enqueue(self, request: _Request) -> _Request:
        self.engine._check_request(request.prompt, 0)
        with self._cv:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            # Requests that a free slot will take at the next step do not wait.
            waiting = len(self._pending) - len(self._free)
            if waiting >= self.max_queue:
                raise Overloaded(waiting)
            self._pending.append(request)
            self._cv.notify()
        return request

    def _results(self, request: _Request, out: queue.Queue[Item]) -> Iterator[Chunk]:
        try:
            while True:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._cancel(request)  # no-op when finished; frees the slot when abandoned

    def _cancel(self, request: _Request) -> None:
        request.cancelled = True
        with self._cv:
            if request.generation is None and request in self._pending:
                self._pending.remove(request)  # it no longer counts against the queue

    # -- the loop ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._pending and not self._active:
                    self._cv.wait()
                if self._closed:
                    break
                self._admit()
            try:
                with self.engine._lock:
                    self._step()
            except BaseException as exc:  # a failed decode fails the requests in it, not the server
                log.exception("batch step failed")
                self._fail_all(exc)
        self._fail_all(RuntimeError("scheduler closed"))

    def _admit(self) -> None:
        """Move waiting requests onto free slots, lowest first (see _place)."""
        while self._pending and self._free:
            request = self._pending.popleft()
            if request.cancelled:
                continue
            # The lowest free slot, so that the busy ones stay consecutive: with one KV
            # stream per sequence llama.cpp splits a batch at every gap in the sequence
            # ids and passes over the weights once per piece (measured: a step of
            # sequences 0-3 took 116 ms, of 0,2,4,6 or 5,0,6,3 170-176 ms). Caches move
            # instead of requests: see _place.
            slot = min(self._free)
            self._free.remove(slot)
            try:
                request.generation = self.engine.start_generation(
                    request.prompt, request.params, slot
                )
            except BaseException as exc:  # e.g. a bad grammar: fail this request only
                self._free.append(slot)
                _deliver(request, exc)
                continue
            if request.reuse_prefix:
                self._place(slot, request.prompt)
            reused = self._reuse_prefix(slot, request.prompt if request.reuse_prefix else [])
            request.cached = request.next_prompt = reused
            self._active[slot] = request

    def _prefix(self, slot: int, prompt: list[int]) -> int:
        return common_prefix(self.engine._slots[slot], prompt)

    def _place(self, slot: int, prompt: list[int]) -> None:
        """Get the longest cached prefix of ``prompt`` into ``slot``, keeping other caches.

        Every slot's KV cells outlive its request, so the next turn of a chat or
        a shared system prompt is evaluated once. Before a new request overwrites
        what ``slot`` holds (the earlier turns of some other chat), that cache is
        moved to the free slot used longest ago. Then, if another slot (busy or
        free) shares clearly more of the prompt, its cells are copied in.
        llama.cpp copies a sequence whole (with one KV stream per sequence, a
        memcpy of that stream): far cheaper than evaluating the tokens again.
        """
        own = self._prefix(slot, prompt)
        donors = [(self._prefix(s, prompt), s) for s in range(self.n_slots) if s != slot]
        shared, donor = max(donors, default=(0, -1))
        borrow = donor >= 0 and min(shared, len(prompt) - 1) >= own + MIN_SHARED_COPY
        if len(self.engine._slots[slot]) - own >= MIN_SHARED_COPY:  # worth keeping
            spares = [s for s in self._free if s != donor]
            if spares:
                self._copy(slot, min(spares, key=self._last_used.__getitem__), None)
        if borrow:
            self._copy(donor, slot, min(shared, len(prompt) - 1))

    def _copy(self, src: int, dst: int, keep: int | None) -> None:
        """Make ``dst`` hold ``src``'s cached tokens (the first ``keep`` of them)."""
        import llama_cpp as ll

        native, slots = self.engine._native, self.engine._slots
        native.forget(dst, 0)
        ll.llama_memory_seq_cp(native.memory, src, dst, -1, -1)
        keep = len(slots[src]) if keep is None else keep
        if native.forget(dst, keep):
            slots[dst][:] = slots[src][:keep]
        else:  # a model whose cache cannot drop a tail: start the slot over
            native.forget(dst, 0)
            slots[dst].clear()
        self._last_used[dst] = self._last_used[src]

    def _reuse_prefix(self, slot: int, prompt: list[int]) -> int:
        cache = self.engine._slots[slot]
        keep = max(0, min(common_prefix(cache, prompt), len(prompt) - 1))
        if not self.engine._native.forget(slot, keep):
            keep = 0
            self.engine._native.forget(slot, 0)
        del cache[keep:]
        return keep

    def _step(self) -> None:
        batch = self.engine._native.batch
        batch.clear()
        budget = batch.capacity
        in_batch: list[_Request] = []
        for slot, request in sorted(self._active.items()):  # ascending ids: see _admit
            if request.cancelled:
                self._release(slot, request, send=False)
                continue
            gen = request.generation
            assert gen is not None
            cache = self.engine._slots[slot]
            if request.next_prompt < len(request.prompt):  # still evaluating the prompt
                take = (
                    min(budget - 1, len(request.prompt) - request.next_prompt) if budget > 1 else 0
                )
                if take <= 0:
                    continue
                part = request.prompt[request.next_prompt : request.next_prompt + take]
                for offset, token in enumerate(part):
                    last = request.next_prompt + offset == len(request.prompt) - 1
                    request.index = batch.add(token, len(cache) + offset, slot, last)
                request.in_batch = take
                budget -= take
            elif budget > 0:
                request.index = batch.add(gen.last_token, len(cache), slot, True)
                request.in_batch = 1
                budget -= 1
            else:
                continue
            in_batch.append(request)
        if not in_batch:
            return
        self.engine._decode_or_rollback(*(r.generation.slot for r in in_batch if r.generation))
        self.steps += 1
        for request in in_batch:
            try:
                self._after_decode(request)
            except Exception as exc:  # its own sampling failed: it ends, the others go on
                log.exception("a request failed after a decode step")
                gen = request.generation
                if gen is not None and self._active.get(gen.slot) is request:
                    _deliver(request, exc)
                    self._release(gen.slot, request, send=False)

    def _after_decode(self, request: _Request) -> None:
        gen = request.generation
        assert gen is not None
        cache = self.engine._slots[gen.slot]
        if request.next_prompt < len(request.prompt):
            cache.extend(
                request.prompt[request.next_prompt : request.next_prompt + request.in_batch]
            )
            request.next_prompt += request.in_batch
            if request.next_prompt < len(request.prompt):
                return  # the rest of the prompt goes in the next step
            gen.prompt_done(request.cached)
        else:
            cache.append(gen.last_token)
        produced = len(gen.produced)
        chunk = gen.step(request.index)
        if request.logprobs is not None and len(gen.produced) > produced:
            request.scores.append(self._score(request.index, gen.produced[-1], request.logprobs))
        if chunk is not None:
            _deliver(request, self._scored(request, chunk))
        if gen.finished:
            self._release(gen.slot, request, send=True)

    def _score(self, index: int, token: int, top: int) -> TokenLogprob:
        """Log-softmax of the model's logits at ``index`` (before any sampler changes them)."""
        import llama_cpp as ll
        import numpy as np

        n_vocab = self.engine.info.n_vocab
        ptr = ll.llama_get_logits_ith(self.engine._native.ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        log_total = peak + math.log(float(np.exp(logits - peak).sum()))
        best: tuple[tuple[int, float], ...] = ()
        if top > 0:
            ids = np.argpartition(-logits, top - 1)[:top]
            ids = ids[np.argsort(-logits[ids], kind="stable")]
            best = tuple((int(i), float(logits[i]) - log_total) for i in ids)
        return TokenLogprob(token, float(logits[token]) - log_total, best)

    def _scored(self, request: _Request, chunk: Chunk) -> Chunk:
        if request.logprobs is None:
            return chunk
        end = request.scores_sent + len(chunk.token_ids)
        scores = tuple(request.scores[request.scores_sent : end])
        request.scores_sent = end
        return ScoredChunk(
            chunk.text, chunk.token_ids, chunk.finish_reason, chunk.usage, chunk.timings, scores
        )

    def _release(self, slot: int, request: _Request, *, send: bool) -> None:
        gen = request.generation
        del self._active[slot]
        if gen is not None:
            if send:
                _deliver(request, self._scored(request, gen.final_chunk()))
            gen.close()
        with self._cv:
            self._free.append(slot)
            self._last_used[slot] = time.monotonic()
            self._cv.notify()

    def _fail_all(self, exc: BaseException) -> None:
        for slot, request in list(self._active.items()):
            _deliver(request, exc)
            if request.generation is not None:
                request.generation.close()
            del self._active[slot]
            self._free.append(slot)
        with self._cv:
            while self._pending:
                _deliver(self._pending.popleft(), exc)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=10)


class AsyncStream:
    """The chunks of one request, for ``async for``; ``close()`` cancels it."""

    def __init__(self, scheduler: BatchScheduler, request: _Request, out: asyncio.Queue[Item]):
        self._scheduler = scheduler
        self._request = request
        self._out = out
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
        self._scheduler._cancel(self._request)


def _deliver(request: _Request, item: Item) -> None:
    """Hand an item to the caller; a caller that is gone (its event loop closed) is cancelled."""
    try:
        request.put(item)
    except RuntimeError:
        request.cancelled = True
