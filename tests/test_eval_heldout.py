"""``llm4all eval heldout RUN``: a run's held-out loss, recomputed by the trainer's own function."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "llm4all"]


@pytest.mark.slow
def test_heldout_loss_of_a_run_matches_what_the_trainer_reported(tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="pip install 'llm4all[train]'")
    from llm4all.evaluate.heldout import heldout_losses

    data = tmp_path / "rows.jsonl"
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
    rows = [
        {"prompt": f"What colour is item {i}?", "response": f"Item {i} is {colours[i % 8]}."}
        for i in range(24)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.toml"
    config.write_text(
        f'base = "smollm2-135m-instruct"\ndata = ["{data}"]\noutput = "{tmp_path / "run"}"\n'
        "max_steps = 2\nmax_length = 64\nbatch_size = 2\ngrad_accum = 1\n"
        "heldout_fraction = 0.25\nlearning_rate = 0.001\n"
    )
    trained = subprocess.run(
        [*CLI, "train", str(config)], capture_output=True, text=True, timeout=600
    )
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "run"
    reported = json.loads((run / "adapter" / "result.json").read_text())
    base, tuned = heldout_losses(run)
    assert base.rows == tuned.rows > 0
    assert base.loss == pytest.approx(reported["heldout_loss_before"], rel=1e-5)
    assert tuned.loss == pytest.approx(reported["heldout_loss_after"], rel=1e-5)
    assert tuned.loss != base.loss  # the adapter is applied


def test_heldout_of_a_folder_that_is_no_run_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "eval", "heldout", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "not a finished run" in done.stderr
