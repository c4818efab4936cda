"""Held-out loss of a training run (``llm4all eval heldout RUN``), before and after tuning.

The rows are the run's own held-out split (the same files, format, seed and
fraction as the run), encoded as the run encoded them, and the loss is
:func:`llm4all.train.data.heldout_loss`, the function the trainer reports
with: one computation, so the figures here and in the run's ``result.json``
are the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HeldoutResult:
    """One model's held-out loss on a run's held-out rows."""

    model: str
    rows: int
    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if math.isfinite(self.loss) else math.nan


def heldout_losses(run: Path) -> list[HeldoutResult]:
    """The base model's and the tuned model's held-out loss for a finished ``run``."""
    from llm4all.train.export import read_result

    result = read_result(run)  # UnfinishedRun (one line) for a folder that is not one, at once
    from peft import PeftModel

    from llm4all import hf
    from llm4all.train.config import TrainConfig
    from llm4all.train.data import heldout_loss, read_conversations, split_heldout

    config = TrainConfig(**result["config"])
    rows, _bad = read_conversations(config.data, config.data_format, config.max_rows)
    _train, held = split_heldout(rows, config.heldout_fraction, config.seed)
    options = {
        "format": config.format,
        "mask_prompt": config.mask_prompt,
        "max_length": config.max_length,
    }
    model, tokenizer = hf.load_model(result["base"])
    base_loss = heldout_loss(model, tokenizer, held, **options)  # type: ignore[arg-type]
    tuned = PeftModel.from_pretrained(model, run / "adapter")
    tuned_loss = heldout_loss(tuned, tokenizer, held, **options)  # type: ignore[arg-type]
    return [
        HeldoutResult(str(result["base"]), len(held), base_loss),
        HeldoutResult(f"{run.name} (tuned)", len(held), tuned_loss),
    ]
