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

``k`` is chosen per pass from what a pass and a proposal cost on this machine,
measured as decoding runs (:class:`PassCosts`), and the answer's acceptance
rate (:class:`DraftLength`): the k with the most expected tokens per second,
0 (a plain decoding step) where none pays. On two busy CPU cores a pass of 9
tokens costs ~7.5 of one, so only near-certain proposals pay. :func:`accept_draft`
is the standard rejection-sampling rule (Leviathan et al. 2023) for drafts
that come with their own distribution; the engine's verifier above is its
special case for a deterministic (greedy) drafter, whose distribution is one
token: accept with probability ``p_target(token)``, which sampling the target
and comparing does exactly.
"""

from __future__ import annotations

import time
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
LOOKUP_MIN_NGRAM = 3


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


#: A draft length is chosen only if it promises this much more speed than plain decoding.
MARGIN = 0.05
#: Passes after which the measured costs are old enough to be measured again.
STALE_PASSES = 512


class PassCosts:
    """What a target pass and a drafted token cost on this machine, measured as decoding runs.

    One per drafter (so per engine), shared by its generations. A target pass of
    ``n`` tokens is modelled as ``t1 + extra * (n - 1)`` seconds: ``t1`` from the
    passes of one token, ``extra`` from the others; ``draft`` is the drafter's time
    per proposed token. Each is a moving average; a sample more than 4x the
    average (the process descheduled on a busy machine) counts as 4x. Example: on
    two busy CPU cores ``extra`` is about 0.8 ``t1`` (a pass of 9 tokens costs
    ~7.5 of one); on a GPU it is a few percent.
    """

    def __init__(self, draft: float | None = None) -> None:
        self.t1: float | None = None
        self.draft = draft  # None until measured; 0.0 for a drafter that costs nothing
        self._multi_t: float | None = None  # average seconds of a pass of several tokens
        self._multi_n = 0.0  # and its average number of tokens beyond the first
        self.age = 0  # passes since a pass of several tokens was measured
        self._multi_samples = 0
        self.pinned = False

    @classmethod
    def pinned_to(cls, t1: float, extra: float, draft: float) -> PassCosts:
        """Costs given, not measured (a machine measured before; tests that must draft).

        Example: ``PassCosts.pinned_to(1.0, 0.0, 0.0)``: verifying is free, so drafting
        always pays.
        """
        costs = cls(draft)
        costs.t1, costs._multi_t, costs._multi_n = t1, t1 + extra, 1.0
        costs.pinned = True
        return costs

    @property
    def measured(self) -> bool:
        """Whether every cost is known and recent enough to plan with."""
        return (
            self.t1 is not None
            and self._multi_t is not None
            and (self.pinned or self._multi_samples >= 2)  # one sample is noise on a busy box
            and self.draft is not None
            and self.age < STALE_PASSES
        )

    @property
    def extra(self) -> float:
        """Seconds each token beyond the first adds to a target pass."""
        if self.t1 is None or self._multi_t is None or self._multi_n <= 0:
            return 0.0
        return max(0.0, (self._multi_t - self.t1) / self._multi_n)

    def record_pass(self, n_tokens: int, seconds: float) -> None:
        if self.pinned:
            return
        if n_tokens <= 1:
            self.t1 = _average(self.t1, seconds)
            self.age += 1
            return
        self._multi_n = _average(self._multi_n or None, float(n_tokens - 1), clip=False)
        self._multi_t = _average(self._multi_t, seconds)
        self._multi_samples += 1
        self.age = 0

    def record_draft(self, n_tokens: int, seconds: float) -> None:
        if n_tokens > 0 and not self.pinned:
            self.draft = _average(self.draft, seconds / n_tokens)

    def speedup(self, k: int, acceptance: float) -> float:
        """Expected tokens per second drafting ``k`` tokens, relative to plain decoding.

        Each proposal is kept with probability ``acceptance`` if those before it were, so
        a pass yields 1 + a + a² + … + a^k tokens in ``k * draft + t1 + k * extra`` seconds.
        Example: a = 0.8, k = 4, draft = 0, extra = t1 / 2 → 3.36 tokens in 3 t1: 1.12.
        """
        if k <= 0 or self.t1 is None or self.t1 <= 0:
            return 1.0
        tokens = sum(acceptance**i for i in range(k + 1))
        seconds = k * (self.draft or 0.0) + self.t1 + k * self.extra
        return tokens * self.t1 / seconds

    def best(self, acceptance: float, high: int) -> tuple[int, float]:
        """The draft length in ``0..high`` with the highest :meth:`speedup`, and that speed-up."""
        gains = [(self.speedup(k, acceptance), k) for k in range(1, high + 1)]
        gain, k = max(gains, default=(1.0, 0))
        return (k, gain) if gain > 1.0 + MARGIN else (0, 1.0)


def _average(old: float | None, new: float, weight: float = 0.2, clip: bool = True) -> float:
    if old is None:
        return new
    if clip:
        new = min(new, 4 * old)
    return old + weight * (new - old)


class DraftLength:
    """How many tokens to draft in the next pass: the number that pays most, or none.

    From the measured costs (:class:`PassCosts`) and this answer's acceptance rate,
    ``k`` is the draft length with the most expected tokens per second, at most 2
    more than the last one; 0 (a plain decoding step, nothing proposed or
    verified) when no length promises :data:`MARGIN` over plain decoding. The
    acceptance rate is estimated per proposal, weighting recent passes more
    (a 0.8 decay), starting from one kept and one rejected proposal.
    While no length pays, a single proposal is tried after a pause of 1, 2, 4 … 64
    passes (doubling with each rejected try), so that an answer that starts quoting
    its input is noticed. If even proposals that are always kept could not pay
    (a draft model on busy CPU cores), it does not draft at all.
    Before the costs are measured it drafts ``start`` tokens to measure them.
    Example: on two busy cores (extra ≈ 0.8 t1) lookup drafts only while its
    proposals are kept about 90 % of the time; on a GPU from about 30 %.
    """

    def __init__(self, costs: PassCosts | None = None, start: int = 4, high: int = 16) -> None:
        self.costs = costs if costs is not None else PassCosts(draft=0.0)
        self.start, self.high = start, high
        self.k = start  # the last draft length chosen (bounds the next one's growth)
        self._kept, self._rejected = 1.0, 1.0
        self._pause, self._wait = 0, 0
        self._clock = 0.0

    @property
    def acceptance(self) -> float:
        """The estimated probability that a proposal is kept (given those before it were)."""
        return self._kept / (self._kept + self._rejected)

    @property
    def next(self) -> int:
        """How many tokens to draft in this pass (0: a plain decoding step)."""
        costs = self.costs
        if costs.t1 is None:
            return 0  # measure a plain step first
        if not costs.measured:
            return self.start
        if self._wait > 0:
            return 0
        if costs.best(1.0, self.high)[0] == 0:
            return 0  # not even proposals that are always kept would pay
        k, _gain = costs.best(self.acceptance, min(self.high, self.k + 2))
        return k if k > 0 else 1  # a try: the pause before it has passed

    def propose(self, drafter: Drafter, context: Sequence[int], k: int) -> list[int]:
        """The drafter's proposal, timed (its cost per token feeds :class:`PassCosts`)."""
        t0 = time.perf_counter()
        drafts = drafter.propose(context, k)[:k]
        seconds = time.perf_counter() - t0 - drafter.prefill_seconds
        self.costs.record_draft(len(drafts), seconds)
        return drafts

    def decoding(self) -> None:
        """The target's pass starts now (it ends at :meth:`update`)."""
        self._clock = time.perf_counter()

    def update(self, drafted: int, accepted: int) -> None:
        """After a pass that verified ``drafted`` proposals and kept ``accepted``."""
        if self._clock:
            self.costs.record_pass(drafted + 1, time.perf_counter() - self._clock)
            self._clock = 0.0
        if drafted == 0:
            self._wait = max(0, self._wait - 1)
            return
        self.k = drafted
        rejected = 1.0 if accepted < drafted else 0.0
        self._kept = 0.8 * self._kept + accepted
        self._rejected = 0.8 * self._rejected + rejected
        if not self.costs.measured:
            return
        if self.costs.best(self.acceptance, self.high)[0] > 0:
            self._pause = 0
        elif rejected:  # no length pays now: wait before the next try, longer each time
            self._pause = min(64, max(1, self._pause * 2))
            self._wait = self._pause


class Drafter:
    """Proposes tokens that continue ``context`` (all tokens so far, the last one included).

    ``costs`` holds what its passes cost here (one per engine); ``prefill_seconds``
    is the part of the last :meth:`propose` spent catching up on a new text (a
    prompt), paid once per answer and so not counted as a cost per drafted token.
    """

    method = ""
    costs: PassCosts
    prefill_seconds = 0.0

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the drafter holds."""


class PromptLookup(Drafter):
    """Drafts by finding the latest earlier occurrence of the context's last n tokens.

    Keeps an index from each n-gram (n = 3..4 by default) to the position after its latest
    occurrence, updated incrementally as the context grows, so a proposal costs a
    few dictionary look-ups. Example: context ``a b c x a b`` → proposes ``c x a …``.
    """

    method = "lookup"

    def __init__(self, max_ngram: int = LOOKUP_MAX_NGRAM, min_ngram: int = LOOKUP_MIN_NGRAM):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.costs = PassCosts(draft=0.0)  # a proposal is a few dictionary look-ups
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
        self.costs = PassCosts()

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        from llm4all.engine._native import common_prefix

        native = self.native
        self.prefill_seconds = 0.0
        if k <= 0 or len(context) + k >= native.n_ctx:
            return []
        keep = min(common_prefix(self.cache, context), len(context) - 1)
        if not native.forget(0, keep):
            keep = 0
            native.forget(0, 0)
        del self.cache[keep:]
        index = 0
        t0 = time.perf_counter()
        for start in range(keep, len(context), native.n_batch):
            part = context[start : start + native.n_batch]
            native.batch.clear()
            for offset, token in enumerate(part):
                pos = start + offset
                index = native.batch.add(token, pos, 0, pos == len(context) - 1)
            self._decode(len(part))
        # Between passes it catches up on one or two tokens; more is a new text's prompt.
        self.prefill_seconds = time.perf_counter() - t0 if len(context) - keep > 2 else 0.0
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
