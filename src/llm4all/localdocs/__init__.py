"""LocalDocs: private retrieval over the user's own files.

Collections of folders are read by per-type loaders (:mod:`.loaders`), cut
into token-sized, structure-aware chunks (:mod:`.chunking`), embedded and
stored with an FTS5 keyword index in one SQLite database (:mod:`.db`,
:mod:`.indexer`), searched by BM25 and vectors fused by reciprocal rank
(:mod:`.search`), and turned into numbered excerpts and references for a
prompt (:mod:`.context`). :class:`LocalDocs` (:mod:`.collections`) ties them
together; ``docs/localdocs.md`` is the user's guide.
"""

from llm4all.localdocs.chunking import Chunk, chunk_blocks
from llm4all.localdocs.collections import CollectionInfo, CollectionNotFound, Hit, LocalDocs
from llm4all.localdocs.context import (
    build_context,
    documents_turn,
    format_excerpts,
    references,
    retrieve,
    shared_localdocs,
    source_lines,
    with_excerpts,
)
from llm4all.localdocs.indexer import IndexReport
from llm4all.localdocs.loaders import Block, LoadFailed, load
from llm4all.localdocs.search import fts_query, rrf

__all__ = [
    "Block",
    "Chunk",
    "CollectionInfo",
    "CollectionNotFound",
    "Hit",
    "IndexReport",
    "LoadFailed",
    "LocalDocs",
    "build_context",
    "chunk_blocks",
    "documents_turn",
    "format_excerpts",
    "fts_query",
    "load",
    "references",
    "retrieve",
    "rrf",
    "shared_localdocs",
    "source_lines",
    "with_excerpts",
]
