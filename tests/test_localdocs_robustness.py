"""LocalDocs under concurrency and bad input: real processes, real SQLite, real MiniLM.

Several indexers at once (``docs add``, ``docs index``, ``docs watch``, the
server) on one database, a database locked by another writer, a full disk
(a real tmpfs), file names with control characters, files without a known
extension.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from llm4all.embeddings import Embedder
from llm4all.errors import CollectionNotFound
from llm4all.localdocs import LocalDocs
from llm4all.localdocs.db import MIGRATIONS

CLI = [sys.executable, "-m", "llm4all"]


def llm4all(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}


def _check_database(path: Path, folder: Path) -> None:
    """Intact, every file of ``folder`` indexed exactly once, every chunk with one vector."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('integrity-check')")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = conn.execute("SELECT path, state FROM files").fetchall()
        expected = sorted(str(p) for p in folder.rglob("*") if p.is_file())
        assert sorted(p for p, _ in rows) == expected
        assert {s for _, s in rows} == {"indexed"}
        missing = conn.execute(
            "SELECT COUNT(*) FROM chunks c LEFT JOIN vectors v ON v.chunk_id = c.id"
            " WHERE v.chunk_id IS NULL"
        ).fetchone()[0]
        assert missing == 0
        assert conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] > 0
    finally:
        conn.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(6):
        (root / f"note{i}.md").write_text(
            f"# Note {i}\n\n" + "\n\n".join(f"Item {i}.{j} is stored in box {j}." for j in range(6))
        )
    return root


# -- many processes at once -------------------------------------------------------------------

_OPEN_AT = """
import sys, time
from pathlib import Path
from llm4all.localdocs.db import connect
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
connect(Path(sys.argv[1])).close()
"""


def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path: Path) -> None:
    """Each process migrates under the write lock, re-reading the version (4 in 10 failed)."""
    for round_ in range(3):
        path = tmp_path / f"round{round_}" / "localdocs.db"
        start = time.time() + 3  # every process imports llm4all first, then opens together
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_AT, str(path), str(start)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        errors = [c.communicate(timeout=120)[1] for c in children]
        assert [c.returncode for c in children] == [0] * 6, errors
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.close()


@pytest.mark.slow
def test_concurrent_docs_commands_on_a_fresh_home(
    tmp_path: Path, folder: Path, embedding_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docs add``, ``docs index`` and ``docs watch`` at once: no traceback, all indexed once."""
    for round_ in range(2):
        monkeypatch.setenv("LLM4ALL_HOME", str(tmp_path / f"home{round_}"))
        commands = [
            ["docs", "add", "a", str(folder)],
            ["docs", "index"],
            ["docs", "add", "a", str(folder)],
            ["docs", "index", "a"],
        ]
        children = [
            subprocess.Popen(
                [*CLI, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
            )
            for c in commands
        ]
        results = [(c.args, *c.communicate(timeout=300), c.returncode) for c in children]
        for args, _out, err, rc in results:
            assert "Traceback" not in err, (args, err)
            # `docs index a` may start before any `docs add` made the collection.
            assert rc == 0 or "no LocalDocs collection named 'a'" in err, (args, err)
        watch = subprocess.Popen(
            [*CLI, "docs", "watch", "a", "--interval", "0.2"],
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert watch.stderr is not None and "watching a" in watch.stderr.readline()
        (folder / f"late{round_}.md").write_text("The late note says the key is blue.")
        again = llm4all("docs", "add", "a", str(folder))
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
        watch.send_signal(signal.SIGINT)
        _, werr = watch.communicate(timeout=60)
        assert "Traceback" not in werr and watch.returncode in (0, 130), werr
        _check_database(tmp_path / f"home{round_}" / "localdocs.db", folder)


# -- two indexers in one database, interleaved at the worst moments ------------------------------


class PausingEmbedder:
    """The real embedder; on its first batch it calls ``on_first`` (to let another run act)."""

    lock = threading.Lock()  # one native embedder, two threads: one call at a time

    def __init__(self, inner: Embedder, on_first: Any = None) -> None:
        self.inner = inner
        self.on_first = on_first
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        with self.lock:
            return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> Any:
        self.calls += 1
        if self.calls == 1 and self.on_first is not None:
            self.on_first()
        with self.lock:
            return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> Any:
        with self.lock:
            return self.inner.embed_query(text)


class ProgressHook:
    """A progress sink that calls ``hook`` when the reading phase starts."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def start(self, total: int | None, description: str) -> None:
        if description.startswith("reading"):
            self.hook()

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


def test_two_indexers_on_the_same_new_files(
    tmp_path: Path, folder: Path, embedder: Embedder
) -> None:
    """A stores the new files while B embeds them: B's chunks must not vanish under it.

    Before the fix A replaced B's rows, and B's vectors failed with ``FOREIGN KEY
    constraint failed`` in ``embed_pending``.
    """
    db_path = tmp_path / "ld.db"
    b_embedding, a_stored = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def b_pauses() -> None:
        b_embedding.set()
        assert a_stored.wait(120)

    def run_b() -> None:
        try:
            e = PausingEmbedder(embedder, b_pauses)
            with LocalDocs(db_path, embedder_factory=lambda _: e) as b:
                b.index("home")
        except BaseException as exc:
            errors.append(exc)
            b_embedding.set()

    b_thread = threading.Thread(target=run_b)

    def a_has_listed_the_files() -> None:  # A's view of the files is now empty: start B
        b_thread.start()
        assert b_embedding.wait(120)

    a_embedder = PausingEmbedder(embedder, a_stored.set)
    with LocalDocs(db_path, embedder_factory=lambda _: a_embedder) as a:
        a.add("home", [folder])
        try:
            a.index("home", ProgressHook(a_has_listed_the_files))
        finally:
            a_stored.set()
            b_thread.join(120)
    assert errors == []
    _check_database(db_path, folder)


def test_a_file_replaced_while_another_run_embeds_it(
    tmp_path: Path, folder: Path, embedder: Embedder
) -> None:
    """B re-reads a changed file while A embeds its old chunks: A stores no vector for them."""
    db_path = tmp_path / "ld.db"

    def change_and_reindex() -> None:
        (folder / "note0.md").write_text("# Note 0\n\nThe box moved to the attic.\n")
        with LocalDocs(db_path, embedder_factory=lambda _: PausingEmbedder(embedder)) as b:
            b.index("home")

    a_embedder = PausingEmbedder(embedder, change_and_reindex)
    with LocalDocs(db_path, embedder_factory=lambda _: a_embedder) as a:
        a.add("home", [folder])
        a.index("home")
        hits = a.search(["home"], "where did the box move", k=1)
    assert "attic" in hits[0].text
    _check_database(db_path, folder)


def test_a_folder_added_during_a_run_is_kept(
    tmp_path: Path, folder: Path, embedder: Embedder
) -> None:
    """A listed the folders before B added one: A must not remove B's new files as gone."""
    db_path = tmp_path / "ld.db"
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "x.md").write_text("The spare key is under the flower pot.")
    shared = PausingEmbedder(embedder)
    with LocalDocs(db_path, embedder_factory=lambda _: shared) as setup:
        setup.add("home", [folder])

    def b_adds_a_folder(model: str) -> PausingEmbedder:  # A has its folder list by now
        with LocalDocs(db_path, embedder_factory=lambda _: shared) as b:
            b.add("home", [extra])
            b.index("home")
        return shared

    with LocalDocs(db_path, embedder_factory=b_adds_a_folder) as a:
        report = a.index("home")
        assert report.files_removed == 0
        assert {Path(p).name for p in _paths(db_path)} >= {"x.md", "note0.md"}


def _paths(db_path: Path) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        return [r[0] for r in conn.execute("SELECT path FROM files")]
    finally:
        conn.close()


def test_a_collection_removed_during_a_run_is_a_clear_error(
    tmp_path: Path, folder: Path, embedder: Embedder
) -> None:
    db_path = tmp_path / "ld.db"
    shared = PausingEmbedder(embedder)

    def removed_meanwhile() -> None:
        with LocalDocs(db_path, embedder_factory=lambda _: shared) as b:
            b.remove("home")

    with LocalDocs(db_path, embedder_factory=lambda _: shared) as a:
        a.add("home", [folder])
        with pytest.raises(CollectionNotFound, match="no LocalDocs collection named 'home'"):
            a.index("home", ProgressHook(removed_meanwhile))
        assert a.names() == []
    assert _paths(db_path) == []


# -- storage errors: one line, no traceback, nothing lost -----------------------------------------


@pytest.mark.slow
def test_a_database_locked_by_another_writer_is_one_line(
    isolated_home: Path, folder: Path, embedding_model_path: Path
) -> None:
    db_path = isolated_home / "localdocs.db"
    with LocalDocs(db_path):
        pass  # created and migrated
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that keeps the lock past the timeout
    try:
        res = llm4all("docs", "add", "a", str(folder))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: database ") and "locked" in last, res.stderr
    assert llm4all("docs", "add", "a", str(folder)).returncode == 0  # and it works afterwards
    _check_database(db_path, folder)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_index_survives(
    small_disk: Path, tmp_path: Path, embedding_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(60):  # ~2 MB of text, more than the 2 MiB disk holds once indexed
        (big / f"f{i}.txt").write_text(
            "\n\n".join(f"Paragraph {j} of file {i} about topic {i * j}. " * 8 for j in range(100))
        )
    monkeypatch.setenv("LLM4ALL_HOME", str(small_disk))
    res = llm4all("docs", "add", "big", str(big))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: database ") and "full" in last, res.stderr
    conn = sqlite3.connect(small_disk / "localdocs.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT name FROM collections").fetchall() == [("big",)]
    conn.close()
    listed = llm4all("docs", "ls")
    assert listed.returncode == 0 and "big" in listed.stdout, listed.stderr


# -- what is printed and what is read ------------------------------------------------------------


def test_names_with_control_characters_stay_on_one_line(
    tmp_path: Path, embedding_model_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "two\nlines.md").write_text("The vault code is kept by Mirela.")
    (notes / "bad\x1b[31m\nname.json").write_text("{oops")  # fails: listed with its reason
    added = llm4all("docs", "add", "n", str(notes))
    assert added.returncode == 0, added.stderr
    assert f"  failed {notes}/bad\\x1b[31m\\nname.json: invalid JSON" in added.stderr
    listed = llm4all("docs", "ls")
    assert listed.returncode == 0, listed.stderr
    assert f"  failed {notes}/bad\\x1b[31m\\nname.json: invalid JSON" in listed.stdout
    assert "\x1b" not in listed.stdout and len(listed.stdout.splitlines()) == 3
    found = llm4all("docs", "search", "n", "who keeps the vault code", "-k", "1")
    first = found.stdout.splitlines()[0]
    assert first == f"[1] {notes}/two\\nlines.md, line 1", found.stdout
    assert found.stdout.count("\n") == 2  # the source line and its excerpt


def test_files_without_a_known_extension_are_read_and_skips_are_explained(
    tmp_path: Path, embedding_model_path: Path
) -> None:
    """``docs add licenses /usr/share/common-licenses`` said "0 files" and nothing else."""
    licenses = tmp_path / "licenses"
    licenses.mkdir()
    (licenses / "GPL-3").write_text("GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n")
    (licenses / "Apache-2.0").write_text("Apache License\nVersion 2.0, January 2004\n")
    (licenses / "LGPL-2.1").write_text("GNU LESSER GENERAL PUBLIC LICENSE\nVersion 2.1\n")
    (licenses / "blob").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 4)
    (licenses / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (licenses / ".cache").write_text("hidden")
    res = llm4all("docs", "add", "licenses", str(licenses))
    assert res.returncode == 0, res.stderr
    assert "licenses: 4 files (3 new or changed" in res.stderr, res.stderr
    assert "skipped 3: 1 hidden, 1 image, 1 binary (--verbose lists them)" in res.stderr
    found = llm4all("docs", "search", "licenses", "lesser general public license", "-k", "1")
    assert found.stdout.startswith(f"[1] {licenses}/LGPL-2.1"), found.stdout
    verbose = llm4all("docs", "index", "licenses", "-v")
    assert f"skipped {licenses}/blob: binary" in verbose.stderr, verbose.stderr
    listed = llm4all("docs", "ls")
    assert "3 files" in listed.stdout and "skipped 1: 1 binary" in listed.stdout, listed.stdout


def test_invalid_utf8_is_read_as_utf8_and_noted(tmp_path: Path, embedder: Embedder) -> None:
    """One broken byte in a UTF-8 file used to turn all of it into cp1252 mojibake, silently."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "menu.txt").write_bytes("Le café crème coûte 3 €.\n".encode() + b"\xff broken\n")
    e = PausingEmbedder(embedder)
    with LocalDocs(tmp_path / "ld.db", embedder_factory=lambda _: e) as docs:
        docs.add("n", [notes])
        report = docs.index("n")
        text = docs.search(["n"], "café crème", k=1)[0].text
        info = docs.info("n")
    assert "café crème coûte 3 €" in text and "\ufffd broken" in text
    assert report.notes == [(str(notes / "menu.txt"), "1 invalid UTF-8 byte shown as \ufffd")]
    assert info.notes == report.notes


def test_printable_escapes_what_would_break_a_line() -> None:
    from llm4all.display import printable

    assert (
        printable("a\nb\tc\x1b[31m\u202egnp.exe\udcff") == "a\\nb\\tc\\x1b[31m\\u202egnp.exe\\udcff"
    )
    assert printable("café › notes [1].md") == "café › notes [1].md"
