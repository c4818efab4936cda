"""The transformers backend on the CPU: SmolLM2 dequantized from its GGUF into a Hugging Face
folder (once, cached by :mod:`llm4all.hf`), compared with llama.cpp on the same weights.

The engine contract (streaming, stops, cancellation, usage) is checked in
``test_engine_contract.py``; here: agreement with llama.cpp, generation
configs (beams, ``min_new_tokens``, bad fields), loading errors, the adapter.
GPU-only checks skip with the reason where there is no CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the transformers backend needs llm4all[gpu]")

import torch

from llm4all.engine import ModelRef, collect, load_engine
from llm4all.engine.transformers import TransformersOptions, parse_gen_config
from llm4all.engine.transformers.engine import TransformersEngine
from llm4all.errors import InsufficientMemory, InvalidParameter, ModelLoadError
from llm4all.params import GenerationParams, LoadParams

GREEDY = GenerationParams(temperature=0, max_tokens=24, repeat_penalty=1.0)
#: Teacher-forced text for the agreement check (a chat turn, as users run the model).
AGREEMENT_TEXT = (
    "<|im_start|>user\nWhy is the sky blue? Answer in two sentences.<|im_end|>\n"
    "<|im_start|>assistant\nThe sky looks blue because air molecules scatter short "
    "blue wavelengths of sunlight much more than long red ones. This is called Rayleigh "
    "scattering, and it sends blue light toward our eyes from every part of the sky.<|im_end|>\n"
)
N_POSITIONS = 32


@pytest.fixture(scope="session")
def smol_folder(fast_model_path: Path) -> Path:
    """SmolLM2 as a Hugging Face folder, built once from the GGUF (cached across sessions)."""
    from llm4all import hf

    return hf.resolve(fast_model_path).folder


@pytest.fixture(scope="module")
def engine(smol_folder: Path) -> Iterator[TransformersEngine]:
    eng = load_engine(
        ModelRef.file(smol_folder), TransformersOptions(n_ctx=1024, device="cpu"), "transformers"
    )
    assert isinstance(eng, TransformersEngine)
    yield eng
    eng.close()


def chat(engine: TransformersEngine, question: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


def test_folder_is_claimed_and_described(engine: TransformersEngine, smol_folder: Path) -> None:
    from llm4all.engine import backend_for

    assert backend_for(ModelRef.file(smol_folder)).name == "transformers"
    info = engine.info
    assert info.backend == "transformers" and info.device == "cpu"
    assert info.metadata["transformers.dtype"] == "float32"  # CPU: float32 chosen automatically
    assert next(engine.model.parameters()).dtype == torch.float32


def test_top1_agrees_with_llamacpp_on_the_same_weights(
    engine: TransformersEngine, fast_model_path: Path
) -> None:
    """Teacher-forced on the same tokens: the most likely next token at the first 32 positions."""
    llama = load_engine(ModelRef.file(fast_model_path), LoadParams(n_ctx=1024), "llamacpp")
    try:
        tokens = llama.tokenize(AGREEMENT_TEXT)[: N_POSITIONS + 1]
        best: list[int] = []
        llama.token_logprobs(tokens, 1, best=best)  # type: ignore[call-arg]
    finally:
        llama.close()
    ours = engine.top_tokens(tokens, 1)
    assert len(best) == len(ours) == N_POSITIONS
    same = sum(a == b for a, b in zip(best, ours, strict=True))
    print(f"top-1 agreement transformers vs llama.cpp: {same}/{N_POSITIONS}")
    assert same / N_POSITIONS >= 0.9, (same, best, ours)


def test_the_seed_config_runs_through_gpt4allgpu(smol_folder: Path) -> None:
    from llm4all.gpt4all import GPT4AllGPU

    config = {"num_beams": 2, "min_new_tokens": 10, "max_length": 100, "repetition_penalty": 2.0}
    with GPT4AllGPU(smol_folder, device="cpu") as m:
        prompt = "write me a story about a lonely computer"
        out = m.generate(prompt, config)
        n_prompt = len(m.engine.tokenize(prompt))
        n_out = len(m.engine.tokenize(out, add_special=False))
        assert out.strip() and not out.startswith(prompt)
        assert 10 <= n_out <= 100 - n_prompt + 2  # min_new_tokens, max_length (re-tokenized text)
        assert "beam search" in (m.engine.last_note or "")
        with pytest.raises(InvalidParameter, match="num_beam"):
            m.generate(prompt, {"num_beam": 2})


def test_beams_differ_from_greedy(engine: TransformersEngine) -> None:
    prompt = chat(engine, "Write a sentence about a cat.")
    greedy = collect(engine.generate(prompt, GREEDY))
    beams = collect(engine.generate(prompt, GREEDY, gen_config={"num_beams": 4}))
    assert greedy.text.strip() and beams.text.strip()
    assert beams.text != greedy.text
    assert beams.usage.completion_tokens <= 24


def test_beam_search_comes_whole_with_a_note(engine: TransformersEngine) -> None:
    prompt = chat(engine, "Name three colours.")
    chunks = list(engine.generate(prompt, GREEDY, gen_config={"num_beams": 2}))
    assert len(chunks) == 2 and chunks[-1].finish_reason in ("stop", "length")
    assert engine.last_note is not None and "cannot stream" in engine.last_note
    collect(engine.generate(prompt, GREEDY.replace(max_tokens=2)))
    assert engine.last_note is None


def test_min_new_tokens_is_honoured(engine: TransformersEngine) -> None:
    prompt = chat(engine, "Reply with only the word yes.")
    params = GREEDY.replace(max_tokens=60)
    short = collect(engine.generate(prompt, params))
    assert short.finish_reason == "stop" and short.usage.completion_tokens < 20, short.text
    longer = collect(engine.generate(prompt, params, gen_config={"min_new_tokens": 20}))
    assert longer.usage.completion_tokens >= 20


def test_generation_fields_pass_through(engine: TransformersEngine) -> None:
    prompt = chat(engine, "List the days of the week, comma separated.")
    plain = collect(engine.generate(prompt, GREEDY.replace(max_tokens=30)))
    no_repeat = collect(
        engine.generate(
            prompt, GREEDY.replace(max_tokens=30), gen_config={"no_repeat_ngram_size": 1}
        )
    )
    ids = list(no_repeat.token_ids)
    assert len(ids) == len(set(ids))  # no token twice: the field reached generate
    assert plain.text != no_repeat.text
    # max_length (prompt + answer) given by the user wins over llm4all's max_tokens
    capped = collect(engine.generate(prompt, GREEDY, gen_config={"max_length": len(prompt) + 5}))
    assert capped.usage.completion_tokens == 5 and capped.finish_reason == "length"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"num_beam": 2}, "num_beam"),
        ({"num_beams": 0}, "num_beams"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"temperature": "hot"}, "temperature"),
        ({"early_stopping": "maybe"}, "early_stopping"),
        ({"output_scores": True}, "output_scores"),
    ],
)
def test_bad_generation_fields_are_one_line(
    engine: TransformersEngine, fields: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidParameter) as err:
        engine.generate("Hi", GREEDY, gen_config=fields)
    message = str(err.value)
    assert err.value.field == named and named in message and "\n" not in message


def test_gen_config_items_and_files(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text(json.dumps({"num_beams": 3, "length_penalty": 0.5}))
    (tmp_path / "g.toml").write_text("num_beams = 2\nearly_stopping = true\n")
    got = parse_gen_config([str(tmp_path / "g.json"), str(tmp_path / "g.toml"), "max-length=80"])
    assert got == {"num_beams": 2, "length_penalty": 0.5, "early_stopping": True, "max_length": 80}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InvalidParameter, match="gen-config"):
        parse_gen_config([str(tmp_path / "bad.json")])
    with pytest.raises(InvalidParameter, match="gen-config"):
        parse_gen_config([str(tmp_path / "missing.toml")])


def test_load_time_config_applies_to_every_answer(smol_folder: Path) -> None:
    with pytest.raises(InvalidParameter, match="num_beams"):  # before the model loads
        load_engine(
            ModelRef.file(smol_folder),
            TransformersOptions(generation={"num_beams": -1}),
            "transformers",
        )


def test_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_engine(ModelRef.file(tmp_path), TransformersOptions(), "transformers")


def test_a_gguf_transformers_cannot_dequantize(embedding_model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="bert"):
        load_engine(ModelRef.file(embedding_model_path), TransformersOptions(), "transformers")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_where_there_is_none(smol_folder: Path) -> None:
    with pytest.raises(InvalidParameter, match="no CUDA GPU here"):
        load_engine(ModelRef.file(smol_folder), TransformersOptions(device="cuda"), "transformers")


def test_a_model_larger_than_free_memory_is_refused_before_loading(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "float32"}))
    with open(tmp_path / "model.safetensors", "wb") as f:  # sparse: takes no disk
        f.truncate(1 << 40)  # 1 TiB
    with pytest.raises(InsufficientMemory):
        load_engine(ModelRef.file(tmp_path), TransformersOptions(device="cpu"), "transformers")


def test_bad_options_are_one_line() -> None:
    with pytest.raises(InvalidParameter, match="device"):
        TransformersOptions(device="tpu")
    with pytest.raises(InvalidParameter, match="dtype"):
        TransformersOptions(dtype="int3")


def test_a_peft_adapter_is_applied(smol_folder: Path, tmp_path: Path) -> None:
    """A LoRA adapter folder goes on top: a non-zero adapter changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smol_folder)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.fill_(0.05)
    lora.save_pretrained(str(tmp_path / "adapter"))
    del base, lora
    options = TransformersOptions(n_ctx=256, device="cpu", adapter=str(tmp_path / "adapter"))
    with load_engine(ModelRef.file(smol_folder), options, "transformers") as tuned:
        assert tuned.info.metadata["transformers.adapter"].endswith("adapter")
        tokens = tuned.tokenize("The capital of France is")
        tuned_lp = tuned.token_logprobs(tokens, 1)
    with load_engine(
        ModelRef.file(smol_folder), options.replace(adapter=None), "transformers"
    ) as b:
        base_lp = b.token_logprobs(tokens, 1)
    assert max(abs(x - y) for x, y in zip(tuned_lp, base_lp, strict=True)) > 1e-3
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        load_engine(
            ModelRef.file(smol_folder), options.replace(adapter=str(tmp_path)), "transformers"
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here or in CI)")
def test_cuda_half_precision_with_device_map(smol_folder: Path) -> None:
    with load_engine(ModelRef.file(smol_folder), TransformersOptions(), "transformers") as gpu:
        assert gpu.info.device.startswith("cuda")
        assert next(gpu.model.parameters()).dtype in (torch.bfloat16, torch.float16)  # type: ignore[attr-defined]
        done = collect(gpu.generate("The capital of France is", GREEDY.replace(max_tokens=8)))
        assert done.text.strip()
