"""Which catalog model to recommend on this machine: the best one that fits and runs usably.

On a CPU, decoding a token reads every weight once, so a model's speed is
about memory bandwidth / file size. One measured speed of a model this
machine has run (:class:`SpeedSample`: a short decode of the default model,
cached in the settings) therefore predicts the others:
``tok/s(other) ≈ tok/s(measured) × size(measured) / size(other)``.

:func:`recommend` picks, among the catalog's chat models that fit in RAM
(:func:`memory.memory_needed` within :data:`RAM_SHARE` of the machine's total)
and are predicted to decode at :data:`USABLE_TOKENS_PER_SECOND` or more, the
one with the most parameters (the catalog order breaks ties). Pure: the
caller measures.

Example: a 491 MB model measured at 30 tok/s predicts ~13 tok/s for a 1.1 GB one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm4all.models.catalog import Catalog, CatalogEntry
from llm4all.models.memory import memory_needed

#: Below this an answer is slower than reading it (about 5 words a second).
USABLE_TOKENS_PER_SECOND = 10.0
#: The share of the machine's RAM a recommended model may take (the rest is for everything else).
RAM_SHARE = 0.6


@dataclass(frozen=True)
class SpeedSample:
    """A decode speed measured on this machine, with the size of the file that ran."""

    model: str
    size: int
    tokens_per_second: float

    def predict(self, size: int) -> float:
        """Tokens per second of a model file of ``size`` bytes (speed scales with 1/size)."""
        return self.tokens_per_second * self.size / size


@dataclass(frozen=True)
class Recommendation:
    entry: CatalogEntry
    tokens_per_second: float  # predicted


def parameter_count(label: str) -> float:
    """Example: ``"1.54B"`` → ``1.54e9``, ``"494M"`` → ``4.94e8``; unknown → 0."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMBT]?)\s*", label.upper())
    if match is None:
        return 0.0
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match[2]]
    return float(match[1]) * scale


def recommend(catalog: Catalog, sample: SpeedSample, total_ram: int) -> Recommendation | None:
    """The best chat model that fits in ``total_ram`` and decodes usably fast, or None."""
    order = {e.name: i for i, e in enumerate(catalog)}
    fits = [
        e
        for e in catalog
        if e.kind == "chat"
        and memory_needed(e.size) <= RAM_SHARE * total_ram
        and sample.predict(e.size) >= USABLE_TOKENS_PER_SECOND
    ]
    if not fits:
        return None
    best = max(fits, key=lambda e: (parameter_count(e.parameters), -order[e.name]))
    return Recommendation(best, sample.predict(best.size))
