"""The share queue: chats waiting to go to the datalake, kept in the chat store's SQLite file.

One row per shared chat (table ``share_queue``, migration 3 of
:mod:`llm4all.store.db`). The queue is what makes sharing work offline and
survive anything: a chat is queued in one committed transaction before any
network traffic, and a row only leaves the ``pending`` state in the
transaction that records the service's answer. So a program killed at any
point (``kill -9`` included) leaves each chat either still pending (sent
again by the next flush) or recorded as sent.

States: ``pending`` (waiting, or being retried), ``sent`` (the service took
``payload_hash``), ``refused`` (the service said no with a 4xx: retrying the
same payload would not help; sharing the chat again re-queues it) and
``withdrawn`` (pending when the user opted out: never sent; or deleted from the
service at the user's request by ``llm4all share withdraw``).

Never twice unless it changed: ``sent_hash`` is the content hash of the last
payload the service accepted; queueing a payload with that hash again does
nothing. The one unavoidable repeat is a send whose answer was lost (the
service stored it, then the client died before it could note that): the
next flush sends the same ``ingest_id`` and hash again, which the service
recognises as the same chat, so it is stored once.

Two senders (the web server's background flush and ``llm4all share flush``)
never send one chat at the same time: a sender *claims* a row for
:data:`LEASE_S` seconds (``claimed_by`` = host:pid). A claim whose process is
gone (killed) is taken over at once on the same host, and anywhere once the
lease ends. Failed sends wait longer each time (:func:`backoff`).
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from llm4all.store import db

STATES = ("pending", "sent", "refused", "withdrawn")
#: Seconds a sender holds a chat it is sending (longer than any one request takes).
LEASE_S = 120.0
#: The first retry waits about this long; each failure doubles it, up to BACKOFF_MAX_S.
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 6 * 3600.0

_COLUMNS = (
    "chat_id, ingest_id, state, payload, payload_hash, sent_hash, attempts, next_attempt,"
    " claimed_by, claimed_until, last_error, queued_at, sent_at"
)


@dataclass(frozen=True)
class QueuedChat:
    """One row of the queue."""

    chat_id: str
    ingest_id: str
    state: str
    payload: str  # the exact request body (the JSON the user previewed)
    payload_hash: str
    sent_hash: str | None
    attempts: int
    next_attempt: float
    claimed_by: str | None
    claimed_until: float
    last_error: str | None
    queued_at: str
    sent_at: str | None


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: doubling, capped, jittered.

    Example: ``backoff(1)`` is 15-30 s, ``backoff(3)`` 60-120 s, ``backoff(20)`` 3-6 h.
    The jitter spreads the retries of many clients after an outage.
    """
    full: float = min(BACKOFF_BASE_S * 2.0 ** max(attempts - 1, 0), BACKOFF_MAX_S)
    return full * (rng or random).uniform(0.5, 1.0)


def sender_name() -> str:
    """Who claims a row: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_is_stale(claimed_by: str | None, claimed_until: float, now: float) -> bool:
    """Whether a claim no longer holds: it ran out, or its process on this host is gone."""
    if claimed_by is None or claimed_until <= now:
        return True
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    import psutil

    return not psutil.pid_exists(int(pid))


class ShareQueue:
    """The queue in the chat database at ``path`` (its own connection; threads may share it)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = db.connect(self.path)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self.me = sender_name()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ShareQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with db.write_transaction(self._conn) as conn:
                    yield conn
            except sqlite3.Error as exc:
                raise db.storage_error(self.path, exc) from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise db.storage_error(self.path, exc) from exc

    # -- reading ---------------------------------------------------------------------------
    def get(self, chat_id: str) -> QueuedChat | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM share_queue WHERE chat_id = ?", (chat_id,)
            ).fetchone()
        return None if row is None else QueuedChat(**dict(row))

    def items(self) -> list[QueuedChat]:
        """Every shared chat, the most recently queued first."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM share_queue ORDER BY queued_at DESC"
            ).fetchall()
        return [QueuedChat(**dict(row)) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many chats are in each state (every state listed, 0 included)."""
        with self._reading() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM share_queue GROUP BY state").fetchall()
        found = {state: n for state, n in rows}
        return {state: found.get(state, 0) for state in STATES}

    # -- changing --------------------------------------------------------------------------
    def enqueue(self, chat_id: str, ingest_id: str, payload: str, payload_hash: str) -> str:
        """Queue a chat's payload; says ``queued``, ``already queued`` or ``unchanged``.

        ``unchanged``: the service already has this exact content (nothing is queued).
        A newer payload replaces a pending one; one being sent right now is
        followed by the new one.
        """
        now = _now()
        with self._writing() as conn:
            row = conn.execute(
                "SELECT state, payload_hash, sent_hash FROM share_queue WHERE chat_id = ?",
                (chat_id,),
            ).fetchone()
            if row is not None and row["sent_hash"] == payload_hash:
                if row["state"] != "sent":  # changed, then changed back before it went out
                    conn.execute(
                        "UPDATE share_queue SET state = 'sent', payload = ?, payload_hash = ?,"
                        " last_error = NULL WHERE chat_id = ?",
                        (payload, payload_hash, chat_id),
                    )
                return "unchanged"
            if (
                row is not None
                and row["state"] == "pending"
                and row["payload_hash"] == payload_hash
            ):
                return "already queued"
            conn.execute(
                "INSERT INTO share_queue (chat_id, ingest_id, state, payload, payload_hash,"
                " queued_at) VALUES (?, ?, 'pending', ?, ?, ?)"
                " ON CONFLICT (chat_id) DO UPDATE SET state = 'pending',"
                " payload = excluded.payload, payload_hash = excluded.payload_hash,"
                " attempts = 0, next_attempt = 0, last_error = NULL,"
                " queued_at = excluded.queued_at",
                (chat_id, ingest_id, payload, payload_hash, now),
            )
        return "queued"

    def claim(
        self, *, force: bool = False, chat_id: str | None = None, now: float | None = None
    ) -> QueuedChat | None:
        """Take the next pending chat to send (None: none is due), holding it for :data:`LEASE_S`.

        ``force`` ignores the backoff (a user asked to send now); ``chat_id``
        takes only that chat. A chat another live sender holds is never taken.
        """
        now = time.time() if now is None else now
        where = "state = 'pending'" + ("" if force else " AND next_attempt <= ?")
        args: tuple[object, ...] = () if force else (now,)
        if chat_id is not None:
            where += " AND chat_id = ?"
            args += (chat_id,)
        with self._writing() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM share_queue WHERE {where}"
                " ORDER BY next_attempt, queued_at",
                args,
            ).fetchall()
            for row in rows:
                if not _claim_is_stale(row["claimed_by"], row["claimed_until"], now):
                    continue
                conn.execute(
                    "UPDATE share_queue SET claimed_by = ?, claimed_until = ? WHERE chat_id = ?",
                    (self.me, now + LEASE_S, row["chat_id"]),
                )
                return QueuedChat(**dict(row))
        return None

    def mark_sent(self, item: QueuedChat) -> None:
        """The service took ``item``'s payload: remember its hash, release the claim."""
        with self._writing() as conn:
            conn.execute(
                "UPDATE share_queue SET sent_hash = ?, sent_at = ?, attempts = 0,"
                " next_attempt = 0, last_error = NULL, claimed_by = NULL, claimed_until = 0,"
                " state = CASE WHEN payload_hash = ? AND state = 'pending' THEN 'sent'"
                " ELSE state END WHERE chat_id = ?",
                (item.payload_hash, _now(), item.payload_hash, item.chat_id),
            )

    def mark_failed(
        self,
        item: QueuedChat,
        error: str,
        *,
        refused: bool = False,
        retry_after: float | None = None,
        now: float | None = None,
    ) -> float:
        """A send failed: retry later (returns when), or, ``refused``, not this payload again."""
        now = time.time() if now is None else now
        wait = backoff(item.attempts + 1)
        if retry_after is not None:
            wait = max(wait, min(retry_after, BACKOFF_MAX_S))
        with self._writing() as conn:
            conn.execute(
                "UPDATE share_queue SET attempts = attempts + 1, last_error = ?,"
                " next_attempt = ?, claimed_by = NULL, claimed_until = 0,"
                " state = CASE WHEN ? AND payload_hash = ? AND state = 'pending'"
                " THEN 'refused' ELSE state END WHERE chat_id = ?",
                (error[:500], now + wait, refused, item.payload_hash, item.chat_id),
            )
        return now + wait

    def release(self, item: QueuedChat) -> None:
        """Give a claimed chat back untried (sharing was switched off meanwhile)."""
        with self._writing() as conn:
            conn.execute(
                "UPDATE share_queue SET claimed_by = NULL, claimed_until = 0 WHERE chat_id = ?",
                (item.chat_id,),
            )

    def withdraw_all(self) -> int:
        """The service deleted this machine's chats: every pending or sent chat becomes
        ``withdrawn`` and forgets what was sent, so sharing it again sends it again."""
        with self._writing() as conn:
            cursor = conn.execute(
                "UPDATE share_queue SET state = 'withdrawn', sent_hash = NULL, sent_at = NULL"
                " WHERE state IN ('pending', 'sent', 'refused')"
            )
        return cursor.rowcount

    def withdraw_pending(self) -> int:
        """Mark every pending chat ``withdrawn`` (the user opted out); returns how many."""
        with self._writing() as conn:
            cursor = conn.execute(
                "UPDATE share_queue SET state = 'withdrawn' WHERE state = 'pending'"
            )
        return cursor.rowcount


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
