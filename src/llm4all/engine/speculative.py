"""Speculative decoding for the llama.cpp backend: draft k tokens, verify them in one pass.

A *drafter* proposes up to ``k`` tokens that continue the text so far; the
target model evaluates the last sampled token and all proposals in one
``llama_decode`` (one pass over its weights) and samples position by position
with its own sampler. A proposal is kept while it equals what the target
sampled; at the first difference the target's token stands instead, and the
KV cells of the rejected proposals are dropped. Every emitted token is the one
the target's sampler picked from the target's own logits given the same prefix,
so the output is that of normal decoding (greedy: token for token; sampling:
the same distribution), whatever the drafter proposes. Grammars, penalties and
stop strings work unchanged: the :class:`~llm4all.engine.llamacpp.Generation`
steps exactly as it would one token at a time.

Two drafters:

- :class:`DraftModel`: a small model with the same vocabulary in its own
  context (Qwen2.5-Coder 0.5B for 1.5B), greedy, its KV cache trimmed back to
  the accepted tokens after each pass.
- :class:`PromptLookup`: no second model; the longest recent n-gram of the
  text so far (prompt and answer) that occurred before proposes what followed
  it there. Pays off when the answer quotes its input (code edits, LocalDocs
  answers, summaries); costs a dictionary look-up where it finds nothing.

``k`` adapts to the acceptance rate (:class:`DraftLength`). :func:`accept_draft`
is the standard rejection-sampling rule (Leviathan et al. 2023) for drafts
that come with their own distribution; the engine's verifier above is its
special case for a deterministic (greedy) drafter, whose distribution is one
token: accept with probability ``p_target(token)``, which sampling the target
and comparing does exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from llm4all.engine._native import NativeModel

#: Longest and shortest n-gram prompt lookup matches on.
LOOKUP_MAX_NGRAM = 4
LOOKUP_MIN_NGRAM = 2


@dataclass(frozen=True)
class SpeculationStats:
    """What speculation did in one answer.

    ``drafted``: tokens proposed; ``accepted``: of those, kept; ``passes``: target
    decodes after the prompt; ``tokens``: tokens generated. Example: 40 tokens in
    16 passes with 30 of 36 drafts kept → acceptance 0.83, 2.5 tokens per pass.
    """

    method: str  # "draft" or "lookup"
    drafted: int
    accepted: int
    passes: int
    tokens: int

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tokens_per_pass(self) -> float | None:
        return self.tokens / self.passes if self.passes else None


class DraftLength:
    """How many tokens to draft next: grows while all are accepted, shrinks when few are.

    Where drafts keep failing (k at its floor and none kept) drafting pauses for a
    number of passes that doubles each time (1, 2, 4 … up to 64), so a drafter
    that finds nothing costs almost nothing. Example: k=4, all 4 kept → 6; then
    1 of 6 kept → 5.
    """

    def __init__(self, start: int = 4, low: int = 1, high: int = 16) -> None:
        self.k, self.low, self.high = start, low, high
        self._pause, self._wait = 0, 0

    @property
    def next(self) -> int:
        """How many tokens to draft in this pass (0 while paused)."""
        return 0 if self._wait > 0 else self.k

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            self._wait = max(0, self._wait - 1)
            return
        if accepted == drafted:
            self.k = min(self.high, self.k + 2)
            self._pause = 0
        elif accepted == 0 and self.k == self.low:
            self._pause = min(64, max(1, self._pause * 2))
            self._wait = self._pause
        elif accepted * 2 < drafted:
            self.k = max(self.low, self.k - 1)


class Drafter:
    """Proposes tokens that continue ``context`` (all tokens so far, the last one included)."""

    method = ""

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the drafter holds."""


class PromptLookup(Drafter):
    """Drafts by finding the latest earlier occurrence of the context's last n tokens.

    Keeps an index from each n-gram (n = 2..4) to the position after its latest
    occurrence, updated incrementally as the context grows, so a proposal costs a
    few dictionary look-ups. Example: context ``a b c x a b`` → proposes ``c x a …``.
    """

    method = "lookup"

    def __init__(self, max_ngram: int = LOOKUP_MAX_NGRAM, min_ngram: int = LOOKUP_MIN_NGRAM):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending before this position are in the index

    def _sync(self, context: Sequence[int]) -> None:
        n = len(self._tokens)
        if (
            n > len(context)
            or list(context[: min(n, 64)]) != self._tokens[:64]
            or (n and context[n - 1] != self._tokens[n - 1])
        ):
            self._tokens, self._index, self._indexed = [], {}, 0  # a new text: start over
        self._tokens.extend(context[len(self._tokens) :])

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        self._sync(context)
        tokens, index = self._tokens, self._index
        end = len(tokens)
        # Index each n-gram that has a follower (so not the final one, which is looked up).
        for stop in range(max(self._indexed, 1), end):
            for size in range(self.min_ngram, self.max_ngram + 1):
                if stop >= size:
                    index[tuple(tokens[stop - size : stop])] = stop
        self._indexed = max(self._indexed, end)
        for size in range(self.max_ngram, self.min_ngram - 1, -1):
            if end <= size:
                continue
            after = index.get(tuple(tokens[end - size :]))
            if after is not None:
                return tokens[after : min(after + k, end)]
        return []


class DraftModel(Drafter):
    """A small model with the target's vocabulary, in its own context, drafting greedily."""

    method = "draft"

    def __init__(self, path: Path, n_ctx: int, n_threads: int, target: NativeModel) -> None:
        from llm4all.engine._native import NativeModel
        from llm4all.engine.probe import check_model_file
        from llm4all.params import LoadParams

        check_model_file(path)
        self.native = NativeModel(path, LoadParams(n_ctx=n_ctx, n_batch=512), n_threads)
        try:
            check_same_vocab(target, self.native, path)
        except BaseException:
            self.native.close()
            raise
        self.cache: list[int] = []

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        from llm4all.engine._native import common_prefix

        native = self.native
        if k <= 0 or len(context) + k >= native.n_ctx:
            return []
        keep = min(common_prefix(self.cache, context), len(context) - 1)
        if not native.forget(0, keep):
            keep = 0
            native.forget(0, 0)
        del self.cache[keep:]
        index = 0
        for start in range(keep, len(context), native.n_batch):
            part = context[start : start + native.n_batch]
            native.batch.clear()
            for offset, token in enumerate(part):
                pos = start + offset
                index = native.batch.add(token, pos, 0, pos == len(context) - 1)
            self._decode(len(part))
        out: list[int] = []
        while True:
            token = int(native.logits(index).argmax())
            if native.is_eog(token):
                break
            out.append(token)
            if len(out) == k:
                break
            native.batch.clear()
            index = native.batch.add(token, len(self.cache), 0, True)
            self._decode(1)
        return out

    def _decode(self, n: int) -> None:
        native = self.native
        try:
            native.decode()
        except BaseException:
            native.forget(0, len(self.cache))
            raise
        raw = native.batch.raw
        self.cache.extend(int(raw.token[i]) for i in range(n))

    def close(self) -> None:
        self.native.close()


def check_same_vocab(target: NativeModel, draft: NativeModel, path: Path) -> None:
    """Refuse a draft model whose tokens mean something else than the target's.

    Compares the vocabulary size and the text of a spread of token ids (every one
    for small vocabularies, 4096 spread over large ones) and the end token.
    """
    n_target, n_draft = target.sizes()["n_vocab"], draft.sizes()["n_vocab"]
    reason = ""
    if abs(n_target - n_draft) > 128:  # Qwen's sizes differ only in padding rows
        reason = f"{n_draft} tokens vs the target's {n_target}"
    else:
        n = min(n_target, n_draft)
        step = max(1, n // 4096)
        for token in range(0, n, step):
            if target.piece(token, True) != draft.piece(token, True):
                reason = f"token {token} is {draft.token_text(token)!r}, "
                reason += f"the target's is {target.token_text(token)!r}"
                break
    if reason:
        raise ModelLoadError(str(path), f"not a draft for this model: other vocabulary ({reason})")


def accept_draft(
    p_target: np.ndarray[Any, Any],
    q_draft: np.ndarray[Any, Any],
    token: int,
    rng: np.random.Generator,
) -> int | None:
    """The rejection-sampling rule: keep ``token`` (drawn from ``q_draft``) or resample.

    Accepts with probability ``min(1, p/q)``; returns None when accepted, else a
    token drawn from the residual ``max(0, p - q)`` (normalised), so the result is
    distributed exactly as ``p_target``.
    """
    import numpy as np

    p, q = float(p_target[token]), float(q_draft[token])
    if q > 0 and rng.random() < min(1.0, p / q):
        return None
    residual = np.maximum(p_target - q_draft, 0.0)
    total = residual.sum()
    if total <= 0:  # p == q: every draft is accepted, so this is not reached in exact arithmetic
        residual, total = p_target, p_target.sum()
    return int(rng.choice(len(residual), p=residual / total))


def speculative_sample(
    p_target: np.ndarray[Any, Any], q_draft: np.ndarray[Any, Any], rng: np.random.Generator
) -> tuple[int, bool]:
    """One speculative step on explicit distributions: (the token emitted, draft accepted).

    The draft token is drawn from ``q_draft`` and checked with :func:`accept_draft`;
    the token returned is distributed as ``p_target`` (what the tests check).
    """
    token = int(rng.choice(len(q_draft), p=q_draft))
    replacement = accept_draft(p_target, q_draft, token, rng)
    return (token, True) if replacement is None else (replacement, False)
