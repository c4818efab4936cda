"""Hybrid retrieval: BM25 (FTS5) and vector similarity, fused by reciprocal rank.

The vector side is an exact search: every vector of a collection, as one
float32 matrix in memory, times the query vector. At 100k chunks of MiniLM
(384 dimensions) that is one 150 MB matrix-vector product, 15–25 ms on two
cores, with perfect recall; HNSW (usearch) answered in ~1 ms but needed 1–2
minutes to build 100k vectors on the same cores and found only part of the
true neighbours, and sqlite-vec's scan took ~45 ms and needs an SQLite build
that can load extensions (see docs/localdocs.md for the measurement). The
matrix is loaded from the ``vectors`` table once per process and reloaded when
the collection's ``version`` changes.

:func:`rrf` and :func:`fts_query` are pure and tested directly.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Reciprocal-rank-fusion constant (Cormack et al.; GPT4All uses the same).
RRF_K = 60
#: Weight of the keyword side in :func:`score_fusion` (the vector side has 1 minus it): the
#: best of RRF, weighted RRF, score fusion 0.3/0.5, vectors alone and choosing by query on
#: the mean over the labelled sets (docs/localdocs.md, "Retrieval across sets").
KEYWORD_WEIGHT = 0.5
#: Most rows a keyword query may match (see :func:`within_budget`): ~10 ms at 100k chunks.
KEYWORD_BUDGET = 6000

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "my",
        "me",
        "we",
        "our",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = Σ 1 / (k + rank), best first (ties: first seen).

    Example: ``rrf([[1, 2], [2, 3]], k=1)`` → ``[(2, 0.833…), (1, 0.5), (3, 0.333…)]``
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def query_terms(text: str) -> list[str]:
    """The significant words of a query, lower-cased, each once (stopwords only if nothing else).

    Example: ``query_terms("How do I mount a USB disk?") == ["mount", "usb", "disk"]``
    """
    words = [w.lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys([w for w in words if w not in _STOPWORDS] or words))


def fts_query(text: str | Sequence[str]) -> str | None:
    """An FTS5 query matching any of the words (BM25 ranks the rest); text or a list of terms.

    Every word is quoted, so user input never reaches FTS5's query syntax.
    Example: ``fts_query("How do I mount a USB disk?") == '"mount" OR "usb" OR "disk"'``
    """
    terms = query_terms(text) if isinstance(text, str) else list(text)
    return " OR ".join(f'"{w}"' for w in terms) if terms else None


def within_budget(frequencies: dict[str, int], budget: int) -> list[str]:
    """The rarest terms whose matches add up to at most ``budget`` rows (at least the rarest one).

    BM25 has to score every row a query matches, so a very common word costs
    the most time and adds the least to the ranking (its IDF is near zero).
    Example: ``within_budget({"a": 900, "b": 5, "c": 50}, 100) == ["b", "c"]``
    """
    kept: list[str] = []
    used = 0
    for term in sorted((t for t, n in frequencies.items() if n), key=lambda t: frequencies[t]):
        if kept and used + frequencies[term] > budget:
            break
        kept.append(term)
        used += frequencies[term]
    return kept


def _min_max(scored: Sequence[tuple[int, float]], lower_is_better: bool) -> dict[int, float]:
    if not scored:
        return {}
    values = [-v if lower_is_better else v for _, v in scored]
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return {i: (v - lo) / span for (i, _), v in zip(scored, values, strict=True)}


def score_fusion(
    keyword: Sequence[tuple[int, float]],
    semantic: Sequence[Sequence[tuple[int, float]]],
    keyword_weight: float = KEYWORD_WEIGHT,
) -> list[tuple[int, float]]:
    """Fuse by score: min-max-normalised BM25 and cosine, ``keyword_weight`` : 1 − it.

    ``keyword`` holds FTS5 BM25 values (lower is better), each ``semantic`` list
    cosines (higher is better; one list per embedding model, a chunk in one of
    them). A candidate missing from a list scores 0 there. Unlike RRF, a keyword
    list whose best rows barely match still ranks them, but a vector hit that is
    far ahead of the rest keeps its lead. Best first, ties: the vector order.
    Example: ``score_fusion([(1, -5.0), (2, -1.0)], [[(2, 0.9), (3, 0.5)]])``
    → ``[(2, 0.5), (1, 0.5), (3, 0.0)]``
    """
    kw = _min_max(keyword, lower_is_better=True)
    vec: dict[int, float] = {}
    for ranking in semantic:
        vec.update(_min_max(ranking, lower_is_better=False))
    order = dict.fromkeys([*(i for r in semantic for i, _ in r), *(i for i, _ in keyword)])
    fused = {
        i: keyword_weight * kw.get(i, 0.0) + (1 - keyword_weight) * vec.get(i, 0.0) for i in order
    }
    return sorted(fused.items(), key=lambda kv: -kv[1])


def weighted_rrf(
    rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int = RRF_K
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion where ranking ``i`` counts ``weights[i]`` times (ties: first seen).

    Example: ``weighted_rrf([[1], [2]], [0.5, 1.0], k=1)`` → ``[(2, 0.5), (1, 0.25)]``
    """
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def keyword_search(
    conn: sqlite3.Connection, collection_ids: Sequence[int], query: str, limit: int
) -> list[int]:
    """Chunk ids of the collections ranked by BM25 (see :func:`keyword_scored`)."""
    return [i for i, _ in keyword_scored(conn, collection_ids, query, limit)]


def keyword_scored(
    conn: sqlite3.Connection, collection_ids: Sequence[int], query: str, limit: int
) -> list[tuple[int, float]]:
    """(chunk id, BM25) of the collections, best first (the title counts half as much as the text).

    BM25 is FTS5's: negative, lower is better.

    The rarest query terms are kept within :data:`KEYWORD_BUDGET` matched rows,
    which bounds the latency however large the index grows. FTS5 ranks over the
    whole database; the collections are picked from its best rows afterwards.
    """
    frequencies = {
        t: int(
            conn.execute(
                "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{t}"',)
            ).fetchone()[0]
        )
        for t in query_terms(query)
    }
    match = fts_query(within_budget(frequencies, KEYWORD_BUDGET))
    if match is None or not collection_ids:
        return []
    others = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM collections WHERE id NOT IN ({','.join('?' * len(collection_ids))}))",
        tuple(collection_ids),
    ).fetchone()[0]
    ranked = [
        (int(r[0]), float(r[1]))
        for r in conn.execute(
            "SELECT rowid, bm25(chunks_fts, 0.5, 1.0) AS s FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY s LIMIT ?",
            (match, limit * 4 if others else limit),
        )
    ]
    if not others:
        return ranked
    marks = ",".join("?" * len(ranked))
    keep = {
        int(r[0])
        for r in conn.execute(
            f"""SELECT c.id FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})
                AND f.collection_id IN ({",".join("?" * len(collection_ids))})""",
            (*(i for i, _ in ranked), *collection_ids),
        )
    }
    return [(i, s) for i, s in ranked if i in keep][:limit]


@dataclass
class _Matrix:
    version: int
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]


class VectorIndex:
    """The vectors of each collection as an in-memory matrix; exact top-k by dot product."""

    def __init__(self) -> None:
        self._cache: dict[int, _Matrix] = {}
        self._lock = threading.Lock()

    def _matrix(self, conn: sqlite3.Connection, collection_id: int) -> _Matrix:
        row = conn.execute(
            "SELECT version FROM collections WHERE id = ?", (collection_id,)
        ).fetchone()
        version = int(row[0]) if row else -1
        with self._lock:
            cached = self._cache.get(collection_id)
            if cached is not None and cached.version == version:
                return cached
            cached = _load(conn, collection_id, version)
            self._cache[collection_id] = cached
            return cached

    def search(
        self,
        conn: sqlite3.Connection,
        collection_ids: Sequence[int],
        query: npt.NDArray[np.float32],
        limit: int,
    ) -> list[int]:
        """Chunk ids of the ``limit`` vectors most similar to ``query`` (unit vectors: cosine)."""
        return [i for i, _ in self.scored(conn, collection_ids, query, limit)]

    def scored(
        self,
        conn: sqlite3.Connection,
        collection_ids: Sequence[int],
        query: npt.NDArray[np.float32],
        limit: int,
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the ``limit`` vectors most similar to ``query``, best first."""
        ids: list[npt.NDArray[np.int64]] = []
        scores: list[npt.NDArray[np.float32]] = []
        for cid in collection_ids:
            m = self._matrix(conn, cid)
            if len(m.ids) and m.vectors.shape[1] == query.shape[0]:
                ids.append(m.ids)
                scores.append(m.vectors @ query)
        if not ids:
            return []
        all_ids, all_scores = np.concatenate(ids), np.concatenate(scores)
        k = min(limit, len(all_ids))
        top = np.argpartition(-all_scores, k - 1)[:k]
        top = top[np.argsort(-all_scores[top], kind="stable")]
        return [(int(all_ids[i]), float(all_scores[i])) for i in top]

    def forget(self, collection_id: int | None = None) -> None:
        with self._lock:
            if collection_id is None:
                self._cache.clear()
            else:
                self._cache.pop(collection_id, None)


def _load(conn: sqlite3.Connection, collection_id: int, version: int) -> _Matrix:
    rows = conn.execute(
        """SELECT v.chunk_id, v.embedding FROM vectors v
           JOIN chunks c ON c.id = v.chunk_id JOIN files f ON f.id = c.file_id
           WHERE f.collection_id = ? ORDER BY v.chunk_id""",
        (collection_id,),
    ).fetchall()
    if not rows:
        return _Matrix(version, np.empty(0, np.int64), np.empty((0, 0), np.float32))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    blob = b"".join(r[1] for r in rows)
    vectors = np.frombuffer(blob, dtype="<f2").reshape(len(rows), -1).astype(np.float32)
    return _Matrix(version, ids, vectors)


def encode_vector(vector: npt.NDArray[np.float32]) -> bytes:
    """A vector as stored: little-endian float16 (half the bytes; cosine changes < 1e-3)."""
    return vector.astype("<f2").tobytes()
