"""Continuous batching: many concurrent generations on one llama.cpp context.

One background thread owns the context. Each step it builds a single batch:
one token for every sequence that is decoding, plus as many prompt tokens of
newly admitted requests as still fit, and runs one ``llama_decode``. Then
every sequence whose logits came out samples its next token with its own
sampler chain (its own temperature, seed, grammar) and hands text to its
caller through a queue. Requests join and leave between steps.

A request is placed on the free KV slot whose cached tokens share the
longest prefix with its prompt, so a shared system prompt or the next turn of
a chat is evaluated once. A caller that stops reading (a disconnected HTTP
client) marks its request cancelled; the slot is freed at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from llm4all.engine._native import common_prefix
from llm4all.engine.base import Chunk
from llm4all.engine.llamacpp import Generation, LlamaCppEngine
from llm4all.errors import Llm4allError
from llm4all.params import GenerationParams

log = logging.getLogger(__name__)


class Overloaded(Llm4allError):
    """The scheduler's queue is full; try again shortly."""

    def __init__(self, queued: int, retry_after: float = 1.0) -> None:
        self.queued = queued
        self.retry_after = retry_after
        super().__init__(f"the server is busy ({queued} requests waiting); retry in a moment")


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: GenerationParams
    out: queue.Queue[Chunk | BaseException] = field(default_factory=queue.Queue)
    cancelled: bool = False
    generation: Generation | None = None
    cached: int = 0  # prompt tokens reused from the slot's KV cache
    next_prompt: int = 0  # prompt tokens already in the KV cache
    in_batch: int = 0  # tokens this request put in the current batch
    index: int = -1  # where this request's logits are in the current batch


class BatchScheduler:
    """Serve many generations at once from one :class:`LlamaCppEngine`."""

    def __init__(self, engine: LlamaCppEngine, max_queue: int = 64) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._pending: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._free = list(range(engine.params.n_seq_max))
        self._last_used = dict.fromkeys(self._free, 0.0)
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

    def submit(self, prompt: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Queue a generation; iterate the result for its chunks (the last has usage).

        Raises :class:`Overloaded` at once when the queue is full and
        :class:`~llm4all.errors.ContextOverflow` when the prompt cannot fit.
        Closing the iterator early cancels the request.
        """
        self.engine._check_request(prompt, 0)
        request = _Request(list(prompt), params)
        with self._cv:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            if len(self._pending) >= self.max_queue:
                raise Overloaded(len(self._pending))
            self._pending.append(request)
            self._cv.notify()
        return self._results(request)

    def _results(self, request: _Request) -> Iterator[Chunk]:
        try:
            while True:
                item = request.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            request.cancelled = True  # no-op when finished; frees the slot when abandoned

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
        """Move waiting requests onto free slots, best prefix match first."""
        while self._pending and self._free:
            request = self._pending.popleft()
            if request.cancelled:
                continue
            slot = max(
                self._free, key=lambda s: (self._prefix(s, request.prompt), -self._last_used[s])
            )
            self._free.remove(slot)
            try:
                request.generation = self.engine.start_generation(
                    request.prompt, request.params, slot
                )
            except BaseException as exc:  # e.g. a bad grammar: fail this request only
                self._free.append(slot)
                request.out.put(exc)
                continue
            request.cached = request.next_prompt = self._reuse_prefix(slot, request.prompt)
            self._active[slot] = request

    def _prefix(self, slot: int, prompt: list[int]) -> int:
        return common_prefix(self.engine._slots[slot], prompt)

    def _reuse_prefix(self, slot: int, prompt: list[int]) -> int:
        cache = self.engine._slots[slot]
        keep = min(common_prefix(cache, prompt), len(prompt) - 1)
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
        for slot, request in list(self._active.items()):
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
            self._after_decode(request)

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
        chunk = gen.step(request.index)
        if chunk is not None:
            request.out.put(chunk)
        if gen.finished:
            self._release(gen.slot, request, send=True)

    def _release(self, slot: int, request: _Request, *, send: bool) -> None:
        gen = request.generation
        del self._active[slot]
        if gen is not None:
            if send:
                request.out.put(gen.final_chunk())
            gen.close()
        with self._cv:
            self._free.append(slot)
            self._last_used[slot] = time.monotonic()
            self._cv.notify()

    def _fail_all(self, exc: BaseException) -> None:
        for slot, request in list(self._active.items()):
            request.out.put(exc)
            if request.generation is not None:
                request.generation.close()
            del self._active[slot]
            self._free.append(slot)
        with self._cv:
            while self._pending:
                self._pending.popleft().out.put(exc)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=10)
