"""LocalDocs indexing speed: chunks/s and MB of text per minute, batched vs one text at a time.

The texts are real LocalDocs chunks (file name and heading line included, as
indexing embeds them) of the Debian ``manpages`` corpus. Two embedders with the
same model and threads take turns, A B A B …:

- **batched** — ``Embedder`` as LocalDocs uses it: up to 16 texts share each
  ``llama_decode`` (1,024 tokens);
- **one-by-one** — one text per call and per ``llama_decode`` (what GPT4All 2.x
  and a naive loop do).

Then one end-to-end ``LocalDocs.index`` of the same pages (read, chunk, embed,
store) gives the pipeline's chunks/s and MB/min, and the bytes the database
takes per byte of text indexed.

Example: ``python benchmarks/bench_localdocs_index.py --quick``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import _localdocs_corpus as corpus_mod

NAME = "localdocs_index"
TARGET = 1.5  # batched ≥ 1.5 × one-by-one (BENCHMARKS.md)


def chunk_texts(folder: Path, embedder: Any, limit: int) -> list[str]:
    """The first ``limit`` chunks of the corpus, as LocalDocs embeds them."""
    from llm4all.localdocs.chunking import chunk_blocks
    from llm4all.localdocs.indexer import _title
    from llm4all.localdocs.loaders import load

    texts: list[str] = []
    for path in sorted(folder.glob("*.txt")):
        for c in chunk_blocks(load(path), embedder.count_tokens):
            texts.append(f"{_title(str(path), c.heading)}\n{c.text}")
        if len(texts) >= limit:
            break
    return texts[:limit]


def embed_run(embedder: Any, texts: list[str], one_by_one: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    if one_by_one:
        for text in texts:
            embedder.embed_documents([text])
    else:
        for start in range(0, len(texts), 64):  # the indexer's batch
            embedder.embed_documents(texts[start : start + 64])
    seconds = time.perf_counter() - t0
    chars = sum(len(t) for t in texts)
    return {
        "seconds": seconds,
        "chunks_per_s": len(texts) / seconds,
        "mb_per_min": chars / 1e6 / seconds * 60,
    }


def pipeline(folder: Path, pages: int, threads: int) -> dict[str, float]:
    """One full ``LocalDocs.index`` of the first ``pages`` pages in a fresh database."""
    from llm4all.localdocs import LocalDocs

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pages"
        src.mkdir()
        for p in sorted(folder.glob("*.txt"))[:pages]:
            shutil.copy(p, src / p.name)
        from llm4all.embeddings import Embedder

        with (
            Embedder(n_threads=threads) as embedder,
            LocalDocs(Path(tmp) / "ld.db", embedder_factory=lambda _: embedder) as docs,
        ):
            docs.add("bench", [src])
            t0 = time.perf_counter()
            report = docs.index("bench")
            seconds = time.perf_counter() - t0
            docs._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db_bytes = docs.path.stat().st_size
    return {
        "chunks": report.chunks_added,
        "seconds": seconds,
        "chunks_per_s": report.chunks_added / seconds,
        "mb_per_min": report.chars_read / 1e6 / seconds * 60,
        "text_mb": report.chars_read / 1e6,
        "db_bytes_per_text_byte": db_bytes / max(1, report.chars_read),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="64 chunks, 1 round, 8 pages end to end")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunks", type=int, default=384, help="chunks embedded per run")
    p.add_argument("--pages", type=int, default=30, help="pages indexed end to end")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.chunks, args.pages = 1, 64, 8
    from llm4all.embeddings import Embedder

    machine = h.machine_info()
    folder = corpus_mod.corpus()
    contenders = {
        "batched": Embedder(n_threads=args.threads),
        "one-by-one": Embedder(n_threads=args.threads, max_sequences=1, batch_tokens=512),
    }
    texts = chunk_texts(folder, contenders["batched"], args.chunks)
    load_before = h.load_average()
    h.note(f"{NAME}: {len(texts)} chunks, {sum(map(len, texts)) / 1e6:.2f} MB, load {load_before}")
    for name, embedder in contenders.items():  # warm-up: page in the weights, size the buffers
        embed_run(embedder, texts[:32], name == "one-by-one")
    runs = h.interleave(
        list(contenders), args.rounds, lambda n: embed_run(contenders[n], texts, n == "one-by-one")
    )
    for e in contenders.values():
        e.close()
    ratio = h.paired(runs, "chunks_per_s", "batched", "one-by-one")
    rows = [
        [n, h.fmt(h.figure(r, "chunks_per_s")), h.fmt(h.figure(r, "mb_per_min"), 2),
         h.fmt(ratio, 2) if n == "batched" else "1.00 (reference)"]
        for n, r in runs.items()
    ]  # fmt: skip
    h.print_table(
        f"Embedding for indexing ({len(texts)} chunks, {args.threads} threads, {machine['cpu']})",
        ["contender", "chunks/s", "MB text/min", "× one-by-one"],
        rows,
    )
    whole = pipeline(folder, args.pages, args.threads)
    h.print_table(
        f"LocalDocs.index end to end ({args.pages} pages)",
        ["chunks", "seconds", "chunks/s", "MB text/min", "db bytes per text byte"],
        [[str(whole["chunks"]), f"{whole['seconds']:.1f}", f"{whole['chunks_per_s']:.1f}",
          f"{whole['mb_per_min']:.2f}", f"{whole['db_bytes_per_text_byte']:.2f}"]],
    )  # fmt: skip
    verdicts = h.print_targets({f"batched ≥ {TARGET} × one-by-one": h.at_least(ratio, TARGET)})
    h.write_json(NAME, args.quick, {
        "benchmark": NAME, "quick": args.quick, "machine": machine,
        "settings": {"threads": args.threads, "rounds": args.rounds, "chunks": len(texts), "pages": args.pages},
        "load_before": load_before, "load_after": h.load_average(), "ratio_batched_vs_one_by_one": ratio, "pipeline": whole,
        "targets": verdicts, "runs": runs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
