"""Collections, incremental indexing and hybrid search on real files, real SQLite, real MiniLM."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llm4all.embeddings import Embedder
from llm4all.localdocs import CollectionNotFound, LocalDocs, build_context
from test_localdocs_loaders import write_docx, write_pdf


class CountingEmbedder:
    """The real embedder, counting the texts it embeds (and able to die mid-run)."""

    def __init__(self, inner: Embedder, die_after: int | None = None) -> None:
        self.inner = inner
        self.embedded: list[str] = []
        self.die_after = die_after

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> Any:
        if self.die_after is not None and len(self.embedded) >= self.die_after:
            raise KeyboardInterrupt  # as if the process were killed here
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Any:
        return self.inner.embed_query(text)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "garden.md").write_text(
        "# Garden\n\nThe tomatoes need water every morning.\n\n## Tools\n\nThe rake hangs in the blue shed.\n"
    )
    (root / "sub" / "recipes.txt").write_text(
        "Pancakes need flour, milk and two eggs.\n\nServe warm.\n"
    )
    (root / "sub" / "app.py").write_text(
        "def retry_budget():\n    return 7  # attempts before giving up\n"
    )
    (root / "team.csv").write_text(
        "name,role\nAda,database administrator\nLin,frontend developer\n"
    )
    (root / "page.html").write_text("<h1>Office</h1><p>The wifi password is heron-42.</p>")
    (root / "settings.json").write_text('{"backup": {"hour": 3, "target": "nas.local"}}')
    write_pdf(root / "manual.pdf", ["Intro page.", "The boiler pressure must stay below 2 bar."])
    write_docx(
        root / "memo.docx",
        [("Heading1", "Budget"), (None, "Travel costs are capped at 300 euros.")],
    )
    (root / "broken.json").write_text("{oops")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    (root / ".hidden.txt").write_text("never indexed")
    return root


@pytest.fixture
def docs(tmp_path: Path, embedder: Embedder) -> Any:
    counting = CountingEmbedder(embedder)
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: counting) as d:
        d.counting = counting  # type: ignore[attr-defined]
        yield d


def test_index_every_type_and_report_failures(docs: LocalDocs, folder: Path) -> None:
    docs.add("home", [folder])
    report = docs.index("home")
    assert report.files_seen == 9  # .png and hidden files are not collected
    assert report.failures == [(str(folder / "broken.json"), report.failures[0][1])]
    assert "invalid JSON" in report.failures[0][1]
    info = docs.info("home")
    assert (info.files, info.indexed, info.embedded) == (9, 8, info.chunks)
    assert info.failed == [(str(folder / "broken.json"), report.failures[0][1])]
    expectations = {
        "how often do the tomatoes get water": ("garden.md", "line 3", "Garden"),
        "where is the rake": ("garden.md", "line 7", "Garden › Tools"),
        "boiler pressure limit": ("manual.pdf", "page 2", ""),
        "travel cost cap": ("memo.docx", "", "Budget"),
        "wifi password": ("page.html", "line 1", "Office"),
        "who is the database administrator": ("team.csv", "lines 2–3", ""),
        "how many retry attempts": ("app.py", "lines 1–2", "def retry_budget()"),
        "what time does the backup run": ("settings.json", "", "backup"),
    }
    for query, (name, location, heading) in expectations.items():
        top = docs.search(["home"], query, k=3)[0]
        assert (Path(top.path).name, top.location, top.heading) == (name, location, heading), query


def test_unchanged_files_are_not_embedded_again(docs: LocalDocs, folder: Path) -> None:
    docs.add("home", [folder])
    docs.index("home")
    first = len(docs.counting.embedded)  # type: ignore[attr-defined]
    os.utime(folder / "garden.md")  # touched, same content
    again = docs.index("home")
    assert again.files_changed == 0 and again.chunks_embedded == 0
    assert len(docs.counting.embedded) == first  # type: ignore[attr-defined]
    (folder / "sub" / "recipes.txt").write_text("Pancakes need flour, milk and three eggs.\n")
    (folder / "team.csv").unlink()
    changed = docs.index("home")
    assert (changed.files_changed, changed.files_removed, changed.chunks_embedded) == (1, 1, 1)
    hits = docs.search(["home"], "database administrator eggs", k=10)
    assert all(Path(h.path).name != "team.csv" for h in hits)
    assert any("three eggs" in h.text for h in hits)
    assert not any("two eggs" in h.text for h in hits)


def test_a_killed_run_resumes_where_it_stopped(
    tmp_path: Path, folder: Path, embedder: Embedder
) -> None:
    for i in range(10):
        (folder / f"note{i}.md").write_text(
            "\n\n".join(f"Note {i} paragraph {j}. " * 30 for j in range(8))
        )
    dying = CountingEmbedder(embedder, die_after=1)  # dies on its second batch
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: dying) as d:
        d.add("home", [folder])
        with pytest.raises(KeyboardInterrupt):
            d.index("home")
        done = d.info("home")
    assert 0 < done.embedded < done.chunks
    fresh = CountingEmbedder(embedder)
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: fresh) as d:
        report = d.index("home")
        info = d.info("home")
    assert report.files_changed == 0 and report.files_unchanged == info.files  # nothing re-read
    assert len(fresh.embedded) == info.chunks - done.embedded  # nothing embedded twice
    assert info.embedded == info.chunks and info.indexed == info.files - 1


def test_never_reads_outside_the_folders_and_survives_symlink_loops(
    docs: LocalDocs, folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("The launch code is 0000.")
    (folder / "leak.txt").symlink_to(outside)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    docs.add("home", [folder])
    report = docs.index("home")
    assert report.files_seen == 9
    indexed = {r[0] for r in docs._conn.execute("SELECT path FROM files")}
    assert str(outside) not in indexed and all(p.startswith(str(folder)) for p in indexed)
    assert not any("launch code" in h.text for h in docs.search(["home"], "launch code", k=10))


_KILLED_CHILD = """
import sys, time
from llm4all.embeddings import Embedder
from llm4all.localdocs import LocalDocs

class StopsOnSecondBatch:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
    def count_tokens(self, text):
        return self.inner.count_tokens(text)
    def embed_documents(self, texts):
        self.calls += 1
        if self.calls == 2:  # the first batch is committed: wait here to be killed
            print("killable", flush=True)
            time.sleep(120)
        return self.inner.embed_documents(texts)
    def embed_query(self, text):
        return self.inner.embed_query(text)

embedder = StopsOnSecondBatch(Embedder(sys.argv[1]))
with LocalDocs(sys.argv[2], embedder_factory=lambda _: embedder) as docs:
    docs.add("home", [sys.argv[3]])
    docs.index("home")
"""


def test_a_run_killed_with_sigkill_resumes(
    tmp_path: Path, folder: Path, embedder: Embedder, embedding_model_path: Path
) -> None:
    """``kill -9`` in the middle of embedding: the next run embeds only what is missing."""
    import signal
    import subprocess
    import sys

    for i in range(10):
        (folder / f"note{i}.md").write_text(
            "\n\n".join(f"Note {i} paragraph {j}. " * 30 for j in range(8))
        )
    db_path = tmp_path / "ld.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(embedding_model_path), str(db_path), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "killable\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    fresh = CountingEmbedder(embedder)
    with LocalDocs(db_path, embedder_factory=lambda _: fresh) as d:
        before = d.info("home")
        assert 0 < before.embedded < before.chunks  # the first batch survived the kill
        report = d.index("home")
        info = d.info("home")
    assert report.files_changed == 0 and report.files_unchanged == info.files  # nothing re-read
    assert len(fresh.embedded) == info.chunks - before.embedded  # nothing embedded twice
    assert info.embedded == info.chunks and info.indexed == info.files - 1  # broken.json


#: Most bytes written while indexing per character of text: ~7 measured (reading commits a
#: megabyte of text at a time); committing file by file wrote ~15.
WRITE_FACTOR = 10


def _bytes_written() -> int:
    """Bytes this process has passed to write(2) so far (SQLite's pages, WAL and checkpoints)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_disk_written_is_proportional_to_the_text(docs: LocalDocs, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    rng = np.random.default_rng(0)
    for i in range(20):
        text = "\n\n".join(" ".join(rng.choice(words, 60)) + "." for _ in range(20))
        (big / f"f{i}.txt").write_text(text)
    docs.add("big", [big])
    written = _bytes_written()
    docs.index("big")
    conn = sqlite3.connect(docs.path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    written = _bytes_written() - written
    chars = docs.info("big").chars
    size = docs.path.stat().st_size
    # Text + FTS index + one float16 vector (768 B) per chunk: a small multiple of the text,
    # and every byte written (WAL, checkpoints) a small multiple of that.
    assert size < 6 * chars, (size, chars)
    assert written < WRITE_FACTOR * chars, (written, chars)
    again = _bytes_written()
    time.sleep(1.1)  # a new indexed_at second, were it written
    docs.index("big")  # nothing changed (what `docs watch` does every 2 s): nothing written
    assert _bytes_written() - again == 0


def test_collections(docs: LocalDocs, folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.md").write_text("The spare key is under the flower pot.")
    docs.add("home", [folder])
    docs.add("keys", [other])
    docs.index("home")
    docs.index("keys")
    assert docs.names() == ["home", "keys"]
    both = docs.search(["home", "keys"], "where is the spare key", k=2)
    assert Path(both[0].path).name == "x.md" and both[0].collection == "keys"
    assert all(h.collection == "home" for h in docs.search(["home"], "spare key", k=5))
    text, refs = build_context(["keys"], "spare key", localdocs=docs)
    assert text.startswith("[1] The spare key is under the flower pot.\n(from x.md, line 1)")
    assert refs[0]["index"] == 1 and refs[0]["path"] == str(other / "x.md")
    docs.remove("keys")
    with pytest.raises(CollectionNotFound):
        docs.search(["keys"], "key")
    assert (
        docs._conn.execute(
            "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'flower'"
        ).fetchone()[0]
        == 0
    )
    with pytest.raises(FileNotFoundError):
        docs.add("nope", [tmp_path / "missing"])


def test_watch_picks_up_a_new_file(docs: LocalDocs, folder: Path) -> None:
    import threading

    docs.add("home", [folder])
    stop = threading.Event()
    runs: list[Any] = []

    def on_run(report: Any) -> None:
        runs.append(report)
        if len(runs) == 1:
            (folder / "new.md").write_text("The meeting moved to Thursday.")
        else:
            stop.set()

    docs.watch("home", interval=0.01, stop=stop, on_run=on_run)
    assert runs[0].files_changed == 8 and runs[1].files_changed == 1
    assert Path(docs.search(["home"], "when is the meeting", k=1)[0].path).name == "new.md"
