"""``LocalDocs``: named collections of folders, their index, and search over them.

Example::

    from llm4all.localdocs import LocalDocs
    docs = LocalDocs()                                   # $LLM4ALL_HOME/localdocs.db
    docs.add("notes", ["~/Notes"])
    docs.index("notes")                                  # incremental; resumable
    for hit in docs.search(["notes"], "when is the dentist?"):
        print(hit.path, hit.location, hit.text[:80])

One ``LocalDocs`` may be shared by threads (the server's workers): a lock
serialises its use of its SQLite connection, and each embedding model is
loaded once and shared. Several processes may use one database at once; a
SQLite failure surfaces as a one-line :class:`~llm4all.errors.StoreError`
(:class:`~llm4all.errors.StorageBusy` when another writer held the lock too
long, :class:`~llm4all.errors.StorageFull` on a full disk), never as a raw
``sqlite3`` error.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm4all.errors import CollectionNotFound as CollectionNotFound  # re-exported
from llm4all.errors import StorageBusy
from llm4all.localdocs import db
from llm4all.localdocs.chunking import MAX_TOKENS, OVERLAP
from llm4all.localdocs.indexer import (
    ChunkEmbedder,
    IndexReport,
    Progress,
    _NoProgress,
    embed_pending,
    read_files,
)
from llm4all.localdocs.search import VectorIndex, keyword_scored, score_fusion
from llm4all.sqlite import storage_error

log = logging.getLogger(__name__)

#: Candidates each retriever contributes before fusion.
CANDIDATES = 40


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its text and exactly where it came from."""

    chunk_id: int
    collection: str
    path: str
    heading: str
    page: int | None
    line_start: int | None
    line_end: int | None
    text: str
    score: float

    @property
    def location(self) -> str:
        """``"page 3"``, ``"lines 10–24"``, ``"line 7"`` or ``""``."""
        if self.page is not None:
            return f"page {self.page}"
        if self.line_start is None:
            return ""
        if self.line_end in (None, self.line_start):
            return f"line {self.line_start}"
        return f"lines {self.line_start}–{self.line_end}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"location": self.location}


@dataclass(frozen=True)
class CollectionInfo:
    """A collection and the state of its index."""

    name: str
    folders: list[str]
    embedding_model: str
    files: int  # documents: indexed, waiting for vectors, or failed (not the skipped ones)
    indexed: int
    chunks: int
    embedded: int
    chars: int
    indexed_at: str | None  # when an indexing run last changed the index (None: never indexed)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Files that are not text (binary, too large), with why; they are not in ``files``.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Indexed files with something to know (their encoding was guessed, bytes replaced).
    notes: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def pairs(items: list[tuple[str, str]], key: str) -> list[dict[str, str]]:
            return [{"path": p, key: r} for p, r in items]

        return asdict(self) | {
            "failed": pairs(self.failed, "reason"),
            "skipped": pairs(self.skipped, "reason"),
            "notes": pairs(self.notes, "note"),
        }


class LocalDocs:
    """The LocalDocs database of one llm4all home (or of ``path``)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        embedder_factory: Callable[[str], ChunkEmbedder] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else db.default_path()
        self._conn = db.connect(self.path)
        self._lock = threading.RLock()
        self._vectors = VectorIndex()
        self._factory = embedder_factory or _load_embedder
        self._owns_embedders = embedder_factory is None  # a caller's embedders are the caller's
        self._embedders: dict[str, ChunkEmbedder] = {}

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite errors become one-line :class:`StoreError`."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise storage_error(self.path, exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._owns_embedders:
                for e in self._embedders.values():
                    getattr(e, "close", lambda: None)()
            self._embedders.clear()
            self._conn.close()

    def __enter__(self) -> LocalDocs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embedder(self, model: str) -> ChunkEmbedder:
        """The embedding model ``model``, loaded once per ``LocalDocs``."""
        with self._lock:
            if model not in self._embedders:
                self._embedders[model] = self._factory(model)
            return self._embedders[model]

    # -- collections ------------------------------------------------------------------------
    def add(
        self,
        name: str,
        folders: Sequence[str | os.PathLike[str]],
        embedding_model: str | None = None,
    ) -> CollectionInfo:
        """Create collection ``name`` (or add folders to it). Folders must exist."""
        from llm4all.embeddings import DEFAULT_EMBEDDING_MODEL

        if not name.strip() or "/" in name:
            raise ValueError(f"invalid collection name {name!r}")
        real = []
        for folder in folders:
            path = Path(folder).expanduser()
            if not path.exists():
                raise FileNotFoundError(2, "no such file or folder", str(path))
            real.append(os.path.realpath(path))
        with self._db(), db.write_transaction(self._conn):
            row = self._conn.execute(
                "SELECT id FROM collections WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cur = self._conn.execute(
                    "INSERT INTO collections (name, embedding_model, created_at) VALUES (?, ?, ?)",
                    (name, embedding_model or DEFAULT_EMBEDDING_MODEL, _now()),
                )
                cid = cur.lastrowid
            else:
                cid = row["id"]
            self._conn.executemany(
                "INSERT OR IGNORE INTO folders (collection_id, path) VALUES (?, ?)",
                [(cid, p) for p in real],
            )
        return self.info(name)

    def remove(self, name: str) -> None:
        """Delete a collection and everything indexed for it (the files themselves stay)."""
        with self._db():
            cid = self._id(name)
            with db.write_transaction(self._conn):
                self._conn.execute("DELETE FROM collections WHERE id = ?", (cid,))
            self._vectors.forget(cid)

    def names(self) -> list[str]:
        with self._db():
            return [r[0] for r in self._conn.execute("SELECT name FROM collections ORDER BY name")]

    # ``list()`` (every collection) is the last method: defined earlier, its name
    # would shadow the builtin in the annotations of the methods after it.

    def info(self, name: str) -> CollectionInfo:
        with self._db() as conn:
            cid = self._id(name)
            c = conn.execute("SELECT * FROM collections WHERE id = ?", (cid,)).fetchone()
            folders = [
                r[0]
                for r in conn.execute(
                    "SELECT path FROM folders WHERE collection_id = ? ORDER BY path", (cid,)
                )
            ]
            stats = conn.execute(
                """SELECT COUNT(*), COALESCE(SUM(state = 'indexed'), 0), COALESCE(SUM(n_chunks), 0),
                          COALESCE(SUM(n_chars), 0) FROM files
                   WHERE collection_id = ? AND state != 'skipped'""",
                (cid,),
            ).fetchone()
            embedded = conn.execute(
                """SELECT COUNT(*) FROM vectors v JOIN chunks c ON c.id = v.chunk_id
                   JOIN files f ON f.id = c.file_id WHERE f.collection_id = ?""",
                (cid,),
            ).fetchone()[0]

            def listed(column: str, where: str) -> builtins.list[tuple[str, str]]:
                return [
                    (r[0], r[1])
                    for r in conn.execute(
                        f"SELECT path, {column} FROM files WHERE collection_id = ? AND {where}"
                        " ORDER BY path",
                        (cid,),
                    )
                ]

            failed = listed("error", "state = 'failed'")
            skipped = listed("error", "state = 'skipped'")
            notes = listed("note", "note IS NOT NULL")
        return CollectionInfo(
            name, folders, c["embedding_model"], stats[0], stats[1], stats[2], embedded, stats[3],
            c["indexed_at"], failed, skipped, notes,
        )  # fmt: skip

    def _id(self, name: str) -> int:
        row = self._conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise CollectionNotFound(name)
        return int(row[0])

    # -- indexing -----------------------------------------------------------------------------
    def index(
        self,
        name: str,
        progress: Progress | None = None,
        *,
        max_tokens: int = MAX_TOKENS,
        overlap: int = OVERLAP,
    ) -> IndexReport:
        """Bring a collection's index up to date with its folders (see :mod:`.indexer`)."""
        progress = progress or _NoProgress()
        with self._db():
            cid = self._id(name)
            row = self._conn.execute(
                "SELECT embedding_model FROM collections WHERE id = ?", (cid,)
            ).fetchone()
            folders = [
                r[0]
                for r in self._conn.execute(
                    "SELECT path FROM folders WHERE collection_id = ?", (cid,)
                )
            ]
        embedder = self.embedder(row[0])
        report = IndexReport(name)
        with self._db():
            read_files(self._conn, cid, folders, embedder, report, progress, (max_tokens, overlap))
            embed_pending(self._conn, cid, embedder, report, progress)
            changed = report.files_changed or report.files_removed or report.chunks_embedded
            # A run that found nothing new writes nothing (``watch`` runs every few seconds).
            with db.write_transaction(self._conn):
                self._conn.execute(
                    "UPDATE collections SET indexed_at = ? WHERE id = ? AND (? OR indexed_at IS NULL)",
                    (_now(), cid, bool(changed)),
                )
        return report

    def watch(
        self,
        name: str,
        interval: float = 2.0,
        *,
        stop: threading.Event | None = None,
        on_run: Callable[[IndexReport], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Re-index ``name`` every ``interval`` seconds (a run with no change reads no file) until ``stop``."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.index(name, progress)
            except StorageBusy as exc:  # another indexer's long write: the next scan catches up
                log.warning("%s", exc)
            else:
                if on_run is not None:
                    on_run(report)
            stop.wait(interval)

    # -- search ----------------------------------------------------------------------------------
    def search(self, collections: Sequence[str], query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best chunks for ``query`` in ``collections``: BM25 and vectors, fused by score.

        See :func:`~llm4all.localdocs.search.score_fusion`; it replaced reciprocal
        rank fusion after a measurement on four labelled sets (docs/localdocs.md).
        """
        if not query.strip():
            return []
        with self._db():
            ids = {n: self._id(n) for n in dict.fromkeys(collections)}
            models = {
                n: self._conn.execute(
                    "SELECT embedding_model FROM collections WHERE id = ?", (cid,)
                ).fetchone()[0]
                for n, cid in ids.items()
            }
        semantic: list[list[tuple[int, float]]] = []
        for model in dict.fromkeys(models.values()):
            same = [ids[n] for n, m in models.items() if m == model]
            vector = self.embedder(model).embed_query(query)
            with self._db():
                semantic.append(self._vectors.scored(self._conn, same, vector, CANDIDATES))
        with self._db():
            keyword = keyword_scored(self._conn, list(ids.values()), query, CANDIDATES)
            fused = score_fusion(keyword, semantic)[:k]
            return self._hits(fused)

    def _hits(self, fused: list[tuple[int, float]]) -> list[Hit]:
        if not fused:
            return []
        marks = ",".join("?" * len(fused))
        rows = {
            r["id"]: r
            for r in self._conn.execute(
                f"""SELECT c.*, f.path, k.name AS collection FROM chunks c
                    JOIN files f ON f.id = c.file_id JOIN collections k ON k.id = f.collection_id
                    WHERE c.id IN ({marks})""",
                [cid for cid, _ in fused],
            )
        }
        return [
            Hit(cid, r["collection"], r["path"], r["heading"], r["page"], r["line_start"],
                r["line_end"], r["text"], score)
            for cid, score in fused
            if (r := rows.get(cid)) is not None
        ]  # fmt: skip

    def list(self) -> builtins.list[CollectionInfo]:
        """Every collection with the state of its index, by name."""
        return [self.info(n) for n in self.names()]


def _load_embedder(model: str) -> ChunkEmbedder:
    from llm4all.embeddings import Embedder

    return Embedder(model)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
