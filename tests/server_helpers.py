"""A real llm4all server (uvicorn, 127.0.0.1, a free port) in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from llm4all.server import ServerSettings, create_app

FAST = "smollm2-135m-instruct"
DEFAULT = "qwen2.5-coder-0.5b-instruct"
#: A grammar no answer can finish early: 400 words before the end of text is allowed.
ENDLESS = 'root ::= "one two three four "{100}'


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI
    settings: ServerSettings

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()  # type: ignore[no-any-return]

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until no model has a running or waiting request; returns the last health."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.health()
            busy = [m for m in state["models"] if m["running"] or m["waiting"] or m["leases"]]
            if not busy or time.monotonic() > deadline:
                return state
            time.sleep(0.02)


def fast_settings(models_dir: Path, **changes: Any) -> ServerSettings:
    """Small, fast settings: SmolLM2, 1 thread (the test machine is shared), short contexts."""
    base: dict[str, Any] = {
        "model": FAST,
        "models_dir": models_dir,
        "parallel": 4,
        "ctx": 1024,
        "n_threads": 1,
        "keep_alive": None,
    }
    return ServerSettings(**{**base, **changes})


@contextmanager
def serving(app: Any, timeout: float = 60) -> Iterator[str]:
    """Any ASGI app under uvicorn on a free 127.0.0.1 port, in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def running(settings: ServerSettings) -> Iterator[LiveServer]:
    app = create_app(settings)
    with serving(app) as url:
        yield LiveServer(url, app, settings)
