"""The chat store's schema: chats, messages (with ratings and citations), settings.

Opening, WAL, the busy timeout, migrations under ``BEGIN IMMEDIATE`` and the
translation of SQLite errors are :mod:`llm4all.sqlite`'s, shared with
LocalDocs. This module holds what is the chat store's own: :data:`MIGRATIONS`,
an ordered list of small functions (migration *n* brings the database to
``PRAGMA user_version = n``; released ones never change), and
:func:`has_fts`.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from llm4all import sqlite
from llm4all.sqlite import BUSY_TIMEOUT_MS, Migration, storage_error, write_transaction

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "connect",
    "has_fts",
    "schema_version",
    "storage_error",
    "write_transaction",
]

log = logging.getLogger(__name__)


def _m001_initial(conn: sqlite3.Connection) -> None:
    """Chats, messages (with ratings and citations), settings."""
    conn.execute(
        """
        CREATE TABLE chats (
            id            TEXT PRIMARY KEY,
            title         TEXT,
            model         TEXT,
            system_prompt TEXT,
            params        TEXT NOT NULL DEFAULT '{}',
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX chats_updated_at ON chats (updated_at)")
    # ``seq`` is an explicit INTEGER PRIMARY KEY because the full-text index is
    # keyed on rowids, and VACUUM may renumber implicit rowids.
    conn.execute(
        """
        CREATE TABLE messages (
            seq                 INTEGER PRIMARY KEY,
            id                  TEXT NOT NULL UNIQUE,
            chat_id             TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
            position            INTEGER NOT NULL,
            role                TEXT NOT NULL
                                CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            content             TEXT NOT NULL,
            model               TEXT,
            created_at          TEXT NOT NULL,
            finish_reason       TEXT,
            prompt_tokens       INTEGER,
            completion_tokens   INTEGER,
            tokens_per_second   REAL,
            time_to_first_token REAL,
            sources             TEXT,
            rating              INTEGER CHECK (rating IN (-1, 1)),
            UNIQUE (chat_id, position)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """
    )
    _create_fts(conn)


def _create_fts(conn: sqlite3.Connection) -> None:
    """A full-text index over message contents, kept in sync by triggers.

    It is an external-content table, so the text is stored once (in
    ``messages``). Where SQLite was built without FTS5 the index is skipped
    and search falls back to LIKE (see :func:`has_fts`).
    """
    try:
        conn.execute(
            "CREATE VIRTUAL TABLE messages_fts USING fts5("
            "content, content='messages', content_rowid='seq', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
    except sqlite3.OperationalError as exc:
        log.warning("full-text search unavailable (%s); searching with LIKE", exc)
        return
    conn.execute(
        """
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content);
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', old.seq, old.content);
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', old.seq, old.content);
            INSERT INTO messages_fts (rowid, content) VALUES (new.seq, new.content);
        END
        """
    )


#: The schema's history; index i holds the migration to version i + 1.
MIGRATIONS: list[Migration] = [_m001_initial]


def schema_version() -> int:
    """The schema version this code writes (the number of migrations)."""
    return len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the chat database at ``path`` (see
    :func:`llm4all.sqlite.connect` for the errors it raises)."""
    return sqlite.connect(path, MIGRATIONS)


def has_fts(conn: sqlite3.Connection) -> bool:
    """Whether this database has the full-text index (SQLite built with FTS5)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'"
    ).fetchone()
    return row is not None
