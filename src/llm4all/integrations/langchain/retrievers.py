"""``LocalDocsRetriever``: LocalDocs collections as a LangChain retriever.

Each hit of LocalDocs' hybrid search (keywords and vectors, fused) becomes a
``Document`` whose metadata says where it came from: ``source`` (the file),
``collection``, ``heading``, ``page`` or ``line_start``/``line_end``, a
readable ``location`` and the fused ``score``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field, PrivateAttr

from llm4all.localdocs import LocalDocs


class LocalDocsRetriever(BaseRetriever):
    """Search LocalDocs ``collections`` (indexed with ``llm4all docs``) for ``k`` chunks."""

    collections: list[str]
    k: int = 5
    path: str | None = None
    """The LocalDocs database (None: the llm4all home's, the one ``llm4all docs`` uses)."""
    localdocs: Any = Field(default=None, exclude=True)
    """An open :class:`~llm4all.localdocs.LocalDocs` to search instead of opening ``path``."""
    _docs: LocalDocs | None = PrivateAttr(default=None)

    def _localdocs(self) -> LocalDocs:
        if self.localdocs is not None:
            given: LocalDocs = self.localdocs
            return given
        if self._docs is None:
            self._docs = LocalDocs(self.path)
        return self._docs

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = kwargs.pop("k", self.k)
        if kwargs:
            raise TypeError(f"LocalDocsRetriever got an unknown argument {next(iter(kwargs))!r}")
        return [
            Document(
                page_content=hit.text,
                id=str(hit.chunk_id),
                metadata={
                    "source": hit.path,
                    "collection": hit.collection,
                    "heading": hit.heading,
                    "page": hit.page,
                    "line_start": hit.line_start,
                    "line_end": hit.line_end,
                    "location": hit.location,
                    "score": hit.score,
                },
            )
            for hit in self._localdocs().search(self.collections, query, k=k)
        ]
