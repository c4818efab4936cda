"""The HTTP side of the remote backend: one OpenAI-compatible endpoint, over httpx.

Any server that speaks OpenAI's ``/v1`` API is a remote: vLLM, ollama, a
hosted provider, or another ``llm4all serve``. :class:`RemoteClient` sends a
request body as given (tools and ``response_format`` pass through untouched)
and hands back parsed JSON: whole responses, or the events of a server-sent
stream. Transport failures are translated here, in one place, into
:class:`RemoteError` subclasses whose message is one line naming the endpoint:
connection refused, a timeout, 401/403, an unknown model, 429 and 503 (retried
with backoff first, honouring ``Retry-After``), another HTTP error, and a
malformed stream. A read timeout bounds every wait for the next byte, so a
remote that stops answering is an error, never a hang.

The API key is read from the environment variable the endpoint names when a
request is sent; it is never stored, logged or put in an error message.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from llm4all.errors import Llm4allError

log = logging.getLogger(__name__)

#: Statuses that mean "try again later": retried with backoff, then an error.
RETRY_STATUSES = frozenset({429, 503})
#: The longest single wait between retries, whatever ``Retry-After`` asks for.
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class Endpoint:
    """Where a remote model is and how to reach it (the API key's variable, not the key)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 60.0  # seconds to wait for the next byte of an answer
    connect_timeout: float = 5.0
    retries: int = 3  # extra attempts after a 429 or 503

    @property
    def api_base(self) -> str:
        """``base_url`` with ``/v1`` added when it has no path at all.

        Example: ``Endpoint("http://gpu:8000", "m").api_base`` → ``"http://gpu:8000/v1"``;
        a URL with a path (``https://api.example.com/openai/v1``) is kept as is.
        """
        url = self.base_url.rstrip("/")
        return url if urlsplit(url).path else url + "/v1"

    def api_key(self) -> str | None:
        """The key from the environment now (None: no variable named, or it is unset)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class RemoteError(Llm4allError):
    """A remote endpoint failed; the message is one line that names it."""

    def __init__(self, endpoint: str, reason: str, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.status = status
        super().__init__(f"remote {endpoint}: {reason}")


class RemoteUnavailable(RemoteError):
    """Nothing answered: connection refused, DNS failure, or a timeout."""


class RemoteAuthError(RemoteError):
    """The remote refused the API key (401/403)."""


class RemoteModelNotFound(RemoteError):
    """The remote does not serve the model asked for (404)."""


class RemoteRateLimited(RemoteError):
    """The remote kept answering 429/503 after every retry."""


class RemoteProtocolError(RemoteError):
    """The remote answered something that is not OpenAI's shape (a malformed stream, bad JSON)."""


Sleep = Callable[[float], None]


class RemoteClient:
    """A connection pool to one endpoint; thread-safe (httpx's client is)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self._sleep = sleep
        timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
        self._http = httpx.Client(
            base_url=endpoint.api_base + "/", timeout=timeout, transport=transport
        )

    @property
    def where(self) -> str:
        """How errors name the endpoint: its base URL (never the key)."""
        return self.endpoint.api_base

    def close(self) -> None:
        self._http.close()

    # -- requests -------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        """GET ``path`` (relative to the API base) and parse the JSON answer."""
        with self._send("GET", path, None) as response:
            return self._json(response)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST a JSON body and parse the JSON answer."""
        with self._send("POST", path, body) as response:
            return self._json(response)

    def stream_events(
        self, path: str, body: dict[str, Any], should_continue: Callable[[], bool] | None = None
    ) -> Iterator[dict[str, Any]]:
        """POST a streaming request; yield each server-sent event's JSON until ``[DONE]``.

        ``should_continue`` is asked before each event; False closes the
        connection (a vLLM or llm4all server then stops generating). A stream
        that ends without ``[DONE]`` or carries an event that is not JSON is a
        :class:`RemoteProtocolError`.
        """
        with self._send("POST", path, body) as response:
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/event-stream"):
                response.read()
                raise RemoteProtocolError(
                    self.where, f"asked for a stream but got {kind or 'no content type'}"
                )
            try:
                for data in _sse_data(response.iter_lines()):
                    if should_continue is not None and not should_continue():
                        return
                    if data == "[DONE]":
                        return
                    yield self._event(data)
            except httpx.TimeoutException:
                raise RemoteUnavailable(
                    self.where,
                    f"no answer for {self.endpoint.timeout:g} s in the middle of a stream",
                ) from None
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                raise RemoteProtocolError(
                    self.where, f"the stream broke off: {_first_line(exc)}"
                ) from None
        raise RemoteProtocolError(self.where, "the stream ended without data: [DONE]")

    # -- plumbing ---------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = self.endpoint.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> _Exchange:
        """Send (retrying 429/503 with backoff); the open response, checked for errors."""
        request = self._http.build_request(method, path, json=body, headers=self._headers())
        for attempt in range(self.endpoint.retries + 1):
            response = self._open(request)
            if response.status_code not in RETRY_STATUSES or attempt == self.endpoint.retries:
                break
            wait = _backoff(response, attempt)
            response.close()
            log.info("%s answered %d; retrying in %.1f s", self.where, response.status_code, wait)
            self._sleep(wait)
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            raise self._status_error(response)
        return _Exchange(response)

    def _open(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request, stream=True)
        except httpx.ConnectTimeout:
            raise RemoteUnavailable(
                self.where, f"cannot connect within {self.endpoint.connect_timeout:g} s"
            ) from None
        except httpx.ConnectError as exc:
            raise RemoteUnavailable(self.where, f"cannot connect ({_first_line(exc)})") from None
        except httpx.TimeoutException:
            raise RemoteUnavailable(
                self.where, f"no answer within {self.endpoint.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(self.where, _first_line(exc)) from None

    def _status_error(self, response: httpx.Response) -> RemoteError:
        status = response.status_code
        said = _error_message(response)
        if status in (401, 403):
            hint = (
                f"check ${self.endpoint.api_key_env}"
                if self.endpoint.api_key_env
                else "register it with --api-key-env VAR"
            )
            return RemoteAuthError(
                self.where, f"the API key was refused ({status}: {said}); {hint}", status
            )
        if status == 404:
            return RemoteModelNotFound(
                self.where,
                f"no model {self.endpoint.model!r} there, or no OpenAI API at this URL "
                f"(404 for {self._relative(response.request.url.path)}: {said})",
                status,
            )
        if status in RETRY_STATUSES:
            tries = self.endpoint.retries + 1
            return RemoteRateLimited(
                self.where,
                f"still busy after {tries} tries ({status}: {said}); try again later",
                status,
            )
        return RemoteError(self.where, f"HTTP {status}: {said}", status)

    def _relative(self, path: str) -> str:
        """A request path without the API base's. Example: ``/v1/chat/completions`` → ``/chat/completions``."""
        base = urlsplit(self.endpoint.api_base).path.rstrip("/")
        return path[len(base) :] if base and path.startswith(base) else path

    def _json(self, response: httpx.Response) -> Any:
        try:
            response.read()
        except httpx.TimeoutException:
            raise RemoteUnavailable(
                self.where, f"no answer for {self.endpoint.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteProtocolError(
                self.where, f"the answer broke off: {_first_line(exc)}"
            ) from None
        try:
            return response.json()
        except ValueError:
            raise RemoteProtocolError(
                self.where, f"the answer is not JSON: {response.text[:80]!r}"
            ) from None

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise RemoteProtocolError(
                self.where, f"a stream event is not JSON: {data[:80]!r}"
            ) from None
        if not isinstance(event, dict):
            raise RemoteProtocolError(self.where, f"a stream event is not an object: {data[:80]!r}")
        if "error" in event:  # vLLM and others report a failure inside a stream this way
            raise RemoteError(self.where, f"failed mid-stream: {_said(event)}")
        return event


class _Exchange:
    """An open response as a context manager that always closes it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __enter__(self) -> httpx.Response:
        return self.response

    def __exit__(self, *exc: object) -> None:
        self.response.close()


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines).

    Example: lines ``["data: {}", "", "data: [DONE]", ""]`` → ``"{}"``, ``"[DONE]"``.
    Comments (``: ping``) and the ``event``/``id``/``retry`` fields are skipped.
    """
    buffer: list[str] = []
    for line in lines:
        if not line:
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield "\n".join(buffer)


def _backoff(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: ``Retry-After`` if given, else 0.5 · 2^n."""
    header = response.headers.get("retry-after", "")
    try:
        wait = float(header)
    except ValueError:
        wait = 0.5 * 2**attempt
    return max(0.0, min(wait, MAX_BACKOFF_S))


def _error_message(response: httpx.Response) -> str:
    try:
        return _said(response.json())
    except ValueError:
        return _first_line(response.text) or response.reason_phrase or "no message"


def _said(payload: Any) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": …}}``), shortened."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        message = json.dumps(message)
    return _first_line(message)[:200]


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
