"""A fast, header-only GGUF reader and validator.

``gguf.GGUFReader`` parses every array in the file into numpy objects, which
takes about 3 s on a 100 MB model (the tokenizer's token and merge lists are
the bulk of it). The engine, ``models list`` and ``models add`` only need the
scalar metadata, so this reader walks the header over an ``mmap``: it keeps
scalars, skips arrays of numbers by arithmetic and walks arrays of strings by
their length prefixes without decoding them. It then checks that the tensor
data the header promises lies inside the file, so a truncated download or a
half-copied file is refused here with a clear reason instead of crashing
llama.cpp later.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, version u32, tensor count
u64, key/value count u64, the key/values, the tensor infos, padding to
``general.alignment``, then the tensor data.

Example: ``read_metadata("model.gguf").context_length`` → ``8192``.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from llm4all.errors import ModelLoadError

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_GUESSED_FILE_TYPE = 1024  # llama.cpp adds this flag when file_type was inferred

# GGUF value types → struct format of one scalar (8 = string, 9 = array).
_SCALAR_FORMATS: dict[int, str] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING, _ARRAY = 8, 9
_MAX_KEY_BYTES = 1 << 16
_MAX_DIMS = 8

Scalar = str | int | float | bool


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it (no data is read)."""

    name: str
    shape: tuple[int, ...]
    type: int
    offset: int  # relative to the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def block_size(self) -> int | None:
        """Elements per quantization block, or None for a type the gguf package does not know."""
        try:
            return GGML_QUANT_SIZES[GGMLQuantizationType(self.type)][0]
        except (ValueError, KeyError):
            return None

    @property
    def n_bytes(self) -> int | None:
        """Bytes of data, or None for a quantization type the gguf package does not know."""
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.type)]
        except (ValueError, KeyError):
            return None
        return self.n_elements // block * type_size


@dataclass(frozen=True)
class GGUFMetadata:
    """What the header of a GGUF file says about its model."""

    path: Path
    version: int
    size: int  # file size in bytes
    architecture: str
    name: str | None
    context_length: int | None
    chat_template: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    file_type: int | None
    quantization: str | None  # e.g. "Q4_K_M", from general.file_type
    parameter_count: int  # sum of tensor element counts
    size_label: str | None  # general.size_label, e.g. "135M"
    tensor_count: int
    vocab_size: int | None
    alignment: int
    data_offset: int
    values: Mapping[str, Scalar] = field(default_factory=dict, repr=False)
    array_lengths: Mapping[str, int] = field(default_factory=dict, repr=False)
    tensors: tuple[TensorInfo, ...] = field(default=(), repr=False)

    @property
    def embedding_length(self) -> int | None:
        value = self.values.get(f"{self.architecture}.embedding_length")
        return value if isinstance(value, int) else None

    @property
    def parameters_label(self) -> str:
        """A short count such as ``"135M"`` or ``"0.5B"``: the file's own size label if it has one.

        The label is preferred because ``parameter_count`` counts tied embeddings
        twice when a file stores them as two tensors (Qwen2.5-0.5B: 630M vs 494M).
        """
        return self.size_label or human_count(self.parameter_count)

    def summary(self) -> dict[str, object]:
        """The fields a user cares about, JSON-ready (no chat template text)."""
        return {
            "architecture": self.architecture,
            "name": self.name,
            "parameters": self.parameters_label,
            "parameter_count": self.parameter_count,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "has_chat_template": self.chat_template is not None,
            "vocab_size": self.vocab_size,
            "tensor_count": self.tensor_count,
            "gguf_version": self.version,
            "size": self.size,
        }


def human_count(n: int) -> str:
    """Example: ``human_count(134_515_008)`` → ``"135M"``."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def quantization_name(file_type: int | None) -> str | None:
    """Example: ``quantization_name(15)`` → ``"Q4_K_M"``."""
    if file_type is None:
        return None
    try:
        name = LlamaFileType(file_type & ~_GUESSED_FILE_TYPE).name
    except ValueError:
        return f"type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


class _Corrupt(Exception):
    """Raised inside the parser; turned into ModelLoadError with the path."""


class _Cursor:
    """Reads little-endian values from a buffer, refusing to run past its end."""

    def __init__(self, buf: mmap.mmap, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _Corrupt(f"header ends early while reading {what} at byte {self.pos}")

    def scalar(self, fmt: str, what: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", what))

    def string(self, what: str, limit: int | None = None) -> str:
        length = self.u64(f"length of {what}")
        if limit is not None and length > limit:
            raise _Corrupt(f"{what} claims {length} bytes")
        self.need(length, what)
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        # Only the length prefixes are read: decoding 150k tokens costs ~10x more.
        unpack, buf, pos, end = struct.unpack_from, self.buf, self.pos, self.end
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                raise _Corrupt(f"header ends early inside {what}")
            (length,) = unpack("<Q", buf, pos)
            pos += 8 + length
        if pos > end:
            raise _Corrupt(f"header ends early inside {what}")
        self.pos = pos


def _read_value(cur: _Cursor, vtype: int, key: str) -> Scalar | None:
    """Read one value; arrays are skipped (returns None) and their length recorded by the caller."""
    if vtype == _STRING:
        return cur.string(f"value of {key}")
    fmt = _SCALAR_FORMATS.get(vtype)
    if fmt is None:
        raise _Corrupt(f"unknown value type {vtype} for key {key!r}")
    return cur.scalar(fmt, f"value of {key}")


def _skip_array(cur: _Cursor, key: str) -> int:
    item_type = cur.u32(f"item type of {key}")
    count = cur.u64(f"length of {key}")
    if item_type == _STRING:
        cur.skip_strings(count, key)
    elif item_type in _SCALAR_FORMATS:
        n = count * struct.calcsize(_SCALAR_FORMATS[item_type])
        cur.need(n, key)
        cur.pos += n
    elif item_type == _ARRAY:
        for _ in range(count):  # nested arrays are rare; walk them
            _skip_array(cur, key)
    else:
        raise _Corrupt(f"unknown array item type {item_type} for key {key!r}")
    return count


def _read_kv(cur: _Cursor, kv_count: int) -> tuple[dict[str, Scalar], dict[str, int]]:
    values: dict[str, Scalar] = {}
    arrays: dict[str, int] = {}
    for i in range(kv_count):
        key = cur.string(f"key #{i}", limit=_MAX_KEY_BYTES)
        vtype = cur.u32(f"type of {key}")
        if vtype == _ARRAY:
            arrays[key] = _skip_array(cur, key)
        else:
            value = _read_value(cur, vtype, key)
            if value is not None:
                values[key] = value
    return values, arrays


def _read_tensors(cur: _Cursor, count: int) -> list[TensorInfo]:
    tensors = []
    for i in range(count):
        name = cur.string(f"name of tensor #{i}", limit=_MAX_KEY_BYTES)
        n_dims = cur.u32(f"dimensions of {name}")
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} claims {n_dims} dimensions")
        shape = tuple(cur.u64(f"shape of {name}") for _ in range(n_dims))
        ttype = cur.u32(f"type of {name}")
        offset = cur.u64(f"offset of {name}")
        tensors.append(TensorInfo(name, shape, ttype, offset))
    return tensors


def _check_data_fits(tensors: list[TensorInfo], data_offset: int, size: int, align: int) -> None:
    """Refuse tensor data that llama.cpp would refuse or read past the end of the file.

    llama.cpp wants the tensors back to back, in table order, each padded to the
    alignment (gguf.cpp checks each offset); a type it does not know has no size.
    """
    expected = 0
    for t in tensors:
        n_bytes, block = t.n_bytes, t.block_size
        if n_bytes is None or block is None:
            raise _Corrupt(f"tensor {t.name!r} has type {t.type}, which is not a known ggml type")
        if not t.shape or any(d <= 0 for d in t.shape) or t.shape[0] % block:
            raise _Corrupt(f"tensor {t.name!r} has the impossible shape {list(t.shape)}")
        if t.offset != expected:
            raise _Corrupt(
                f"tensor {t.name!r} starts at data offset {t.offset:,}, expected {expected:,} "
                "(the tensor table is corrupt)"
            )
        end = data_offset + t.offset + n_bytes
        expected += -(-n_bytes // align) * align
    if tensors and end > size:
        raise _Corrupt(
            f"the file is truncated: its tensors need {end:,} bytes but it has {size:,} "
            "(an interrupted download or copy?)"
        )


def _int_or_none(value: Scalar | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Scalar | None) -> str | None:
    return value if isinstance(value, str) else None


def _parse(buf: mmap.mmap, path: Path, size: int) -> GGUFMetadata:
    cur = _Cursor(buf)
    if buf[:4] != MAGIC:
        raise _Corrupt(f"not a GGUF file (starts with {bytes(buf[:4])!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise _Corrupt("big-endian GGUF files are not supported")
        raise _Corrupt(f"unsupported GGUF version {version} (llm4all reads versions 2 and 3)")
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("key/value count")
    # Each tensor info and each key/value takes at least 12 bytes; cheap sanity check.
    if (tensor_count + kv_count) * 12 > size:
        raise _Corrupt(
            f"the header claims {tensor_count} tensors and {kv_count} keys, more than "
            f"a {size}-byte file can hold (truncated or corrupt)"
        )
    values, arrays = _read_kv(cur, kv_count)
    tensors = _read_tensors(cur, tensor_count)
    alignment = _int_or_none(values.get("general.alignment")) or DEFAULT_ALIGNMENT
    if alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment is {alignment}, not a power of two")
    data_offset = -(-cur.pos // alignment) * alignment
    _check_data_fits(tensors, data_offset, size, alignment)
    return _build(path, version, size, values, arrays, tensors, alignment, data_offset)


def _build(
    path: Path,
    version: int,
    size: int,
    values: dict[str, Scalar],
    arrays: dict[str, int],
    tensors: list[TensorInfo],
    alignment: int,
    data_offset: int,
) -> GGUFMetadata:
    arch = _str_or_none(values.get("general.architecture"))
    if not arch:
        raise _Corrupt("general.architecture is missing")
    file_type = _int_or_none(values.get("general.file_type"))
    return GGUFMetadata(
        path=path,
        version=version,
        size=size,
        architecture=arch,
        name=_str_or_none(values.get("general.name")),
        context_length=_int_or_none(values.get(f"{arch}.context_length")),
        chat_template=_str_or_none(values.get("tokenizer.chat_template")),
        bos_token_id=_int_or_none(values.get("tokenizer.ggml.bos_token_id")),
        eos_token_id=_int_or_none(values.get("tokenizer.ggml.eos_token_id")),
        file_type=file_type,
        quantization=quantization_name(file_type),
        parameter_count=sum(t.n_elements for t in tensors),
        size_label=_str_or_none(values.get("general.size_label")),
        tensor_count=len(tensors),
        vocab_size=arrays.get("tokenizer.ggml.tokens"),
        alignment=alignment,
        data_offset=data_offset,
        values=values,
        array_lengths=arrays,
        tensors=tuple(tensors),
    )


def read_metadata(path: str | os.PathLike[str]) -> GGUFMetadata:
    """Read and validate the header of a GGUF file.

    Raises :class:`ModelLoadError` naming the file and the reason when it is
    missing, empty, not a GGUF file, truncated or has a corrupt header.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise ModelLoadError(
                    str(p), f"the file is {size} bytes, too small to be a GGUF model"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, p, size)
    except _Corrupt as exc:
        raise ModelLoadError(str(p), str(exc)) from None
    except IsADirectoryError:
        raise ModelLoadError(str(p), "it is a directory, not a GGUF file") from None
    except FileNotFoundError:
        raise ModelLoadError(str(p), "no such file") from None
    except OSError as exc:
        raise ModelLoadError(str(p), exc.strerror or str(exc)) from None
