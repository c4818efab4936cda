"""Static checks of a GGUF model against itself and llama.cpp's limits.

llama.cpp checks a file's layout well (``gguf.cpp`` refuses bad offsets, types
and shapes with an error), but it trusts the hyper-parameters: a
``block_count`` over its ``LLAMA_MAX_LAYERS`` fails a ``GGML_ASSERT`` and a
head count of 0 divides by zero, and either ends the whole process. These
checks run on the header alone (no tensor data is read) and refuse such files
with a reason before any native code sees them. What they cannot see (NaN
weights, a crash deeper in llama.cpp) the child-process proof in
``engine/probe.py`` finds.

Example: ``check_model(read_metadata("m.gguf"))`` raises
``ModelLoadError("m.gguf", "llama.block_count is 1000; llama.cpp allows at most 512 layers")``.
"""

from __future__ import annotations

import math
import re

from llm4all.errors import ModelLoadError
from llm4all.models.gguf import GGUFMetadata

#: llama.cpp's compile-time limits (llama-hparams.h).
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
_MAX_WIDTH = 1 << 20  # n_embd, n_ff, heads: far above any real model, far below overflow
_BLOCK = re.compile(r"blk\.(\d+)\.")
_ATTENTION = (".attn_q.", ".attn_qkv.", ".attn_k.")


class _Bad(Exception):
    pass


def check_model(meta: GGUFMetadata) -> None:
    """Raise :class:`ModelLoadError` naming the first inconsistency llama.cpp would choke on."""
    try:
        _check_floats(meta)
        n_layer = _check_layers(meta)
        _check_heads(meta)
        _check_experts(meta)
        _check_blocks(meta, n_layer)
        _check_vocabulary(meta)
    except _Bad as exc:
        raise ModelLoadError(str(meta.path), str(exc)) from None


def _hparam(meta: GGUFMetadata, key: str) -> int | float | str | bool | None:
    return meta.values.get(f"{meta.architecture}.{key}")


def _int(meta: GGUFMetadata, key: str, *, lo: int, hi: int, required: bool = False) -> int | None:
    """An integer hyper-parameter in [lo, hi]; None when absent (or stored per layer)."""
    full = f"{meta.architecture}.{key}"
    value = meta.values.get(full)
    if value is None:
        if full in meta.array_lengths:
            return None
        if required:
            raise _Bad(f"{full} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{full} is {value!r}, not a whole number")
    if not lo <= value <= hi:
        raise _Bad(f"{full} is {value:,}; it must be between {lo:,} and {hi:,}")
    return value


def _check_floats(meta: GGUFMetadata) -> None:
    prefix = f"{meta.architecture}."
    for key, value in meta.values.items():
        if key.startswith(prefix) and isinstance(value, float) and not math.isfinite(value):
            raise _Bad(f"{key} is {value}")
        if key.endswith("epsilon") and isinstance(value, float) and value <= 0:
            raise _Bad(f"{key} is {value}; it must be positive")


def _check_layers(meta: GGUFMetadata) -> int:
    full = f"{meta.architecture}.block_count"
    value = meta.values.get(full)
    if isinstance(value, int) and value > LLAMA_MAX_LAYERS:
        raise _Bad(f"{full} is {value:,}; llama.cpp allows at most {LLAMA_MAX_LAYERS} layers")
    n_layer = _int(meta, "block_count", lo=1, hi=LLAMA_MAX_LAYERS, required=True)
    assert n_layer is not None
    _int(meta, "context_length", lo=1, hi=1 << 30)
    _int(meta, "embedding_length", lo=1, hi=_MAX_WIDTH)
    _int(meta, "feed_forward_length", lo=0, hi=_MAX_WIDTH)
    return n_layer


def _check_heads(meta: GGUFMetadata) -> None:
    n_head = _int(meta, "attention.head_count", lo=0, hi=_MAX_WIDTH)
    n_head_kv = _int(meta, "attention.head_count_kv", lo=0, hi=_MAX_WIDTH)
    arch = meta.architecture
    has_attention = any(s in t.name for t in meta.tensors for s in _ATTENTION)
    if n_head == 0 and has_attention:
        raise _Bad(f"{arch}.attention.head_count is 0 but the model has attention layers")
    if not n_head:
        return
    if n_head_kv is not None and n_head_kv > 0 and n_head % n_head_kv:
        raise _Bad(
            f"{arch}.attention.head_count ({n_head}) is not a multiple of "
            f"attention.head_count_kv ({n_head_kv})"
        )
    if n_head_kv == 0 and has_attention:
        raise _Bad(f"{arch}.attention.head_count_kv is 0 but the model has attention layers")
    n_embd = _int(meta, "embedding_length", lo=1, hi=_MAX_WIDTH)
    head_dim = _int(meta, "attention.key_length", lo=1, hi=_MAX_WIDTH)
    if head_dim is None and n_embd is not None:
        if n_embd % n_head:
            raise _Bad(
                f"{arch}.embedding_length ({n_embd}) is not a multiple of "
                f"attention.head_count ({n_head})"
            )
        head_dim = n_embd // n_head
    rope = _int(meta, "rope.dimension_count", lo=0, hi=_MAX_WIDTH)
    if rope is not None and head_dim is not None and rope > head_dim:
        raise _Bad(f"{arch}.rope.dimension_count ({rope}) exceeds the head size ({head_dim})")


def _check_experts(meta: GGUFMetadata) -> None:
    n_expert = _int(meta, "expert_count", lo=0, hi=LLAMA_MAX_EXPERTS)
    used = _int(meta, "expert_used_count", lo=0, hi=LLAMA_MAX_EXPERTS)
    if used is not None and used > (n_expert or 0):
        raise _Bad(
            f"{meta.architecture}.expert_used_count ({used}) exceeds expert_count ({n_expert or 0})"
        )


def _check_blocks(meta: GGUFMetadata, n_layer: int) -> None:
    """Every layer has tensors, and none lies beyond ``block_count``."""
    blocks = {int(m.group(1)) for t in meta.tensors if (m := _BLOCK.match(t.name))}
    if not blocks:
        return  # a file without per-layer tensors (a test file, a vocabulary-only GGUF)
    extra = max(blocks)
    if extra >= n_layer:
        raise _Bad(
            f"the file has tensors for layer {extra} but "
            f"{meta.architecture}.block_count says {n_layer} layers"
        )
    missing = next((i for i in range(n_layer) if i not in blocks), None)
    if missing is not None:
        raise _Bad(
            f"{meta.architecture}.block_count says {n_layer} layers but layer {missing} "
            "has no tensors"
        )


def _check_vocabulary(meta: GGUFMetadata) -> None:
    n_vocab = meta.vocab_size
    if n_vocab is None:
        return
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        n = meta.array_lengths.get(key)
        if n is not None and n != n_vocab:
            raise _Bad(f"{key} has {n:,} entries for {n_vocab:,} tokens")
    embd = next((t for t in meta.tensors if t.name == "token_embd.weight"), None)
    if embd is not None and len(embd.shape) == 2 and embd.shape[1] < n_vocab:
        raise _Bad(
            f"the vocabulary has {n_vocab:,} tokens but token_embd.weight has "
            f"{embd.shape[1]:,} rows"
        )
