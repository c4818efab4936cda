"""A real, throw-away PostgreSQL server for the datalake tests and benchmark.

Debian's PostgreSQL 15 binaries (``/usr/lib/postgresql/15/bin``, or
``$LLM4ALL_PG_BIN``) make a cluster in a fresh folder with ``initdb`` and start
it with ``pg_ctl`` on a free 127.0.0.1 port, trust authentication, and (unless
``durable``) fsync off: a test database needs no crash safety of its own. ``initdb`` refuses to
run as root, so as root the folder is given to the ``postgres`` system user and
the binaries run through ``runuser -u postgres --``. When the binaries are
missing the tests are skipped with the command that installs them; under
``CI=true`` they fail instead, as the browser tests do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("LLM4ALL_PG_BIN") or "/usr/lib/postgresql/15/bin")
INSTALL = "sudo apt-get install postgresql-15"
USER = "llm4all"


def postgres_missing() -> str | None:
    """What is missing to start a server (None when nothing is)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} is not installed"
    if os.geteuid() == 0 and not _postgres_user():
        return "running as root and there is no 'postgres' user to run the server as"
    return None


def _postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running cluster: ``url`` of its ``postgres`` database; :meth:`database` makes another."""

    folder: Path
    port: int
    durable: bool = False

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def database(self, name: str) -> str:
        """Create (afresh) the database ``name`` and return its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url_of(name)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), *args], check)

    def start(self) -> None:
        """Start the server (again) on its port; raises with its log when it fails."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        options += " -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = self.folder / "log"
        started = self.pg_ctl("-o", options, "-l", str(log), "-w", "start", check=False)
        if started.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {tail}")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop", check=False)


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)


@contextmanager
def running_postgres(durable: bool = False) -> Iterator[PostgresServer]:
    """Start a fresh cluster; stop it and remove its folder afterwards.

    ``durable``: keep PostgreSQL's fsync and synchronous commit on, as a real
    deployment does (the benchmark); tests leave them off for speed.
    """
    missing = postgres_missing()
    if missing:
        raise RuntimeError(f"cannot start PostgreSQL: {missing} ({INSTALL})")
    # Not under pytest's tmp folders: those are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="llm4all-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, free_port(), durable)
    try:
        initdb = [str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-U", USER, "-A", "trust"]
        _run([*initdb, "--no-sync", "-E", "UTF8", "--locale", "C"])
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
