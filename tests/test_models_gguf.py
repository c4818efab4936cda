"""The header-only GGUF reader: real files written by the gguf package, and broken ones."""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import pytest

import gguf_corruptions
from llm4all.errors import ModelLoadError
from llm4all.models.gguf import human_count, quantization_name, read_metadata
from llm4all.models.validate import check_model
from model_helpers import CHAT_TEMPLATE, write_tiny_gguf

BrokenCopies = Callable[[str], Path]

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def test_reads_metadata_of_a_real_gguf(tiny: Path) -> None:
    meta = read_metadata(tiny)
    assert meta.architecture == "llama"
    assert meta.name == "tiny test model"
    assert meta.context_length == 256
    assert meta.chat_template == CHAT_TEMPLATE
    assert (meta.bos_token_id, meta.eos_token_id) == (1, 2)
    assert meta.quantization == "F32"
    assert meta.tensor_count == 2
    assert meta.parameter_count == 2 * 64 * 8
    assert meta.vocab_size == 5
    assert meta.size == tiny.stat().st_size
    assert meta.embedding_length == 8
    assert meta.version == 3


def test_agrees_with_the_gguf_package_reader(tiny: Path) -> None:
    reference = gguf.GGUFReader(str(tiny))
    meta = read_metadata(tiny)
    assert meta.tensor_count == len(reference.tensors)
    assert meta.data_offset == reference.data_offset
    assert set(meta.values) | set(meta.array_lengths) == {
        k for k in reference.fields if not k.startswith("GGUF.")
    }


def test_a_file_without_chat_template(tmp_path: Path) -> None:
    meta = read_metadata(write_tiny_gguf(tmp_path / "base.gguf", chat_template=None, arch="gemma3"))
    assert meta.chat_template is None
    assert meta.architecture == "gemma3"


def test_truncated_file_is_refused_with_a_reason(tiny: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated") as info:
        read_metadata(cut)
    assert info.value.path == str(cut)


def test_file_cut_inside_the_header(tiny: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="header ends early"):
        read_metadata(cut)
    cut.write_bytes(tiny.read_bytes()[:60])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        read_metadata(cut)


def test_random_bytes_are_not_gguf(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_metadata(junk)


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(ModelLoadError, match="0 bytes"):
        read_metadata(empty)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        read_metadata(tmp_path / "absent.gguf")
    with pytest.raises(ModelLoadError, match="directory"):
        read_metadata(tmp_path)


def test_corrupt_key_length(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[24:32] = struct.pack("<Q", 2**40)  # the first key claims a terabyte
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="claims"):
        read_metadata(bad)


def test_corrupt_value_type(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    key_len = struct.unpack_from("<Q", data, 24)[0]
    struct.pack_into("<I", data, 32 + key_len, 99)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="unknown value type 99"):
        read_metadata(bad)


def test_unsupported_versions(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    struct.pack_into("<I", data, 4, 1)
    old = tmp_path / "v1.gguf"
    old.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="version 1"):
        read_metadata(old)
    struct.pack_into(">I", data, 4, 3)
    big = tmp_path / "be.gguf"
    big.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="big-endian"):
        read_metadata(big)


def test_helpers() -> None:
    assert quantization_name(15) == "Q4_K_M"
    assert quantization_name(3 | 1024) == "Q4_1"
    assert quantization_name(None) is None
    assert human_count(134_515_008) == "135M"
    assert human_count(1_543_714_304) == "1.54B"
    assert human_count(999) == "999"


def _real_model(name: str) -> Path:
    for var in ("LLM4ALL_TEST_MODELS", "LLM4ALL_MODELS"):
        folder = os.environ.get(var)
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    pytest.skip(f"{name} is not installed (set LLM4ALL_TEST_MODELS to its folder)")


def test_real_smollm2_metadata_is_read_fast() -> None:
    path = _real_model(SMOLLM_FILE)
    start = time.perf_counter()
    meta = read_metadata(path)
    elapsed = time.perf_counter() - start
    assert meta.architecture == "llama"
    assert meta.context_length == 8192
    assert meta.quantization == "Q4_1"
    assert meta.vocab_size == 49152
    assert meta.chat_template and "<|im_start|>" in meta.chat_template
    assert meta.parameters_label == "135M"
    assert elapsed < 0.5


# -- checks against llama.cpp's limits (models/validate.py), on broken copies of SmolLM2 --

STATIC_REFUSALS = {
    "block_count_1000": "llama.cpp allows at most 512 layers",
    "block_count_plus_one": "layer 30 has no tensors",
    "block_count_minus_one": "tensors for layer 29",
    "head_count_0": "head_count is 0",
    "head_count_kv_0": "head_count_kv is 0",
    "head_count_kv_not_divisor": "not a multiple of attention.head_count_kv",
    "embedding_length_wrong": "exceeds the head size",
    "rms_epsilon_nan": "layer_norm_rms_epsilon is nan",
    "tensor_type_unknown": "not a known ggml type",
    "tensor_offset_shifted": "the tensor table is corrupt",
    "tensor_offsets_swapped": "the tensor table is corrupt",
}


@pytest.fixture(scope="module")
def broken(
    fast_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokenCopies]:
    folder = tmp_path_factory.mktemp("broken")
    yield lambda name: gguf_corruptions.make(fast_model_path, folder, name)


@pytest.mark.parametrize("name", sorted(STATIC_REFUSALS))
def test_a_corrupt_header_is_refused_before_llama_cpp_sees_it(
    broken: BrokenCopies, name: str
) -> None:
    path = broken(name)
    with pytest.raises(ModelLoadError, match=re.escape(STATIC_REFUSALS[name])) as info:
        check_model(read_metadata(path))
    assert info.value.path == str(path) and "\n" not in str(info.value)


def test_real_models_pass_the_checks(fast_model_path: Path, default_model_path: Path) -> None:
    for path in (fast_model_path, default_model_path):
        meta = read_metadata(path)
        check_model(meta)
        assert len(meta.tensors) == meta.tensor_count
