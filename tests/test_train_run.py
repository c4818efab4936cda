"""Real LoRA runs of SmolLM2-135M, a few steps each: kill -9 and --resume, a full disk, export.

The runs are tiny (short texts, rank 2, a few steps) but real: the real model,
real processes killed with SIGKILL, a real 2 MiB file system, real GGUF files
loaded by llama.cpp and compared with transformers token by token.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm4all.train.checkpoint import CheckpointError, checkpoints
from llm4all.train.config import TrainConfig
from llm4all.train.export import Exported

pytestmark = pytest.mark.slow

SEED_TASKS = (
    Path(__file__).resolve().parents[1] / "../shared/data/train/self_instruct_seed_tasks.jsonl"
)
CLI = [sys.executable, "-m", "llm4all"]


def tiny_config(
    base: Path, data: Path, output: Path, *, max_steps: int = 6, every: int = 2, **more: object
) -> str:
    """A TOML config for a run of a few seconds a step."""
    values: dict[str, object] = {
        "base": str(base),
        "data": [str(data)],
        "max_length": 64,
        "batch_size": 2,
        "grad_accum": 1,
        "lora_r": 2,
        "lora_alpha": 4,
        "learning_rate": 5e-3,  # large, so that the adapter changes the model measurably
        "warmup_steps": 0,
        "max_steps": max_steps,
        "checkpoint_every": every,
        "heldout_fraction": 0.1,
        "output": str(output),
        "name": "tiny-tuned",
    } | more
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 of the self-instruct seed tasks (hand-written instructions and answers)."""
    if not SEED_TASKS.is_file():
        pytest.skip(f"{SEED_TASKS} is not here")
    path = tmp_path_factory.mktemp("data") / "seed.jsonl"
    lines = SEED_TASKS.read_text("utf-8").splitlines()[:24]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=900, env=env or dict(os.environ)
    )


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, fast_model_path: Path, data: Path
) -> Path:
    """A whole run, never interrupted (its losses are what a resumed run must reproduce)."""
    folder = tmp_path_factory.mktemp("whole")
    config = folder / "run.toml"
    config.write_text(tiny_config(fast_model_path, data, folder / "run"))
    done = run_cli("train", str(config))
    assert done.returncode == 0, done.stderr
    return folder / "run"


def test_a_finished_run_has_its_adapter_curve_and_heldout_loss(finished_run: Path) -> None:
    result = json.loads((finished_run / "adapter" / "result.json").read_text())
    assert result["steps"] == 6 and result["trained_tokens"] > 0
    assert result["heldout_loss_before"] > 0 and result["heldout_loss_after"] > 0
    assert (finished_run / "adapter" / "adapter_model.safetensors").is_file()
    curve = json.loads((finished_run / "loss.json").read_text())
    assert [p["step"] for p in curve] == [0, 1, 2, 3, 4, 5, 6]
    assert (finished_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (finished_run / "loss.csv").read_text().startswith("step,loss,heldout_loss")
    assert [p.name for p in checkpoints(finished_run / "checkpoints")] == ["step-2", "step-4"]


def test_kill_9_then_resume_continues_from_the_last_checkpoint(
    tmp_path: Path, fast_model_path: Path, data: Path, finished_run: Path
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(tiny_config(fast_model_path, data, tmp_path / "run"))
    process = subprocess.Popen(
        [*CLI, "train", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while not (tmp_path / "run" / "checkpoints" / "step-2" / "state.json").exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "run" / "adapter" / "result.json").exists()

    again = run_cli("train", str(config))  # without --resume: refused, nothing lost
    assert again.returncode == 1 and "--resume" in again.stderr
    resumed = run_cli("train", str(config), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    curve = json.loads((tmp_path / "run" / "loss.json").read_text())
    whole = json.loads((finished_run / "loss.json").read_text())
    assert [p["step"] for p in curve] == [p["step"] for p in whole]
    # Same batches, same random state: the resumed steps reproduce the uninterrupted run.
    for mine, theirs in zip(curve[1:], whole[1:], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-4)


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(
    small_disk: Path, fast_model_path: Path, data: Path
) -> None:
    from llm4all.train.trainer import train

    folder = small_disk / "run"
    config = TrainConfig(
        base=str(fast_model_path),
        data=[str(data)],
        max_length=64,
        batch_size=1,
        grad_accum=1,
        lora_r=1,
        lora_targets=["q_proj"],  # about 0.4 MB a checkpoint on a 2 MB disk
        max_steps=4,
        checkpoint_every=1,
        heldout_fraction=0.0,
        output=str(folder),
    )

    def fill_after_first_checkpoint(report: object) -> None:
        if getattr(report, "step", 0) == 2:  # step-1 is on disk: leave 16 KiB free
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            (small_disk / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))

    with pytest.raises(CheckpointError) as caught:
        train(config, report=fill_after_first_checkpoint)
    message = str(caught.value)
    assert "step 2" in message and "disk is full" in message and "step-1" in message
    kept = checkpoints(folder / "checkpoints")
    assert [p.name for p in kept] == ["step-1"]
    assert json.loads((kept[0] / "state.json").read_text())["step"] == 1
    assert not list((folder / "checkpoints").glob(".*tmp"))  # the half-written one is gone

    (small_disk / "filler").unlink()
    result = train(config, resume=True)
    assert result.steps == 4


def test_export_writes_gguf_files_that_agree_with_transformers(
    finished_run: Path, tmp_path: Path, fast_model_path: Path
) -> None:
    from llm4all.models.store import ModelStore
    from llm4all.train.export import AGREEMENT_MIN, export_run

    store = ModelStore(tmp_path / "models")
    exported = export_run(finished_run, store=store)
    assert set(exported.files) == {"f16", "q4_k_m", "lora"}
    assert exported.agreement["f16"] >= AGREEMENT_MIN, exported.summary()
    assert exported.agreement["q4_k_m"] >= 0.5, exported.summary()  # reported, not a bar
    assert exported.registered == ["tiny-tuned", "tiny-tuned-f16"]
    model = store.find_installed("tiny-tuned")
    assert model is not None and model.described["base"] == str(fast_model_path)
    assert len(model.described["sha256"]) == 64 and model.described["trained"]

    # The exported model answers through llm4all's own front end, with the base's template.
    env = dict(os.environ, LLM4ALL_MODELS=str(store.root))
    done = run_cli("run", "-m", "tiny-tuned", "Say hello.", "--temp", "0", "-n", "8", env=env)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    from llm4all.models.gguf import read_metadata

    tuned, base = read_metadata(exported.files["f16"]), read_metadata(fast_model_path)
    assert tuned.chat_template == base.chat_template and tuned.name == "tiny-tuned"


def test_the_lora_gguf_on_the_base_matches_the_merged_model(
    finished_run: Path, fast_model_path: Path
) -> None:
    """llama.cpp applies the adapter GGUF at load: base + LoRA picks what the merged model picks."""
    from llm4all.engine.llamacpp import LlamaCppEngine
    from llm4all.params import LoadParams

    lora = finished_run / "export" / "tiny-tuned-lora.gguf"
    merged = finished_run / "export" / "tiny-tuned-f16.gguf"
    if not lora.is_file():
        pytest.skip("needs test_export_writes_gguf_files_that_agree_with_transformers first")
    text = "Write a short poem about the sea, in four lines, with a rhyme."
    picks, scores = {}, {}
    for name, path, adapter in (
        ("merged", merged, None),
        ("lora", fast_model_path, lora),
        ("base", fast_model_path, None),
    ):
        engine = LlamaCppEngine(path, LoadParams(n_ctx=128, lora=str(adapter) if adapter else None))
        try:
            best: list[int] = []
            scores[name] = sum(engine.token_logprobs(engine.tokenize(text), 1, best=best))
            picks[name] = best
        finally:
            engine.close()
    same = sum(a == b for a, b in zip(picks["lora"], picks["merged"], strict=True))
    assert same / len(picks["merged"]) >= 0.9
    # The adapter does change the model, and the way merging does.
    assert abs(scores["lora"] - scores["base"]) > 2 * abs(scores["lora"] - scores["merged"])


def _train_and_export(base: str, data: Path, folder: Path, **more: object) -> Exported:
    """One optimizer step on ``base``, then an export with its F16 top-1 check (no Q4_K_M)."""
    from llm4all.models.store import ModelStore
    from llm4all.train.config import load_config
    from llm4all.train.export import export_run
    from llm4all.train.trainer import train

    config_file = folder / "run.toml"
    config_file.write_text(tiny_config(Path(base), data, folder / "run", max_steps=1, **more))
    train(load_config(config_file))
    return export_run(folder / "run", quantize=None, store=ModelStore(folder / "models"))


def test_a_gemma3_run_exports_a_gguf_that_agrees_with_transformers(
    tmp_path: Path, base_model_path: Path, data: Path
) -> None:
    """gemma3: the GGUF gets back gemma's ``norm + 1`` and its 262k-token vocabulary."""
    from llm4all.train.export import AGREEMENT_MIN

    exported = _train_and_export(str(base_model_path), data, tmp_path, format="plain")
    assert exported.agreement["f16"] >= AGREEMENT_MIN, exported.summary()


def test_a_hugging_face_folder_as_the_base_exports(
    tmp_path: Path, fast_model_path: Path, data: Path
) -> None:
    """A folder written by save_pretrained: the header comes from the store's GGUF of that model."""
    from llm4all import hf
    from llm4all.models.gguf import read_metadata
    from llm4all.train.export import AGREEMENT_MIN

    model, tokenizer = hf.load_model(fast_model_path)
    folder = tmp_path / "smollm2-hf"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert hf.gguf_template(hf.resolve(folder)) == fast_model_path

    exported = _train_and_export(str(folder), data, tmp_path)
    assert exported.agreement["f16"] >= AGREEMENT_MIN, exported.summary()
    tuned = read_metadata(exported.files["f16"])
    assert tuned.vocab_size == read_metadata(fast_model_path).vocab_size
    assert tuned.chat_template == read_metadata(fast_model_path).chat_template


def test_a_folder_with_no_gguf_of_its_model_has_no_template(
    tmp_path: Path, fast_model_path: Path
) -> None:
    from llm4all import hf

    model, tokenizer = hf.load_model(fast_model_path)
    folder = tmp_path / "smollm2-hf"
    model.config.num_hidden_layers = 1  # a model the store has no GGUF of
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert hf.gguf_template(hf.resolve(folder)) is None
