"""Opening an llm4all SQLite database and migrating its schema: one way for every database.

The chat store (``llm4all.db``) and LocalDocs (``localdocs.db``) are each
shared by several processes at once (the terminal chat, ``docs watch``, the
CLI, the server), so every connection:

- runs in WAL mode (readers never block the one writer, and vice versa);
- waits up to :data:`BUSY_TIMEOUT_MS` for a lock instead of failing at once;
- enforces foreign keys;
- is in autocommit mode, so each write is one short explicit transaction
  (:func:`write_transaction`) and nothing is held open between calls.

A schema evolves through an ordered list of small functions in the manner of
simonw/llm: migration *n* (1-based) brings the database to ``PRAGMA
user_version = n``. Migrations never change once released. They run under
``BEGIN IMMEDIATE`` and the version is read again under that lock, so two
processes opening a fresh file at once never both create its tables; a
database whose version is newer than the list refuses to open rather than
being misread.

SQLite failures become :class:`~llm4all.errors.StoreError` through
:func:`storage_error`: a lock held too long is :class:`StorageBusy`, a full disk
:class:`StorageFull` (retry later), anything else one line naming the file.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from llm4all.errors import StorageBusy, StorageFull, StoreError

log = logging.getLogger(__name__)

#: How long a connection waits for another process's write to finish.
BUSY_TIMEOUT_MS = 10_000

Migration = Callable[[sqlite3.Connection], None]


def connect(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` and bring it to ``len(migrations)``.

    Raises :class:`StoreError` with a one-line reason when the file cannot be
    opened, is not a SQLite database, was written by a newer llm4all, or is
    locked or full.
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
        migrate(conn, path, migrations)
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise storage_error(path, exc) from exc
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = _switch_to_wal(conn)
    if mode != "wal":
        log.warning(
            "SQLite refused WAL mode (journal_mode=%s); concurrent use will be slower", mode
        )
    conn.execute("PRAGMA foreign_keys = ON")


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Put the file in WAL mode (it stays so) and say the mode it is in.

    Several processes switching a fresh file at once get SQLITE_BUSY at once:
    the switch needs an exclusive lock and SQLite does not wait for it through
    the busy handler. So the switch is retried, within the same time a lock
    is waited for elsewhere.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return mode
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    """Apply the migrations the database lacks, all in one transaction."""
    target = len(migrations)
    if user_version(conn) == target:
        return  # the common case: no write lock taken on open
    with write_transaction(conn):
        # Read again under the write lock: another process may have migrated meanwhile.
        current = user_version(conn)
        if current > target:
            raise StoreError(
                str(path),
                f"schema version {current} is newer than this llm4all supports "
                f"({target}); upgrade llm4all",
            )
        for number in range(current + 1, target + 1):
            log.info("migrating %s to schema version %d", path, number)
            migrations[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file."""
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


def storage_error(path: Path | str, exc: sqlite3.Error) -> StoreError:
    """The :class:`StoreError` for a SQLite failure; a lock held too long and a full disk
    get their own classes, so that callers can tell "try again later" from a real fault.

    Example: ``storage_error(p, sqlite3.OperationalError("database is locked"))`` is a
    :class:`StorageBusy`.
    """
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    text = str(exc)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
        return StorageBusy(str(path), BUSY_TIMEOUT_MS / 1000)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return StorageFull(str(path))
    return StoreError(str(path), _describe(exc) if isinstance(exc, sqlite3.DatabaseError) else text)


def _describe(exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"not a valid SQLite database ({text}); move it aside to start afresh"
    return text
