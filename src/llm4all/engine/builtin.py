"""The built-in backends, as the ``llm4all.backends`` entry points name them.

This module imports no backend library: each loader imports its backend when
it is first used, so listing backends stays cheap.
"""

from __future__ import annotations

from llm4all.engine.base import Engine
from llm4all.engine.refs import ModelRef
from llm4all.engine.registry import Backend
from llm4all.errors import InvalidParameter
from llm4all.params import LoadParams


def _load_llamacpp(ref: ModelRef, options: LoadParams) -> Engine:
    from llm4all.engine.llamacpp import LlamaCppEngine  # imports llama_cpp only when used

    if ref.path is None:
        raise InvalidParameter("model", ref.name, "a GGUF file")
    return LlamaCppEngine(ref.path, options)


def _claims_llamacpp(ref: ModelRef) -> bool:
    return ref.kind in ("catalog", "file")  # a GGUF (the file's header is checked on load)


#: llama.cpp through llama-cpp-python: GGUF files, in this process.
llamacpp = Backend(
    "llamacpp",
    _load_llamacpp,
    _claims_llamacpp,
    LoadParams,
    description="GGUF models in this process (llama.cpp)",
    priority=1000,  # the fallback for any local file: plugins that claim one go first
)
