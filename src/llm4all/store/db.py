"""The chat store's schema: chats, messages (with ratings, edits and citations), settings,
and the queue of chats shared with the datalake.

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


def _m002_edited_content(conn: sqlite3.Connection) -> None:
    """A user's suggested better answer, kept beside the model's own (``content``)."""
    conn.execute("ALTER TABLE messages ADD COLUMN edited_content TEXT")


def _m003_share_queue(conn: sqlite3.Connection) -> None:
    """Chats shared with the datalake: what waits to be sent, and what was sent last.

    One row per shared chat (deleting the chat deletes it). ``payload`` is the
    exact JSON the user previewed; ``sent_hash`` the hash of the last payload
    the service accepted, so an unchanged chat is never sent again.
    ``next_attempt`` (Unix time) is the backoff; ``claimed_by`` (host:pid) and
    ``claimed_until`` keep two senders off one chat (see :mod:`llm4all.datalake.queue`).
    """
    conn.execute(
        """
        CREATE TABLE share_queue (
            chat_id      TEXT PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
            ingest_id    TEXT NOT NULL UNIQUE,
            state        TEXT NOT NULL
                         CHECK (state IN ('pending', 'sent', 'refused', 'withdrawn')),
            payload      TEXT NOT NULL,
            payload_hash TEXT NOT NULL,
            sent_hash    TEXT,
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL DEFAULT 0,
            claimed_by   TEXT,
            claimed_until REAL NOT NULL DEFAULT 0,
            last_error   TEXT,
            queued_at    TEXT NOT NULL,
            sent_at      TEXT
        )
        """
    )
    conn.execute("CREATE INDEX share_queue_due ON share_queue (state, next_attempt)")


#: The schema's history; index i holds the migration to version i + 1.
MIGRATIONS: list[Migration] = [_m001_initial, _m002_edited_content, _m003_share_queue]


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
