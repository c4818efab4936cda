"""Loaded models shared by the LangChain objects of one process.

LangChain code makes objects freely (a chain per request, a test per
object), so constructing one must be cheap: the model is loaded on first use,
and objects that name the same model with the same load options share one
load while any of them is alive. LangChain's ``batch`` runs requests on
threads; the engine answers them one at a time (it holds its lock for a
whole generation, or a whole embedding run).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from llm4all.api import Model
from llm4all.embeddings import Embedder

_guard = threading.Lock()
_models: weakref.WeakValueDictionary[tuple[Any, ...], Model] = weakref.WeakValueDictionary()
_embedders: weakref.WeakValueDictionary[tuple[Any, ...], Embedder] = weakref.WeakValueDictionary()


def chat_model(name: str | None, allow_download: bool, load: dict[str, Any]) -> Model:
    """The loaded model ``name`` (None: the default model) with load options ``load``."""
    key = (name, allow_download, tuple(sorted(load.items())))
    with _guard:
        model = _models.get(key)
        if model is None:
            model = Model(name, allow_download=allow_download, **load)
            _models[key] = model
        return model


def embedder(name: str | None, allow_download: bool, n_threads: int | None) -> Embedder:
    """The loaded embedding model ``name`` (None: the default embedding model)."""
    key = (name, allow_download, n_threads)
    with _guard:
        loaded = _embedders.get(key)
        if loaded is None:
            loaded = Embedder(name, allow_download=allow_download, n_threads=n_threads)
            _embedders[key] = loaded
        return loaded
