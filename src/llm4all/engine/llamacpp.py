"""The llama.cpp backend: GGUF models through llama-cpp-python's low-level API.

Per token the Python side does only what it must: one ``llama_decode`` of the
new token, one native ``llama_sampler_sample`` (the whole sampler chain,
grammar included, runs in C), one piece lookup. Each KV slot (a llama.cpp
sequence id) remembers the tokens it holds, so a prompt that continues a
previous one - the next turn of a chat - evaluates only the new tokens.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.engine import gpu
from llm4all.engine._native import NativeModel, Sampler, common_prefix, supports_gpu_offload
from llm4all.engine.base import (
    Capabilities,
    Chunk,
    Engine,
    FinishReason,
    ModelInfo,
    PromptInput,
    ScoredChunk,
    ShouldContinue,
    Timings,
    TokenLogprob,
    Usage,
)
from llm4all.engine.probe import check_model_file
from llm4all.engine.speculative import DraftLength
from llm4all.engine.textstream import StopMatcher, Utf8Stream
from llm4all.errors import ContextOverflow, InvalidParameter
from llm4all.params import GenerationParams, LoadParams

if TYPE_CHECKING:
    from llm4all.engine.runner import Runner
    from llm4all.engine.speculative import Drafter

log = logging.getLogger(__name__)

#: Embedding inputs this short (in tokens, all texts together) run on one thread.
SHORT_INPUT_TOKENS = 64


def default_threads() -> int:
    """Physical cores where known (hyper-threads slow llama.cpp down), else logical."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail inside odd containers
        physical = None
    return max(1, physical or os.cpu_count() or 1)


class LlamaCppEngine(Engine):
    """A GGUF model loaded with llama.cpp. One generation at a time inline; many at once
    through its runner (``scheduler.py``).

    The attributes ``native`` (the handles), ``slots`` (the tokens each KV slot
    holds) and ``lock`` (held while the context is in use) and the methods
    ``start_generation``/``check_request``/``decode_or_rollback``/``reuse_prefix``/
    ``copy_slot`` are this backend's own interface to its scheduler; nothing
    outside ``engine/`` uses them.
    """

    def __init__(self, path: str | Path, params: LoadParams | None = None) -> None:
        self.path = Path(path)
        self.params = params or LoadParams()
        self._n_threads = self.params.n_threads or default_threads()
        gpu.check_offload(self.params.n_gpu_layers)  # a CPU build would ignore the layers
        check_model_file(self.path)  # a corrupt file is an error here, not a dead process
        self.native = NativeModel(self.path, self.params, self._n_threads)
        try:
            self.drafter = self._make_drafter()
        except BaseException:
            self.native.close()
            raise
        self.slots: list[list[int]] = [[] for _ in range(self.params.n_seq_max)]
        self.lock = threading.Lock()
        self._closed = False
        self.capabilities = Capabilities(
            tokens=True,
            grammar=True,
            json_schema=True,
            prefix_cache=True,
            batching=True,
            embeddings=self.params.embedding,
            logprobs=True,
            scoring=True,
            gpu_offload=supports_gpu_offload(),
        )
        self.info = self._read_info()
        log.info(
            "loaded %s (%s, n_ctx=%d, %d threads)",
            self.path.name,
            self.info.architecture,
            self.info.n_ctx,
            self._n_threads,
        )

    def _make_drafter(self) -> Drafter | None:
        """The speculative drafter the load params ask for (``engine/speculative.py``)."""
        from llm4all.engine.speculative import DraftModel, PromptLookup

        if self.params.draft:
            path = self._draft_path(self.params.draft)
            return DraftModel(path, self.native.n_ctx, self._n_threads, self.native)
        return PromptLookup() if self.params.lookup else None

    def _draft_path(self, draft: str) -> Path:
        """A draft given as a file, a model name, or ``auto`` (the catalog's suggestion)."""
        from llm4all.errors import ModelLoadError
        from llm4all.models import ModelStore

        store = ModelStore()
        if draft == "auto":
            entry = store.catalog.by_filename(self.path.name)
            suggested = getattr(entry, "draft", None)
            if not suggested:
                raise ModelLoadError(str(self.path), "the catalog suggests no draft model for it")
            draft = suggested
        if Path(draft).expanduser().is_file():
            return Path(draft).expanduser()
        return store.resolve(draft, allow_download=False).path

    def _read_info(self) -> ModelInfo:
        n = self.native
        meta = n.metadata()
        bos, eos, add_bos = n.special_tokens()
        layers = self.params.n_gpu_layers
        device = gpu.describe(layers, n.n_layers(), gpu.offload_backend() if layers else None)
        return ModelInfo(
            name=meta.get("general.name", self.path.stem),
            architecture=meta.get("general.architecture", "unknown"),
            n_ctx=n.n_ctx,
            size_bytes=self.path.stat().st_size,
            chat_template=n.chat_template(),
            bos_token=bos,
            eos_token=eos,
            add_bos=add_bos,
            metadata=meta,
            backend="llamacpp",
            device=device,
            **n.sizes(),
        )

    # -- tokens -----------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return self.native.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.native.piece(t) for t in tokens).decode("utf-8", "replace")

    def token_bytes(self, token: int) -> bytes:
        return self.native.piece(token)

    @property
    def n_threads(self) -> int:
        return self._n_threads

    def cached_tokens(self, slot: int = 0) -> int:
        """How many tokens of ``slot`` sit in the KV cache (for tests and stats)."""
        return len(self.slots[slot])

    def runner(self, max_queue: int = 64) -> Runner:
        """Continuous batching over this context's ``n_seq_max`` KV slots."""
        from llm4all.engine.scheduler import BatchScheduler

        return BatchScheduler(self, max_queue=max_queue)

    # -- generation -------------------------------------------------------------
    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
        logprobs: int | None = None,
    ) -> Iterator[Chunk]:
        tokens = self.prompt_tokens(prompt)
        self.check_request(tokens, slot)
        # Validation happens eagerly; the stream itself starts on first next().
        gen = self.start_generation(tokens, params, slot, should_continue, logprobs)
        return self._stream(gen)

    def check_request(self, prompt: Sequence[int], slot: int) -> None:
        if not prompt:
            raise InvalidParameter("prompt", "", "at least one token")
        if not 0 <= slot < len(self.slots):
            raise InvalidParameter("slot", slot, f"0..{len(self.slots) - 1}")
        self.check_fits(len(prompt))

    def start_generation(
        self,
        prompt: Sequence[int],
        params: GenerationParams,
        slot: int,
        should_continue: ShouldContinue | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        """The state of one generation (its native sampler is freed by ``close``)."""
        seed = params.seed if params.seed is not None else self.params.seed
        sampler = Sampler(self.native, params, seed if seed is not None else random.getrandbits(32))
        return Generation(self, list(prompt), params, sampler, slot, should_continue, logprobs)

    def _stream(self, seq: Generation) -> Iterator[Chunk]:
        """The single-sequence driver: one token per ``llama_decode``, inline."""
        if self.drafter is not None:
            yield from self._stream_speculative(seq, self.drafter)
            return
        with self.lock, seq:
            index = self.evaluate_prompt(seq)
            while True:
                chunk = seq.step(index)
                if chunk is not None:
                    yield chunk
                if seq.finished:
                    break
                index = self._decode_one(seq.last_token, seq.slot)
            yield seq.final_chunk()

    def _stream_speculative(self, seq: Generation, drafter: Drafter) -> Iterator[Chunk]:
        """The single-sequence driver with a drafter: many tokens per ``llama_decode``.

        Each pass decodes the last sampled token and the drafted ones; the
        generation then steps position by position, exactly as it would one
        token at a time, while the target's pick equals the draft.
        """
        with self.lock, seq:
            index = self.evaluate_prompt(seq)
            chunk = seq.step(index)
            if chunk is not None:
                yield chunk
            while not seq.finished:
                self.native.batch.clear()
                tokens, indices = self.add_drafted(seq, self.native.n_batch)
                self.decode_or_rollback(seq.slot)
                yield from self.verify(seq, tokens, indices)
            yield seq.final_chunk()

    def add_drafted(self, seq: Generation, budget: int) -> tuple[list[int], list[int]]:
        """Add ``seq``'s last token and up to k drafted ones (``budget`` in all at most)
        to the batch; returns the tokens and their batch indices (for :meth:`verify`)."""
        cache = self.slots[seq.slot]
        drafts: list[int] = []
        if self.drafter is not None:
            room = min(self.info.n_ctx - len(cache) - 2, budget - 1, seq.limit - len(seq.produced))
            k = min(seq.draft_length.next, room)
            if k > 0:
                drafts = seq.draft_length.propose(self.drafter, seq.prompt + seq.produced, k)
        tokens = [seq.last_token, *drafts]
        batch = self.native.batch
        indices = [batch.add(t, len(cache) + i, seq.slot, True) for i, t in enumerate(tokens)]
        seq.draft_length.decoding()  # the pass's time, measured up to verify, is a cost
        return tokens, indices

    def verify(self, seq: Generation, tokens: list[int], indices: list[int]) -> list[Chunk]:
        """After the decode of :meth:`add_drafted`'s batch: step ``seq`` at each position
        while its pick equals the draft, keep those KV cells, drop the rest."""
        cache, chunks, kept = self.slots[seq.slot], [], 0
        n_drafts = len(tokens) - 1
        for i, index in enumerate(indices):
            cache.append(tokens[i])
            chunk = seq.step(index)
            if chunk is not None:
                chunks.append(chunk)
            if seq.finished or i == n_drafts or seq.last_token != tokens[i + 1]:
                break
            kept += 1
        if kept < n_drafts and not self.native.forget(seq.slot, len(cache)):
            self.native.forget(seq.slot, 0)  # a model that cannot drop a tail: start over
            cache.clear()
        seq.passes += 1
        seq.drafted += n_drafts
        seq.accepted += kept
        seq.draft_length.update(n_drafts, kept)
        return chunks

    def evaluate_prompt(self, seq: Generation) -> int:
        """Bring the slot's KV cache to the prompt, reusing its prefix; returns the logits index."""
        prompt, slot = seq.prompt, seq.slot
        cache = self.slots[slot]
        keep = self.reuse_prefix(slot, prompt)
        batch, n_batch = self.native.batch, self.native.n_batch
        index = 0
        for start in range(keep, len(prompt), n_batch):
            part = prompt[start : start + n_batch]
            batch.clear()
            for offset, token in enumerate(part):
                index = batch.add(token, start + offset, slot, start + offset == len(prompt) - 1)
            self.decode_or_rollback(slot)
            cache.extend(part)
        seq.prompt_done(keep)
        return index

    def reuse_prefix(self, slot: int, prompt: Sequence[int]) -> int:
        """Keep the part of ``slot``'s cache that starts ``prompt`` (at most all but its
        last token, which must be evaluated for logits); returns how many tokens stay."""
        cache = self.slots[slot]
        keep = max(0, min(common_prefix(cache, prompt), len(prompt) - 1))
        if not self.native.forget(slot, keep):
            keep = 0  # some models (recurrent) cannot drop a suffix: start over
            self.native.forget(slot, 0)
        del cache[keep:]
        return keep

    def copy_slot(self, src: int, dst: int, keep: int | None) -> None:
        """Make ``dst`` hold ``src``'s cached tokens (the first ``keep`` of them)."""
        native, slots = self.native, self.slots
        native.copy_seq(src, dst)
        keep = len(slots[src]) if keep is None else keep
        if native.forget(dst, keep):
            slots[dst][:] = slots[src][:keep]
        else:  # a model whose cache cannot drop a tail: start the slot over
            native.forget(dst, 0)
            slots[dst].clear()

    def decode_or_rollback(self, *slots: int) -> None:
        try:
            self.native.decode()
        except BaseException:
            for slot in slots:  # keep each slot's bookkeeping equal to its KV cells
                self.native.forget(slot, len(self.slots[slot]))
            raise

    def _decode_one(self, token: int, slot: int) -> int:
        cache = self.slots[slot]
        batch = self.native.batch
        batch.clear()
        index = batch.add(token, len(cache), slot, True)
        self.decode_or_rollback(slot)
        cache.append(token)
        return index

    # -- scoring ----------------------------------------------------------------
    def token_logprobs(
        self, tokens: Sequence[int], first: int = 1, *, best: list[int] | None = None
    ) -> list[float]:
        """Teacher-forced log-probabilities (nats) of ``tokens[first:]``, for perplexity.

        The tokens share one window: more than ``n_ctx`` is a
        :class:`~llm4all.errors.ContextOverflow` (``llm4all.evaluate`` slides a
        window over longer texts). Runs on slot 0, whose cache then holds ``tokens``.
        ``best``, when given, receives the most likely token at each scored position.
        """
        if not 1 <= first <= len(tokens):
            raise InvalidParameter("first", first, f"1..{len(tokens)}")
        if len(tokens) > self.info.n_ctx:
            raise ContextOverflow(len(tokens), self.info.n_ctx)
        with self.lock:
            cache = self.slots[0]
            cache.clear()
            try:
                scores = self.native.token_logprobs(tokens, first, best)
            except BaseException:
                self.native.forget(0, 0)
                raise
            cache.extend(tokens)
        return scores

    # -- embeddings -------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled, L2-normalised embeddings; many texts share one ``llama_decode``."""
        if not self.params.embedding:
            raise InvalidParameter("embedding", False, "a model loaded with embedding=True")
        if self._closed:
            raise RuntimeError("the model was closed")
        token_lists = [self.tokenize(t) for t in texts]
        empty = next((i for i, tokens in enumerate(token_lists) if not tokens), None)
        if empty is not None:  # a decode of no tokens fails; "\x06" is no token for some models
            raise InvalidParameter(f"texts[{empty}]", texts[empty], "text with at least one token")
        limit = min(self.info.n_ctx, self.native.n_batch)
        for tokens in token_lists:
            del tokens[limit:]  # longer texts are truncated; callers chunk first
        # A short input (a search query) is too little work to share: threads would
        # mostly wait at llama.cpp's barriers, and on busy cores each wait costs a
        # time slice (measured: 1 thread p95 47 ms, 2 threads p95 2.2 s, loaded 2-core box).
        threads = 1 if sum(map(len, token_lists)) <= SHORT_INPUT_TOKENS else self._n_threads
        out: list[list[float]] = []
        with self.lock:
            self._set_threads(threads)
            try:
                for group in _pack(token_lists, self.native.n_batch, len(self.slots)):
                    out.extend(self._embed_group(group))
            finally:
                self._set_threads(self._n_threads)
        return out

    def _set_threads(self, n: int) -> None:
        self.native.set_threads(n)

    def _embed_group(self, group: list[list[int]]) -> list[list[float]]:
        import numpy as np

        native = self.native
        native.batch.clear()
        for seq_id, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                native.batch.add(token, pos, seq_id, True)
        native.clear_memory()
        native.decode()
        n_embd = self.info.n_embd
        out = np.empty((len(group), n_embd), dtype=np.float32)
        for seq_id in range(len(group)):  # one copy per vector, no per-float Python work
            out[seq_id] = native.sequence_embedding(seq_id, n_embd)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        vectors: list[list[float]] = out.tolist()
        return vectors

    def reset(self, slot: int | None = None) -> None:
        """Forget the KV cache of one slot (or all)."""
        for s in range(len(self.slots)) if slot is None else (slot,):
            self.native.forget(s, 0)
            self.slots[s].clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.drafter is not None:
                self.drafter.close()
            self.native.close()


def _pack(items: list[list[int]], max_tokens: int, max_seqs: int) -> Iterator[list[list[int]]]:
    """Group token lists so each group fits one batch. Example: sizes 3,3,3 in 7 -> [2 lists], [1]."""
    group: list[list[int]] = []
    used = 0
    for tokens in items:
        if group and (used + len(tokens) > max_tokens or len(group) == max_seqs):
            yield group
            group, used = [], 0
        group.append(tokens)
        used += len(tokens)
    if group:
        yield group


class Generation:
    """One generation in flight: sampler, text decoding, stop strings, limits, timings.

    Drivers (the inline loop above, the batch scheduler) evaluate the prompt,
    then alternate ``step(logits_index)`` and a decode of ``last_token`` until
    ``finished``; ``final_chunk()`` closes the stream.
    """

    def __init__(
        self,
        engine: LlamaCppEngine,
        prompt: list[int],
        params: GenerationParams,
        sampler: Sampler,
        slot: int,
        should_continue: ShouldContinue | None,
        logprobs: int | None = None,
    ) -> None:
        self._native = engine.native
        self._cache = engine.slots[slot]
        self._n_ctx = engine.info.n_ctx
        self.prompt, self.params, self.sampler, self.slot = prompt, params, sampler, slot
        self.should_continue = should_continue
        self.logprobs = logprobs  # None: not scored; k: the chosen token and the k best
        self.scores: list[TokenLogprob] = []
        self.limit = params.max_tokens if params.max_tokens is not None else self._n_ctx
        self._text, self._stops = Utf8Stream(), StopMatcher(params.stop)
        self.produced: list[int] = []
        self._reported = 0
        self.cached = 0
        self.last_token = -1
        self.finished = False
        self.reason: FinishReason = "length"
        self.t0 = time.perf_counter()
        self.t_prompt = 0.0
        self.t_first: float | None = None
        # Speculative decoding's counts; the prompt's pass gives the first token.
        self.drafted = self.accepted = 0
        self.passes = 1 if engine.drafter is not None else 0
        self.draft_length = DraftLength(engine.drafter.costs if engine.drafter else None)

    def prompt_done(self, cached: int) -> None:
        self.cached = cached
        self.t_prompt = time.perf_counter() - self.t0

    def _finish(self, reason: FinishReason) -> None:
        self.finished, self.reason = True, reason

    def step(self, index: int) -> Chunk | None:
        """Sample the next token from the logits at batch ``index``; maybe emit text."""
        if self.should_continue is not None and not self.should_continue():
            self._finish("cancelled")
            return None
        token = self.sampler.sample(self._native, index)
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if self._native.is_eog(token):
            self._finish("stop")
            return None
        self.produced.append(token)
        self.last_token = token
        if self.logprobs is not None:
            self.scores.append(self._score(index, token, self.logprobs))
        out = self._stops.feed(self._text.feed(self._native.piece(token)))
        chunk = None
        if out.text:  # tokens whose text is held back ride along with the next chunk
            chunk = self._chunk(out.text)
        if out.stopped:
            self._finish("stop")
        elif len(self.produced) >= self.limit or len(self._cache) + 1 >= self._n_ctx:
            self._finish("length")
        return chunk

    def final_chunk(self) -> Chunk:
        tail = self._stops.feed(self._text.flush()).text + self._stops.flush()
        t_end = time.perf_counter()
        first = self.t_first if self.t_first is not None else t_end
        n = len(self.produced)
        return self._chunk(
            tail,
            finish_reason=self.reason,
            usage=Usage(len(self.prompt), n, self.cached),
            timings=Timings(
                self.t_prompt,
                first - self.t0,
                t_end - first,
                n,
                self.drafted,
                self.accepted,
                self.passes,
            ),
        )

    def _chunk(self, text: str, **final: Any) -> Chunk:
        """A chunk of ``text`` with the tokens not reported yet (and their scores)."""
        start, self._reported = self._reported, len(self.produced)
        ids = tuple(self.produced[start:])
        if self.logprobs is None:
            return Chunk(text, ids, **final)
        return ScoredChunk(text, ids, **final, logprobs=tuple(self.scores[start:]))

    def _score(self, index: int, token: int, top: int) -> TokenLogprob:
        """Log-softmax of the model's logits at ``index`` (before any sampler changed them)."""
        import numpy as np

        logits = self._native.logits(index).astype(np.float64)
        peak = float(logits.max())
        log_total = peak + math.log(float(np.exp(logits - peak).sum()))
        best: tuple[tuple[int, float], ...] = ()
        if top > 0:
            ids = np.argpartition(-logits, top - 1)[:top]
            ids = ids[np.argsort(-logits[ids], kind="stable")]
            best = tuple((int(i), float(logits[i]) - log_total) for i in ids)
        return TokenLogprob(token, float(logits[token]) - log_total, best)

    def close(self) -> None:
        self.sampler.free()

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
