"""Engines: one contract, several backends, found through one registry.

Backends register through the ``llm4all.backends`` entry-point group (the
built-in llama.cpp backend too; see ``registry.py``); callers ask
:func:`load_engine` for a :class:`ModelRef` (or a path) and hold the
:class:`Engine` it returns, asking its :class:`Capabilities` what it can do and
its :meth:`Engine.runner` how to run concurrent requests.
Importing this package sets OpenMP's waiting policy (``openmp.py``) before any
backend loads llama.cpp.
"""

from __future__ import annotations

from llm4all.engine import openmp
from llm4all.engine.base import (
    Capabilities,
    ChatInput,
    Chunk,
    Completion,
    Engine,
    ModelInfo,
    PromptInput,
    ScoredChunk,
    Timings,
    TokenLogprob,
    Usage,
    collect,
)
from llm4all.engine.refs import ModelRef
from llm4all.engine.registry import (
    Backend,
    backend_for,
    backend_options,
    backends,
    get_backend,
    load_engine,
    register_backend,
    resolve,
)

openmp.apply_default()  # libgomp reads it once, when llama_cpp loads it

__all__ = [
    "Backend",
    "Capabilities",
    "ChatInput",
    "Chunk",
    "Completion",
    "Engine",
    "ModelInfo",
    "ModelRef",
    "PromptInput",
    "ScoredChunk",
    "Timings",
    "TokenLogprob",
    "Usage",
    "backend_for",
    "backend_options",
    "backends",
    "collect",
    "get_backend",
    "load_engine",
    "register_backend",
    "resolve",
]
