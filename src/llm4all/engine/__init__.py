"""Engines: one interface, several backends, chosen by name.

Backends register a loader here (the built-in one uses the same hook a
third-party backend would); callers ask :func:`load_engine` for a path.
Importing this package sets OpenMP's waiting policy (``openmp.py``) before any
backend loads llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llm4all.engine import openmp
from llm4all.engine.base import Chunk, Completion, Engine, ModelInfo, Timings, Usage, collect
from llm4all.params import LoadParams

openmp.apply_default()  # libgomp reads it once, when llama_cpp loads it

Loader = Callable[[Path, LoadParams], Engine]
_BACKENDS: dict[str, Loader] = {}


def register_backend(name: str, loader: Loader) -> None:
    """Make a backend available to :func:`load_engine` under ``name``."""
    _BACKENDS[name] = loader


def backends() -> list[str]:
    return sorted(_BACKENDS)


def load_engine(path: Path, params: LoadParams | None = None, backend: str = "llamacpp") -> Engine:
    """Load ``path`` with the named backend."""
    try:
        loader = _BACKENDS[backend]
    except KeyError:
        from llm4all.errors import InvalidParameter

        raise InvalidParameter("backend", backend, f"one of {', '.join(backends())}") from None
    return loader(path, params or LoadParams())


def _load_llamacpp(path: Path, params: LoadParams) -> Engine:
    from llm4all.engine.llamacpp import LlamaCppEngine  # imports llama_cpp only when used

    return LlamaCppEngine(path, params)


register_backend("llamacpp", _load_llamacpp)

__all__ = [
    "Chunk",
    "Completion",
    "Engine",
    "ModelInfo",
    "Timings",
    "Usage",
    "backends",
    "collect",
    "load_engine",
    "register_backend",
]
