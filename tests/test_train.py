"""``llm4all train``: the config, the encoding of conversations, the split and bad input.

The training runs themselves (kill -9 and --resume, a full disk, export and
top-1 agreement) are in ``test_train_run.py``; these tests need at most
SmolLM2's tokenizer.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from llm4all.data.schema import Conversation
from llm4all.errors import ModelLoadError
from llm4all.train.config import ConfigError, TrainConfig, config_template, load_config
from llm4all.train.data import IGNORE, encode, split_heldout
from model_helpers import write_tiny_gguf

CLI = [sys.executable, "-m", "llm4all"]


def llm4all(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def conversation(prompt: str, answer: str) -> Conversation:
    return Conversation(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], "test"
    )


# --- the config ------------------------------------------------------------------


def test_print_config_is_a_commented_config_of_every_default() -> None:
    from llm4all.cli.train import train_command

    result = CliRunner().invoke(train_command, ["--print-config"])
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.output) == TrainConfig().to_dict()
    assert result.output == config_template()
    helps = [line for line in result.output.splitlines() if line.startswith("# ")]
    assert len(helps) >= len(TrainConfig().to_dict())  # every key has its help line


def test_config_from_toml_and_yaml_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('data = "rows.jsonl"\nlora_r = 4\nepochs = 2\n')
    (tmp_path / "b.yaml").write_text("data: [rows.jsonl]\nlora_r: 4\nepochs: 2\n")
    for name in ("a.toml", "b.yaml"):
        config = load_config(tmp_path / name)
        assert config.data == [str(tmp_path / "rows.jsonl")]
        assert (config.lora_r, config.epochs, config.lora_alpha) == (4, 2.0, 32)


def test_an_unknown_key_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('base = "smollm2-135m-instruct"\n\nlora_rank = 8\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}:3:" in message and "'lora_rank'" in message and "'lora_r'" in message
    assert (caught.value.key, caught.value.line) == ("lora_rank", 3)


def test_a_wrong_type_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("base: smollm2-135m-instruct\nmax_steps: ten\nformat: chat\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:2: max_steps must be an integer"):
        load_config(path)
    path.write_text("format: markdown\n")
    with pytest.raises(ConfigError, match=r":1: format must be one of 'chat', 'plain'"):
        load_config(path)
    path.write_text("mask_prompt: 1\n")
    with pytest.raises(ConfigError, match=r":1: mask_prompt must be true or false"):
        load_config(path)


def test_an_out_of_range_value_names_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("seed = 1\nheldout_fraction = 1.5\n")
    with pytest.raises(ConfigError, match=r"run\.toml:2: heldout_fraction = 1.5 is out of range"):
        load_config(path)


def test_the_cli_turns_a_bad_config_into_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("learning_rte = 0.001\n")
    done = llm4all("train", str(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "run.toml:1" in lines[0] and "learning_rte" in lines[0], done.stderr


# --- bad input -------------------------------------------------------------------


def test_data_with_no_usable_rows_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        '{"prompt": "Hi", "response": ""}\nnot json\n{"instruction": "x", "output": ""}\n'
    )
    config = tmp_path / "run.toml"
    config.write_text(f'data = ["{data}"]\noutput = "run"\n')
    done = llm4all("train", str(config))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no usable rows" in done.stderr, done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_base_transformers_cannot_load_is_one_line(tmp_path: Path) -> None:
    from llm4all import hf

    bert = write_tiny_gguf(tmp_path / "tiny-bert.gguf", arch="bert")
    with pytest.raises(ModelLoadError, match="transformers cannot load the bert architecture"):
        hf.resolve(bert)
    with pytest.raises(ModelLoadError, match="not a Hugging Face model folder"):
        hf.resolve(tmp_path)
    config = tmp_path / "run.toml"
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "Say hi.", "response": "Hi!"}\n')
    config.write_text(f'base = "{bert}"\ndata = ["{data}"]\n')
    done = llm4all("train", str(config))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "bert architecture" in done.stderr


def test_exporting_an_unfinished_run_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    done = llm4all("train", "export", str(run))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "not a finished run" in done.stderr and "--resume" in done.stderr
    done = llm4all("train", "export", str(tmp_path / "nothing"))
    assert done.returncode == 1 and "not a training run" in done.stderr


# --- encoding and the split ------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(fast_model_path: Path) -> object:
    from transformers import AutoTokenizer

    from llm4all import hf

    return AutoTokenizer.from_pretrained(hf.resolve(fast_model_path).folder)


def test_chat_format_trains_on_the_answer_and_its_end_of_turn_only(tokenizer: object) -> None:
    row = conversation("What is 2+2?", "It is 4.")
    example = encode(row, tokenizer, format="chat")  # type: ignore[arg-type]
    assert example is not None
    trained = [
        t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE
    ]
    text = tokenizer.decode(trained)  # type: ignore[attr-defined]
    assert text.startswith("It is 4.") and "<|im_end|>" in text
    assert "What is 2+2?" not in text and "user" not in text
    whole = encode(row, tokenizer, format="chat", mask_prompt=False)  # type: ignore[arg-type]
    assert whole is not None and whole.labels == whole.input_ids


def test_plain_format_is_prompt_newline_answer_eos(tokenizer: object) -> None:
    example = encode(conversation("Name a colour.", "Blue"), tokenizer, format="plain")  # type: ignore[arg-type]
    assert example is not None
    full = tokenizer.decode(example.input_ids)  # type: ignore[attr-defined]
    assert full.startswith("Name a colour.\nBlue")
    trained = [
        t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE
    ]
    assert trained[-1] == tokenizer.eos_token_id  # type: ignore[attr-defined]
    assert tokenizer.decode(trained[:-1]) == "Blue"  # type: ignore[attr-defined]


def test_an_example_whose_answer_is_cut_off_is_dropped(tokenizer: object) -> None:
    row = conversation("word " * 200, "short answer")
    assert encode(row, tokenizer, max_length=32) is None  # type: ignore[arg-type]
    assert encode(row, tokenizer, max_length=512) is not None  # type: ignore[arg-type]


def test_the_heldout_split_is_stable_when_rows_move_or_grow() -> None:
    rows = [conversation(f"question {i}", f"answer {i}") for i in range(400)]
    train, held = split_heldout(rows, 0.05, seed=42)
    assert 8 <= len(held) <= 35 and len(train) + len(held) == 400
    more = [conversation(f"question {i}", f"answer {i}") for i in range(400, 500)]
    _train2, held2 = split_heldout(list(reversed(rows)) + more, 0.05, seed=42)
    assert {r.id for r in held} <= {r.id for r in held2}
    _train3, held3 = split_heldout(rows, 0.05, seed=7)
    assert {r.id for r in held3} != {r.id for r in held}
