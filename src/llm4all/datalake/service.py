"""``llm4all datalake serve``: the HTTP service that receives shared chats.

Routes (GPT4All's chat client posts to the first one as is):

- ``POST /v1/ingest/chat``: one chat (:mod:`.payload`); 200 with
  ``{"ingest_id", "status": stored|replaced|unchanged|duplicate, "content_hash"}``.
- ``POST /v1/withdraw``: ``{"submitter_id"}`` deletes every chat of that
  submitter. The submitter id is a random id kept on the user's machine and
  never exported, so knowing it is what proves the chats are yours.
- ``GET /v1/health``: 200 when the database answers, 503 when it does not.
- ``/v1/admin/…`` with ``Authorization: Bearer TOKEN``: ``stats``,
  ``export?format=jsonl|parquet&only_positive=1&edited_as_better=1`` and
  ``DELETE submitters/ID``. Without a configured token the admin side is off
  (403); the token is compared in constant time.

Every refusal is a 4xx in the server's error JSON, naming the problem:
400 for a body that is not a JSON object, 422 for a payload that fails a check
(``error.problems`` lists each), 413 for a body over the cap (checked on
``Content-Length`` and while reading), 429 with ``Retry-After`` when a
submitter goes over its rate (a token bucket per submitter: ``burst``
submissions at once, then ``rate_per_minute``). A database that is locked,
full or unreachable is a 503 with ``Retry-After``, so clients retry later
instead of dropping the chat.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

import llm4all
from llm4all.datalake import export
from llm4all.datalake.payload import LIMITS, PayloadError, parse_payload
from llm4all.datalake.storage import DatabaseUnavailable, Storage
from llm4all.errors import Llm4allError, StorageBusy, StorageFull, StoreError
from llm4all.server.errors import RETRY_BUSY_S, ApiError, busy, translate
from llm4all.server.security import BodyLimitMiddleware

log = logging.getLogger(__name__)

#: The environment variable that holds the admin token.
TOKEN_ENV = "LLM4ALL_DATALAKE_ADMIN_TOKEN"


@dataclass(frozen=True)
class ServiceSettings:
    """How the service runs; one definition for the CLI, the tests and the benchmark."""

    database: str
    host: str = "127.0.0.1"
    port: int = 4895
    admin_token: str | None = None
    rate_per_minute: float = 60.0
    burst: int = 30
    max_body: int = LIMITS.body_bytes


class RateLimiter:
    """A token bucket per key: ``burst`` at once, refilled at ``rate_per_minute``.

    Memory stays bounded: once there are ``max_keys`` buckets, the full ones
    (keys idle long enough to be back at ``burst``) are forgotten.
    """

    def __init__(self, rate_per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token of ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_keys:
                self._forget_full(now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]


def create_app(settings: ServiceSettings, storage: Storage | None = None) -> FastAPI:
    """The service's ASGI app; it opens the storage unless one is given (and then closes it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if storage is None:
            await run_in_threadpool(app.state.storage.close)

    app = FastAPI(
        title="llm4all datalake",
        version=llm4all.__version__,
        description="Receives chats that users chose to share as training data.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = storage or Storage.open(settings.database)
    app.state.limiter = RateLimiter(settings.rate_per_minute, settings.burst)
    app.state.counts = Counter[str]()
    _install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body)
    _routes(app)
    return app


def _install_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def on_payload(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PayloadError)
        request.app.state.counts["refused"] += 1
        body = ApiError(422, str(exc), code="invalid_payload").body()
        body["error"]["problems"] = exc.problems
        return JSONResponse(body, status_code=422)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return ApiError(400, f"{where}: {first.get('msg', 'invalid')}", param=where).response()

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return ApiError(exc.status_code, str(exc.detail), headers=exc.headers).response()

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DatabaseUnavailable):  # say so, without naming the database's host
            return busy(
                "The datalake's database cannot be reached just now; try again shortly.",
                RETRY_BUSY_S,
                503,
                code="database_unavailable",
            ).response()
        if isinstance(exc, StoreError) and not isinstance(exc, StorageBusy | StorageFull):
            # The server's fault, not the client's: a 5xx (clients retry), naming no path.
            log.error("the datalake's database failed: %s", exc)
            return ApiError(
                500, "The datalake could not read or write its database.", code="storage_error"
            ).response()
        return translate(exc).response()

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(PayloadError, on_payload)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Llm4allError, on_anything)
    app.add_exception_handler(Exception, on_anything)


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying why it is not one."""
    body = await request.body()  # BodyLimitMiddleware has already capped it
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_json")
    return data


def _charge(request: Request, data: dict[str, Any], bucket: str = "ingest") -> None:
    """Spend one of the submitter's tokens, or refuse with 429 and ``Retry-After``.

    Withdrawals have a bucket of their own: a burst of shares never blocks one.
    """
    submitter = data.get("submitter_id")
    if not isinstance(submitter, str) or not submitter:
        return  # the payload check refuses it
    wait = request.app.state.limiter.take(f"{bucket}:{submitter[: LIMITS.id_chars]}")
    if wait > 0:
        request.app.state.counts["rate_limited"] += 1
        raise busy(
            f"Too many submissions from this submitter; try again in {wait:.0f} s.",
            wait,
            code="rate_limited",
        )


def _admin(request: Request) -> None:
    """Let the request through only with the admin token (compared in constant time)."""
    token: str | None = request.app.state.settings.admin_token
    if not token:
        raise ApiError(
            403,
            f"The admin API is off: start the service with {TOKEN_ENV} or --admin-token-file.",
            code="admin_disabled",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(
            401,
            "Send the admin token as 'Authorization: Bearer TOKEN'.",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


Admin = Annotated[None, Depends(_admin)]


def _routes(app: FastAPI) -> None:
    @app.post("/v1/ingest/chat")
    async def ingest_chat(request: Request) -> dict[str, str]:
        data = await _json_object(request)
        _charge(request, data)
        payload = parse_payload(data)
        result = await run_in_threadpool(request.app.state.storage.ingest, payload)
        request.app.state.counts[result.outcome] += 1
        return {
            "ingest_id": result.ingest_id,
            "status": result.outcome,
            "content_hash": result.content_hash,
        }

    @app.post("/v1/withdraw")
    async def withdraw(request: Request) -> dict[str, int]:
        data = await _json_object(request)
        submitter = data.get("submitter_id")
        if not isinstance(submitter, str) or not submitter.strip():
            raise PayloadError(["submitter_id: is required"])
        _charge(request, data, "withdraw")
        deleted = await run_in_threadpool(request.app.state.storage.delete_submitter, submitter)
        return {"deleted": deleted}

    @app.get("/v1/health")
    async def health(request: Request) -> dict[str, str]:
        storage: Storage = request.app.state.storage
        await run_in_threadpool(storage.ping)
        return {"status": "ok", "backend": storage.dialect.name, "version": llm4all.__version__}

    @app.get("/v1/admin/stats")
    async def stats(request: Request, _: Admin) -> dict[str, Any]:
        result: dict[str, Any] = await run_in_threadpool(request.app.state.storage.stats)
        result["since_start"] = dict(request.app.state.counts)
        return result

    @app.delete("/v1/admin/submitters/{submitter_id}")
    async def delete_submitter(request: Request, submitter_id: str, _: Admin) -> dict[str, int]:
        storage: Storage = request.app.state.storage
        return {"deleted": await run_in_threadpool(storage.delete_submitter, submitter_id)}

    @app.get("/v1/admin/export", response_model=None)
    async def export_chats(
        request: Request,
        _: Admin,
        format: Annotated[export.Format, Query()] = "jsonl",
        only_positive: bool = False,
        edited_as_better: bool = False,
    ) -> StreamingResponse | FileResponse:
        storage: Storage = request.app.state.storage
        options = {"only_positive": only_positive, "edited_as_better": edited_as_better}
        if format == "jsonl":
            return StreamingResponse(_jsonl(storage, options), media_type="application/x-ndjson")
        handle, name = tempfile.mkstemp(suffix=".parquet")
        os.close(handle)  # pyarrow opens the file by name
        path = Path(name)
        try:
            await run_in_threadpool(export.write, export.rows(storage, **options), path, "parquet")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return FileResponse(
            path,
            media_type="application/vnd.apache.parquet",
            filename="datalake.parquet",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )


def _jsonl(storage: Storage, options: dict[str, bool]) -> Iterator[bytes]:
    """The export as JSON Lines, a row at a time (Starlette runs it in a thread)."""
    for row in export.rows(storage, **options):
        yield (json.dumps(row.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")


def serve(settings: ServiceSettings, *, log_level: str = "info") -> None:
    """Run the service in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
