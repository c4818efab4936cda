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

Two levels of hits, each scored as recall@5 (a hit in the top 5: what goes
into a prompt) and MRR (the mean of 1/rank over the top 20):

- **page** — the chunk comes from one of the question's labelled pages;
- **passage** — it also contains one of the question's evidence strings (short
  sentences of the page that answer it, matched with whitespace normalised):
  the excerpt handed to the model holds the answer.

Vectors are cached on disk between runs (``_embedding_cache.py``): the first
run embeds the corpus (~30 min on two busy cores), later runs and ``--variants``
embed only texts they have not seen.

Example: ``python benchmarks/bench_localdocs_quality.py --quick``
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import _harness as h
import _localdocs_corpus as corpus_mod
from _embedding_cache import CachedEmbedder
from llm4all.localdocs.chunking import MAX_TOKENS, OVERLAP

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
        self.texts: list[str] = []
        texts = self.texts
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

    def search(self, query: str, k: int) -> list[tuple[str, str]]:
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
        return [(self.docs[i], self.texts[i]) for i, _ in rrf([keyword, semantic])[:k]]


def normalise(text: str) -> str:
    """Whitespace collapsed, so that an evidence string matches across line breaks.

    Example: ``normalise("a  b\n c") == "a b c"``
    """
    return " ".join(text.split())


def first_hit(
    retrieved: Sequence[tuple[str, str]], question: dict[str, Any], passage: bool
) -> int | None:
    """Rank (1-based, within the top 20) of the first retrieved chunk that answers ``question``.

    Page level: the chunk comes from a labelled page. Passage level: it also
    contains one of the question's evidence strings (whitespace normalised),
    that is, the excerpt handed to the model holds the answer.
    """
    evidence = [normalise(e) for e in question.get("evidence", [])]
    for rank, (doc, text) in enumerate(retrieved[:TOP], 1):
        if doc in question["documents"] and (
            not passage or any(e in normalise(text) for e in evidence)
        ):
            return rank
    return None


def scores(
    retrieved: Sequence[Sequence[tuple[str, str]]], qs: Sequence[dict[str, Any]], passage: bool
) -> dict[str, float]:
    """recall@5 and MRR@20 of retrieved (document, chunk text) lists.

    Example: ``scores([[("a", "x"), ("b", "y")]], [{"documents": ["b"]}], False)``
    → ``{"recall@5": 1.0, "mrr": 0.5, "n": 1}``
    """
    ranks = [first_hit(r, q, passage) for r, q in zip(retrieved, qs, strict=True)]
    recall = [1.0 if r is not None and r <= 5 else 0.0 for r in ranks]
    rr = [1.0 / r if r else 0.0 for r in ranks]
    return {"recall@5": float(np.mean(recall)), "mrr": float(np.mean(rr)), "n": len(rr)}


def subset(folder: Path, qs: list[dict[str, Any]], n_questions: int, n_extra: int) -> Path:
    """A smaller corpus for --quick: the labelled pages of the first questions plus distractors."""
    keep = {d for q in qs[:n_questions] for d in q["documents"]}
    others = [p for p in sorted(folder.glob("*.txt")) if corpus_mod.document_of(str(p)) not in keep]
    out = Path(tempfile.mkdtemp(prefix="llm4all-ld-quick-"))
    labelled = [folder / f"{d}.txt" for d in sorted(keep)]
    for p in [*(p for p in labelled if p.exists()), *others[:n_extra]]:  # labels name aliases too
        shutil.copy(p, out / p.name)
    return out


class WithoutTitles:
    """An embedder that drops the title line LocalDocs puts before each chunk (a variant)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def embed_documents(self, texts: Sequence[str]) -> Any:
        return self.inner.embed_documents([t.split("\n", 1)[-1] for t in texts])

    def embed_query(self, text: str) -> Any:
        return self.inner.embed_query(text)


@dataclass(frozen=True)
class Variant:
    """How an llm4all contender chunks and embeds."""

    max_tokens: int = MAX_TOKENS
    overlap: int = OVERLAP
    titles: bool = True  # the title line (file › heading path) is embedded with the chunk


#: The variants ``--variants`` measures beside LocalDocs as shipped.
VARIANTS = {
    "llm4all, no title in the embedded text": Variant(titles=False),
    "llm4all, 96-token chunks": Variant(max_tokens=96, overlap=16),
    "llm4all, 128-token chunks": Variant(max_tokens=128, overlap=24),
    "llm4all, 256-token chunks": Variant(max_tokens=256, overlap=48),
}


def run_ours(
    folder: Path, qs: list[dict[str, Any]], embedder: Any, tmp: Path, variant: Variant
) -> dict[str, Any]:
    from llm4all.localdocs import LocalDocs

    used = embedder if variant.titles else WithoutTitles(embedder)
    db_path = tmp / f"ld-{abs(hash(variant))}.db"
    with LocalDocs(db_path, embedder_factory=lambda _: used) as docs:
        docs.add("man", [folder])
        t0 = time.perf_counter()
        report = docs.index("man", max_tokens=variant.max_tokens, overlap=variant.overlap)
        seconds = time.perf_counter() - t0
        retrieved = [
            [
                (corpus_mod.document_of(h.path), h.text)
                for h in docs.search(["man"], q["question"], TOP)
            ]
            for q in qs
        ]
    chars = report.chars_read / max(1, report.chunks_added)
    return {"retrieved": retrieved, "chunks": report.chunks_added, "chars_per_chunk": chars,
            "index_seconds": seconds}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="30 questions over a 70-page subset")
    p.add_argument("--variants", action="store_true", help="also measure every variant")
    p.add_argument(
        "--variant", action="append", default=[], choices=sorted(VARIANTS), help="one variant"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embedding-model", default="all-minilm-l6-v2")
    args = p.parse_args()
    from llm4all.embeddings import Embedder

    machine = h.machine_info()
    qs = corpus_mod.questions()
    folder = corpus_mod.corpus()
    if args.quick:
        folder, qs = subset(folder, qs, 30, 40), qs[:30]
    embedder = CachedEmbedder(Embedder(args.embedding_model, n_threads=args.threads))
    load = h.load_average()
    h.note(
        f"{NAME}: {len(qs)} questions, {len(list(folder.glob('*.txt')))} pages, "
        f"load {load}, embedding cache {embedder.path}"
    )
    contenders: dict[str, dict[str, Any]] = {}
    picked = VARIANTS if args.variants else {n: VARIANTS[n] for n in args.variant}
    configs = {"llm4all": Variant(), **picked}
    with tempfile.TemporaryDirectory() as tmp:
        for name, variant in configs.items():
            contenders[name] = run_ours(folder, qs, embedder, Path(tmp), variant)
            h.note(f"{name}: {contenders[name]['chunks']} chunks indexed in "
                   f"{contenders[name]['index_seconds']:.0f} s")  # fmt: skip
    base = Gpt4allScheme(folder, embedder)
    h.note(f"gpt4all scheme: {base.n_chunks} chunks embedded in {base.embed_seconds:.0f} s")
    contenders["gpt4all scheme"] = {
        "retrieved": [base.search(q["question"], TOP) for q in qs],
        "chunks": base.n_chunks,
        "chars_per_chunk": sum(map(len, base.texts)) / max(1, base.n_chunks),
    }
    results = {
        name: {
            "page": scores(c["retrieved"], qs, passage=False),
            "passage": scores(c["retrieved"], qs, passage=True),
            "chunks": c["chunks"],
            "chars_per_chunk": round(c["chars_per_chunk"], 1),
        }
        for name, c in contenders.items()
    }
    rows = [
        [name, f"{r['page']['recall@5']:.3f}", f"{r['page']['mrr']:.3f}",
         f"{r['passage']['recall@5']:.3f}", f"{r['passage']['mrr']:.3f}",
         str(r["chunks"]), f"{r['chars_per_chunk']:.0f}"]
        for name, r in results.items()
    ]  # fmt: skip
    h.print_table(
        f"Retrieval quality ({len(qs)} questions, Debian manpages)",
        ["scheme", "page R@5", "page MRR", "passage R@5", "passage MRR", "chunks", "chars/chunk"],
        rows,
    )
    ours, theirs = results["llm4all"], results["gpt4all scheme"]
    verdicts = h.print_targets({
        f"{level} {metric} ahead of the gpt4all scheme": ours[level][metric] > theirs[level][metric]
        for level in ("page", "passage") for metric in ("recall@5", "mrr")
    })  # fmt: skip
    misses = {
        name: [q["question"] for q, r in zip(qs, c["retrieved"], strict=True)
               if (first_hit(r, q, True) or TOP + 1) > 5]
        for name, c in contenders.items()
    }  # fmt: skip
    h.write_json(NAME, args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": machine, "load_before": load,
        "settings": {"questions": len(qs), "embedding_model": args.embedding_model, "top": TOP},
        "load_after": h.load_average(), "results": results, "targets": verdicts, "passage_misses_at_5": misses,
        "embedding_cache": {"hits": embedder.hits, "misses": embedder.misses},
    })  # fmt: skip


if __name__ == "__main__":
    main()
