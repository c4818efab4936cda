"""Row vectors kept on disk, so that a second map of the same data embeds only new rows.

Embedding is what a map spends most of its time on (MiniLM on two cores embeds
a few hundred rows a second), and a row's vector never changes for one model
and one text. Vectors live in one SQLite file keyed by the model, the row's
stable id and the sha256 of the text that was embedded: a row whose text
changed (another reader, another way of joining prompt and answer) is embedded
again, a row seen before is read back. Vectors are written after every batch,
so an interrupted run keeps what it did.

Example::

    with EmbeddingCache(path, model_key(embedder)) as cache:
        vectors = cache.vectors(ids, texts, embedder.embed_array)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llm4all import paths
from llm4all.sqlite import connect, storage_error, write_transaction

Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[Sequence[str]], Vectors]

BATCH = 256
"""Rows embedded (and then written) at a time: the most a crash can lose."""

_LOOKUP = 500  # ids per SELECT: SQLite allows 999 parameters in old builds


def default_path() -> Path:
    """Where the vectors live unless told otherwise: ``<home>/datamap/embeddings.db``."""
    return paths.home() / "datamap" / "embeddings.db"


def text_hash(text: str) -> str:
    """The key of an embedded text. Example: ``len(text_hash("hi")) == 32``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def model_key(embedder: Any) -> str:
    """Which model made a vector: its name, file size and dimensions.

    A model pulled again is the same file; a different quantization or
    conversion has a different size, so its vectors are kept apart.
    """
    path = Path(embedder.path)
    size = path.stat().st_size if path.is_file() else 0
    return f"{embedder.name}|{size}|{embedder.dim}"


def _create(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE vectors (model TEXT NOT NULL, id TEXT NOT NULL, text_hash TEXT NOT NULL,"
        " vector BLOB NOT NULL, PRIMARY KEY (model, id, text_hash)) WITHOUT ROWID"
    )


MIGRATIONS = (_create,)


class EmbeddingCache:
    """Vectors by (model, row id, text hash) in one SQLite file."""

    def __init__(self, path: Path, model: str) -> None:
        self.path = path
        self.model = model
        self.conn = connect(path, MIGRATIONS)
        self.hits = 0
        self.misses = 0

    def lookup(self, ids: Sequence[str], hashes: Sequence[str]) -> dict[tuple[str, str], bytes]:
        """The stored vectors (raw float32 bytes) of the given rows, by (id, text hash)."""
        found: dict[tuple[str, str], bytes] = {}
        wanted = set(zip(ids, hashes, strict=True))
        try:
            for start in range(0, len(ids), _LOOKUP):
                part = list(dict.fromkeys(ids[start : start + _LOOKUP]))
                marks = ",".join("?" * len(part))
                rows = self.conn.execute(
                    f"SELECT id, text_hash, vector FROM vectors WHERE model = ? AND id IN ({marks})",
                    [self.model, *part],
                )
                found.update(((i, h), v) for i, h, v in rows if (i, h) in wanted)
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc
        return found

    def store(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Keep vectors given as (id, text hash, float32 bytes)."""
        try:
            with write_transaction(self.conn) as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                    [(self.model, i, h, v) for i, h, v in rows],
                )
        except sqlite3.Error as exc:
            raise storage_error(self.path, exc) from exc

    def vectors(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        embed: EmbedFn,
        progress: Callable[[int], None] | None = None,
    ) -> Vectors:
        """One vector per row: read back where stored, embedded (in batches) and stored where not.

        ``progress`` is called with the number of rows done after each batch
        (stored rows count at once).
        """
        hashes = [text_hash(t) for t in texts]
        found = self.lookup(ids, hashes)
        missing = [i for i, key in enumerate(zip(ids, hashes, strict=True)) if key not in found]
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if progress is not None:
            progress(len(ids) - len(missing))
        for start in range(0, len(missing), BATCH):
            part = missing[start : start + BATCH]
            made = np.asarray(embed([texts[i] for i in part]), dtype=np.float32)
            rows = [(ids[i], hashes[i], made[k].tobytes()) for k, i in enumerate(part)]
            self.store(rows)
            found.update(((i, h), v) for i, h, v in rows)
            if progress is not None:
                progress(len(part))
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(
            [np.frombuffer(found[key], dtype=np.float32) for key in zip(ids, hashes, strict=True)]
        )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
