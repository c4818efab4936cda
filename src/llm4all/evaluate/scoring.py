"""Teacher-forced scoring: how likely a model finds a reference answer.

Ground-truth perplexity is ``exp`` of the mean negative log-likelihood of the
reference answer's tokens, each predicted from the prompt and the answer
tokens before it. Only the answer is scored; the prompt is context.

A scorer is anything with ``n_ctx`` and ``logprobs(tokens, first)`` (the
log-probabilities of ``tokens[first:]`` in one window): the llama.cpp engine
(:meth:`~llm4all.engine.llamacpp.LlamaCppEngine.token_logprobs`) or a
transformers model (:class:`HFScorer`). Texts longer than the window are
scored by :func:`windows`: a window slides by ``stride`` tokens and each token
is scored once, with at least ``n_ctx - stride`` tokens of context.

:func:`gpt4all_variant` reproduces what GPT4All's ``eval_self_instruct.py``
computed (see ``docs/evaluation.md``) so that its figures can be compared.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from llm4all.engine import Engine


class Scorer(Protocol):
    """What scoring needs of a model: its window and teacher-forced log-probabilities."""

    @property
    def n_ctx(self) -> int: ...

    def logprobs(self, tokens: Sequence[int], first: int) -> list[float]:
        """Log-probabilities (nats) of ``tokens[first:]``; ``len(tokens) <= n_ctx``."""
        ...


@dataclass(frozen=True)
class Score:
    """One scored text: the summed negative log-likelihood over ``n_tokens`` tokens."""

    nll: float
    n_tokens: int

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per token (nats); NaN when nothing was scored."""
        return self.nll / self.n_tokens if self.n_tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.n_tokens else math.nan


def windows(n_tokens: int, first: int, n_ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, score_from, end)`` windows scoring tokens ``first..n_tokens-1`` once each.

    The first window fills the context; each later one moves ``stride`` tokens on
    and keeps ``n_ctx - stride`` tokens of context.
    Example: ``windows(10, 2, 6, 3)`` → ``[(0, 2, 6), (3, 6, 9), (4, 9, 10)]``.
    """
    if not 0 < stride < n_ctx:
        raise ValueError(f"stride must be in 1..{n_ctx - 1}, not {stride}")
    out = []
    pos = max(first, 1)
    while pos < n_tokens:
        end = min(n_tokens, max(pos + stride, n_ctx))
        out.append((max(0, end - n_ctx), pos, end))
        pos = end
    return out


def token_logprobs(
    scorer: Scorer, tokens: Sequence[int], first: int, stride: int | None = None
) -> list[float]:
    """Log-probabilities of ``tokens[first:]``, windowed when they outgrow the scorer's context."""
    n_ctx = scorer.n_ctx
    stride = stride or n_ctx // 2
    out: list[float] = []
    for start, score_from, end in windows(len(tokens), first, n_ctx, stride):
        out.extend(scorer.logprobs(tokens[start:end], score_from - start))
    return out


def score_pair(
    scorer: Scorer, context: Sequence[int], target: Sequence[int], stride: int | None = None
) -> Score:
    """The reference ``target`` scored after ``context`` (which is not scored).

    Example: ``score_pair(s, prompt_ids, answer_ids).perplexity``.
    """
    if not context:
        raise ValueError("scoring needs at least one context token (BOS or a prompt)")
    logprobs = token_logprobs(scorer, [*context, *target], len(context), stride)
    return Score(-math.fsum(logprobs), len(logprobs))


#: GPT4All's window (``stride = 512`` in ``eval_self_instruct.py``).
GPT4ALL_STRIDE = 512


def gpt4all_variant(scorer: Scorer, prompt: Sequence[int], full: Sequence[int]) -> Score:
    """GPT4All's "ground truth perplexity" of ``full`` (= prompt + " " + answer, tokenized).

    What their loop did, step by step: the answer's tokens ``full[len(prompt):]``
    are cut into windows of 512 and each window is scored **alone** (no prompt,
    no earlier window), so its first token is never scored; each window's mean
    loss is multiplied by ``end - previous end`` (the first window's count
    includes the prompt's length) and the sum is divided by the whole length,
    prompt included. With one window (every answer under 512 tokens) the two
    prompt lengths cancel and the result is the answer's perplexity without its
    prompt. The returned :class:`Score` has that weighted sum as ``nll`` over
    ``len(full)`` tokens, so ``perplexity`` is theirs.
    """
    begin, n = len(prompt), len(full)
    total, previous_end = 0.0, 0
    for start in range(begin, n, GPT4ALL_STRIDE):
        end = min(start + GPT4ALL_STRIDE, n)
        piece = full[start:end]
        # A one-token window has no prediction: transformers' mean loss is NaN there.
        mean = -statistics.fmean(scorer.logprobs(piece, 1)) if len(piece) > 1 else math.nan
        total += mean * (end - previous_end)
        previous_end = end
    return Score(total, n if n > begin else 0)


@dataclass(frozen=True)
class Summary:
    """Per-model figures over many scored examples."""

    n: int
    mean_ppl: float
    median_ppl: float
    #: exp(total nll / total tokens): every token counts once, long answers weigh more.
    corpus_ppl: float
    mean_loss: float
    tokens: int


def summarise(scores: Sequence[Score]) -> Summary:
    """Mean and median of the per-example perplexities, and the corpus-level figure."""
    # Nothing scored (NaN: GPT4All's variant on a one-token answer) is left out, not zero.
    kept = [s for s in scores if s.n_tokens and math.isfinite(s.nll)]
    ppls = [s.perplexity for s in kept if math.isfinite(s.perplexity)]
    nll = math.fsum(s.nll for s in kept)
    tokens = sum(s.n_tokens for s in kept)
    return Summary(
        n=len(kept),
        mean_ppl=statistics.fmean(ppls) if ppls else math.nan,
        median_ppl=statistics.median(ppls) if ppls else math.nan,
        corpus_ppl=math.exp(nll / tokens) if tokens else math.nan,
        mean_loss=statistics.fmean(s.loss for s in kept) if kept else math.nan,
        tokens=tokens,
    )


class EngineScorer:
    """An llm4all engine with the ``scoring`` capability (llama.cpp's) as a :class:`Scorer`."""

    def __init__(self, engine: Engine) -> None:
        engine.capabilities.require("scoring", "token scoring")
        self.engine = engine

    @property
    def n_ctx(self) -> int:
        return self.engine.info.n_ctx

    def logprobs(self, tokens: Sequence[int], first: int) -> list[float]:
        return self.engine.token_logprobs(tokens, first)


class HFScorer:
    """A transformers causal LM as a :class:`Scorer` (float32 logits, no gradients)."""

    def __init__(self, model: PreTrainedModel, n_ctx: int | None = None) -> None:
        model.eval()  # type: ignore[no-untyped-call]  # no dropout
        self.model = model
        trained = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self._n_ctx = min(n_ctx or trained, trained)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def logprobs(self, tokens: Sequence[int], first: int) -> list[float]:
        import torch

        if not 1 <= first <= len(tokens) <= self._n_ctx:
            raise ValueError(f"cannot score from {first} in {len(tokens)} tokens")
        ids = torch.tensor([list(tokens)], device=self.model.device)
        with torch.no_grad():
            logits: Any = self.model(input_ids=ids).logits[0, first - 1 : -1].float()
        picked = logits.log_softmax(-1).gather(1, ids[0, first:, None])
        return [float(x) for x in picked[:, 0].tolist()]
