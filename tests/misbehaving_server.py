"""A minimal OpenAI-compatible ASGI server on 127.0.0.1 that misbehaves on purpose.

The model named in a request chooses the behaviour, so one server covers every
failure mode of the remote backend:

- ``ok``: a well-formed stream (or JSON answer) that says ``hello world``;
  ``small`` the same, listed with a 64-token window (vLLM's ``max_model_len``);
- ``missing``: 404 with OpenAI's error JSON;
- ``busy``: 429 with ``Retry-After: 0`` every time; ``busy-once``: 429 on the
  first request of a model, then ``ok``;
- ``garbage``: a stream whose second event is not JSON;
- ``truncated``: a stream that ends without ``data: [DONE]``;
- ``stall``: a stream that sends its headers and one event, then nothing;
- ``mute``: no answer at all (not even the headers);
- ``not-sse``: a JSON body where a stream was asked for;
- ``error-event``: a stream that reports an error inside an event.

A wrong or missing ``Authorization: Bearer`` (when the server has a key) is a
401. Every request is recorded (method, path, headers, JSON body), so tests
can assert exactly what the backend sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Misbehaving:
    """The ASGI app; ``requests`` holds what it was sent."""

    key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    stall_s: float = 30.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        payload = json.loads(body) if body else None
        self.requests.append(
            {"method": scope["method"], "path": scope["path"], "headers": headers, "json": payload}
        )
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            await _json(send, 401, {"error": {"message": "Incorrect API key provided"}})
            return
        if scope["path"].endswith("/models"):
            names = ["ok", "busy-once", "garbage", "truncated", "stall", "not-sse"]
            cards = [{"id": n} for n in names] + [{"id": "small", "max_model_len": 64}]
            await _json(send, 200, {"object": "list", "data": cards})
            return
        await self._answer(send, payload or {}, scope["path"])

    async def _answer(self, send: Send, body: dict[str, Any], path: str) -> None:
        model = str(body.get("model"))
        self.seen[model] = self.seen.get(model, 0) + 1
        if model == "mute":  # accepts the request, never answers
            try:
                await asyncio.sleep(self.stall_s)
            except asyncio.CancelledError:
                return
        if model == "missing":
            message = f"The model `{model}` does not exist."
            await _json(send, 404, {"error": {"message": message, "code": "model_not_found"}})
        elif model == "busy" or (model == "busy-once" and self.seen[model] == 1):
            await _json(send, 429, {"error": {"message": "Rate limit reached"}}, retry_after="0")
        elif path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]}
                for i, t in enumerate(texts)
            ]
            usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
            await _json(send, 200, {"object": "list", "data": data, "usage": usage})
        elif model == "not-sse" or not body.get("stream"):
            await _json(send, 200, _completion(model))
        else:
            await self._stream(send, model)

    async def _stream(self, send: Send, model: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        events = [_delta(model, "hello"), _delta(model, " world")]
        if model == "garbage":
            events[1] = "{not json"
        if model == "error-event":
            events[1] = json.dumps({"error": {"message": "the GPU fell over"}})
        events.append(_final(model))
        for i, event in enumerate(events):
            await _chunk(send, f"data: {event}\n\n")
            if model == "stall" and i == 0:
                try:
                    await asyncio.sleep(self.stall_s)
                except asyncio.CancelledError:  # the server is shutting down
                    return
        if model != "truncated":
            await _chunk(send, "data: [DONE]\n\n")
        await send({"type": "http.response.body", "body": b""})


def _delta(model: str, text: str) -> str:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return json.dumps({"object": "chat.completion.chunk", "model": model, "choices": [choice]})


def _final(model: str) -> str:
    return json.dumps(
        {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )


def _completion(model: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": "hello world"}
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


async def _json(send: Send, status: int, payload: object, retry_after: str | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def _chunk(send: Send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


@dataclass
class Running:
    url: str  # http://127.0.0.1:PORT
    app: Misbehaving

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


@contextmanager
def misbehaving(key: str | None = None, stall_s: float = 30.0) -> Iterator[Running]:
    """Serve a :class:`Misbehaving` app on a free port of 127.0.0.1 in a thread."""
    app = Misbehaving(key=key, stall_s=stall_s)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the misbehaving server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        server.force_exit = True  # a stalled stream must not hold the test up
        thread.join(10)
        sock.close()


def refused_url() -> str:
    """A 127.0.0.1 URL where nothing listens (a port bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
