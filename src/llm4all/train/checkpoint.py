"""Checkpoints of a run: written whole or not at all, and found again after a crash.

A checkpoint is a folder ``checkpoints/step-N`` holding the adapter, the
optimizer and scheduler states, the random-number states and ``state.json``
(step, loss history). It is written under a temporary name and renamed into
place, so a kill -9 or a full disk mid-write leaves the previous checkpoint as
the latest complete one; a leftover temporary folder is ignored and removed by
the next save.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

from llm4all.errors import Llm4allError

log = logging.getLogger(__name__)

STATE = "state.json"
"""Written last into a checkpoint: its presence marks the checkpoint complete."""


class CheckpointError(Llm4allError, OSError):
    """A checkpoint could not be written (a full disk, say); the last good one is kept."""

    def __init__(self, step: int, folder: Path, reason: str, kept: Path | None) -> None:
        self.step = step
        self.kept = kept
        where = f"the last good checkpoint ({kept.name}) is kept" if kept else "no checkpoint yet"
        super().__init__(
            f"cannot save the checkpoint of step {step} in {folder}: {reason}; {where}; "
            "free some space and run the same command with --resume"
        )


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.rpartition("-")[2]))


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(folder)
    return found[-1] if found else None


def save(
    folder: Path,
    step: int,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step-N`` atomically, then drop all but the ``keep`` newest."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".step-{step}.tmp"
    for stale in folder.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        model.save_pretrained(tmp / "adapter")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        _write_synced(tmp / STATE, json.dumps(state, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except Exception as exc:  # OSError, or torch's/safetensors' own error for a failed write
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(step, folder, _why(exc), latest(folder)) from exc
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, *, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore a checkpoint into ``model`` (a peft model), the optimizer and the scheduler."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    state: dict[str, Any] = json.loads((path / STATE).read_text("utf-8"))
    return state


def _why(exc: Exception) -> str:
    """A full disk said plainly, whichever library noticed it."""
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or "No space left" in text or "file write failed" in text:
        return "the disk is full"
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
