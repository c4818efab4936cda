"""The chat store: chats, their messages, ratings and settings.

:class:`ChatStore` is the only way the rest of llm4all touches the database.
It returns plain frozen dataclasses (:class:`Chat`, :class:`StoredMessage`),
never rows or live objects, so callers can keep them around without holding a
connection. Identity is a storage concern: ids are short random hex strings
made here (12 hex digits for a chat, so a user can type a prefix of one).

"Never lose a chat": every call that writes commits before it returns, so a
message exists on disk as soon as :meth:`ChatStore.add_message` returns, and a
streamed answer can be saved early and completed with
:meth:`ChatStore.update_message`. Each write is one short ``BEGIN IMMEDIATE``
transaction (see :mod:`llm4all.store.db`), so several processes can share the
file. One ``ChatStore`` may be shared by threads: a lock serializes its use of
its single connection.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from llm4all import paths
from llm4all.errors import (
    AmbiguousChatId,
    ChatNotFound,
    InvalidParameter,
    MessageNotFound,
    StoreError,
)
from llm4all.store import db

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
#: Titles made from the first user message keep about this many characters.
TITLE_LENGTH = 60

_CHAT_COLUMNS = """
    c.id, c.title, c.model, c.system_prompt, c.params, c.created_at, c.updated_at,
    (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) AS message_count
"""
_MESSAGE_COLUMNS = """
    id, chat_id, position, role, content, model, created_at, finish_reason,
    prompt_tokens, completion_tokens, tokens_per_second, time_to_first_token,
    sources, rating, edited_content
"""


@dataclass(frozen=True)
class Chat:
    """A stored conversation. ``params`` holds its generation parameters."""

    id: str
    title: str | None
    model: str | None
    system_prompt: str | None
    params: dict[str, Any] = field(hash=False)
    created_at: datetime
    updated_at: datetime
    message_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO strings)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class StoredMessage:
    """One message of a chat, with the metadata of how it was generated."""

    id: str
    chat_id: str
    position: int
    role: str
    content: str
    created_at: datetime
    model: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None
    sources: list[dict[str, Any]] | None = field(default=None, hash=False)
    rating: int | None = None
    #: A user's suggested better answer (None: none); ``content`` stays the model's own.
    edited_content: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO strings)."""
        return _jsonable(asdict(self))


def new_chat_id() -> str:
    """A fresh chat id: 12 random hex digits, few enough to type a prefix of."""
    return secrets.token_hex(6)


def default_title(text: str, limit: int = TITLE_LENGTH) -> str | None:
    """A chat title from its first user message: one line, cut at a word.

    Example: ``default_title("What is   the capital\\nof France?") == "What is the capital of France?"``
    """
    line = " ".join(text.split())
    if not line:
        return None
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,.;:") + "…"


def fts_query(text: str) -> str | None:
    """An FTS5 query that finds messages containing every word of ``text`` as a prefix.

    Each word is quoted, so user input never hits FTS5's query syntax.
    Example: ``fts_query("capital of?") == '"capital"* "of?"*'``
    """
    words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


class ChatStore:
    """The chats of one llm4all home. ``ChatStore()`` opens :func:`paths.database_path`.

    Methods that change a chat take its full id; :meth:`get_chat` turns a
    prefix a user typed into a :class:`Chat`.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else paths.database_path()
        self._conn = db.connect(self.path)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._fts = db.has_fts(self._conn)
        self._synchronous = self._conn.execute("PRAGMA synchronous").fetchone()[0]

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads; SQLite errors become :class:`StoreError`."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise db.storage_error(self.path, exc) from exc

    @contextmanager
    def _writing(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One committed transaction; SQLite errors become :class:`StoreError`.

        ``durable=False`` commits without waiting for the disk (no fsync): the
        write survives the program's death but not a power cut, until the next
        durable commit, which covers it.
        """
        with self._lock:
            try:
                if not durable:
                    self._conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    with db.write_transaction(self._conn) as conn:
                        yield conn
                finally:
                    if not durable:
                        self._conn.execute(f"PRAGMA synchronous = {int(self._synchronous)}")
            except sqlite3.Error as exc:
                raise db.storage_error(self.path, exc) from exc

    # -- chats ---------------------------------------------------------------

    def create_chat(
        self,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Chat:
        """A new, empty chat. Without a title, the first user message names it."""
        now = _now()
        params_json = json.dumps(dict(params or {}), ensure_ascii=False)
        for _attempt in range(5):
            chat_id = new_chat_id()
            with self._writing() as conn:
                # OR IGNORE: 48 random bits may (rarely) collide; then draw again.
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO chats (id, title, model, system_prompt, params,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (chat_id, title, model, system_prompt, params_json, now, now),
                )
            if cursor.rowcount == 1:
                log.debug("created chat %s", chat_id)
                return self.get_chat(chat_id)
        raise StoreError(str(self.path), "could not find a free chat id")

    def get_chat(self, id_or_prefix: str) -> Chat:
        """The chat whose id is, or uniquely starts with, ``id_or_prefix``.

        Raises :class:`ChatNotFound` (or its subclass :class:`AmbiguousChatId`).
        """
        key = id_or_prefix.strip().lower()
        if not key:
            raise ChatNotFound(id_or_prefix)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.id = ?", (key,)
            ).fetchall()
            if not rows:
                rows = conn.execute(
                    f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.id LIKE ? ESCAPE '\\'"
                    " ORDER BY c.updated_at DESC LIMIT 6",
                    (_like_escape(key) + "%",),
                ).fetchall()
        if not rows:
            raise ChatNotFound(id_or_prefix)
        if len(rows) > 1:
            raise AmbiguousChatId(id_or_prefix, [row["id"] for row in rows])
        return _chat(rows[0])

    def list_chats(self, limit: int | None = 50, query: str | None = None) -> list[Chat]:
        """Chats, most recently updated first; ``query`` searches titles and messages."""
        where, args = self._search_clause(query)
        sql = (
            f"SELECT {_CHAT_COLUMNS} FROM chats c {where}"
            " ORDER BY c.updated_at DESC, c.rowid DESC LIMIT ?"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, (*args, -1 if limit is None else limit)).fetchall()
        return [_chat(row) for row in rows]

    def _search_clause(self, query: str | None) -> tuple[str, tuple[str, ...]]:
        if query is None or not query.strip():
            return "", ()
        like = "%" + _like_escape(query.strip()) + "%"
        match = fts_query(query)
        if match is None:
            return "WHERE c.title LIKE ? ESCAPE '\\'", (like,)
        if self._fts:
            content = (
                "SELECT m.chat_id FROM messages_fts f JOIN messages m ON m.seq = f.rowid"
                " WHERE messages_fts MATCH ?"
            )
            return f"WHERE c.title LIKE ? ESCAPE '\\' OR c.id IN ({content})", (like, match)
        content = "SELECT chat_id FROM messages WHERE content LIKE ? ESCAPE '\\'"
        return f"WHERE c.title LIKE ? ESCAPE '\\' OR c.id IN ({content})", (like, like)

    def latest_chat(self) -> Chat | None:
        """The most recently updated chat, or None when there are none."""
        chats = self.list_chats(limit=1)
        return chats[0] if chats else None

    def rename_chat(self, chat_id: str, title: str) -> Chat:
        return self._update_chat(chat_id, title=title)

    def set_model(self, chat_id: str, model: str | None) -> Chat:
        return self._update_chat(chat_id, model=model)

    def set_system_prompt(self, chat_id: str, system_prompt: str | None) -> Chat:
        return self._update_chat(chat_id, system_prompt=system_prompt)

    def set_params(self, chat_id: str, params: Mapping[str, Any] | None) -> Chat:
        """Replace the chat's generation parameters (a JSON-serializable mapping)."""
        return self._update_chat(chat_id, params=json.dumps(dict(params or {}), ensure_ascii=False))

    def _update_chat(self, chat_id: str, **columns: str | None) -> Chat:
        # Column names come from the methods above, never from callers.
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._writing() as conn:
            cursor = conn.execute(
                f"UPDATE chats SET {assignments}, updated_at = ? WHERE id = ?",
                (*columns.values(), _now(), chat_id),
            )
        if cursor.rowcount == 0:
            raise ChatNotFound(chat_id)
        return self.get_chat(chat_id)

    def delete_chat(self, chat_id: str) -> None:
        """Delete a chat and (by cascade) its messages."""
        with self._writing() as conn:
            cursor = conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))
        if cursor.rowcount == 0:
            raise ChatNotFound(chat_id)
        log.debug("deleted chat %s", chat_id)

    # -- messages ------------------------------------------------------------

    def add_message(
        self,
        chat_id: str,
        role: str,
        content: str,
        *,
        model: str | None = None,
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        tokens_per_second: float | None = None,
        time_to_first_token: float | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
    ) -> StoredMessage:
        """Append a message to a chat and commit it at once.

        The first user message also titles a chat that has no title yet.
        """
        if role not in ROLES:
            raise InvalidParameter("role", role, "one of " + ", ".join(ROLES))
        now = _now()
        title = default_title(content) if role == "user" else None
        with self._writing() as conn:
            cursor = conn.execute(
                "UPDATE chats SET updated_at = ?, title = COALESCE(title, ?) WHERE id = ?",
                (now, title, chat_id),
            )
            if cursor.rowcount == 0:
                raise ChatNotFound(chat_id)
            # Inside the write lock, so two writers never take the same position.
            position = conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE chat_id = ?",
                (chat_id,),
            ).fetchone()[0]
            message = StoredMessage(
                id=secrets.token_hex(8),
                chat_id=chat_id,
                position=position,
                role=role,
                content=content,
                created_at=_parse_time(now),
                model=model,
                finish_reason=finish_reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                tokens_per_second=tokens_per_second,
                time_to_first_token=time_to_first_token,
                sources=[dict(s) for s in sources] if sources is not None else None,
            )
            row = message.as_dict() | {"created_at": now, "sources": _dump_json(message.sources)}
            conn.execute(
                f"INSERT INTO messages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
        return message

    def update_message(
        self,
        message_id: str,
        *,
        content: str | None = None,
        model: str | None = None,
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        tokens_per_second: float | None = None,
        time_to_first_token: float | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
        durable: bool = True,
    ) -> StoredMessage:
        """Change a stored message; arguments left as None keep their value.

        This is how a streamed answer is saved early and then completed. With
        ``durable=False`` (the snapshots of an answer still being written) the
        commit does not wait for the disk: it survives the program being
        killed, and a power cut only until the answer's final, durable save.
        """
        changes: dict[str, Any] = {
            "content": content,
            "model": model,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "tokens_per_second": tokens_per_second,
            "time_to_first_token": time_to_first_token,
            "sources": _dump_json([dict(s) for s in sources]) if sources is not None else None,
        }
        changes = {name: value for name, value in changes.items() if value is not None}
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            with self._writing(durable) as conn:
                cursor = conn.execute(
                    f"UPDATE messages SET {assignments} WHERE id = ?",
                    (*changes.values(), message_id),
                )
                if cursor.rowcount == 0:
                    raise MessageNotFound(message_id)
                conn.execute(
                    "UPDATE chats SET updated_at = ?"
                    " WHERE id = (SELECT chat_id FROM messages WHERE id = ?)",
                    (_now(), message_id),
                )
        return self.get_message(message_id)

    def get_message(self, message_id: str) -> StoredMessage:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
        if row is None:
            raise MessageNotFound(message_id)
        return _message(row)

    def messages(self, chat_id: str) -> list[StoredMessage]:
        """A chat's messages in order. Raises :class:`ChatNotFound` for an unknown id."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? ORDER BY position",
                (chat_id,),
            ).fetchall()
            if (
                not rows
                and conn.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,)).fetchone() is None
            ):
                raise ChatNotFound(chat_id)
        return [_message(row) for row in rows]

    def truncate_from(self, message_id: str) -> int:
        """Delete this message and every later one of its chat (to edit or regenerate).

        Returns how many messages were deleted.
        """
        with self._writing() as conn:
            row = conn.execute(
                "SELECT chat_id, position FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise MessageNotFound(message_id)
            cursor = conn.execute(
                "DELETE FROM messages WHERE chat_id = ? AND position >= ?",
                (row["chat_id"], row["position"]),
            )
            conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (_now(), row["chat_id"]))
        return cursor.rowcount

    def rate_message(self, message_id: str, rating: int | None) -> None:
        """Rate a message +1 (good) or -1 (bad); None clears the rating."""
        if rating not in (-1, 1, None):
            raise InvalidParameter("rating", rating, "-1, +1 or None")
        with self._writing() as conn:
            cursor = conn.execute(
                "UPDATE messages SET rating = ? WHERE id = ?", (rating, message_id)
            )
        if cursor.rowcount == 0:
            raise MessageNotFound(message_id)

    def suggest_answer(self, message_id: str, text: str | None) -> StoredMessage:
        """Keep a better answer the user suggests for an answer; None (or blank) removes it.

        The model's own answer stays in ``content``; training data can take either.
        """
        message = self.get_message(message_id)
        if message.role != "assistant":
            raise InvalidParameter("message_id", message_id, "an answer (an assistant message)")
        edited = text if text is not None and text.strip() else None
        with self._writing() as conn:
            conn.execute(
                "UPDATE messages SET edited_content = ? WHERE id = ?", (edited, message_id)
            )
            conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (_now(), message.chat_id))
        return self.get_message(message_id)

    # -- settings ------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A stored setting's value (any JSON value), or ``default``."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value under ``key``, replacing any previous one."""
        encoded = json.dumps(value, ensure_ascii=False)
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, encoded),
            )


# -- rows and values ---------------------------------------------------------


def _now() -> str:
    # Fixed width with microseconds and a Z, so text order is time order.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def _chat(row: sqlite3.Row) -> Chat:
    return Chat(
        id=row["id"],
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        params=json.loads(row["params"]),
        created_at=_parse_time(row["created_at"]),
        updated_at=_parse_time(row["updated_at"]),
        message_count=row["message_count"],
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    data = dict(row)
    data["created_at"] = _parse_time(data["created_at"])
    data["sources"] = json.loads(data["sources"]) if data["sources"] is not None else None
    return StoredMessage(**data)
