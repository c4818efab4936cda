"""Helpers of the share tests: a recording HTTP server on 127.0.0.1 and a chat worth sharing.

:class:`Recorder` counts *every* request that reaches it, whatever its method
or path, so "nothing was sent" is a count of zero. Its answers are scripted:
``answers`` is a list of statuses used in turn (then ``status`` for the rest),
``delay`` holds each answer back (to kill a sender mid-request).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llm4all.store import Chat, ChatStore

SECRET_EMAIL = "ada.lovelace@example.org"
SECRET_PHONE = "+44 20 7946 0958"
SECRET_PATH = "/home/ada/notes/salary-review-2026.pdf"
MODEL = "smollm2-135m-instruct"


@dataclass
class Received:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    status: int = 201
    answers: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [r.json() for r in self.requests]

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} requests, waited for {n}")
            time.sleep(0.02)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with recorder.lock:
                recorder.requests.append(
                    Received(self.command, self.path, body, dict(self.headers))
                )
                status = recorder.answers.pop(0) if recorder.answers else recorder.status
            if recorder.delay:
                time.sleep(recorder.delay)
            reply = json.dumps(
                {"status": "stored"} if status < 300 else {"detail": f"scripted {status}"}
            ).encode()
            self.send_response(status)
            for name, value in recorder.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _record

    return Handler


@contextmanager
def recording(**kwargs: Any) -> Iterator[Recorder]:
    """A :class:`Recorder` listening on 127.0.0.1 for the ``with`` block."""
    recorder = Recorder(**kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def rated_chat(store: ChatStore, title: str = "Pay questions") -> Chat:
    """A chat with private details, a rated answer with a suggested better one, LocalDocs
    sources, and a stopped answer."""
    chat = store.create_chat(title=title, model=MODEL, system_prompt="Be brief.")
    question = f"I am Ada ({SECRET_EMAIL}, {SECRET_PHONE}). {title}: my raise?"
    store.add_message(chat.id, "user", question)  # the title makes each chat's content its own
    answer = store.add_message(
        chat.id,
        "assistant",
        f"According to salary-review-2026.pdf in {SECRET_PATH}, 4 %. [1]",
        model=MODEL,
        finish_reason="stop",
        sources=[{"path": SECRET_PATH, "file": "salary-review-2026.pdf", "text": "raise: 4 %"}],
    )
    store.rate_message(answer.id, 1)
    store.suggest_answer(answer.id, "Your review says 4 % [1].")
    store.add_message(chat.id, "user", "And next year?")
    stopped = store.add_message(
        chat.id, "assistant", "Next year the", model=MODEL, finish_reason="cancelled"
    )
    store.rate_message(stopped.id, -1)
    return store.get_chat(chat.id)
