"""The first-token screen: how likely is a refusal, without sampling any answers?

A seeded run of 147 requests takes minutes and tells, per request, refused or
not. The screen reads the model's own probabilities instead, so that dozens of
candidate system prompts can be ranked before any of them gets a full run
(``bench_refusals.py --screen``).

Refusals open with a few words the model is nearly sure of once it has begun
("I'm sorry, but I can't…", "Sorry, …", "As an AI…", "抱歉…"). So for each
request the screen:

1. reads the distribution of the first token (one forward pass, the top
   :data:`TOP` log-probabilities);
2. for each first token that could begin a refusal (:func:`could_open_refusal`),
   reads the distribution of the second token after it;
3. continues each likely two-token opening that may still decline ("I'm
   sorry", "Sorry,", "I can", not "I would" or "As a") greedily for
   :data:`GREEDY_TOKENS` tokens and asks the shared detector
   (:func:`llm4all.data.find_refusal`) whether it declines.

The probability of a refusal under a sampling candidate is then the sum over
the refusing openings of the chance llama.cpp's sampler chain (top_k → top_p
→ min_p → temperature, :func:`chain_probabilities`) draws their two tokens.
Everything the model computes is shared by every sampling candidate: one walk
of the tree scores them all. The continuation after two tokens is taken as
greedy, and a refusal that opens with another word ("Title: …\\n\\nI'm sorry")
is not seen: the screen ranks candidates; seeded runs confirm them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm4all.data import find_refusal
from llm4all.params import GenerationParams

TOP = 64
"""How many of the most likely tokens are read (the library's top_k is 40)."""
BRANCH = 0.02
"""Openings less likely than this under every sampling candidate are not followed."""
GREEDY_TOKENS = 6
"""How far an opening is continued (greedily) before the detector reads it."""

# Openings that may go on to decline; an opening that neither starts one of these
# nor is the start of one ("I would", "As a", "My name") is an answer, and not
# continuing it saves most of the screen's time.
_DOUBTFUL = (
    "i'm sorry", "i am sorry", "i apolog", "sorry", "apolog", "unfortunately", "i can",
    "i'm unable", "i am unable", "i'm not", "i am not", "i must", "i won", "i'm afraid",
    "as an ai", "as an artificial", "oh, i", "my apolog", "抱歉", "对不起", "很抱歉",
    "很遗憾", "我无法", "我不", "作为",
)  # fmt: skip


def may_decline(opening: str) -> bool:
    """Whether an opening may still become a refusal. Example: ``may_decline("I'm")`` → True."""
    text = opening.strip().lower().replace("\u2019", "'")
    return any(p.startswith(text) or text.startswith(p) for p in _DOUBTFUL)


_OPENERS = re.compile(
    r"^\s*(?:i\b|i'|i’|sorry|apolog|unfortunately|as\b|oh\b|my\b|抱|对不|很|我|作为|非常)",
    re.IGNORECASE,
)


def could_open_refusal(piece: str) -> bool:
    """Whether a first token can begin a refusal. Example: ``could_open_refusal("I")`` → True."""
    return bool(_OPENERS.match(piece))


def chain_probabilities(
    top: Sequence[tuple[int, float]], params: GenerationParams
) -> dict[int, float]:
    """The probability that llama.cpp's chain draws each token, from its log-probabilities.

    ``top`` is (token, log-probability) sorted most likely first. The chain is the
    engine's (``engine/_native.py``'s ``Sampler``): top_k keeps the k most likely;
    top_p keeps the shortest head whose renormalised mass reaches top_p; min_p keeps
    the tokens at least min_p × the most likely; the temperature rescales what is
    left. Greedy params give the top token probability 1.
    Example: ``chain_probabilities([(1, log(0.6)), (2, log(0.3))], p.replace(min_p=0.6))``
    → ``{1: 1.0}``.
    """
    if not top:
        return {}
    if params.greedy:
        return {top[0][0]: 1.0}
    kept = list(top[: params.top_k] if params.top_k > 0 else top)
    if params.top_p < 1.0:
        weights = _softmax([lp for _, lp in kept], 1.0)
        total, cut = 0.0, len(kept)
        for i, w in enumerate(weights):
            total += w
            if total >= params.top_p:
                cut = i + 1
                break
        kept = kept[:cut]
    if params.min_p > 0.0:
        floor = kept[0][1] + math.log(params.min_p)
        kept = [(t, lp) for t, lp in kept if lp >= floor]
    weights = _softmax([lp for _, lp in kept], params.temperature)
    return {t: w for (t, _), w in zip(kept, weights, strict=True)}


def _softmax(logprobs: Sequence[float], temperature: float) -> list[float]:
    peak = max(logprobs)
    exps = [math.exp((lp - peak) / temperature) for lp in logprobs]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass
class Opening:
    """A likely two-token start of an answer and whether its greedy continuation declines."""

    tokens: tuple[int, int]
    text: str
    refusal: bool


@dataclass
class Tree:
    """What the model gives one prompt: the first two tokens' distributions and the openings."""

    first: list[tuple[int, float]]
    second: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    openings: list[Opening] = field(default_factory=list)

    def refusal_probability(self, params: GenerationParams) -> float:
        """The chance an answer sampled with ``params`` opens with a refusal."""
        refusing = {o.tokens for o in self.openings if o.refusal}
        total = 0.0
        for t1, q1 in chain_probabilities(self.first, params).items():
            if t1 in self.second:
                p2 = chain_probabilities(self.second[t1], params)
                total += q1 * sum(q2 for t2, q2 in p2.items() if (t1, t2) in refusing)
        return total

    def worst(self) -> str:
        """The most likely refusing opening's text ("" if none)."""
        return next((o.text for o in self.openings if o.refusal), "")


class Screen:
    """Walks the opening tree of prompts with one loaded :class:`llm4all.Model`."""

    def __init__(self, model: Any, samplings: Mapping[str, GenerationParams]) -> None:
        self.model = model
        self.samplings = dict(samplings)

    def _top(self, tokens: Sequence[int]) -> list[tuple[int, float]]:
        """The TOP most likely next tokens after ``tokens``, with their log-probabilities."""
        params = GenerationParams(temperature=0.0, max_tokens=1, repeat_penalty=1.0)
        scores = [
            score
            for chunk in self.model.engine.generate(list(tokens), params, logprobs=TOP)
            for score in getattr(chunk, "logprobs", ())
        ]
        return list(scores[0].top) if scores else []  # none: the model ended at once

    def _greedy(self, tokens: Sequence[int]) -> str:
        params = GenerationParams(temperature=0.0, max_tokens=GREEDY_TOKENS)
        return "".join(c.text for c in self.model.engine.generate(list(tokens), params))

    def _likely(self, top: Sequence[tuple[int, float]]) -> set[int]:
        """Tokens some sampling candidate draws with probability BRANCH or more."""
        out: set[int] = set()
        for params in self.samplings.values():
            out |= {t for t, q in chain_probabilities(top, params).items() if q >= BRANCH}
        return out

    def tree(self, prompt: Sequence[int]) -> Tree:
        """The opening tree of one prompt (its refusing openings found by the detector)."""
        detok = self.model.engine.detokenize
        tree = Tree(self._top(prompt))
        for t1 in sorted(self._likely(tree.first)):
            if not could_open_refusal(detok([t1])):
                continue
            # "I" may go on to "'m sorry" or to "'d be glad": the second token decides.
            tree.second[t1] = self._top([*prompt, t1])
            for t2 in sorted(self._likely(tree.second[t1])):
                text = detok([t1, t2])
                refused = may_decline(text) and (
                    find_refusal(text + self._greedy([*prompt, t1, t2])) is not None
                )
                tree.openings.append(Opening((t1, t2), text, refused))
        tree.openings.sort(key=lambda o: not o.refusal)
        return tree
