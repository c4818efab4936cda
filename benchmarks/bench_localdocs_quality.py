"""LocalDocs retrieval quality: recall@5 and MRR against GPT4All's own LocalDocs scheme.

Corpus: Debian's ``manpages`` package (Linux overview pages, sections 4, 5, 7),
rendered to plain text (``_localdocs_corpus.py``); 92 labelled questions, each
naming the page(s) that answer it (``data/manpages_questions.jsonl``).

Contenders, same embedding model (all-MiniLM-L6-v2), same FTS5 tokenizer and
keyword query, same reciprocal-rank fusion (k = 60) of 40 candidates a side:

- **gpt4all scheme** — GPT4All's LocalDocs: words packed into chunks of at most
  512 characters, no overlap, the chunk text embedded as is.
- **llm4all** — ``LocalDocs`` as shipped: structure-aware chunks sized in
  tokens with overlap, each embedded and keyword-indexed with its file name and
  heading path.

A question scores a hit at rank r when the r-th retrieved chunk comes from one
of its labelled pages: recall@5 counts questions with a hit in the top 5 (what
goes into a prompt); MRR is the mean of 1/r over the top 20.

Example: ``python benchmarks/bench_localdocs_quality.py --quick``
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import _harness as h
import _localdocs_corpus as corpus_mod

NAME = "localdocs_quality"
TOP = 20


def gpt4all_chunks(text: str, size: int = 512) -> list[str]:
    """Words packed into pieces of at most ``size`` characters (no overlap), as GPT4All does."""
    out: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > size:
            out.append(current)
            current = ""
        current = f"{current} {word}" if current else word[:size]
    if current:
        out.append(current)
    return out


class Gpt4allScheme:
    """GPT4All's LocalDocs retrieval, rebuilt on the same embedder, FTS5 and fusion."""

    def __init__(self, folder: Path, embedder: Any) -> None:
        from llm4all.localdocs.search import encode_vector

        self.embedder = embedder
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, tokenize='porter unicode61')")
        self.docs: list[str] = []
        texts: list[str] = []
        for path in sorted(folder.glob("*.txt")):
            for piece in gpt4all_chunks(path.read_text("utf-8", "replace")):
                self.docs.append(corpus_mod.document_of(str(path)))
                texts.append(piece)
        self.db.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", enumerate(texts))
        t0 = time.perf_counter()
        vectors = embedder.embed_documents(texts)
        self.embed_seconds = time.perf_counter() - t0
        # Stored as LocalDocs stores them (float16), so only the scheme differs.
        self.vectors = np.stack([np.frombuffer(encode_vector(v), "<f2") for v in vectors]).astype(
            np.float32
        )
        self.n_chunks = len(texts)

    def search(self, query: str, k: int) -> list[str]:
        from llm4all.localdocs.search import fts_query, rrf

        match = fts_query(query)
        keyword = (
            [
                r[0]
                for r in self.db.execute(
                    "SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT 40", (match,)
                )
            ]
            if match
            else []
        )
        scores = self.vectors @ self.embedder.embed_query(query)
        semantic = [int(i) for i in np.argsort(-scores)[:40]]
        return [self.docs[i] for i, _ in rrf([keyword, semantic])[:k]]


def scores(ranked: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> dict[str, float]:
    """recall@5 and MRR@20 of document lists against labels.

    Example: ``scores([["a", "b"]], [["b"]]) == {"recall@5": 1.0, "mrr": 0.5, "n": 1}``
    """
    recall, rr = [], []
    for docs, want in zip(ranked, labels, strict=True):
        rank = next((i for i, d in enumerate(docs[:TOP], 1) if d in want), None)
        recall.append(1.0 if rank is not None and rank <= 5 else 0.0)
        rr.append(1.0 / rank if rank else 0.0)
    return {"recall@5": float(np.mean(recall)), "mrr": float(np.mean(rr)), "n": len(rr)}


def subset(folder: Path, qs: list[dict[str, Any]], n_questions: int, n_extra: int) -> Path:
    """A smaller corpus for --quick: the labelled pages of the first questions plus distractors."""
    keep = {d for q in qs[:n_questions] for d in q["documents"]}
    others = [p for p in sorted(folder.glob("*.txt")) if corpus_mod.document_of(str(p)) not in keep]
    out = Path(tempfile.mkdtemp(prefix="llm4all-ld-quick-"))
    for p in [*(folder / f"{d}.txt" for d in sorted(keep)), *others[:n_extra]]:
        shutil.copy(p, out / p.name)
    return out


def run_ours(folder: Path, qs: list[dict[str, Any]], embedder: Any, tmp: Path) -> dict[str, Any]:
    from llm4all.localdocs import LocalDocs

    with LocalDocs(tmp / "localdocs.db", embedder_factory=lambda _: embedder) as docs:
        docs.add("man", [folder])
        t0 = time.perf_counter()
        report = docs.index("man")
        seconds = time.perf_counter() - t0
        ranked = [
            [corpus_mod.document_of(hit.path) for hit in docs.search(["man"], q["question"], TOP)]
            for q in qs
        ]
    return {"ranked": ranked, "chunks": report.chunks_added, "index_seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="30 questions over a 70-page subset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embedding-model", default="all-minilm-l6-v2")
    args = p.parse_args()
    from llm4all.embeddings import Embedder

    machine = h.machine_info()
    qs = corpus_mod.questions()
    folder = corpus_mod.corpus()
    if args.quick:
        folder, qs = subset(folder, qs, 30, 40), qs[:30]
    embedder = Embedder(args.embedding_model, n_threads=args.threads)
    labels = [q["documents"] for q in qs]
    h.note(
        f"{NAME}: {len(qs)} questions, {len(list(folder.glob('*.txt')))} pages, load {h.load_average()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(folder, qs, embedder, Path(tmp))
    h.note(f"llm4all: {ours['chunks']} chunks indexed in {ours['index_seconds']:.0f} s")
    base = Gpt4allScheme(folder, embedder)
    h.note(f"gpt4all scheme: {base.n_chunks} chunks embedded in {base.embed_seconds:.0f} s")
    base_ranked = [base.search(q["question"], TOP) for q in qs]
    results = {
        "llm4all": scores(ours["ranked"], labels),
        "gpt4all scheme": scores(base_ranked, labels),
    }
    chunks = {"llm4all": ours["chunks"], "gpt4all scheme": base.n_chunks}
    rows = [
        [name, f"{r['recall@5']:.3f}", f"{r['mrr']:.3f}", str(chunks[name])]
        for name, r in results.items()
    ]
    h.print_table(
        f"Retrieval quality ({len(qs)} questions, Debian manpages)",
        ["scheme", "recall@5", "MRR@20", "chunks"],
        rows,
    )
    ahead = {
        "recall@5 ahead of the gpt4all scheme": results["llm4all"]["recall@5"]
        > results["gpt4all scheme"]["recall@5"],
        "MRR ahead of the gpt4all scheme": results["llm4all"]["mrr"]
        > results["gpt4all scheme"]["mrr"],
    }
    verdicts = h.print_targets(ahead)
    misses = [
        q["question"]
        for q, r in zip(qs, ours["ranked"], strict=True)
        if not set(r[:5]) & set(q["documents"])
    ]
    h.write_json(NAME, args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"questions": len(qs), "embedding_model": args.embedding_model, "top": TOP},
        "results": results, "chunks": chunks, "targets": verdicts, "llm4all_misses_at_5": misses,
    })  # fmt: skip


if __name__ == "__main__":
    main()
