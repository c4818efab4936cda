"""The loss curve of a run: ``loss.csv``, ``loss.json`` and ``loss.png``.

The history is a list of points ``{"step", "loss", "lr", "tokens_per_s", "elapsed_s"}``
with, where it was measured, ``"heldout_loss"``. The PNG draws the training
loss per step and the held-out loss as markers (matplotlib, extra ``train``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SMOOTH = 5
"""Steps in the running mean drawn over the training loss."""
COLUMNS = ("step", "loss", "heldout_loss", "lr", "tokens", "tokens_per_s", "elapsed_s")


def write_curve(history: Sequence[dict[str, Any]], folder: Path, title: str = "") -> None:
    """Write the three files into ``folder`` (each replaced whole)."""
    _write_csv(history, folder / "loss.csv")
    tmp = folder / "loss.json.tmp"
    tmp.write_text(json.dumps(list(history), indent=1) + "\n", "utf-8")
    tmp.replace(folder / "loss.json")
    plot(history, folder / "loss.png", title)


def _write_csv(history: Sequence[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def plot(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """The training loss per step and the held-out loss, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = [(p["step"], p["loss"]) for p in history if _finite(p.get("loss"))]
    held = [(p["step"], p["heldout_loss"]) for p in history if _finite(p.get("heldout_loss"))]
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss", linewidth=1, alpha=0.5)
    if len(train) >= 2 * SMOOTH:  # a step's loss is a few examples' worth: noisy
        smooth = running_mean([loss for _step, loss in train], SMOOTH)
        label = f"training loss, mean of {SMOOTH} steps"
        ax.plot([step for step, _loss in train], smooth, label=label, color="tab:blue")
    if held:
        ax.plot(*zip(*held, strict=True), "o-", label="held-out loss", color="tab:red")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per answer token)")
    ax.set_title(title or "LoRA fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and up to ``window - 1`` before it. Example: ``([1, 3, 5], 2)`` → ``[1, 2, 4]``."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
