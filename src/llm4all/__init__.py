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

from llm4all.api import ChatSession, Model, Response
from llm4all.chat.template import Message
from llm4all.embeddings import Embedder
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

# The library never prints: without a configured handler its records go nowhere.
logging.getLogger("llm4all").addHandler(logging.NullHandler())

__version__ = "0.1.0"

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
