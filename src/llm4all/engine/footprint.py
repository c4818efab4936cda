"""What a llama.cpp load will allocate, estimated from the GGUF header before loading.

Three parts, each checked against llama.cpp's own log on Qwen2.5-Coder-0.5B:

- the weights: the file, mapped whole (463 MiB of 470);
- the KV cache of a decoder: ``n_ctx × layers × (K + V width) × 2`` bytes
  (f16): 192 MiB at 16,384 cells;
- the compute buffer, dominated by the logits of a whole batch,
  ``n_batch × vocabulary × 4`` bytes, which llama.cpp reserves even when the
  model is loaded for embeddings: 300 MiB at ``n_batch`` 512, 4.9 GiB at 8,192.

Encoders (BERT and friends) have no KV cache and no logits.

Example: ``estimate(read_metadata(p), LoadParams(n_ctx=512, embedding=True)).total``.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from llm4all.errors import InsufficientMemory
from llm4all.models.gguf import GGUFMetadata
from llm4all.models.kinds import EMBEDDING_ARCHITECTURES
from llm4all.params import LoadParams

#: Small buffers, allocator slack, the runtime: measured 30-60 MiB above the three parts.
MARGIN_BYTES = 64 * 2**20
#: The logits of one embedding batch may take this much; larger batches are cut to fit.
EMBED_LOGITS_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv_cache: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + MARGIN_BYTES


def _value(meta: GGUFMetadata, key: str, default: int) -> int:
    value = meta.values.get(f"{meta.architecture}.{key}")
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def is_decoder(meta: GGUFMetadata) -> bool:
    """Whether llama.cpp gives this model a KV cache and logits (not an encoder)."""
    return meta.architecture not in EMBEDDING_ARCHITECTURES


def estimate(meta: GGUFMetadata, params: LoadParams) -> Footprint:
    """The bytes loading ``meta``'s file with ``params`` will take (an upper bound)."""
    n_embd = _value(meta, "embedding_length", 4096)
    if not is_decoder(meta):
        return Footprint(meta.size, 0, params.n_batch * n_embd * 4 * 8)
    n_ctx = params.n_ctx or meta.context_length or 4096
    n_head = _value(meta, "attention.head_count", 1)
    n_head_kv = _value(meta, "attention.head_count_kv", n_head)
    k_width = n_head_kv * _value(meta, "attention.key_length", n_embd // n_head or 1)
    v_width = n_head_kv * _value(meta, "attention.value_length", n_embd // n_head or 1)
    n_layer = _value(meta, "block_count", 1)
    kv = n_ctx * n_layer * (k_width + v_width) * 2
    n_vocab = meta.vocab_size or 32_000
    return Footprint(meta.size, kv, params.n_batch * n_vocab * 4)


def embedding_batch(meta: GGUFMetadata, wanted: int) -> int:
    """Tokens per embedding decode: ``wanted``, cut so a decoder's logits stay in budget.

    Example: Qwen2.5 (151,936 tokens) asked for 8,192 → 441 (about 256 MiB of logits).
    """
    if not is_decoder(meta):
        return wanted
    n_vocab = meta.vocab_size or 32_000
    return max(64, min(wanted, EMBED_LOGITS_BUDGET // (n_vocab * 4)))


def ensure_fits(needed: int, *, reclaimable: int = 0, available: int | None = None) -> None:
    """Raise :class:`InsufficientMemory` unless ``needed`` bytes fit in free RAM plus ``reclaimable``."""
    free = psutil.virtual_memory().available if available is None else available
    if needed > free + reclaimable:
        raise InsufficientMemory(needed, int(free + reclaimable))
