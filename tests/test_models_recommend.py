"""Recommending a better model: the pure choice, ``models list``, the chat's first-run tip."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llm4all.cli import models as cli_models
from llm4all.cli.models import models_group
from llm4all.models import load_catalog
from llm4all.models.recommend import (
    USABLE_TOKENS_PER_SECOND,
    SpeedSample,
    parameter_count,
    recommend,
)
from llm4all.store import ChatStore

GIB = 2**30
DEFAULT_SIZE = 491_400_064  # the default model's file
#: A two-core laptop: the default model decodes at 30 tok/s.
LAPTOP = SpeedSample("qwen2.5-coder-0.5b-instruct", DEFAULT_SIZE, 30.0)


def test_parameter_count() -> None:
    assert parameter_count("1.54B") == pytest.approx(1.54e9)
    assert parameter_count("494M") == pytest.approx(4.94e8)
    assert parameter_count("22.7M") == pytest.approx(2.27e7)
    assert parameter_count("?") == 0


def test_speed_scales_with_the_file_size() -> None:
    assert LAPTOP.predict(DEFAULT_SIZE) == 30.0
    assert LAPTOP.predict(2 * DEFAULT_SIZE) == 15.0


def test_the_biggest_chat_model_that_runs_usably_and_fits() -> None:
    catalog = load_catalog()
    advice = recommend(catalog, LAPTOP, 32 * GIB)
    assert advice is not None
    # 1.5B models predict ~13 tok/s; the 3B ones ~7.6 (too slow). The coder comes first.
    assert advice.entry.name == "qwen2.5-coder-1.5b-instruct"
    assert advice.tokens_per_second == pytest.approx(30 * DEFAULT_SIZE / advice.entry.size)
    fast = SpeedSample(LAPTOP.model, DEFAULT_SIZE, 120.0)
    big = recommend(catalog, fast, 32 * GIB)
    assert big is not None and big.entry.name == "qwen2.5-7b-instruct"
    small_ram = recommend(catalog, fast, 4 * GIB)  # 60 % of 4 GiB: up to the 1.9 GB 3B file
    assert small_ram is not None and small_ram.entry.name == "qwen2.5-3b-instruct"
    tight = recommend(catalog, LAPTOP, 2 * GIB)
    assert tight is not None and tight.entry.name == "llama-3.2-1b-instruct"


def test_nothing_when_nothing_is_usable() -> None:
    crawl = SpeedSample(LAPTOP.model, DEFAULT_SIZE, 0.5)
    assert recommend(load_catalog(), crawl, 32 * GIB) is None
    advice = recommend(load_catalog(), LAPTOP, 32 * GIB)
    assert advice is not None and advice.tokens_per_second >= USABLE_TOKENS_PER_SECOND
    assert advice.entry.kind == "chat"


def _cache(sample: SpeedSample) -> None:
    with ChatStore() as settings:
        settings.set_setting(
            cli_models.SPEED_KEY, sample.__dict__ | {"machine": cli_models._machine()}
        )


def test_models_list_marks_the_recommended_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM4ALL_MODELS", str(tmp_path / "models"))
    _cache(LAPTOP)
    runner = CliRunner()
    rows = json.loads(runner.invoke(models_group, ["list", "--all", "--json"]).stdout)
    assert [r["name"] for r in rows if r["recommended"]] == ["qwen2.5-coder-1.5b-instruct"]
    table = runner.invoke(models_group, ["list", "--all"])
    assert "qwen2.5-coder-1.5b-instruct+" in table.stdout
    assert "+ recommended for this machine" in table.stdout
    assert "tip: qwen2.5-coder-1.5b-instruct answers better and runs at ~13 tok/s here" in (
        table.stderr
    )


def test_without_a_measurement_nothing_is_recommended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM4ALL_MODELS", str(tmp_path / "models"))  # no default to measure
    rows = json.loads(CliRunner().invoke(models_group, ["list", "--all", "--json"]).stdout)
    assert not any(r["recommended"] for r in rows)


def test_a_default_model_that_cannot_load_means_no_advice_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / load_catalog().default().filename).write_bytes(b"not a model" * 100)
    monkeypatch.setenv("LLM4ALL_MODELS", str(models))
    listed = CliRunner().invoke(models_group, ["list", "--all", "--json"])
    assert listed.exit_code == 0, listed.output
    assert not any(r["recommended"] for r in json.loads(listed.stdout))


@pytest.mark.slow
def test_the_speed_probe_runs_once_and_is_cached(fast_model: Any) -> None:
    store = cli_models.ModelStore()
    sample = cli_models.speed_sample(store, fast_model)
    assert sample is not None and sample.model == "smollm2-135m-instruct"
    assert sample.size == fast_model.path.stat().st_size and sample.tokens_per_second > 0
    assert cli_models.speed_sample(store) == sample  # from the settings: no model needed


@pytest.mark.slow
def test_first_run_tip_once_and_only_for_the_default_model(
    default_model: Any, fast_model: Any
) -> None:
    _cache(LAPTOP)
    assert cli_models.startup_tip(fast_model) is None  # the user chose a model
    tip = cli_models.startup_tip(default_model)
    assert tip is not None
    assert re.fullmatch(
        r"tip: qwen2\.5-coder-1\.5b-instruct answers better and runs at ~13 tok/s here: "
        r"llm4all (chat -m|models pull) qwen2\.5-coder-1\.5b-instruct.*",
        tip,
    ), tip
    assert cli_models.startup_tip(default_model) is None  # once


@pytest.mark.slow
def test_no_tip_when_the_default_is_the_best_that_runs_here(default_model: Any) -> None:
    _cache(SpeedSample(LAPTOP.model, DEFAULT_SIZE, 12.0))  # a 1.5B model would crawl
    assert cli_models.startup_tip(default_model) is None


@pytest.mark.slow
def test_the_chat_prints_the_tip_once_in_a_real_terminal(
    default_model_path: Path, isolated_home: Path
) -> None:
    """``llm4all chat`` with the default model, in a pty: the tip on the first run only."""
    import os
    import sys

    import pexpect

    _cache(LAPTOP)  # a known speed: the tip is predictable

    def first_screen() -> str:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "llm4all", "chat", "--no-save"],
            encoding="utf-8",
            timeout=120,
            dimensions=(40, 200),
            env={**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        )
        child.expect("Ctrl-D to leave")
        seen = str(child.before)
        child.expect(">")
        child.sendeof()
        child.expect(pexpect.EOF)
        return seen

    first = first_screen()
    assert first.count("tip: qwen2.5-coder-1.5b-instruct answers better") == 1, first
    assert "~13 tok/s here" in first
    assert "tip:" not in first_screen()
