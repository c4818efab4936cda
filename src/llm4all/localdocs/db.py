"""The LocalDocs database: one SQLite file holds collections, files, chunks, keywords and vectors.

Tables:

- ``collections`` (name, embedding model, a ``version`` bumped whenever its
  vectors change) and ``folders`` (the folders a collection may read);
- ``files``: one row per indexed file with its size, mtime and sha256 (what
  incremental indexing compares), its state (``chunked`` → ``indexed``;
  ``failed`` with the reason; ``skipped`` with why, for a file that is not
  text), its chunk count and a ``note`` (how its text was decoded, when a
  user should know);
- ``chunks``: the text of each chunk with its heading, page and line range;
- ``chunks_fts``: an FTS5 index over (title, text) that stores no second copy
  of the text (``content='chunks'``), kept in step by triggers;
- ``vectors``: one float16 embedding per chunk, written once, after its chunk.

A chunk and its vector are separate rows so that embedding appends rows
instead of rewriting the pages of the chunk text: the bytes written stay
proportional to the text indexed. WAL mode lets a search read while an
indexing run writes. Opening, locking and ordered migrations are
:mod:`llm4all.sqlite`'s, the same as the chat store's, so a ``docs add``, a
``docs index``, a ``docs watch`` and the server may all open a fresh file at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llm4all import paths, sqlite
from llm4all.sqlite import Migration, write_transaction

__all__ = ["MIGRATIONS", "bump_version", "connect", "default_path", "write_transaction"]

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


def _statements(script: str) -> list[str]:
    """The statements of a SQL script (``executescript`` would commit the migration's lock away)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _m001_initial(conn: sqlite3.Connection) -> None:
    """Collections, folders, files, chunks, vectors and the full-text index."""
    for statement in _statements(_M001_INITIAL):
        conn.execute(statement)


def _m002_file_notes(conn: sqlite3.Connection) -> None:
    """``files.note``: what a user should know about a file that was indexed (its encoding)."""
    conn.execute("ALTER TABLE files ADD COLUMN note TEXT")


#: The schema's history; index i holds the migration to version i + 1.
MIGRATIONS: list[Migration] = [_m001_initial, _m002_file_notes]


def default_path() -> Path:
    """``$LLM4ALL_HOME/localdocs.db``."""
    return paths.home() / "localdocs.db"


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the LocalDocs database at ``path``; rows are ``sqlite3.Row``.

    Raises :class:`~llm4all.errors.StoreError` as :func:`llm4all.sqlite.connect` does.
    """
    conn = sqlite.connect(path, MIGRATIONS)
    conn.row_factory = sqlite3.Row
    # An index is rebuilt from the files: a power cut may lose its last commits, never corrupt it.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def bump_version(conn: sqlite3.Connection, collection_id: int) -> None:
    """Tell vector caches that this collection's vectors changed."""
    conn.execute("UPDATE collections SET version = version + 1 WHERE id = ?", (collection_id,))
