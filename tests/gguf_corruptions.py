"""Broken copies of a real GGUF model, each damaged in one way (for tests and the benchmark).

Every corruption starts from a byte copy of a working model (SmolLM2) and
changes a few bytes in place: a header field, a hyper-parameter, an entry of
the tensor table, a token, or the weights themselves. Positions come from the
``gguf`` package's reader, run once on the original.

Example: ``make(source, tmp_path, "block_count_1000")`` → a file whose
``llama.block_count`` is 1000 (llama.cpp aborts on more than 512 layers).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gguf
import numpy as np


@dataclass(frozen=True)
class Layout:
    """Where things are in the original file."""

    values: dict[str, tuple[int, int]]  # key -> (byte offset of the value, GGUF value type)
    arrays: dict[str, tuple[int, int]]  # key -> (byte offset of the count, item type)
    infos: dict[str, tuple[int, int, int, int]]  # tensor -> (name, dims, type, offset) positions
    data: dict[str, tuple[int, int, int]]  # tensor -> (data offset in file, bytes, ggml type)
    tokens: list[tuple[int, bytes]]  # (offset of the string bytes, the bytes)


@cache
def layout(source: Path) -> Layout:
    reader = gguf.GGUFReader(str(source))
    values: dict[str, tuple[int, int]] = {}
    arrays: dict[str, tuple[int, int]] = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        starts = np.cumsum([0] + [p.nbytes for p in f.parts]) + f.offset
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            arrays[name] = (int(starts[3]), int(f.types[1]))  # key_len, key, type, item type, count
        else:
            values[name] = (int(starts[3]), int(f.types[0]))
    infos, data = {}, {}
    for t in reader.tensors:
        starts = np.cumsum([0] + [p.nbytes for p in t.field.parts]) + t.field.offset
        # parts: name length, name, n_dims, dims, type, offset
        infos[t.name] = (int(starts[1]), int(starts[3]), int(starts[4]), int(starts[5]))
        data[t.name] = (int(t.data_offset), int(t.n_bytes), int(t.tensor_type))
    tok = reader.fields["tokenizer.ggml.tokens"]
    tokens = []
    starts = np.cumsum([0] + [p.nbytes for p in tok.parts]) + tok.offset
    for i in tok.data:  # data indexes the parts that hold each string's bytes
        tokens.append((int(starts[i]), bytes(tok.parts[i])))
    return Layout(values, arrays, infos, data, tokens)


_FORMATS = {4: "<I", 5: "<i", 6: "<f", 10: "<Q", 11: "<q"}


def _poke(path: Path, offset: int, raw: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(raw)


def _set(key: str, value: float) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        where, vtype = lay.values[key]
        fmt = _FORMATS[vtype]
        _poke(path, where, struct.pack(fmt, int(value) if fmt != "<f" else value))

    return edit


def _header(offset: int, raw: bytes) -> Callable[[Path, Layout], None]:
    return lambda path, lay: _poke(path, offset, raw)


def _truncate(keep: Callable[[int], int]) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        with path.open("r+b") as f:
            f.truncate(keep(path.stat().st_size))

    return edit


def _empty(path: Path, lay: Layout) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path, lay: Layout) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(1 << 20))


def _tensor_type(tensor: str, ggml_type: int) -> Callable[[Path, Layout], None]:
    return lambda path, lay: _poke(path, lay.infos[tensor][2], struct.pack("<I", ggml_type))


def _tensor_offset(tensor: str, delta: int) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        where = lay.infos[tensor][3]
        with path.open("r+b") as f:
            f.seek(where)
            (old,) = struct.unpack("<Q", f.read(8))
            f.seek(where)
            f.write(struct.pack("<Q", old + delta))

    return edit


def _swap_offsets(a: str, b: str) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        with path.open("r+b") as f:
            raw = []
            for name in (a, b):
                f.seek(lay.infos[name][3])
                raw.append(f.read(8))
            for name, value in ((a, raw[1]), (b, raw[0])):
                f.seek(lay.infos[name][3])
                f.write(value)

    return edit


def _swap_dims(tensor: str) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        where = lay.infos[tensor][1]
        with path.open("r+b") as f:
            f.seek(where)
            d0, d1 = struct.unpack("<QQ", f.read(16))
            f.seek(where)
            f.write(struct.pack("<QQ", d1, d0))

    return edit


def _rename(tensor: str, new: str) -> Callable[[Path, Layout], None]:
    assert len(new) == len(tensor)
    return lambda path, lay: _poke(path, lay.infos[tensor][0], new.encode())


def _duplicate_token(path: Path, lay: Layout) -> None:
    # Make a token's text equal to another token's of the same length.
    by_len: dict[int, tuple[int, bytes]] = {}
    for where, text in lay.tokens[1000:]:
        if len(text) in by_len and text != by_len[len(text)][1]:
            _poke(path, where, by_len[len(text)][1])
            return
        by_len[len(text)] = (where, text)


def _replace_value_text(key: str, new: bytes) -> Callable[[Path, Layout], None]:
    def edit(path: Path, lay: Layout) -> None:
        where, _ = lay.values[key]
        with path.open("r+b") as f:
            f.seek(where)
            (length,) = struct.unpack("<Q", f.read(8))
            assert length == len(new)
            f.write(new)

    return edit


def _fill(tensor: str, kind: str) -> Callable[[Path, Layout], None]:
    """Overwrite a tensor's data: ``nan`` (F32 tensors), ``zero`` or ``random`` bytes."""

    def edit(path: Path, lay: Layout) -> None:
        start, n_bytes, _ = lay.data[tensor]
        if kind == "nan":
            raw = np.full(n_bytes // 4, np.nan, dtype=np.float32).tobytes()
        elif kind == "zero":
            raw = bytes(n_bytes)
        else:
            raw = np.random.default_rng(1).bytes(n_bytes)
        _poke(path, start, raw)

    return edit


def _scramble_weights(path: Path, lay: Layout) -> None:
    """Random bytes over every layer's feed-forward weights: loads fine, talks nonsense."""
    rng = np.random.default_rng(2)
    for name, (start, n_bytes, _) in lay.data.items():
        if ".ffn_" in name and not name.endswith("norm.weight"):
            _poke(path, start, rng.bytes(n_bytes))


#: name -> (group, what it does to the file)
CORRUPTIONS: dict[str, tuple[str, Callable[[Path, Layout], None]]] = {
    "empty_file": ("header", _empty),
    "random_bytes": ("header", _random_bytes),
    "bad_magic": ("header", _header(0, b"GGUX")),
    "version_99": ("header", _header(4, struct.pack("<I", 99))),
    "tensor_count_huge": ("header", _header(8, struct.pack("<Q", 2**40))),
    "truncated_header": ("header", _truncate(lambda size: 4096)),
    "truncated_half": ("header", _truncate(lambda size: size // 2)),
    "block_count_1000": ("hyper-parameters", _set("llama.block_count", 1000)),
    "block_count_plus_one": ("hyper-parameters", _set("llama.block_count", 31)),
    "block_count_minus_one": ("hyper-parameters", _set("llama.block_count", 29)),
    "head_count_0": ("hyper-parameters", _set("llama.attention.head_count", 0)),
    "head_count_kv_0": ("hyper-parameters", _set("llama.attention.head_count_kv", 0)),
    "head_count_kv_not_divisor": ("hyper-parameters", _set("llama.attention.head_count_kv", 2)),
    "embedding_length_wrong": ("hyper-parameters", _set("llama.embedding_length", 540)),
    "rms_epsilon_nan": (
        "hyper-parameters",
        _set("llama.attention.layer_norm_rms_epsilon", float("nan")),
    ),
    "tensor_type_unknown": ("tensor table", _tensor_type("blk.0.attn_q.weight", 99)),
    "tensor_type_same_size": ("tensor table", _tensor_type("output_norm.weight", 26)),  # F32 -> I32
    "tensor_offset_shifted": ("tensor table", _tensor_offset("blk.3.ffn_up.weight", 32)),
    "tensor_offsets_swapped": (
        "tensor table",
        _swap_offsets("blk.0.attn_q.weight", "blk.1.attn_q.weight"),
    ),
    "tensor_shape_swapped": ("tensor table", _swap_dims("blk.2.ffn_up.weight")),
    "tensor_renamed": ("tensor table", _rename("blk.5.attn_k.weight", "blk.5.attn_x.weight")),
    "token_duplicated": ("vocabulary", _duplicate_token),
    "eos_token_id_huge": ("vocabulary", _set("tokenizer.ggml.eos_token_id", 10**6)),
    "tokenizer_unknown": ("vocabulary", _replace_value_text("tokenizer.ggml.model", b"gpt3")),
    "weights_nan": ("weights", _fill("output_norm.weight", "nan")),
    "weights_zero_norm": ("weights", _fill("output_norm.weight", "zero")),
    "weights_scrambled": ("weights", _scramble_weights),
}


def make(source: Path, folder: Path, name: str) -> Path:
    """A copy of ``source`` in ``folder`` with the corruption ``name`` applied."""
    lay = layout(source)
    dest = folder / f"smollm2-{name.replace('_', '-')}.gguf"
    shutil.copyfile(source, dest)
    CORRUPTIONS[name][1](dest, lay)
    return dest
