"""Opening the llm4all database and migrating its schema.

One SQLite file is shared by the terminal chat, the web UI and the HTTP server,
possibly from several processes at once. So every connection:

- runs in WAL mode (readers never block the one writer, and vice versa);
- waits up to :data:`BUSY_TIMEOUT_MS` for a lock instead of failing at once;
- enforces foreign keys (a chat's messages go with it);
- is in autocommit mode, so each write is one short explicit transaction
  (:func:`write_transaction`) and nothing is held open between calls.

The schema evolves through :data:`MIGRATIONS`, an ordered list of small
functions in the manner of simonw/llm: migration *n* (1-based) brings the
database to ``PRAGMA user_version = n``. Migrations never change once released;
a change of schema is a new function at the end of the list. A database whose
version is newer than the list refuses to open rather than being misread.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llm4all.errors import StoreError

log = logging.getLogger(__name__)

#: How long a connection waits for another process's write to finish.
BUSY_TIMEOUT_MS = 10_000

Migration = Callable[[sqlite3.Connection], None]


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
    """Open (creating if needed) and migrate the database at ``path``.

    Raises :class:`StoreError` with a one-line reason when the file cannot be
    opened, is not a SQLite database, or was written by a newer llm4all.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; writes open their own transaction.
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(str(path), f"cannot open: {exc}") from exc
    try:
        _configure(conn)
        migrate(conn, path)
    except StoreError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(str(path), _describe(exc)) from exc
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    # busy_timeout first: switching to WAL itself may have to wait for a lock.
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        log.warning(
            "SQLite refused WAL mode (journal_mode=%s); concurrent use will be slower", mode
        )
    conn.execute("PRAGMA foreign_keys = ON")


def _describe(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"not a valid SQLite database ({text}); move it aside to start afresh"
    return text


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the database lacks, each batch in one transaction."""
    target = schema_version()
    if _user_version(conn) == target:
        return  # the common case: no write lock taken on open
    with write_transaction(conn):
        # Read again under the write lock: another process may have migrated meanwhile.
        current = _user_version(conn)
        if current > target:
            raise StoreError(
                str(path),
                f"schema version {current} is newer than this llm4all supports "
                f"({target}); upgrade llm4all",
            )
        for number in range(current + 1, target + 1):
            log.info("migrating %s to schema version %d", path, number)
            MIGRATIONS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")


def has_fts(conn: sqlite3.Connection) -> bool:
    """Whether this database has the full-text index (SQLite built with FTS5)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts'"
    ).fetchone()
    return row is not None


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One short write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``.

    IMMEDIATE takes the write lock up front, so two processes never both read
    and then both try to upgrade to writing (which would fail with SQLITE_BUSY
    instead of waiting).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite rolls back by itself after some errors (a full disk, say).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
