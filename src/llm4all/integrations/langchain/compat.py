"""``GPT4All`` and ``GPT4AllEmbeddings`` under the names and fields old LangChain code uses.

``langchain_community.llms.GPT4All`` and ``...embeddings.GPT4AllEmbeddings``
wrapped the original project. A script written for them runs after one
import change::

    from llm4all.integrations.langchain.compat import GPT4All, GPT4AllEmbeddings

with the same fields and defaults (``model`` a GGUF path or catalog name,
``max_tokens=200``, ``temp=0.7``, ``top_p=0.1``, ``top_k=40``,
``repeat_penalty=1.18``, ``allow_download=False``, ``device="cpu"``,
``streaming``, ``n_threads``), the prompt continued as written, as before.
What changed, as its users asked: stop strings end the answer while it is
generated (not cut off after), ``stream()`` streams, and the embeddings'
``model_name`` is honoured. Old fields that meant nothing to llama.cpp's
current API (``backend``, ``n_parts``, ``f16_kv``, ``logits_all``,
``vocab_only``, ``use_mlock``, ``embedding``, ``n_batch``, ``echo``) are
accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from llm4all.integrations.langchain.embeddings import Llm4allEmbeddings
from llm4all.integrations.langchain.llms import Llm4allLLM


class GPT4All(Llm4allLLM):
    """``langchain_community.llms.GPT4All``'s fields on :class:`Llm4allLLM`."""

    model: str | None = None
    raw: bool = True
    max_tokens: int | None = 200
    temp: float | None = 0.7
    top_p: float | None = 0.1
    top_k: int | None = 40
    repeat_penalty: float | None = 1.18
    repeat_last_n: int | None = 64
    allow_download: bool = False
    device: str | None = "cpu"
    """``"cpu"``, or ``"gpu"`` (or a GPU's name): every layer offloaded (needs a GPU build)."""
    n_predict: int | None = None
    """The old name of ``max_tokens``."""
    # Accepted for old code; llama.cpp's current API has no use for them.
    backend: str | None = None
    n_parts: int | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mlock: bool | None = None
    embedding: bool | None = None
    n_batch: int | None = None
    echo: bool | None = None

    @model_validator(mode="after")
    def _old_names(self) -> GPT4All:
        if self.temperature is None and self.temp is not None:
            self.temperature = self.temp
        if self.n_predict is not None:
            self.max_tokens = self.n_predict
        if self.n_gpu_layers is None and self.device not in (None, "cpu"):
            self.n_gpu_layers = -1
        self._check_knobs()  # again: the old names ran after the check of the new ones
        return self


class GPT4AllEmbeddings(Llm4allEmbeddings):
    """``langchain_community.embeddings.GPT4AllEmbeddings``'s fields on :class:`Llm4allEmbeddings`."""

    model_name: str | None = None
    """The embedding model (the old class ignored it; here it is the model loaded)."""
    device: str | None = "cpu"
    gpt4all_kwargs: dict[str, Any] | None = Field(default_factory=dict)

    @model_validator(mode="after")
    def _old_names(self) -> GPT4AllEmbeddings:
        if self.model is None and self.model_name is not None:
            self.model = self.model_name
        if self.allow_download and (self.gpt4all_kwargs or {}).get("allow_download") is False:
            self.allow_download = False
        return self
