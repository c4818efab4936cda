"""The llama.cpp backend: GGUF models through llama-cpp-python's low-level API.

Per token the Python side does only what it must: one ``llama_decode`` of the
new token, one native ``llama_sampler_sample`` (the whole sampler chain,
grammar included, runs in C), one piece lookup. Each KV slot (a llama.cpp
sequence id) remembers the tokens it holds, so a prompt that continues a
previous one - the next turn of a chat - evaluates only the new tokens.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from llm4all.engine._native import NativeModel, Sampler, common_prefix
from llm4all.engine.base import (
    Chunk,
    Engine,
    FinishReason,
    ModelInfo,
    ShouldContinue,
    Timings,
    Usage,
)
from llm4all.engine.textstream import StopMatcher, Utf8Stream
from llm4all.errors import InvalidParameter
from llm4all.params import GenerationParams, LoadParams

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Physical cores where known (hyper-threads slow llama.cpp down), else logical."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail inside odd containers
        physical = None
    return max(1, physical or os.cpu_count() or 1)


class LlamaCppEngine(Engine):
    """A GGUF model loaded with llama.cpp. Not thread-safe: one generation at a time."""

    def __init__(self, path: str | Path, params: LoadParams | None = None) -> None:
        self.path = Path(path)
        self.params = params or LoadParams()
        self._n_threads = self.params.n_threads or default_threads()
        self._native = NativeModel(self.path, self.params, self._n_threads)
        self._slots: list[list[int]] = [[] for _ in range(self.params.n_seq_max)]
        self._lock = threading.Lock()
        self._closed = False
        self.info = self._read_info()
        log.info(
            "loaded %s (%s, n_ctx=%d, %d threads)",
            self.path.name,
            self.info.architecture,
            self.info.n_ctx,
            self._n_threads,
        )

    def _read_info(self) -> ModelInfo:
        import llama_cpp as ll

        n = self._native
        meta = n.metadata()
        arch = meta.get("general.architecture", "unknown")
        bos = int(ll.llama_vocab_bos(n.vocab))
        eos = int(ll.llama_vocab_eos(n.vocab))
        eot = int(ll.llama_vocab_eot(n.vocab))
        return ModelInfo(
            name=meta.get("general.name", self.path.stem),
            architecture=arch,
            n_ctx_train=int(ll.llama_model_n_ctx_train(n.model)),
            n_ctx=n.n_ctx,
            n_vocab=int(ll.llama_vocab_n_tokens(n.vocab)),
            n_params=int(ll.llama_model_n_params(n.model)),
            size_bytes=self.path.stat().st_size,
            chat_template=n.chat_template(),
            bos_token=n.token_text(bos),
            eos_token=n.token_text(eot if eot >= 0 else eos),
            add_bos=bool(ll.llama_vocab_get_add_bos(n.vocab)),
            n_embd=int(ll.llama_model_n_embd(n.model)),
            metadata=meta,
        )

    # -- tokens -----------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return self._native.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._native.piece(t) for t in tokens).decode("utf-8", "replace")

    @property
    def n_threads(self) -> int:
        return self._n_threads

    def cached_tokens(self, slot: int = 0) -> int:
        """How many tokens of ``slot`` sit in the KV cache (for tests and stats)."""
        return len(self._slots[slot])

    # -- generation -------------------------------------------------------------
    def generate(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
    ) -> Iterator[Chunk]:
        if not prompt:
            raise InvalidParameter("prompt", "", "at least one token")
        if not 0 <= slot < len(self._slots):
            raise InvalidParameter("slot", slot, f"0..{len(self._slots) - 1}")
        self.check_fits(len(prompt))
        # Validation happens eagerly; the stream itself starts on first next().
        return self._stream(list(prompt), params, should_continue, slot)

    def _stream(
        self,
        prompt: list[int],
        params: GenerationParams,
        should_continue: ShouldContinue | None,
        slot: int,
    ) -> Iterator[Chunk]:
        seed = params.seed if params.seed is not None else self.params.seed
        sampler = Sampler(
            self._native, params, seed if seed is not None else random.getrandbits(32)
        )
        with self._lock:
            try:
                yield from self._run(prompt, params, sampler, should_continue, slot)
            finally:
                sampler.free()

    def _run(
        self,
        prompt: list[int],
        params: GenerationParams,
        sampler: Sampler,
        should_continue: ShouldContinue | None,
        slot: int,
    ) -> Iterator[Chunk]:
        t0 = time.perf_counter()
        cached, index = self._evaluate_prompt(prompt, slot)
        t_prompt = time.perf_counter() - t0
        text, stops = Utf8Stream(), StopMatcher(params.stop)
        limit = params.max_tokens if params.max_tokens is not None else self.info.n_ctx
        produced: list[int] = []
        reported = 0
        t_first: float | None = None
        reason: FinishReason = "length"
        cache = self._slots[slot]
        while len(produced) < limit:
            if should_continue is not None and not should_continue():
                reason = "cancelled"
                break
            token = sampler.sample(self._native, index)
            if t_first is None:
                t_first = time.perf_counter()
            if self._native.is_eog(token):
                reason = "stop"
                break
            produced.append(token)
            out = stops.feed(text.feed(self._native.piece(token)))
            if out.text:  # tokens whose text is held back ride along with the next chunk
                yield Chunk(out.text, tuple(produced[reported:]))
                reported = len(produced)
            if out.stopped:
                reason = "stop"
                break
            if len(cache) + 1 >= self.info.n_ctx:
                break  # the context is full: "length"
            index = self._decode_one(token, slot)
        tail = stops.feed(text.flush()).text + stops.flush()
        t_end = time.perf_counter()
        first = t_first if t_first is not None else t_end
        yield Chunk(
            tail,
            tuple(produced[reported:]),
            finish_reason=reason,
            usage=Usage(len(prompt), len(produced), cached),
            timings=Timings(t_prompt, first - t0, t_end - first, len(produced)),
        )

    def _evaluate_prompt(self, prompt: list[int], slot: int) -> tuple[int, int]:
        """Bring ``slot``'s KV cache to ``prompt``; returns (reused tokens, logits index)."""
        cache = self._slots[slot]
        keep = min(
            common_prefix(cache, prompt), len(prompt) - 1
        )  # re-evaluate >= 1 token for logits
        if not self._native.forget(slot, keep):
            keep = 0  # some models (recurrent) cannot drop a suffix: start over
            self._native.forget(slot, 0)
        del cache[keep:]
        batch, n_batch = self._native.batch, self._native.n_batch
        index = 0
        for start in range(keep, len(prompt), n_batch):
            part = prompt[start : start + n_batch]
            batch.clear()
            for offset, token in enumerate(part):
                last = start + offset == len(prompt) - 1
                index = batch.add(token, start + offset, slot, last)
            try:
                self._native.decode()
            except BaseException:
                self._native.forget(slot, len(cache))
                raise
            cache.extend(part)
        return keep, index

    def _decode_one(self, token: int, slot: int) -> int:
        cache = self._slots[slot]
        batch = self._native.batch
        batch.clear()
        index = batch.add(token, len(cache), slot, True)
        self._native.decode()
        cache.append(token)
        return index

    def reset(self, slot: int | None = None) -> None:
        """Forget the KV cache of one slot (or all)."""
        for s in range(len(self._slots)) if slot is None else (slot,):
            self._native.forget(s, 0)
            self._slots[s].clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._native.close()
