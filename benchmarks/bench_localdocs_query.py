"""LocalDocs query latency: p50/p95 of hybrid search at 10k and 100k chunks.

A real index of Debian ``manpages`` pages is built first (real chunks, real
MiniLM vectors); it is then grown to 10,000 and to 100,000 chunks by copies
of its files whose vectors get a little noise (so that no two are equal), all
in the same SQLite database format LocalDocs writes. The 92 benchmark
questions are then asked against each size, the sizes taking turns, several
rounds:

- **search** — ``LocalDocs.search`` with the query vector already computed:
  FTS5 BM25 + exact vector search + score fusion + fetching the hits;
- **with query embedding** — the same plus embedding the question (what a
  chat turn pays);
- **keyword**, **vector**, **fusion** (score and, as before, RRF), **query embedding** —
  each part on its own, to see where the time goes.

The first query after opening pays for loading the vectors into memory; it is
reported apart ("cold load").

Example: ``python benchmarks/bench_localdocs_query.py --quick``
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import _harness as h
import _localdocs_corpus as corpus_mod
from _embedding_cache import CachedEmbedder

NAME = "localdocs_query"
TARGET_P95_MS = 50.0


class PrecomputedQueries:
    """An embedder whose query vectors were computed beforehand (times retrieval alone)."""

    def __init__(self, inner: Any, questions: list[str]) -> None:
        self.inner = inner
        self.vectors = {q: inner.embed_query(q) for q in questions}

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def embed_documents(self, texts: Any) -> Any:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Any:
        return self.vectors[text] if text in self.vectors else self.inner.embed_query(text)


def grow(db_path: Path, target: int, seed: int = 0) -> int:
    """Copy the collection's files (chunks, noisy vectors) until it holds ``target`` chunks."""
    from llm4all.localdocs.search import encode_vector

    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    files = conn.execute(
        "SELECT id, collection_id, path, size, mtime_ns, sha256, n_chunks, n_chars FROM files WHERE state='indexed'"
    ).fetchall()
    have = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    copy = 0
    while have < target:
        copy += 1
        conn.execute("BEGIN")
        for f in files:
            if have >= target:
                break
            cur = conn.execute(
                "INSERT INTO files (collection_id, path, size, mtime_ns, sha256, state, n_chunks, n_chars) VALUES (?, ?, ?, ?, ?, 'indexed', ?, ?)",
                (f[1], f"{f[2]}#copy{copy}", f[3], f[4], f[5], f[6], f[7]),
            )
            rows = conn.execute(
                "SELECT c.ordinal, c.title, c.text, c.heading, c.page, c.line_start, c.line_end, c.n_tokens, v.embedding FROM chunks c JOIN vectors v ON v.chunk_id = c.id WHERE c.file_id = ? ORDER BY c.ordinal",
                (f[0],),
            ).fetchall()
            for r in rows[: target - have]:
                c = conn.execute(
                    "INSERT INTO chunks (file_id, ordinal, title, text, heading, page, line_start, line_end, n_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (cur.lastrowid, *r[:8]),
                )
                v = np.frombuffer(r[8], "<f2").astype(np.float32) + rng.normal(0, 0.02, 384).astype(
                    np.float32
                )
                conn.execute(
                    "INSERT INTO vectors VALUES (?, ?)",
                    (c.lastrowid, encode_vector(v / np.linalg.norm(v))),
                )
                have += 1
        conn.execute("UPDATE collections SET version = version + 1")
        conn.execute("COMMIT")
    conn.close()
    return int(have)


def ask(run: Callable[[str], object], questions: list[str]) -> list[float]:
    """Milliseconds of ``run(question)`` for each question."""
    out = []
    for q in questions:
        t0 = time.perf_counter()
        run(q)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def parts(docs: Any, vectors: dict[str, Any]) -> dict[str, Callable[[str], object]]:
    """The two retrievers of ``LocalDocs.search`` on their own, and the fusion (where the time goes).

    The fusion runs on each question's real candidate lists, computed beforehand:
    score fusion (shipped) and reciprocal rank fusion (before) side by side.
    """
    from llm4all.localdocs.collections import CANDIDATES
    from llm4all.localdocs.search import keyword_scored, keyword_search, rrf, score_fusion

    cid = docs._id("bench")
    lists = {
        q: (keyword_scored(docs._conn, [cid], q, CANDIDATES),
            docs._vectors.scored(docs._conn, [cid], v, CANDIDATES))
        for q, v in vectors.items()
    }  # fmt: skip
    return {
        "keyword (FTS5 BM25)": lambda q: keyword_search(docs._conn, [cid], q, CANDIDATES),
        "vector (exact)": lambda q: docs._vectors.search(docs._conn, [cid], vectors[q], CANDIDATES),
        "fusion: score (shipped)": lambda q: score_fusion(lists[q][0], [lists[q][1]]),
        "fusion: RRF (before)": lambda q: rrf([[i for i, _ in lst] for lst in lists[q]]),
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def build(base_db: Path, size: int, folder: Path) -> Path:
    path = folder / f"ld-{size}.db"
    shutil.copy(base_db, path)
    h.note(f"growing the index to {grow(path, size):,} chunks…")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round, 1k and 10k chunks")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pages", type=int, default=12, help="real pages indexed before growing")
    args = p.parse_args()
    sizes = [1_000, 10_000] if args.quick else [10_000, 100_000]
    if args.quick:
        args.rounds, args.pages = 1, 4
    from llm4all.embeddings import Embedder
    from llm4all.localdocs import LocalDocs

    machine = h.machine_info()
    folder = corpus_mod.corpus()
    questions = [q["question"] for q in corpus_mod.questions()]
    embedder = Embedder(n_threads=args.threads)
    precomputed = PrecomputedQueries(embedder, questions)
    load = h.load_average()
    h.note(f"{NAME}: load {load}")
    with tempfile.TemporaryDirectory() as tmp:
        pages = Path(tmp) / "pages"
        pages.mkdir()
        for page in sorted(folder.glob("*.txt"))[: args.pages]:
            shutil.copy(page, pages / page.name)
        base = Path(tmp) / "base.db"
        cached = CachedEmbedder(embedder)  # the pages' vectors, from earlier runs when there were
        with LocalDocs(base, embedder_factory=lambda _: cached) as docs:
            docs.add("bench", [pages])
            h.note(f"indexing {args.pages} real pages: {docs.index('bench').chunks_added} chunks")
        dbs = {size: build(base, size, Path(tmp)) for size in sizes}
        opened = {}
        cold: dict[str, float] = {}
        for size, path in dbs.items():
            for mode, emb in (("search", precomputed), ("with query embedding", embedder)):
                docs = LocalDocs(path, embedder_factory=lambda _, e=emb: e)
                t0 = time.perf_counter()
                docs.search(["bench"], questions[0], 5)
                cold[f"{size}/{mode}"] = (time.perf_counter() - t0) * 1000
                opened[(size, mode)] = docs
        runners: dict[str, Callable[[str], object]] = {
            f"{size}/{mode}": lambda q, d=docs: d.search(["bench"], q, 5)
            for (size, mode), docs in opened.items()
        }
        for size in sizes:
            for part, run in parts(opened[(size, "search")], precomputed.vectors).items():
                runners[f"{size}/{part}"] = run
        runners["query embedding"] = embedder.embed_query
        runs = h.interleave(
            list(runners), args.rounds, lambda n: {"ms": ask(runners[n], questions)}
        )
        for docs in opened.values():
            docs.close()
    results = {}
    for name, rs in runs.items():
        ms = [v for r in rs for v in r["ms"]]
        results[name] = {
            "p50_ms": pct(ms, 50),
            "p95_ms": pct(ms, 95),
            "mean_ms": statistics.fmean(ms),
            "n": len(ms),
            "cold_load_ms": cold.get(name),
        }
    rows = [
        [
            n,
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['cold_load_ms']:.0f}" if r["cold_load_ms"] is not None else "",
        ]
        for n, r in results.items()
    ]
    h.print_table(
        f"Hybrid search latency ({len(questions)} questions × {args.rounds} rounds, {machine['cpu']})",
        ["chunks / mode", "p50 ms", "p95 ms", "cold load ms"],
        rows,
    )
    top = max(sizes)
    verdicts = h.print_targets({
        f"p95 < {TARGET_P95_MS:g} ms at {top:,} chunks (search)": results[f"{top}/search"]["p95_ms"] < TARGET_P95_MS,
        f"p95 < {TARGET_P95_MS:g} ms at {top:,} chunks (with query embedding)": results[f"{top}/with query embedding"]["p95_ms"] < TARGET_P95_MS,
    })  # fmt: skip
    h.write_json(NAME, args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"threads": args.threads, "rounds": args.rounds, "sizes": sizes, "pages": args.pages},
        "load_before": load, "load_after": h.load_average(), "results": results, "targets": verdicts,
    })  # fmt: skip


if __name__ == "__main__":
    main()
