"""The transformers backend: any causal LM that Hugging Face transformers loads (extra ``gpu``).

Registered like every backend, through the ``llm4all.backends`` entry-point
group (``transformers = "llm4all.engine.transformers:backend"``). It claims
Hugging Face model folders (``config.json`` and weights); a GGUF goes to it
only when asked by name (``--backend transformers``, ``backend="transformers"``),
and is then dequantized once by :mod:`llm4all.hf`. This module stays light:
torch and transformers are imported when a model is first loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm4all.engine.refs import ModelRef
from llm4all.engine.registry import Backend
from llm4all.engine.transformers.options import TransformersOptions, parse_gen_config

if TYPE_CHECKING:
    from llm4all.engine.transformers.engine import TransformersEngine


def load(ref: ModelRef, options: Any = None) -> TransformersEngine:
    """A :class:`TransformersEngine` for ``ref`` (options: ``TransformersOptions`` or ``LoadParams``)."""
    from llm4all.engine.transformers.engine import TransformersEngine

    return TransformersEngine.load(ref, TransformersOptions.of(options))


def _claims(ref: ModelRef) -> bool:
    return ref.kind == "folder" and ref.path is not None and (ref.path / "config.json").is_file()


#: Hugging Face folders (and GGUFs when named) through transformers and torch.
backend = Backend(
    "transformers",
    load,
    _claims,
    TransformersOptions,
    description="Hugging Face models through transformers and torch (CUDA, MPS or CPU)",
    priority=500,  # before llama.cpp's fallback; it claims folders only
)

__all__ = ["TransformersOptions", "backend", "load", "parse_gen_config"]
