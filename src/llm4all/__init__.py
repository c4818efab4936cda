"""llm4all: a private assistant-style language model on your own computer.

The public API in one place::

    import llm4all
    model = llm4all.Model()               # default model, downloaded on first use
    print(model.generate("Why is the sky blue?", max_tokens=100))
    chat = model.chat(system_prompt="You are terse.")
    print(chat.send("Hi, I am Ada.").text())

The original GPT4All API lives in :mod:`llm4all.gpt4all`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llm4all.api import ChatSession, Model, Response
from llm4all.chat.template import Message
from llm4all.engine import Completion, Timings, Usage
from llm4all.errors import (
    ChecksumMismatch,
    ContextOverflow,
    DownloadError,
    InsufficientMemory,
    InvalidParameter,
    Llm4allError,
    ModelLoadError,
    ModelNotFound,
    TemplateError,
)
from llm4all.params import GenerationParams, LoadParams

if TYPE_CHECKING:
    from llm4all.embeddings import Embedder

# The library never prints: without a configured handler its records go nowhere.
logging.getLogger("llm4all").addHandler(logging.NullHandler())

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Embedder needs numpy; importing it on first use keeps ``llm4all run`` quick to start.
    if name == "Embedder":
        from llm4all.embeddings import Embedder

        return Embedder
    raise AttributeError(f"module 'llm4all' has no attribute {name!r}")


__all__ = [
    "ChatSession",
    "ChecksumMismatch",
    "Completion",
    "ContextOverflow",
    "DownloadError",
    "Embedder",
    "GenerationParams",
    "InsufficientMemory",
    "InvalidParameter",
    "Llm4allError",
    "LoadParams",
    "Message",
    "Model",
    "ModelLoadError",
    "ModelNotFound",
    "Response",
    "TemplateError",
    "Timings",
    "Usage",
    "__version__",
]
