"""Real HTTP servers on 127.0.0.1 for download tests.

- :class:`FileServer` serves byte strings by path and supports (or, on
  request, ignores) HTTP Range; it records every request's Range header and
  the body bytes it sent, so tests can assert that a resume asked only for the
  rest. ``rate`` (bytes per second) makes it slow, for tests that cancel a
  download midway; a client that hangs up simply ends the response.
  ``token`` makes every path answer 401 without ``Authorization: Bearer
  TOKEN``; ``headers`` adds response headers per path (a hub's ``Link``).
- :class:`SimpleIndex` is a PEP 503 package index that serves wheels built by
  :func:`build_wheel`, for ``pip download --index-url``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0
    authorization: str | None = None


@dataclass
class FileServer:
    """Serves ``files`` (URL path → bytes). ``honor_range=False`` mimics servers without Range."""

    files: dict[str, bytes] = field(default_factory=dict)
    honor_range: bool = True
    cut_after: int | None = None  # close the connection after this many body bytes
    rate: int | None = None  # send the body at about this many bytes per second
    token: str | None = None  # when set, requests without this bearer token get 401
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path → extra headers
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def bytes_sent(self) -> int:
        return sum(r.sent for r in self.requests)


def _file_handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            record = Request(
                self.path,
                self.headers.get("Range"),
                authorization=self.headers.get("Authorization"),
            )
            server.requests.append(record)
            data = server.files.get(self.path)
            if server.token is not None and record.authorization != f"Bearer {server.token}":
                data, record.status = None, 401
            if data is None:
                record.status = record.status or 404
                self.send_response(record.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", record.range or "")
            if match and server.honor_range:
                start = int(match[1])
                if start >= len(data):
                    record.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                record.status = 206
            else:
                self.send_response(200)
                record.status = 200
            body = data[start:]
            for name, value in server.headers.get(self.path, {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if server.honor_range else "none")
            self.end_headers()
            if server.cut_after is not None:
                body = body[: server.cut_after]
                self.close_connection = True
            if server.rate is None:
                self.wfile.write(body)
                record.sent = len(body)
                return
            step = max(1, server.rate // 20)  # 20 writes a second
            try:
                for at in range(0, len(body), step):
                    self.wfile.write(body[at : at + step])
                    self.wfile.flush()
                    record.sent += len(body[at : at + step])
                    time.sleep(step / server.rate)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client hung up: nothing more to send

    return Handler


@contextmanager
def serve_files(files: dict[str, bytes], **options: object) -> Iterator[FileServer]:
    state = FileServer(files=files, **options)  # type: ignore[arg-type]
    with _running(_file_handler(state)) as port:
        state.port = port
        yield state


@contextmanager
def _running(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# --- a PEP 503 index of wheels ------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid pure-Python wheel carrying ``files`` (archive path → bytes)."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: llm4all-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in contents.items():
            zf.writestr(arcname, data)
    return path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class SimpleIndex:
    """A PEP 503 index: ``/simple/<project>/`` lists wheels, ``/files/<wheel>`` serves them."""

    wheels: dict[str, Path] = field(default_factory=dict)  # normalized project → wheel file
    downloads: list[str] = field(default_factory=list)  # wheel file names served
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def add(self, name: str, wheel: Path) -> None:
        self.wheels[normalize(name)] = wheel


def _index_handler(index: SimpleIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            project = re.fullmatch(r"/simple/([^/]+)/?", self.path)
            wheel_name = re.fullmatch(r"/files/([^/]+)", self.path)
            if project and normalize(project[1]) in index.wheels:
                wheel = index.wheels[normalize(project[1])]
                sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                link = f'<a href="/files/{wheel.name}#sha256={sha}">{wheel.name}</a>'
                html = f"<!DOCTYPE html><html><body>{link}</body></html>"
                self._send(200, html.encode(), "text/html")
            elif wheel_name and any(w.name == wheel_name[1] for w in index.wheels.values()):
                index.downloads.append(wheel_name[1])
                data = next(
                    w for w in index.wheels.values() if w.name == wheel_name[1]
                ).read_bytes()
                self._send(200, data, "application/octet-stream")
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


@contextmanager
def serve_index() -> Iterator[SimpleIndex]:
    index = SimpleIndex()
    with _running(_index_handler(index)) as port:
        index.port = port
        yield index
