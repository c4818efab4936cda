"""The transformers backend everywhere else: ``llm4all run --backend transformers --gen-config``,
and ``llm4all serve`` serving a Hugging Face folder through the same answer pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

pytest.importorskip("transformers", reason="the transformers backend needs llm4all[gpu]")


@pytest.fixture(scope="module")
def smol_folder(fast_model_path: Path) -> Path:
    from llm4all import hf

    return hf.resolve(fast_model_path).folder


def test_run_with_gen_config_from_items_and_a_file(smol_folder: Path, tmp_path: Path) -> None:
    from llm4all.cli.run import run_command

    config = tmp_path / "beams.toml"
    config.write_text("num_beams = 2\nmax_length = 60\n")
    result = CliRunner().invoke(
        run_command,
        [
            "--backend",
            "transformers",
            "--model",
            str(smol_folder),
            "--gen-config",
            str(config),
            "--gen-config",
            "repetition_penalty=1.3",
            "--device",
            "cpu",
            "--json",
            "Name a colour.",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output[result.output.index("{") :]
    data = json.loads(out)
    assert data["text"].strip() and data["usage"]["completion_tokens"] >= 1


def test_a_bad_gen_config_field_is_one_line_before_loading(smol_folder: Path) -> None:
    cli = Path(sys.executable).with_name("llm4all")
    done = subprocess.run(
        [str(cli), "run", "--model", str(smol_folder), "--gen-config", "num_beam=2", "Hi"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "num_beam" in lines[0] and "num_beams" in lines[0], done.stderr


def test_gen_config_needs_the_transformers_backend() -> None:
    from llm4all.cli.run import run_command

    result = CliRunner().invoke(
        run_command, ["--backend", "llamacpp", "--gen-config", "num_beams=2", "Hi"]
    )
    assert result.exit_code == 2 and "only with --backend transformers" in result.output


def test_serve_answers_with_a_hugging_face_folder(smol_folder: Path, fast_model_path: Path) -> None:
    from server_helpers import fast_settings, running

    settings = fast_settings(fast_model_path.parent, model=str(smol_folder))
    with running(settings) as live:
        body = {
            "model": str(smol_folder),
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 12,
        }
        r = httpx.post(live.base_url + "/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["choices"][0]["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] >= 1
        models = live.health()["models"]
        assert [m["backend"] for m in models] == ["transformers"]


def test_serve_runs_a_gguf_through_transformers_with_its_flags(fast_model_path: Path) -> None:
    """``llm4all serve --backend transformers --gen-config …``: the catalog GGUF, dequantized."""
    from server_helpers import fast_settings, running

    settings = fast_settings(fast_model_path.parent, model=fast_model_path.name).replace(
        backend="transformers",
        backend_flags={"gen_config": ("repetition_penalty=1.3",), "device": "cpu"},
    )
    with running(settings) as live:
        body = {
            "model": fast_model_path.name,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "temperature": 0,
            "max_tokens": 8,
        }
        r = httpx.post(live.base_url + "/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"].strip()
        assert [m["backend"] for m in live.health()["models"]] == ["transformers"]


def test_serve_refuses_an_unknown_backend_or_a_bad_gen_config_before_serving(
    fast_model_path: Path,
) -> None:
    from llm4all.errors import InvalidParameter
    from llm4all.server import ServerSettings

    with pytest.raises(InvalidParameter, match="backend"):
        ServerSettings(backend="nope")
    with pytest.raises(Exception, match="num_beam"):
        ServerSettings(backend="transformers", backend_flags={"gen_config": ("num_beam=2",)})
    cli = Path(sys.executable).with_name("llm4all")
    done = subprocess.run(
        [str(cli), "serve", "--backend", "llamacpp", "--device", "cpu", "--no-preload"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "only with --backend transformers" in done.stderr
