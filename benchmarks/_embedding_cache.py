"""A persistent cache of embeddings for the LocalDocs benchmarks, so that iterating is cheap.

Embedding the corpus is what the retrieval benchmark spends its time on (about
half an hour on two busy cores for both schemes); the vectors of a text never
change for one model file, so they are kept in an SQLite file under
``$TMPDIR/llm4all-bench/`` keyed by the model file (name, size, mtime) and the
sha256 of the text. A second run, or a variant that only changes the ranking,
embeds nothing; a variant that changes the chunks embeds only the new texts.

Example::

    embedder = CachedEmbedder(Embedder(n_threads=2))
    embedder.embed_documents(["some chunk"])  # computed once, read back ever after
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CACHE_DIR = Path(tempfile.gettempdir()) / "llm4all-bench"
BATCH = 64


class CachedEmbedder:
    """An embedder (``count_tokens``, ``embed_documents``, ``embed_query``) with a disk cache."""

    def __init__(self, inner: Any, path: Path | None = None) -> None:
        self.inner = inner
        model = Path(inner.path)
        st = model.stat()
        key = hashlib.sha256(f"{model.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        self.path = path or CACHE_DIR / f"embeddings-{model.stem}-{key[:12]}.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def _lookup(self, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            found.update(self.db.execute(f"SELECT k, vec FROM v WHERE k IN ({marks})", part))
        return found

    def _embed(self, texts: Sequence[str], kind: str) -> npt.NDArray[np.float32]:
        keys = [hashlib.sha256(f"{kind}\0{t}".encode()).hexdigest() for t in texts]
        found = self._lookup(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        for start in range(0, len(missing), BATCH):
            part = missing[start : start + BATCH]
            if kind == "query":
                vectors = [self.inner.embed_query(texts[i]) for i in part]
            else:
                vectors = list(self.inner.embed_documents([texts[i] for i in part]))
            rows = [
                (keys[i], np.asarray(v, np.float32).tobytes())
                for i, v in zip(part, vectors, strict=True)
            ]
            self.db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?)", rows)
            self.db.commit()
            found.update(rows)
        return np.stack([np.frombuffer(found[k], np.float32) for k in keys])

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, 0), np.float32)
        return self._embed(texts, "document")

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self._embed([text], "query")[0]
        return vector
