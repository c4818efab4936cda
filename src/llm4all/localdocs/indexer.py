"""Incremental indexing of one collection: walk, read, chunk, embed — and resume.

An indexing run has two phases, each committed in steps, so a run that is
killed loses at most one group of files read (about a megabyte of text, cheap
to read again) or one batch of vectors, and the next run goes on:

1. **Read.** Walk the collection's folders. A file whose size and mtime match
   its row is unchanged and is not opened. Otherwise it is read and hashed; if
   the hash is the one recorded, only the mtime is updated (a ``touch`` costs
   nothing). A changed or new file is loaded, chunked and written (state
   ``chunked``), replacing its old chunks, with the files read before it in
   one transaction per megabyte of text. A file that
   fails to load is recorded as ``failed`` with its reason, one that is not
   text as ``skipped`` with why; the run goes on. Files that disappeared leave
   the index with their chunks and vectors.
2. **Embed.** Every chunk of the collection that has no vector yet is
   embedded, a batch at a time, and its vector stored. Files whose chunks all
   have vectors become ``indexed``.

Walking is confined: a path whose real location is outside the collection's
folders is never read (a symlink pointing elsewhere is skipped), and each
directory is entered once (by device and inode), so symlink loops end. Every
path not indexed is reported with why (hidden, an image, binary, …).

Several indexers may run at once on one database (``docs watch``, ``docs
index``, the server): each write re-checks, under the write lock, what it
read before it (a file row another indexer stored meanwhile is kept, a chunk
deleted meanwhile gets no vector, a collection removed meanwhile stops the
run), so they duplicate some work at worst, never each other's rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from llm4all.errors import CollectionNotFound
from llm4all.localdocs import db
from llm4all.localdocs.chunking import MAX_TOKENS, OVERLAP, Chunk, chunk_blocks
from llm4all.localdocs.loaders import (
    MAX_FILE_BYTES,
    SNIFF_BYTES,
    LoadFailed,
    NotText,
    known_type,
    load_document,
    looks_binary,
    media_type,
)
from llm4all.localdocs.search import encode_vector

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # chunks per engine call (and per commit)
#: Characters of text read and chunked per commit in phase 1 (see :func:`read_files`).
COMMIT_CHARS = 1_000_000
COMMIT_FILES = 1_000


class Progress(Protocol):
    """The same small protocol as model downloads; here ``total`` counts files or chunks."""

    def start(self, total: int | None, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def done(self) -> None: ...


class ChunkEmbedder(Protocol):
    """What LocalDocs needs from an embedder (``llm4all.Embedder`` has it)."""

    def count_tokens(self, text: str) -> int: ...
    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...
    def embed_query(self, text: str) -> npt.NDArray[np.float32]: ...


@dataclass
class IndexReport:
    """What one indexing run did."""

    collection: str
    files_seen: int = 0
    files_unchanged: int = 0
    files_changed: int = 0
    files_removed: int = 0
    files_failed: int = 0
    chunks_added: int = 0
    chunks_embedded: int = 0
    chars_read: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: Every path not indexed because of what it is, and why (hidden, image, binary, …).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Files indexed with something to know, and what (their text's encoding was a guess).
    notes: list[tuple[str, str]] = field(default_factory=list)


class _NoProgress:
    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


# -- walking ------------------------------------------------------------------------------


def inside(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` (already real) lies in one of ``roots`` (already real).

    Example: ``inside("/a/b/c.txt", ["/a/b"])`` is true, ``inside("/a/bc", ["/a/b"])`` is not.
    """
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def walk(
    folders: Sequence[str], skipped: list[tuple[str, str]] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``folders`` (real paths, each once), never leaving them.

    Hidden files and folders (``.git``, ``.venv``, …), media files (images,
    audio, video, fonts), links that point outside the folders and special
    files are not yielded but appended to ``skipped`` with the reason.
    """
    skip = skipped if skipped is not None else []
    roots = [os.path.realpath(f) for f in folders]
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    stack = [r for r in roots if os.path.isdir(r)]
    for r in roots:
        if os.path.isfile(r) and r not in seen_files:
            seen_files.add(r)
            if (media := media_type(Path(r))) is not None:
                skip.append((r, media))
            else:
                yield r, os.stat(r)
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue  # a symlink loop or a second way to the same folder
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.info("cannot list %s: %s", folder, exc)
            skip.append((folder, "unreadable folder"))
            continue
        for entry in entries:
            found = _entry(entry, roots, skip)
            if found is None:
                continue
            real, st = found
            if stat.S_ISDIR(st.st_mode):
                stack.append(real)
            elif real not in seen_files:
                seen_files.add(real)
                yield real, st


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entry(
    entry: os.DirEntry[str], roots: Sequence[str], skip: list[tuple[str, str]]
) -> tuple[str, os.stat_result] | None:
    """A folder to enter or a file to read (real path and stat), or None (recorded in ``skip``)."""
    if entry.name.startswith("."):
        skip.append((entry.path, "hidden"))
        return None
    if not _utf8(entry.path):  # undecodable bytes: SQLite could not store the path
        skip.append((entry.path, "name is not valid UTF-8"))
        return None
    real = os.path.realpath(entry.path)
    if not inside(real, roots):
        log.info("skipping %s: it points outside the collection's folders", entry.path)
        skip.append((entry.path, "outside the folders"))
        return None
    try:
        st = os.stat(real)
    except OSError:
        skip.append((entry.path, "broken link"))
        return None
    if stat.S_ISDIR(st.st_mode):
        return real, st
    if not stat.S_ISREG(st.st_mode):
        skip.append((entry.path, "not a regular file"))
        return None
    if (media := media_type(Path(real))) is not None:
        skip.append((real, media))
        return None
    return real, st


# -- phase 1: read and chunk --------------------------------------------------------------


def _title(path: str, heading: str) -> str:
    return f"{Path(path).name} › {heading}" if heading else Path(path).name


@dataclass
class _Read:
    """What reading one file produced, waiting to be written with its neighbours."""

    path: str
    st: os.stat_result
    digest: str | None
    chunks: list[Chunk]
    error: str | None
    touched_id: int | None = None  # same content, new mtime: only the mtime is written
    state: str = "chunked"  # or "failed" / "skipped" (with ``error`` saying why)
    note: str | None = None


def read_files(
    conn: sqlite3.Connection,
    collection_id: int,
    folders: Sequence[str],
    embedder: ChunkEmbedder,
    report: IndexReport,
    progress: Progress,
    chunking: tuple[int, int] = (MAX_TOKENS, OVERLAP),
) -> None:
    """Phase 1: bring the ``files`` and ``chunks`` of a collection up to date with the disk.

    Files are written in groups of up to :data:`COMMIT_CHARS` characters (or
    :data:`COMMIT_FILES` files): each commit rewrites some pages (the FTS5
    segment structure, b-tree leaves), so this phase wrote ~14 bytes per byte of
    text committing file by file and writes ~2 in groups
    (tests/test_localdocs_index.py). A killed run re-reads one group.
    """
    known = {
        r["path"]: r
        for r in conn.execute("SELECT * FROM files WHERE collection_id = ?", (collection_id,))
    }
    found = list(walk(folders, report.skipped))
    report.files_seen = len(found)
    pending: list[_Read] = []
    pending_chars = 0
    progress.start(len(found), f"reading {report.collection}")
    try:
        for path, st in found:
            read = _read_one(path, st, known.get(path), embedder, report, chunking)
            if read is not None:
                pending.append(read)
                pending_chars += sum(len(c.text) for c in read.chunks)
            if pending_chars >= COMMIT_CHARS or len(pending) >= COMMIT_FILES:
                _store(conn, collection_id, report.collection, pending)
                pending_chars = 0
            progress.advance(1)
        _store(conn, collection_id, report.collection, pending)
    finally:
        progress.done()
    _remove_gone(conn, collection_id, folders, set(known) - {p for p, _ in found}, report)


def _remove_gone(
    conn: sqlite3.Connection,
    collection_id: int,
    walked: Sequence[str],
    gone: set[str],
    report: IndexReport,
) -> None:
    """Forget the files that were indexed but are no longer found.

    Under the write lock, a file that exists again, or lies in a folder another
    process added to the collection after this run listed its folders, stays.
    """
    if not gone:
        return
    walked_roots = [os.path.realpath(f) for f in walked]
    with db.write_transaction(conn):
        roots = [
            os.path.realpath(r[0])
            for r in conn.execute(
                "SELECT path FROM folders WHERE collection_id = ?", (collection_id,)
            )
        ]
        stale = [
            p
            for p in gone
            if inside(p, walked_roots) and not (inside(p, roots) and os.path.isfile(p))
        ]
        if stale:
            conn.executemany(
                "DELETE FROM files WHERE collection_id = ? AND path = ?",
                [(collection_id, p) for p in stale],
            )
            db.bump_version(conn, collection_id)
    report.files_removed = len(stale)


def _read_one(
    path: str,
    st: os.stat_result,
    row: sqlite3.Row | None,
    embedder: ChunkEmbedder,
    report: IndexReport,
    chunking: tuple[int, int],
) -> _Read | None:
    """Read, hash, load and chunk one file (None: unchanged, nothing to write)."""
    if row is not None and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
        if row["state"] == "skipped":
            report.skipped.append((path, row["error"]))
        else:
            report.files_unchanged += 1
        return None
    try:
        if st.st_size > MAX_FILE_BYTES:
            raise NotText(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = _read_bytes(Path(path))
        digest = hashlib.sha256(data).hexdigest()
        if row is not None and row["sha256"] == digest and row["state"] in ("chunked", "indexed"):
            report.files_unchanged += 1
            return _Read(path, st, digest, [], None, touched_id=row["id"])
        document = load_document(Path(path), data)
        chunks = chunk_blocks(document.blocks, embedder.count_tokens, *chunking)
        if not chunks:
            raise LoadFailed("no text found")
    except NotText as exc:
        report.skipped.append((path, exc.reason))
        return _Read(path, st, None, [], exc.reason, state="skipped")
    except (LoadFailed, OSError, ValueError, RecursionError) as exc:
        error = exc.reason if isinstance(exc, LoadFailed) else f"{type(exc).__name__}: {exc}"
        report.failures.append((path, error))
        report.files_failed += 1
        return _Read(path, st, None, [], error, state="failed")
    if document.note is not None:
        report.notes.append((path, document.note))
    report.files_changed += 1
    report.chunks_added += len(chunks)
    report.chars_read += sum(len(c.text) for c in chunks)
    return _Read(path, st, digest, chunks, None, note=document.note)


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; one whose type its name does not tell is read whole only if it is text."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
        if not known_type(path) and looks_binary(head):
            raise NotText("binary")
        return head + f.read()


def _store(conn: sqlite3.Connection, collection_id: int, name: str, pending: list[_Read]) -> None:
    """Write the files read so far, each replacing its old row and chunks, in one transaction."""
    if not pending:
        return
    with db.write_transaction(conn):
        _require_collection(conn, collection_id, name)
        for r in pending:
            if r.touched_id is not None:
                conn.execute(
                    "UPDATE files SET mtime_ns = ? WHERE id = ?", (r.st.st_mtime_ns, r.touched_id)
                )
            else:
                _store_file(conn, collection_id, r)
        db.bump_version(conn, collection_id)
    pending.clear()


def _require_collection(conn: sqlite3.Connection, collection_id: int, name: str) -> None:
    """Raise :class:`CollectionNotFound` if another process removed the collection meanwhile."""
    if conn.execute("SELECT 1 FROM collections WHERE id = ?", (collection_id,)).fetchone() is None:
        raise CollectionNotFound(name)


def _store_file(conn: sqlite3.Connection, collection_id: int, r: _Read) -> None:
    """Replace a file's row and chunks (inside the caller's transaction).

    When another indexer stored this very version of the file (same size and
    mtime) since this run looked, its row stays: replacing it would delete the
    chunks that indexer is embedding.
    """
    current = conn.execute(
        "SELECT size, mtime_ns FROM files WHERE collection_id = ? AND path = ?",
        (collection_id, r.path),
    ).fetchone()
    if current is not None and tuple(current) == (r.st.st_size, r.st.st_mtime_ns):
        return
    conn.execute("DELETE FROM files WHERE collection_id = ? AND path = ?", (collection_id, r.path))
    cur = conn.execute(
        """INSERT INTO files (collection_id, path, size, mtime_ns, sha256, state, error,
                              n_chunks, n_chars, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            collection_id,
            r.path,
            r.st.st_size,
            r.st.st_mtime_ns,
            r.digest,
            r.state,
            r.error,
            len(r.chunks),
            sum(len(c.text) for c in r.chunks),
            r.note,
        ),
    )
    file_id = cur.lastrowid
    conn.executemany(
        """INSERT INTO chunks (file_id, ordinal, title, text, heading, page, line_start,
                               line_end, n_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (
                file_id,
                i,
                _title(r.path, c.heading),
                c.text,
                c.heading,
                c.page,
                c.line_start,
                c.line_end,
                c.n_tokens,
            )
            for i, c in enumerate(r.chunks)
        ],
    )


# -- phase 2: embed -----------------------------------------------------------------------------


def embed_pending(
    conn: sqlite3.Connection,
    collection_id: int,
    embedder: ChunkEmbedder,
    report: IndexReport,
    progress: Progress,
    batch: int = EMBED_BATCH,
) -> None:
    """Phase 2: give every chunk of the collection without a vector its vector."""
    pending_sql = """FROM chunks c JOIN files f ON f.id = c.file_id
                     LEFT JOIN vectors v ON v.chunk_id = c.id
                     WHERE f.collection_id = ? AND v.chunk_id IS NULL"""
    total = conn.execute(f"SELECT COUNT(*) {pending_sql}", (collection_id,)).fetchone()[0]
    if total:
        progress.start(total, f"embedding {report.collection}")
        try:
            last = -1
            while True:
                rows = conn.execute(
                    f"SELECT c.id, c.title, c.text {pending_sql} AND c.id > ? ORDER BY c.id LIMIT ?",
                    (collection_id, last, batch),
                ).fetchall()
                if not rows:
                    break
                vectors = embedder.embed_documents([f"{r['title']}\n{r['text']}" for r in rows])
                with db.write_transaction(conn):
                    # Only chunks that still exist (another indexer may have replaced the
                    # file meanwhile), once (or it may have embedded them too).
                    conn.executemany(
                        """INSERT OR IGNORE INTO vectors (chunk_id, embedding)
                           SELECT id, ? FROM chunks WHERE id = ?""",
                        [(encode_vector(v), r["id"]) for r, v in zip(rows, vectors, strict=True)],
                    )
                    db.bump_version(conn, collection_id)
                last = rows[-1]["id"]
                report.chunks_embedded += len(rows)
                progress.advance(len(rows))
        finally:
            progress.done()
    with db.write_transaction(conn):
        conn.execute(
            """UPDATE files SET state = 'indexed' WHERE collection_id = ? AND state = 'chunked'
               AND NOT EXISTS (SELECT 1 FROM chunks c LEFT JOIN vectors v ON v.chunk_id = c.id
                               WHERE c.file_id = files.id AND v.chunk_id IS NULL)""",
            (collection_id,),
        )
