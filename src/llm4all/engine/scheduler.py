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

The scheduler is the llama.cpp backend's :class:`~llm4all.engine.runner.Runner`
(``LlamaCppEngine.runner()``): callers consume a request either as a blocking
iterator (:meth:`~Runner.submit`) or as an async iterator
(:meth:`~Runner.stream`, for an asyncio server). It drives the engine through
the backend's own interface (``slots``, ``lock``, ``start_generation``,
``copy_slot``...); every llama.cpp call stays in ``_native.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from llm4all.engine._native import common_prefix
from llm4all.engine.base import PromptInput, ScoredChunk, TokenLogprob
from llm4all.engine.llamacpp import Generation, LlamaCppEngine
from llm4all.engine.runner import AsyncStream, Item, Overloaded, Put, Runner, RunnerStats
from llm4all.params import GenerationParams

log = logging.getLogger(__name__)

#: Kept for callers of the scheduler's old names (they live in ``base.py``/``runner.py`` now).
SchedulerStats = RunnerStats
__all__ = [
    "AsyncStream",
    "BatchScheduler",
    "Overloaded",
    "SchedulerStats",
    "ScoredChunk",
    "TokenLogprob",
]

#: Copy a busy slot's KV cells when it shares at least this many more prompt tokens than the
#: free slot does: a copy costs about a memcpy of one sequence's cache, far less than this many
#: tokens of prompt evaluation.
MIN_SHARED_COPY = 32


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
    #: Speculative decoding: the last token and the drafts in the current batch, and where
    drafted: tuple[list[int], list[int]] | None = None


class BatchScheduler(Runner):
    """Serve many generations at once from one :class:`LlamaCppEngine`."""

    engine: LlamaCppEngine

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

    def stats(self) -> RunnerStats:
        with self._cv:
            running, waiting = len(self._active), len(self._pending)
        return RunnerStats(self.n_slots, running, waiting, self.steps)

    # -- submitting ------------------------------------------------------------------
    def _enqueue(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        put: Put,
        logprobs: int | None,
        reuse_prefix: bool,
    ) -> Callable[[], None]:
        tokens = self.engine.prompt_tokens(prompt)
        request = _Request(tokens, params, put, logprobs, reuse_prefix)
        self.engine.check_request(request.prompt, 0)
        with self._cv:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            # Requests that a free slot will take at the next step do not wait.
            waiting = len(self._pending) - len(self._free)
            if waiting >= self.max_queue:
                raise Overloaded(waiting)
            self._pending.append(request)
            self._cv.notify()
        return lambda: self._cancel(request)

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
                with self.engine.lock:
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
                    request.prompt, request.params, slot, logprobs=request.logprobs
                )
            except BaseException as exc:  # e.g. a bad grammar: fail this request only
                self._free.append(slot)
                _deliver(request, exc)
                continue
            if request.reuse_prefix:
                self._place(slot, request.prompt)
            reused = self.engine.reuse_prefix(slot, request.prompt if request.reuse_prefix else [])
            request.cached = request.next_prompt = reused
            self._active[slot] = request

    def _prefix(self, slot: int, prompt: list[int]) -> int:
        return common_prefix(self.engine.slots[slot], prompt)

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
        if len(self.engine.slots[slot]) - own >= MIN_SHARED_COPY:  # worth keeping
            spares = [s for s in self._free if s != donor]
            if spares:
                self._copy(slot, min(spares, key=self._last_used.__getitem__), None)
        if borrow:
            self._copy(donor, slot, min(shared, len(prompt) - 1))

    def _copy(self, src: int, dst: int, keep: int | None) -> None:
        """Make ``dst`` hold ``src``'s cached tokens (the first ``keep`` of them)."""
        self.engine.copy_slot(src, dst, keep)
        self._last_used[dst] = self._last_used[src]

    def _step(self) -> None:
        batch = self.engine.native.batch
        batch.clear()
        budget = batch.capacity
        in_batch: list[_Request] = []
        for slot, request in sorted(self._active.items()):  # ascending ids: see _admit
            if request.cancelled:
                self._release(slot, request, send=False)
                continue
            gen = request.generation
            assert gen is not None
            cache = self.engine.slots[slot]
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
            elif budget > 0 and self._speculate():
                request.drafted = self.engine.add_drafted(gen, budget)
                request.in_batch = len(request.drafted[0])
                budget -= request.in_batch
            elif budget > 0:
                request.index = batch.add(gen.last_token, len(cache), slot, True)
                request.in_batch = 1
                budget -= 1
            else:
                continue
            in_batch.append(request)
        if not in_batch:
            return
        self.engine.decode_or_rollback(*(r.generation.slot for r in in_batch if r.generation))
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
        cache = self.engine.slots[gen.slot]
        if request.next_prompt < len(request.prompt):
            cache.extend(
                request.prompt[request.next_prompt : request.next_prompt + request.in_batch]
            )
            request.next_prompt += request.in_batch
            if request.next_prompt < len(request.prompt):
                return  # the rest of the prompt goes in the next step
            gen.prompt_done(request.cached)
        elif request.drafted is not None:
            tokens, indices = request.drafted
            request.drafted = None
            for verified in self.engine.verify(gen, tokens, indices):
                _deliver(request, verified)
            if gen.finished:
                self._release(gen.slot, request, send=True)
            return
        else:
            cache.append(gen.last_token)
        chunk = gen.step(request.index)
        if chunk is not None:
            _deliver(request, chunk)
        if gen.finished:
            self._release(gen.slot, request, send=True)

    def _speculate(self) -> bool:
        """Draft only for a lone stream: with two or more, one batch already carries a
        token of each over the weights, and drafts would crowd out their tokens (a
        rejected draft costs every stream in the batch, not only its own)."""
        return self.engine.drafter is not None and len(self._active) == 1 and not self._pending

    def _release(self, slot: int, request: _Request, *, send: bool) -> None:
        gen = request.generation
        del self._active[slot]
        if gen is not None:
            if send:
                _deliver(request, gen.final_chunk())
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


def _deliver(request: _Request, item: Item) -> None:
    """Hand an item to the caller; a caller that is gone (its event loop closed) is cancelled."""
    try:
        request.put(item)
    except RuntimeError:
        request.cancelled = True
