"""Sharing chats with a datalake, from the user's side: the opt-in, the payload, the sending.

Sharing is off until the user turns it on (``llm4all share on`` or the web
UI's setting, both after :data:`NOTICE`), and then only the chats the user
shares one by one are sent. While it is off nothing is sent: :func:`flush`
is the only code that posts, and it reads the setting before every request.

A chat becomes a :class:`~llm4all.datalake.payload.ChatIngest` (GPT4All's
datalake payload) in :func:`build_preview`: its messages with their roles,
each answer's rating, the user's suggested better answer
(``edited_content``), whether the answer was stopped, the model's name and
chat template, the random submitter id of this machine, and an ingest id
that is the same every time this chat is sent (so a re-send replaces it).
The preview's text *is* the request body: what the user reads is, byte for
byte, what leaves the machine. Optional scrubbing (:mod:`.scrub`) is applied
before, so the preview shows it.

The settings live in the chat store under :data:`SETTINGS_KEY`; the queue is
:mod:`.queue`. The endpoint starts as :data:`PLACEHOLDER_ENDPOINT`, a name
that can never resolve, so nothing can leave before the user names a real
service.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx

from llm4all.datalake.payload import ChatIngest, PayloadError, parse_payload
from llm4all.datalake.queue import ShareQueue
from llm4all.datalake.scrub import Findings, document_names, scrub_text
from llm4all.errors import InvalidParameter, Llm4allError
from llm4all.store import Chat, ChatStore, StoredMessage

log = logging.getLogger(__name__)

SETTINGS_KEY = "share"
SOURCE = "llm4all"
#: ``.invalid`` is reserved (RFC 2606): this name resolves nowhere, ever.
PLACEHOLDER_ENDPOINT = "https://datalake.invalid"
INGEST_PATH = "/v1/ingest/chat"
WITHDRAW_PATH = "/v1/withdraw"
#: Seconds one request may take before the send counts as failed (and is retried later).
SEND_TIMEOUT_S = 15.0
NOTICE = (
    "Shared chats become public training data. Anyone may download, read and train "
    "models on them, under your attribution name if you give one, and a shared chat cannot "
    "be taken back from copies others made. Share only chats with nothing private in "
    "them: preview each one (scrubbing can remove e-mail addresses, phone numbers, file "
    "paths and document names, but not everything). Nothing is sent until you share a "
    "chat, and nothing at all while sharing is off."
)
#: HTTP statuses that mean "try again later"; any other 4xx means "not this payload".
RETRY_STATUSES = frozenset({408, 425, 429})


class SharingOff(Llm4allError):
    """Sharing is off (or has no endpoint), so a chat cannot be sent."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DatalakeError(Llm4allError):
    """The datalake did not do what was asked (unreachable, or it answered an error)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"{url}: {reason}")


# -- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShareSettings:
    """The user's choice: whether to share, under which name, and where to."""

    enabled: bool = False
    attribution: str | None = None
    endpoint: str = PLACEHOLDER_ENDPOINT
    submitter_id: str | None = None

    @property
    def configured(self) -> bool:
        """Whether an endpoint was set (the placeholder reaches nothing)."""
        return self.endpoint != PLACEHOLDER_ENDPOINT

    @property
    def base_url(self) -> str:
        """The service's root (the endpoint may be given as its ingest URL)."""
        return self.endpoint.rstrip("/").removesuffix(INGEST_PATH)

    @property
    def ingest_url(self) -> str:
        """Where a chat is posted. Example: ``http://127.0.0.1:4895/v1/ingest/chat``."""
        return self.base_url + INGEST_PATH

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"configured": self.configured, "ingest_url": self.ingest_url}


def load_settings(store: ChatStore) -> ShareSettings:
    """The stored sharing settings (defaults: off, no name, the placeholder endpoint)."""
    stored = store.get_setting(SETTINGS_KEY, {})
    known = {k: v for k, v in stored.items() if k in ShareSettings.__dataclass_fields__}
    return ShareSettings(**known) if isinstance(stored, dict) else ShareSettings()


def check_endpoint(url: str) -> str:
    """An endpoint URL as stored: http(s), a host, no trailing slash; else InvalidParameter."""
    url = url.strip()
    parsed = httpx.URL(url) if url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidParameter("endpoint", url, "an http:// or https:// URL with a host")
    return url.rstrip("/")


def update_settings(
    store: ChatStore,
    *,
    enabled: bool | None = None,
    attribution: str | None = None,
    endpoint: str | None = None,
) -> ShareSettings:
    """Change the given settings (``attribution=""`` clears the name); returns the new ones.

    Turning sharing off withdraws the chats still waiting in the queue: they are never sent.
    """
    settings = load_settings(store)
    if enabled is not None:
        settings = replace(settings, enabled=enabled)
    if attribution is not None:
        settings = replace(settings, attribution=_attribution(attribution))
    if endpoint is not None:
        settings = replace(settings, endpoint=check_endpoint(endpoint))
    if settings.submitter_id is None:
        settings = replace(settings, submitter_id=str(uuid.uuid4()))
    store.set_setting(SETTINGS_KEY, asdict(settings))
    if enabled is False:
        with ShareQueue(store.path) as queue:
            withdrawn = queue.withdraw_pending()
        if withdrawn:
            log.info("sharing off: %d queued chats withdrawn", withdrawn)
    return settings


def _attribution(name: str) -> str | None:
    name = " ".join(name.split())
    if len(name) > 128:
        raise InvalidParameter("attribution", name, "at most 128 characters")
    return name or None


def submitter_id(store: ChatStore) -> str:
    """This machine's random submitter id, made on first use and kept in the chat store."""
    settings = load_settings(store)
    if settings.submitter_id is None:
        settings = update_settings(store)
    assert settings.submitter_id is not None
    return settings.submitter_id


def ingest_id_for(submitter: str, chat_id: str) -> str:
    """The ingest id of a chat: the same on every send, so the service replaces, not adds.

    A name-based UUID of the chat id under the (random) submitter id: stable,
    and it does not reveal the chat id. Example:
    ``ingest_id_for("5f0c…", "68f10d07d2b3")`` is always the same UUID.
    """
    try:
        namespace = uuid.UUID(submitter)
    except ValueError:
        namespace = uuid.uuid5(uuid.NAMESPACE_OID, submitter)
    return str(uuid.uuid5(namespace, chat_id))


# -- the payload ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    """A chat as it would be shared: the payload, the exact body, and what scrubbing took out."""

    chat: Chat
    payload: ChatIngest
    body: str = field(repr=False)  # the request body, exactly
    findings: Findings
    scrubbed: bool

    @property
    def content_hash(self) -> str:
        return self.payload.content_hash()

    def as_dict(self) -> dict[str, Any]:
        return {
            "chat_id": self.chat.id,
            "payload": json.loads(self.body),
            "body": self.body,
            "scrubbed": self.scrubbed,
            "findings": dict(self.findings.counts),
            "summary": self.findings.summary(),
            "content_hash": self.content_hash,
        }


def build_preview(store: ChatStore, chat_id: str, *, scrub: bool = False) -> Preview:
    """The payload a chat becomes (``chat_id``: an id or a unique prefix).

    Raises :class:`PayloadError` (one line naming the field) for a chat that
    is no training data: no question, no answer, too long.
    """
    chat = store.get_chat(chat_id)
    messages = [m for m in store.messages(chat.id) if m.role in ("system", "user", "assistant")]
    findings = Findings()
    names = document_names(s for m in messages for s in (m.sources or ())) if scrub else []

    def clean(text: str) -> str:
        return scrub_text(text, names, findings) if scrub else text

    items: list[dict[str, Any]] = []
    if chat.system_prompt and not (messages and messages[0].role == "system"):
        items.append({"role": "system", "content": clean(chat.system_prompt)})
    items += [_item(m, clean) for m in messages]
    agent = _agent(chat, messages)
    submitter = submitter_id(store)
    data: dict[str, Any] = {
        "source": SOURCE,
        "submitter_id": submitter,
        "agent_id": agent,
        "ingest_id": ingest_id_for(submitter, chat.id),
        "chat_template": chat_template_of(agent),
        "attribution": load_settings(store).attribution,
        "conversation": items,
    }
    payload = parse_payload({k: v for k, v in data.items() if v is not None})
    body = json.dumps(_wire(payload), ensure_ascii=False, indent=2)
    return Preview(chat, payload, body, findings, scrub)


def _wire(payload: ChatIngest) -> dict[str, Any]:
    """The payload as sent: no empty fields, and ``stopped`` only on answers (where it means
    something; the service reads a missing one as false)."""
    data = payload.model_dump(mode="json", exclude_none=True)
    for item in data["conversation"]:
        if item["role"] != "assistant":
            item.pop("stopped", None)
    return data


def _item(message: StoredMessage, clean: Callable[[str], str]) -> dict[str, Any]:
    item: dict[str, Any] = {"role": message.role, "content": clean(message.content)}
    if message.role == "assistant":
        item["stopped"] = message.finish_reason == "cancelled"
        if message.rating:
            item["rating"] = "positive" if message.rating > 0 else "negative"
        if message.edited_content:
            item["edited_content"] = clean(message.edited_content)
    return item


def _agent(chat: Chat, messages: Iterable[StoredMessage]) -> str:
    """The model that answered: the last answer's, else the chat's, else ``unknown``."""
    answered = [m.model for m in messages if m.role == "assistant" and m.model]
    return (answered[-1] if answered else None) or chat.model or "unknown"


def chat_template_of(model_name: str) -> str | None:
    """The chat template the model answers with: the catalog's override, else its file's own.

    None when the model is no longer installed (the payload may go without one).
    """
    from llm4all.models import ModelStore
    from llm4all.models.gguf import read_metadata

    try:
        found = ModelStore().find_installed(model_name)
        if found is None:
            return None
        if found.entry is not None and found.entry.chat_template:
            return found.entry.chat_template
        return read_metadata(found.path).chat_template
    except (OSError, Llm4allError) as exc:
        log.info("no chat template for %s: %s", model_name, exc)
        return None


# -- sending ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendResult:
    """What the service said to one request."""

    ok: bool
    message: str
    status: int | None = None
    refused: bool = False  # a 4xx that retrying the same payload will not change
    retry_after: float | None = None
    data: Any = None  # the JSON of a 2xx answer (None when it had none)


def post_payload(client: httpx.Client, url: str, body: str) -> SendResult:
    """POST one body; every outcome (network failures included) becomes a SendResult."""
    try:
        response = client.post(
            url, content=body.encode("utf-8"), headers={"Content-Type": "application/json"}
        )
    except httpx.HTTPError as exc:
        return SendResult(False, f"cannot reach {url}: {exc or type(exc).__name__}")
    status = response.status_code
    if 200 <= status < 300:
        try:
            data = response.json()
        except ValueError:
            data = None
        return SendResult(True, "sent", status, data=data)
    message = f"{status} {_error_text(response)}"
    retry_after = _retry_after(response.headers.get("retry-after"))
    refused = 400 <= status < 500 and status not in RETRY_STATUSES
    return SendResult(False, message, status, refused, retry_after)


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if data.get("detail"):
            return str(data["detail"])[:300]
    return json.dumps(data)[:300]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


@dataclass
class FlushReport:
    """What one flush did."""

    sent: list[str] = field(default_factory=list)  # chat ids
    failed: dict[str, str] = field(default_factory=dict)  # chat id -> error
    refused: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None  # why the flush ended early, if it did

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flush(
    store: ChatStore,
    *,
    force: bool = False,
    chat_id: str | None = None,
    client: httpx.Client | None = None,
) -> FlushReport:
    """Send what is due in the queue (``force``: also what waits for a retry) while sharing is on.

    The setting is read again before every request, so opting out in another
    process stops a running flush at the next chat. A network failure ends
    the flush (the rest would fail the same way); a refusal only skips that chat.
    """
    report = FlushReport()
    settings = load_settings(store)
    if not settings.enabled or not settings.configured:
        report.stopped = off_reason(settings)
        return report
    own_client = client is None
    http = client or httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False)
    try:
        with ShareQueue(store.path) as queue:
            while True:
                item = queue.claim(force=force, chat_id=chat_id)
                if item is None:
                    break
                settings = load_settings(store)
                if not settings.enabled or not settings.configured:
                    queue.release(item)
                    report.stopped = off_reason(settings)
                    break
                result = post_payload(http, settings.ingest_url, item.payload)
                if result.ok:
                    queue.mark_sent(item)
                    report.sent.append(item.chat_id)
                    continue
                queue.mark_failed(
                    item, result.message, refused=result.refused, retry_after=result.retry_after
                )
                if result.refused:
                    report.refused[item.chat_id] = result.message
                    continue
                report.failed[item.chat_id] = result.message
                report.stopped = result.message
                break
    finally:
        if own_client:
            http.close()
    return report


def off_reason(settings: ShareSettings) -> str:
    if not settings.enabled:
        return "sharing is off (`llm4all share on` turns it on); nothing was sent"
    return (
        f"no datalake endpoint is set ({settings.endpoint} is a placeholder that reaches "
        "nothing): `llm4all share on --endpoint URL`"
    )


def withdraw(store: ChatStore, client: httpx.Client | None = None) -> int:
    """Ask the datalake to delete every chat this machine shared; returns how many it deleted.

    Works whether sharing is on or off. Locally, every shared or queued chat is
    marked ``withdrawn``, so sharing one again sends it again.
    """
    settings = load_settings(store)
    if not settings.configured:
        raise SharingOff(off_reason(replace(settings, enabled=True)))
    if settings.submitter_id is None:
        return 0  # nothing was ever shared from here
    url = settings.base_url + WITHDRAW_PATH
    body = json.dumps({"submitter_id": settings.submitter_id})
    http = client or httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False)
    try:
        result = post_payload(http, url, body)
    finally:
        if client is None:
            http.close()
    if not result.ok:
        raise DatalakeError(url, result.message)
    with ShareQueue(store.path) as queue:
        queue.withdraw_all()
    deleted = result.data.get("deleted", 0) if isinstance(result.data, dict) else 0
    return int(deleted)


@dataclass(frozen=True)
class ShareOutcome:
    """What sharing one chat did: ``queued`` then ``sent``, ``unchanged``, or still ``queued``."""

    state: str
    message: str
    preview: Preview

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "chat_id": self.preview.chat.id}


def share_chat(
    store: ChatStore, chat_id: str, *, scrub: bool = False, send: bool = True
) -> ShareOutcome:
    """Queue a chat (as :func:`build_preview` makes it) and, with ``send``, try to send it now.

    Raises :class:`SharingOff` while sharing is off: nothing is queued then.
    """
    settings = load_settings(store)
    if not settings.enabled:
        raise SharingOff(off_reason(settings))
    preview = build_preview(store, chat_id, scrub=scrub)
    chat = preview.chat
    with ShareQueue(store.path) as queue:
        queued = queue.enqueue(
            chat.id, preview.payload.ingest_id or chat.id, preview.body, preview.content_hash
        )
    if queued == "unchanged":
        return ShareOutcome(
            "unchanged", "already shared, and unchanged since: not sent again", preview
        )
    if not send or not settings.configured:
        why = "" if send else " (send it with `llm4all share flush`)"
        if not settings.configured:
            why = f"; {off_reason(settings)}"
        return ShareOutcome("queued", f"queued{why}", preview)
    report = flush(store, force=True, chat_id=chat.id)
    if chat.id in report.sent:
        return ShareOutcome("sent", "sent", preview)
    if chat.id in report.refused:
        return ShareOutcome(
            "refused", f"refused by the datalake: {report.refused[chat.id]}", preview
        )
    why = report.failed.get(chat.id) or report.stopped or "another sender has it"
    return ShareOutcome("queued", f"queued; not sent yet ({why}); it is retried later", preview)


__all__ = [
    "NOTICE",
    "PLACEHOLDER_ENDPOINT",
    "FlushReport",
    "PayloadError",
    "Preview",
    "SendResult",
    "ShareOutcome",
    "ShareSettings",
    "SharingOff",
    "build_preview",
    "flush",
    "ingest_id_for",
    "load_settings",
    "share_chat",
    "submitter_id",
    "update_settings",
    "withdraw",
]
