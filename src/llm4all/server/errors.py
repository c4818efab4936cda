"""The HTTP edge of the error hierarchy: every failure becomes OpenAI's error JSON.

``{"error": {"message", "type", "param", "code"}}`` with the status code an
OpenAI client expects: 400 for a bad request (naming the field), 401 for a
wrong key, 404 for an unknown model (listing the installed ones), 413 for a
body over the cap, 429/503 with ``Retry-After`` when busy (a full queue; a
database locked by another writer or a full disk are 503, so that clients retry
rather than give up). Library errors are
translated here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm4all.engine.remote.client import RemoteError, RemoteRateLimited
from llm4all.engine.runner import Overloaded
from llm4all.errors import (
    ContextOverflow,
    GrammarError,
    InsufficientMemory,
    InvalidParameter,
    Llm4allError,
    ModelLoadError,
    ModelNotFound,
    ModelNotInstalled,
    StorageBusy,
    StorageFull,
    TemplateError,
)
from llm4all.sqlite import storage_error

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


#: Seconds a client is told to wait when a database is locked by another writer, or full.
RETRY_BUSY_S = 2
RETRY_FULL_S = 60


class ApiError(StarletteHTTPException):
    """An error with everything the HTTP response needs.

    It is an ``HTTPException`` so that FastAPI passes it through unchanged even
    when it is raised while the request body is being read (the size cap).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse(self) -> str:
        """The error as a server-sent event (for failures after a stream has started)."""
        return f"data: {json.dumps(self.body())}\n\n"


class ClientGone(Exception):
    """The client disconnected before its answer was ready (nobody reads the response)."""


def unknown_model(name: str, installed: Sequence[str], why: str = "does not exist") -> ApiError:
    names = ", ".join(installed) or "none (run `llm4all models pull NAME`)"
    return ApiError(
        404,
        f"The model {name!r} {why}. Installed models: {names}.",
        param="model",
        code="model_not_found",
    )


def busy(
    message: str, retry_after: float, status: int = 429, code: str = "server_overloaded"
) -> ApiError:
    """A "try again later" error: 429 or 503 with ``Retry-After`` (clients back off and retry)."""
    return ApiError(
        status,
        message,
        code=code,
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def translate(exc: BaseException, installed: Sequence[str] = ()) -> ApiError:
    """The :class:`ApiError` for a library error (or a generic 500 for anything else)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, sqlite3.Error):  # one that a store did not translate itself
        exc = storage_error("database", exc)
    if isinstance(exc, StorageBusy):
        return busy(
            "The server's database is locked by another writer; try again shortly.",
            RETRY_BUSY_S,
            503,
            code="storage_busy",
        )
    if isinstance(exc, StorageFull):
        return busy(
            "The server's disk is full, so nothing can be saved; try again once space is freed.",
            RETRY_FULL_S,
            503,
            code="storage_full",
        )
    if isinstance(exc, ContextOverflow):
        return ApiError(
            400,
            f"This model's maximum context length is {exc.n_ctx} tokens. However, you "
            f"requested {exc.prompt_tokens} tokens. Please reduce the length of the "
            "messages or the completion.",
            param="messages",
            code="context_length_exceeded",
        )
    if isinstance(exc, Overloaded):
        return busy(str(exc), exc.retry_after)
    if isinstance(exc, ModelNotInstalled):
        return unknown_model(exc.name, installed, "is not installed")
    if isinstance(exc, ModelNotFound):
        return unknown_model(exc.name, installed)
    if isinstance(exc, InvalidParameter):
        return ApiError(400, str(exc), param=exc.field, code="invalid_value")
    if isinstance(exc, GrammarError):
        return ApiError(400, str(exc), param="response_format", code="invalid_schema")
    if isinstance(exc, TemplateError):
        return ApiError(400, str(exc), param="messages", code="invalid_messages")
    if isinstance(exc, InsufficientMemory):
        return ApiError(503, str(exc), param="model", code="insufficient_memory")
    if isinstance(exc, ModelLoadError):
        return ApiError(500, str(exc), param="model", code="model_load_failed")
    if isinstance(exc, RemoteRateLimited):  # the remote behind this gateway is busy
        return busy(str(exc), 5, 503, code="remote_busy")
    if isinstance(exc, RemoteError):  # not the client's fault: the gateway's remote failed
        return ApiError(502, str(exc), code="remote_error")
    if isinstance(exc, Llm4allError):
        return ApiError(400, str(exc))
    if isinstance(exc, UnicodeError):  # JSON can carry lone surrogates; UTF-8 cannot
        return ApiError(400, f"The request holds text that is not valid Unicode: {exc}")
    log.error("unexpected error", exc_info=exc)
    return ApiError(500, "The server had an error while processing your request.")


def validation_error(exc: RequestValidationError) -> ApiError:
    """Pydantic's complaint as OpenAI's: the first problem, naming its field."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "Invalid request.")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)",
            code="invalid_json",
        )
    if kind == "extra_forbidden":
        return ApiError(
            400,
            f"Unrecognized request argument supplied: {param} (llm4all does not support it)",
            param=param,
            code="unsupported_parameter",
        )
    if kind == "missing" and not loc:
        return ApiError(400, "The request needs a JSON object body.", code="invalid_json")
    return ApiError(
        400,
        f"Invalid value for {param or 'the body'}: {first.get('msg', '')}",
        param=param,
        code="invalid_value",
    )


def install_handlers(app: FastAPI) -> None:
    """Make every error path of the app answer in OpenAI's format."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error(exc).response()

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return ApiError(exc.status_code, str(exc.detail), headers=exc.headers).response()

    async def on_library(request: Request, exc: Exception) -> JSONResponse:
        installed = request.app.state.manager.installed_names()
        return translate(exc, installed).response()

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        return translate(exc).response()

    async def on_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody sees it

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Llm4allError, on_library)
    app.add_exception_handler(ClientGone, on_gone)
    app.add_exception_handler(Exception, on_anything)
