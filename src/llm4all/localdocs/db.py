"""The LocalDocs database: one SQLite file holds collections, files, chunks, keywords and vectors.

Tables:

- ``collections`` (name, embedding model, a ``version`` bumped whenever its
  vectors change) and ``folders`` (the folders a collection may read);
- ``files``: one row per indexed file with its size, mtime and sha256 (what
  incremental indexing compares), its state (``chunked`` → ``indexed``, or
  ``failed`` with the reason) and its chunk count;
- ``chunks``: the text of each chunk with its heading, page and line range;
- ``chunks_fts``: an FTS5 index over (title, text) that stores no second copy
  of the text (``content='chunks'``), kept in step by triggers;
- ``vectors``: one float16 embedding per chunk, written once, after its chunk.

A chunk and its vector are separate rows so that embedding appends rows
instead of rewriting the pages of the chunk text: the bytes written stay
proportional to the text indexed. WAL mode lets a search read while an
indexing run writes. Schema changes are ordered migrations, as in the chat store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llm4all import paths

_M001_INITIAL = """
        CREATE TABLE collections (
            id              INTEGER PRIMARY KEY,
            name            TEXT NOT NULL UNIQUE,
            embedding_model TEXT NOT NULL,
            created_at      TEXT NOT NULL,
            indexed_at      TEXT,
            version         INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE folders (
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            path          TEXT NOT NULL,
            PRIMARY KEY (collection_id, path)
        );
        CREATE TABLE files (
            id            INTEGER PRIMARY KEY,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            path          TEXT NOT NULL,
            size          INTEGER NOT NULL,
            mtime_ns      INTEGER NOT NULL,
            sha256        TEXT,
            state         TEXT NOT NULL,  -- chunked | indexed | failed
            error         TEXT,
            n_chunks      INTEGER NOT NULL DEFAULT 0,
            n_chars       INTEGER NOT NULL DEFAULT 0,
            UNIQUE (collection_id, path)
        );
        CREATE TABLE chunks (
            id         INTEGER PRIMARY KEY,
            file_id    INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            ordinal    INTEGER NOT NULL,
            title      TEXT NOT NULL,   -- file name and heading path, searched and embedded too
            text       TEXT NOT NULL,
            heading    TEXT NOT NULL,
            page       INTEGER,
            line_start INTEGER,
            line_end   INTEGER,
            n_tokens   INTEGER NOT NULL
        );
        CREATE INDEX chunks_by_file ON chunks(file_id);
        CREATE TABLE vectors (
            chunk_id  INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
            embedding BLOB NOT NULL     -- float16, little-endian
        );
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            title, text, content='chunks', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
        END;
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, title, text)
                VALUES ('delete', old.id, old.title, old.text);
        END;
"""

#: Each migration is one SQL script, run in its own transaction with the version bump.
MIGRATIONS: list[str] = [_M001_INITIAL]


def default_path() -> Path:
    """``$LLM4ALL_HOME/localdocs.db``."""
    return paths.home() / "localdocs.db"


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the LocalDocs database at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], version + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def bump_version(conn: sqlite3.Connection, collection_id: int) -> None:
    """Tell vector caches that this collection's vectors changed."""
    conn.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection_id,))
