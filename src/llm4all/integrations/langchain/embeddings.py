"""``Llm4allEmbeddings``: LangChain embeddings on llm4all's :class:`~llm4all.Embedder`.

Documents and queries get the model's own task prefixes (nomic-embed-text's
``search_document: `` / ``search_query: ``), documents are embedded many per
``llama_decode``, and long texts are split and averaged, exactly as LocalDocs
embeds them. With ``base_url`` the vectors come from an llm4all server's
``/v1/embeddings``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, Field, PrivateAttr, SecretStr

from llm4all.embeddings import Embedder
from llm4all.integrations.langchain import _remote, _shared
from llm4all.integrations.langchain._base import CONFIG


class Llm4allEmbeddings(BaseModel, Embeddings):
    """Embeddings on llm4all (default model: all-MiniLM-L6-v2)."""

    model_config = CONFIG

    model: str | None = None
    """A catalog name, a model-store file name or a GGUF path (None: the default
    embedding model); with ``base_url``, the server's model id."""
    dimensionality: int | None = None
    """Shorter vectors, for Matryoshka models such as nomic-embed-text-v1.5."""
    n_threads: int | None = None
    allow_download: bool = True
    client: Any = Field(default=None, exclude=True)
    """An already loaded :class:`llm4all.Embedder` to use instead of loading ``model``."""
    base_url: str | None = Field(default_factory=from_env("LLM4ALL_BASE_URL", default=None))
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("LLM4ALL_API_KEY", default=None)
    )
    timeout: float | None = None
    max_retries: int = 2
    _loaded: Embedder | None = PrivateAttr(default=None)

    def _embedder(self) -> Embedder:
        if self.client is not None:
            embedder: Embedder = self.client
            return embedder
        if self._loaded is None:  # held here: the shared load lives while this object does
            self._loaded = _shared.embedder(self.model, self.allow_download, self.n_threads)
        return self._loaded

    def _embed(self, texts: list[str], task: str) -> list[list[float]]:
        if self.base_url:
            extra = {} if self.dimensionality is None else {"dimensions": self.dimensionality}
            create: Any = _remote.client(self).embeddings.create
            answer = create(model=self.model, input=texts, **extra)
            return [d.embedding for d in answer.data]
        return self._embedder().embed(
            texts,
            task="query" if task == "query" else "document",
            dimensionality=self.dimensionality,
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages to be searched (the model's document prefix, if any)."""
        return self._embed(texts, "document") if texts else []

    def embed_query(self, text: str) -> list[float]:
        """The vector of one search query (the model's query prefix, if any)."""
        return self._embed([text], "query")[0]
