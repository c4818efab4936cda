"""Where the datalake keeps shared chats: SQLite by default, PostgreSQL for a real deployment.

One schema, one migration list and one set of queries serve both backends;
the SQL differences live in :class:`Dialect` and nowhere else (the parameter
mark, the auto-increment key, and how a writer takes the lock that makes the
read-then-write of an ingest atomic). SQLite opens through
:mod:`llm4all.sqlite` (WAL, busy timeout, migrations under ``BEGIN
IMMEDIATE``); PostgreSQL runs the same migrations under an advisory lock and
records the version in ``datalake_schema``.

An ingest is keyed by ``(submitter_id, ingest_id)`` and de-duplicated by
``(submitter_id, content_hash)``:

- a new ingest id with new content is **stored**;
- the same ingest id with changed content **replaces** the row (the client
  re-sent an edited or re-rated chat);
- the same content again, under any ingest id of the same submitter, is
  **unchanged** (or a **duplicate** of the row that holds it): stored once;
- ids are scoped to their submitter, so nobody can overwrite another
  submitter's chat by guessing its ingest id.

Identical chats of *different* submitters are kept apart (each can withdraw
their own); the export drops the copies. Every write is one short transaction,
committed before the service answers, so a chat acknowledged is a chat kept
(a process killed mid-request loses only what it never acknowledged, and the
client's retry of it lands as unchanged or stored, never twice).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from llm4all import sqlite as sqlite_helper
from llm4all.datalake.payload import ChatIngest, canonical_json
from llm4all.errors import StorageBusy, StoreError

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

T = TypeVar("T")

Outcome = Literal["stored", "replaced", "unchanged", "duplicate"]


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL of SQLite and PostgreSQL, in one place."""

    name: Literal["sqlite", "postgresql"]
    mark: str  # the parameter placeholder
    key: str  # an auto-increment primary key column

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` marks and ``{key}``, in this dialect."""
        return text.replace("{key}", self.key).replace("?", self.mark)


SQLITE = Dialect("sqlite", "?", "INTEGER PRIMARY KEY AUTOINCREMENT")
POSTGRESQL = Dialect("postgresql", "%s", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")

#: The schema's history, oldest first: migration n brings the database to version n.
#: Released migrations never change; add a new one instead.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE chats (
            id {key},
            submitter_id TEXT NOT NULL,
            ingest_id TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            source TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            attribution TEXT,
            payload TEXT NOT NULL,
            n_messages INTEGER NOT NULL,
            n_positive INTEGER NOT NULL,
            n_negative INTEGER NOT NULL,
            n_edited INTEGER NOT NULL,
            n_stopped INTEGER NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            UNIQUE (submitter_id, ingest_id),
            UNIQUE (submitter_id, content_hash)
        )""",
        "CREATE INDEX chats_by_hash ON chats (content_hash)",
        """CREATE TABLE withdrawals (
            id {key},
            submitter TEXT NOT NULL,
            chats INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
    ],
]

#: The PostgreSQL advisory lock that serialises migrations (an arbitrary constant).
_MIGRATION_LOCK = 0x11A4A11


def pseudonym(submitter_id: str) -> str:
    """The id an export shows instead of the submitter's own (which lets them withdraw).

    Example: ``pseudonym("abc")`` -> ``"ba7816bf8f01cfea"``.
    """
    return hashlib.sha256(submitter_id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class IngestResult:
    """What happened to one submission: ``outcome`` and the ingest id that now holds it."""

    outcome: Outcome
    ingest_id: str
    content_hash: str


@dataclass(frozen=True)
class StoredChat:
    """One stored row, as the export reads it."""

    id: int
    submitter_id: str
    ingest_id: str
    content_hash: str
    payload: dict[str, Any]
    received_at: float
    updated_at: float


def _counts(payload: ChatIngest) -> tuple[int, int, int, int, int]:
    items = payload.conversation
    return (
        len(items),
        sum(item.rating == "positive" for item in items),
        sum(item.rating == "negative" for item in items),
        sum(item.edited_content is not None for item in items),
        sum(item.stopped for item in items),
    )


class _Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class DatabaseUnavailable(StorageBusy):
    """The database server cannot be reached just now (restarting, or the network); retry."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, 0)
        self.reason = reason
        self.args = (f"database {where}: {reason}; try again shortly",)


class Storage:
    """The datalake's database: ``Storage.open("datalake.db")`` or ``open("postgresql://…")``.

    Safe to share between threads: each thread gets its own connection.
    """

    def __init__(self, dialect: Dialect, where: str, connect: Callable[[], Any]) -> None:
        self.dialect = dialect
        self.where = where  # for messages: the file, or the URL without its password
        self._connect = connect
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._conn()  # open (and migrate) now, so a bad --database fails at start

    @classmethod
    def open(cls, database: str | Path) -> Storage:
        """The storage at ``database``: a ``postgresql://`` URL, or a SQLite file path."""
        text = str(database)
        if text.startswith(("postgresql://", "postgres://")):
            return cls(POSTGRESQL, _redact(text), lambda: _pg_connect(text))
        path = Path(text).expanduser()
        return cls(SQLITE, str(path), lambda: _sqlite_connect(path))

    # -- connections and transactions ---------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self) -> None:
        """Forget this thread's connection (after PostgreSQL lost it); the next call reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            try:
                conn.close()
            except Exception:  # it is already broken; closing is a courtesy
                log.debug("closing a broken connection failed", exc_info=True)

    @contextmanager
    def _write(self, lock_key: str) -> Iterator[_Cursor]:
        """One write transaction that holds the lock for ``lock_key`` (a submitter)."""
        conn = self._conn()
        if self.dialect is SQLITE:
            with sqlite_helper.write_transaction(conn):  # BEGIN IMMEDIATE: the file's lock
                yield _SqlCursor(conn, self.dialect)
            return
        with conn.transaction():
            # Serialise writes of one submitter, so two requests never both insert a row.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [lock_key])
            yield _SqlCursor(conn, self.dialect)

    def _run(self, work: Callable[[], T]) -> T:
        """Run ``work`` turning driver errors into :class:`StoreError`; retry once on a
        PostgreSQL connection that was lost (every write here is idempotent)."""
        for attempt in (1, 2):
            try:
                return work()
            except sqlite3.Error as exc:
                raise sqlite_helper.storage_error(self.where, exc) from exc
            except Exception as exc:
                if not _is_pg_error(exc):
                    raise
                lost = _pg_connection_lost(exc)
                if lost:
                    self._drop()
                if lost and attempt == 1:
                    continue
                raise _pg_store_error(self.where, exc) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                log.debug("closing a connection failed", exc_info=True)
        self._local = threading.local()

    # -- the operations --------------------------------------------------------------------

    def ingest(self, payload: ChatIngest, now: float | None = None) -> IngestResult:
        """Store one checked payload (see the module docstring for the four outcomes)."""
        return self._run(lambda: self._ingest(payload, time.time() if now is None else now))

    def _ingest(self, payload: ChatIngest, now: float) -> IngestResult:
        submitter = payload.submitter_id
        ingest_id = payload.effective_ingest_id()
        digest = payload.content_hash()
        with self._write(submitter) as db:
            row = db.execute(
                "SELECT id, content_hash FROM chats WHERE submitter_id = ? AND ingest_id = ?",
                [submitter, ingest_id],
            ).fetchone()
            if row is not None and row[1] == digest:
                return IngestResult("unchanged", ingest_id, digest)
            same = db.execute(
                "SELECT ingest_id FROM chats WHERE submitter_id = ? AND content_hash = ?",
                [submitter, digest],
            ).fetchone()
            if same is not None:
                if row is not None:  # this ingest now equals another one: keep that one only
                    db.execute("DELETE FROM chats WHERE id = ?", [row[0]])
                return IngestResult("duplicate", str(same[0]), digest)
            values = [
                digest,
                payload.source,
                payload.agent_id,
                payload.attribution,
                canonical_json(payload.model_dump(mode="json")),
                *_counts(payload),
                now,
            ]
            if row is not None:
                db.execute(
                    "UPDATE chats SET content_hash = ?, source = ?, agent_id = ?, attribution = ?,"
                    " payload = ?, n_messages = ?, n_positive = ?, n_negative = ?, n_edited = ?,"
                    " n_stopped = ?, updated_at = ? WHERE id = ?",
                    [*values, row[0]],
                )
                return IngestResult("replaced", ingest_id, digest)
            db.execute(
                "INSERT INTO chats (content_hash, source, agent_id, attribution, payload,"
                " n_messages, n_positive, n_negative, n_edited, n_stopped, updated_at,"
                " submitter_id, ingest_id, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*values, submitter, ingest_id, now],
            )
            return IngestResult("stored", ingest_id, digest)

    def delete_submitter(self, submitter_id: str) -> int:
        """Delete every chat of one submitter (a withdrawal); returns how many."""

        def work() -> int:
            with self._write(submitter_id) as db:
                cursor = db.execute("DELETE FROM chats WHERE submitter_id = ?", [submitter_id])
                deleted = int(cursor.rowcount)
                db.execute(
                    "INSERT INTO withdrawals (submitter, chats, at) VALUES (?, ?, ?)",
                    [pseudonym(submitter_id), deleted, time.time()],
                )
                return deleted

        return self._run(work)

    def stats(self) -> dict[str, Any]:
        """Counts of what is stored: chats, submitters, messages, ratings, edits, per model."""

        def work() -> dict[str, Any]:
            db = _SqlCursor(self._conn(), self.dialect)
            totals = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT submitter_id), COALESCE(SUM(n_messages), 0),"
                " COALESCE(SUM(n_positive), 0), COALESCE(SUM(n_negative), 0),"
                " COALESCE(SUM(n_edited), 0), COALESCE(SUM(n_stopped), 0),"
                " COUNT(DISTINCT content_hash), MIN(received_at), MAX(updated_at) FROM chats"
            ).fetchone()
            models = db.execute(
                "SELECT agent_id, COUNT(*) FROM chats GROUP BY agent_id"
                " ORDER BY COUNT(*) DESC, agent_id LIMIT 20"
            ).fetchall()
            sources = db.execute(
                "SELECT source, COUNT(*) FROM chats GROUP BY source ORDER BY COUNT(*) DESC, source"
            ).fetchall()
            withdrawals = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(chats), 0) FROM withdrawals"
            ).fetchone()
            names = ("chats", "submitters", "messages", "positive", "negative", "edited")
            result: dict[str, Any] = {n: int(v) for n, v in zip(names, totals[:6], strict=True)}
            result["stopped"] = int(totals[6])
            result["distinct_contents"] = int(totals[7])
            result["first_received"] = _iso(totals[8])
            result["last_updated"] = _iso(totals[9])
            result["models"] = {str(name): int(n) for name, n in models}
            result["sources"] = {str(name): int(n) for name, n in sources}
            result["withdrawals"] = {"count": int(withdrawals[0]), "chats": int(withdrawals[1])}
            result["backend"] = self.dialect.name
            return result

        return self._run(work)

    def chats(self, batch: int = 500) -> Iterator[StoredChat]:
        """Every stored chat in the order received, read in batches (bounded memory)."""
        after = 0
        while True:
            rows = self._run(functools.partial(self._page, after, batch))
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].id

    def _page(self, after: int, batch: int) -> list[StoredChat]:
        db = _SqlCursor(self._conn(), self.dialect)
        rows = db.execute(
            "SELECT id, submitter_id, ingest_id, content_hash, payload, received_at, updated_at"
            " FROM chats WHERE id > ? ORDER BY id LIMIT ?",
            [after, batch],
        ).fetchall()
        return [
            StoredChat(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), float(r[5]), float(r[6]))
            for r in rows
        ]

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        self._run(lambda: _SqlCursor(self._conn(), self.dialect).execute("SELECT 1").fetchone())


class _SqlCursor:
    """Runs SQL written with ``?`` marks in the connection's dialect."""

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self.dialect.sql(sql), list(params))


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_migration(statements: list[str]) -> sqlite_helper.Migration:
    def migrate(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(SQLITE.sql(statement))

    return migrate


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    return sqlite_helper.connect(path, [_sqlite_migration(m) for m in MIGRATIONS])


# -- PostgreSQL ------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _pg_connect(url: str) -> psycopg.Connection[Any]:
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(_redact(url), f"cannot connect: {_first_line(exc)}") from exc
    try:
        _pg_migrate(conn, _redact(url))
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(_redact(url), f"cannot migrate: {_first_line(exc)}") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _pg_migrate(conn: psycopg.Connection[Any], where: str) -> None:
    """Apply the migrations the database lacks, under an advisory lock, in one transaction."""
    target = len(MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS datalake_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM datalake_schema").fetchone()
        current = int(row[0]) if row else 0
        if current > target:
            raise StoreError(
                where,
                f"schema version {current} is newer than this llm4all supports ({target}); "
                "upgrade llm4all",
            )
        for number in range(current + 1, target + 1):
            log.info("migrating %s to schema version %d", where, number)
            for statement in MIGRATIONS[number - 1]:
                conn.execute(POSTGRESQL.sql(statement).encode())
        if row is None:
            conn.execute("INSERT INTO datalake_schema (version) VALUES (%s)", [target])
        elif current != target:
            conn.execute("UPDATE datalake_schema SET version = %s", [target])


def _is_pg_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith("psycopg")


def _pg_connection_lost(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _pg_store_error(where: str, exc: BaseException) -> StoreError:
    """A lost or refused connection is "busy" (retry later); anything else names the fault."""
    if _pg_connection_lost(exc):
        return DatabaseUnavailable(where, f"connection lost ({_first_line(exc)})")
    return StoreError(where, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
