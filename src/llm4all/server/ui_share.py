"""Sharing chats with the datalake from the web page, and the server's background flush.

The routes sit under ``/api/`` beside the rest of the page's API (same key,
same cross-origin guard; ``ui_api.install`` includes them):

- ``GET``/``PUT /api/share``: the opt-in with its notice and the attribution
  name. The endpoint is shown but set only with ``llm4all share on
  --endpoint`` on the machine: a page (or a script that got hold of the
  key) can turn sharing off, but cannot point the user's chats elsewhere.
- ``POST /api/chats/{id}/share/preview``: the exact body that would be sent,
  optionally scrubbed, and what scrubbing took out. Nothing is sent.
- ``POST /api/chats/{id}/share``: queue the chat and try to send it now
  (409 ``sharing_off`` while sharing is off).
- ``POST /api/share/withdraw``: ask the datalake to delete what this
  machine shared (502 when it cannot).
- ``PUT /api/chats/{id}/messages/{mid}/suggestion``: a better answer the user
  suggests for an answer (``null`` removes it).

:class:`ShareFlusher` is a thread the app's lifespan starts: while sharing is
on it sends what is due in the queue every :data:`FLUSH_EVERY_S` seconds
(the queue's backoff decides what is due). It never creates the chat
database: a server that has none has nothing to send.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from llm4all import paths
from llm4all.datalake import client
from llm4all.datalake.payload import PayloadError
from llm4all.datalake.queue import ShareQueue
from llm4all.server.errors import ApiError
from llm4all.server.ui_api import Store, _chat, _message, same_origin
from llm4all.server.ui_chat import message_out
from llm4all.server.ui_schemas import MAX_MESSAGE_CHARS, MessageOut, Strict
from llm4all.store import ChatStore

log = logging.getLogger(__name__)

#: Seconds between the background flushes of a running server.
FLUSH_EVERY_S = 60.0
#: Seconds after start-up before the first one (chats queued while no server ran).
FIRST_FLUSH_S = 10.0

router = APIRouter(prefix="/api", tags=["web UI"], dependencies=[Depends(same_origin)])


class ShareSettingsOut(BaseModel):
    enabled: bool
    attribution: str | None
    endpoint: str
    configured: bool = Field(description="False: the endpoint is a placeholder; nothing is sent")
    submitter_id: str | None
    notice: str
    queue: dict[str, int] = Field(description="shared chats by state (pending, sent, …)")


class ShareSettingsBody(Strict):
    enabled: bool
    attribution: str | None = Field(None, max_length=128)


class ShareBody(Strict):
    scrub: bool = Field(False, description="replace e-mail addresses, phones, paths, documents")


class PreviewOut(BaseModel):
    chat_id: str
    body: str = Field(description="the request body, exactly as it would be sent")
    payload: dict[str, Any]
    scrubbed: bool
    findings: dict[str, int] = Field(description="what scrubbing replaced, by kind")
    summary: str
    content_hash: str
    state: str | None = Field(None, description="this chat in the queue (None: never shared)")


class ShareOut(BaseModel):
    chat_id: str
    state: str = Field(description="sent, queued, unchanged or refused")
    message: str


class SuggestionBody(Strict):
    content: str | None = Field(None, max_length=MAX_MESSAGE_CHARS)


def _settings_out(store: ChatStore) -> dict[str, Any]:
    settings = client.load_settings(store)
    with ShareQueue(store.path) as queue:
        counts = queue.counts()
    return {
        "enabled": settings.enabled,
        "attribution": settings.attribution,
        "endpoint": settings.endpoint,
        "configured": settings.configured,
        "submitter_id": settings.submitter_id,
        "notice": client.NOTICE,
        "queue": counts,
    }


@router.get("/share", response_model=ShareSettingsOut)
def get_share(store: Store) -> Any:
    """Whether chats may be shared, under which name, where to, and the queue."""
    return _settings_out(store)


@router.put("/share", response_model=ShareSettingsOut)
def put_share(body: ShareSettingsBody, store: Store, request: Request) -> Any:
    """Opt in or out (out withdraws what is still queued) and set the attribution name."""
    client.update_settings(store, enabled=body.enabled, attribution=body.attribution or "")
    if body.enabled:
        request.app.state.share_flusher.wake()
    return _settings_out(store)


class WithdrawOut(BaseModel):
    deleted: int = Field(description="chats the datalake deleted")


@router.post("/share/withdraw", response_model=WithdrawOut)
def withdraw(store: Store) -> Any:
    """Ask the datalake to delete every chat shared from this machine (on or off)."""
    try:
        return {"deleted": client.withdraw(store)}
    except client.SharingOff as exc:
        raise ApiError(409, str(exc), code="no_endpoint") from None
    except client.DatalakeError as exc:
        raise ApiError(502, str(exc), code="datalake_failed") from None


def _preview(store: ChatStore, chat_id: str, scrub: bool) -> client.Preview:
    try:
        return client.build_preview(store, _chat(store, chat_id).id, scrub=scrub)
    except PayloadError as exc:
        raise ApiError(400, str(exc), param="chat_id", code="not_shareable") from None


@router.post("/chats/{chat_id}/share/preview", response_model=PreviewOut)
def preview_chat(chat_id: str, body: ShareBody, store: Store) -> Any:
    """The exact JSON this chat would be sent as (nothing is sent)."""
    preview = _preview(store, chat_id, body.scrub)
    with ShareQueue(store.path) as queue:
        queued = queue.get(preview.chat.id)
    return preview.as_dict() | {"state": queued.state if queued else None}


@router.post("/chats/{chat_id}/share", response_model=ShareOut)
def share_chat(chat_id: str, body: ShareBody, store: Store) -> Any:
    """Queue the chat as previewed and try to send it now (else it is retried later)."""
    try:
        outcome = client.share_chat(store, _chat(store, chat_id).id, scrub=body.scrub)
    except client.SharingOff as exc:
        raise ApiError(409, str(exc), code="sharing_off") from None
    except PayloadError as exc:
        raise ApiError(400, str(exc), param="chat_id", code="not_shareable") from None
    return outcome.as_dict()


@router.put("/chats/{chat_id}/messages/{message_id}/suggestion", response_model=MessageOut)
def suggest_answer(chat_id: str, message_id: str, body: SuggestionBody, store: Store) -> Any:
    """Keep a better answer beside the model's (``null`` or blank removes it)."""
    message = _message(store, _chat(store, chat_id), message_id)
    if message.role != "assistant":
        raise ApiError(400, "only an answer can have a better answer", param="message_id")
    return message_out(store.suggest_answer(message.id, body.content))


# -- the background flush ------------------------------------------------------------------------
class ShareFlusher:
    """Sends what is due in the share queue every ``every`` seconds while sharing is on."""

    def __init__(
        self,
        database: Callable[[], Path],
        every: float = FLUSH_EVERY_S,
        first: float = FIRST_FLUSH_S,
    ) -> None:
        self.database, self.every, self.first = database, every, first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # flushes run (for tests and logs)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="share-flush", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Flush now rather than at the next tick."""
        self._wake.set()

    def run_once(self) -> client.FlushReport | None:
        """One flush of what is due; None when there is no database or sharing is off."""
        path = self.database()
        if not path.exists():
            return None
        with ChatStore(path) as store:
            if not client.load_settings(store).enabled:
                return None
            return client.flush(store)

    def _run(self) -> None:
        wait = self.first
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                report = self.run_once()
            except Exception:  # a bad round must not end the thread; the next one retries
                log.warning("sharing: background flush failed", exc_info=True)
            else:
                if report is not None and (report.sent or report.failed):
                    log.info("sharing: sent %d, failed %d", len(report.sent), len(report.failed))
            self.rounds += 1
            wait = self.every


def install(app: FastAPI) -> None:
    """Add the routes and the (not yet started) flusher; the app's lifespan starts it."""

    def database() -> Path:
        store: ChatStore | None = app.state.chat_store
        return store.path if store is not None else paths.database_path()

    app.state.share_flusher = ShareFlusher(database)
    app.include_router(router)
