"""Who may talk to the server, and how much: Host check, API key, request size cap, CORS.

The checks are plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``,
which would break streaming and disconnect detection), so each holds for every
route: ``/v1``, ``/api``, the page, ``/health`` and the API description alike.

- The ``Host`` check defeats DNS rebinding: a web page on ``evil.example``
  whose name is re-pointed at 127.0.0.1 reaches the server with
  ``Host: evil.example``. Only IP literals (a browser sends the address it
  connected to), ``localhost`` (and ``*.localhost``), this machine's own name
  and the operator's ``--allowed-host`` names are answered; the rest get 403.
- The key is compared in constant time.
- The size cap looks at ``Content-Length`` first and also counts the bytes of a
  chunked body, so a client cannot stream past it.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm4all.server.errors import ApiError

#: Paths anyone may read: health checks, the API description, and the web chat's page and
#: assets (static files that hold no data; the page asks for the key when the API wants it).
#: Everything else, every JSON API under ``/api/`` and ``/v1/`` included, needs the key.
PUBLIC_PATHS = frozenset(
    {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/highlight.css"}
)
PUBLIC_PREFIXES = ("/assets/",)


def is_public(path: str) -> bool:
    """Whether ``path`` is served without the API key.

    Example: ``is_public("/assets/app.js") and not is_public("/api/chats")``
    """
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _send_error(send: Send, error: ApiError) -> None:
    response = error.response()
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}


def _host_name(header: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port or trailing dot; None if bad."""
    try:
        name = urlsplit(f"//{header}").hostname
    except ValueError:  # an unbalanced "[" and the like
        return None
    return name.rstrip(".") if name else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def own_names() -> frozenset[str]:
    """The names this machine answers to without being told: its host name and its mDNS name."""
    name = socket.gethostname().lower().rstrip(".")
    return frozenset({name, f"{name}.local"}) if name else frozenset()


def host_allowed(header: str, allowed: Iterable[str] = (), own: Iterable[str] = ()) -> bool:
    """Whether a request with this ``Host`` header is answered (see the module docstring).

    ``allowed`` holds the operator's names: ``name`` exactly, ``.example.com`` for the
    domain and its subdomains, ``*`` for any. An absent header (no browser omits it)
    passes. Example: ``host_allowed("127.0.0.1:4891") and not host_allowed("evil.example")``
    """
    if not header:
        return True
    name = _host_name(header)
    if name is None:
        return False
    if _is_ip(name) or name == "localhost" or name.endswith(".localhost") or name in own:
        return True
    for entry in allowed:
        if entry == "*" or entry == name or (entry.startswith(".") and f".{name}".endswith(entry)):
            return True
    return False


class HostCheckMiddleware:
    """403 for a request whose ``Host`` is not a name of this server (DNS rebinding)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = tuple(allowed)
        self.own = own_names()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"host":
                header = value.decode("latin-1")
        if host_allowed(header, self.allowed, self.own):
            await self.app(scope, receive, send)
            return
        await _send_error(
            send,
            ApiError(
                403,
                f"this server answers only to loopback names, IP addresses and its allowed "
                f"hosts, not {header!r}; to allow a name, start it with --allowed-host NAME",
                code="host_not_allowed",
            ),
        )


class ApiKeyMiddleware:
    """``Authorization: Bearer KEY`` on every non-public path."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                given = token.strip() if scheme.lower() == b"bearer" else b""
        if not hmac.compare_digest(given, self._key):
            await _send_error(
                send,
                ApiError(
                    401,
                    "Incorrect API key provided. Send it as 'Authorization: Bearer KEY'.",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body`` bytes with 413."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def _error(self) -> ApiError:
        return ApiError(
            413,
            f"The request body is larger than this server accepts ({self.max_body} bytes).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _send_error(send, self._error())
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise self._error()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except ApiError as exc:
            if started or exc.status != 413:
                raise
            await _send_error(send, exc)


def install_security(
    app: FastAPI,
    *,
    api_key: str | None,
    max_body: int,
    cors: Any,
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Add the middleware, innermost first: key check, size cap, CORS, Host check (outermost)."""
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(BodyLimitMiddleware, max_body=max_body)
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(HostCheckMiddleware, allowed=tuple(allowed_hosts))
