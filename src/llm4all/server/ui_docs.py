"""LocalDocs from the web page: list collections, add a folder, index it in the background.

A page that can name any folder of the server's machine can read any file the
server may read, so adding is allowed only where the operator said so:

- under the folders given with ``llm4all serve --docs-root DIR`` (repeatable),
  whatever the bind address;
- anywhere, when no ``--docs-root`` is given and the server listens on
  loopback (the page's user is the machine's user, as in GPT4All's app);
- nowhere else: a non-loopback server without ``--docs-root`` refuses.

A folder is judged by its real path (``..`` and symlinks resolved), so neither
path traversal nor a symlink out of a root gets past the check; the indexer
itself never follows a symlink out of the collection's folders. Whether a
refused folder exists is not said. Indexing runs in a thread on its own
:class:`LocalDocs` connection (SQLite WAL), so chats keep searching the
collections meanwhile; ``GET /api/collections`` shows its progress.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from llm4all.server.errors import ApiError
from llm4all.server.settings import ServerSettings, is_loopback
from llm4all.server.ui_schemas import CollectionOut, Strict

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs

#: Longest collection name the page may give.
MAX_NAME = 100

T = TypeVar("T")


class IndexingOut(BaseModel):
    state: Literal["running", "done", "failed"]
    files: int = Field(0, description="files read or found unchanged so far")
    chunks: int = Field(0, description="excerpts embedded so far")
    error: str | None = None


class CollectionState(CollectionOut):
    indexing: IndexingOut | None = Field(
        None, description="the last indexing run this server started for it (None: none)"
    )


class FolderBody(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME, description="collection (new or not)")
    folder: str = Field(min_length=1, description="a folder on the server's machine")


class FoldersOut(BaseModel):
    can_add: bool
    roots: list[str] = Field(description="the folders added ones must lie in (empty: any)")
    message: str | None = Field(None, description="why folders cannot be added here")


# -- the policy (pure but for reading the file system) -------------------------------------------
REFUSED_REMOTE = (
    "this server does not let the web page add folders: it listens on {host}, not on "
    "loopback; start it with `llm4all serve --docs-root DIR` to allow folders under DIR, "
    "or add one on the server with `llm4all docs add NAME FOLDER`"
)


def refusal(settings: ServerSettings) -> str | None:
    """Why this server adds no folder from the page at all (None: it may)."""
    if settings.docs_roots or is_loopback(settings.host):
        return None
    return REFUSED_REMOTE.format(host=settings.host)


def allowed_folder(settings: ServerSettings, given: str) -> str:
    """The real path of ``given`` if the page may add it, else an ApiError saying why.

    Relative paths start at the first ``--docs-root`` (the home folder without one).
    Example: with ``docs_roots=(Path("/srv/docs"),)``, ``"team"`` → ``"/srv/docs/team"``
    and ``"../etc"`` → 403.
    """
    from llm4all.localdocs.indexer import inside

    why = refusal(settings)
    if why is not None:
        raise ApiError(403, why, param="folder", code="folder_not_allowed")
    base = settings.docs_roots[0] if settings.docs_roots else Path.home()
    real = os.path.realpath(base / Path(given.strip()).expanduser())
    roots = [os.path.realpath(r) for r in settings.docs_roots]
    if roots and not inside(real, roots):
        raise ApiError(
            403,
            f"{given!r} is outside the folders this server lets the page add "
            f"(--docs-root): {', '.join(roots)}",
            param="folder",
            code="folder_not_allowed",
        )
    if not os.path.isdir(real):
        raise ApiError(400, f"{given!r} is not a folder on the server", param="folder")
    return real


# -- background indexing -----------------------------------------------------------------------
@dataclass
class IndexJob:
    """One indexing run started from the page, counted as it goes (a LocalDocs Progress)."""

    state: str = "running"
    files: int = 0
    chunks: int = 0
    error: str | None = None
    _phase: str = ""

    def start(self, total: int | None, description: str) -> None:
        self._phase = description

    def advance(self, n: int) -> None:
        if "embed" in self._phase.lower():
            self.chunks += n
        else:
            self.files += n

    def done(self) -> None:
        pass

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "files": self.files,
            "chunks": self.chunks,
            "error": self.error,
        }


class Indexing:
    """The indexing runs this server started, by collection name (one at a time per name)."""

    def __init__(self) -> None:
        self._jobs: dict[str, IndexJob] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def get(self, name: str) -> IndexJob | None:
        with self._lock:
            return self._jobs.get(name)

    def start(self, db_path: Path, name: str) -> IndexJob:
        with self._lock:
            running = self._jobs.get(name)
            if running is not None and running.state == "running":
                raise ApiError(409, f"collection {name!r} is being indexed already", param="name")
            job = self._jobs[name] = IndexJob()
            thread = threading.Thread(
                target=_index, args=(db_path, name, job), name=f"index-{name}", daemon=True
            )
            self._threads.append(thread)
        thread.start()
        return job

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the runs to end (at the app's shutdown, and in tests)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


def _index(db_path: Path, name: str, job: IndexJob) -> None:
    from llm4all.localdocs import LocalDocs

    try:
        with LocalDocs(db_path) as docs:  # its own connection: searches go on meanwhile
            docs.index(name, job)
        job.state = "done"
    except Exception as exc:  # the page shows it; the server goes on
        job.error = str(exc) or type(exc).__name__
        job.state = "failed"


# -- the app's databases -------------------------------------------------------------------------
def opened(request: Request, name: str, open_: Callable[[], T]) -> T:
    """``app.state.<name>``, opened with ``open_`` on first use (closed with the app).

    The web UI's databases are opened lazily, so an API-only server never touches them.
    """
    state = request.app.state
    with state.ui_lock:
        if getattr(state, name) is None:
            setattr(state, name, open_())
        resource: T = getattr(state, name)
    return resource


def localdocs_of(request: Request) -> LocalDocs:
    """The LocalDocs of this llm4all home, opened on first use and closed with the app."""
    from llm4all.localdocs import LocalDocs

    return opened(request, "localdocs", LocalDocs)


def check_collections(request: Request, names: list[str], status: int = 404) -> list[str]:
    """``names`` without repeats; an unknown one is an ApiError with ``status``.

    The UI's API answers 404 (a chat names a resource that is not there); the
    OpenAI-style endpoints answer 400 (a field of the request is invalid).
    """
    names = list(dict.fromkeys(names))
    if names:
        known = set(localdocs_of(request).names())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ApiError(
                status,
                f"no LocalDocs collection named {unknown[0]!r} (see `llm4all docs ls`)",
                param="collections",
                code="collection_not_found",
            )
    return names


# -- routes (under the UI API's guards: ``ui_api.install`` includes them) ---------------------------
router = APIRouter(prefix="/api", tags=["web UI"])


def _settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def _indexing(request: Request) -> Indexing:
    indexing: Indexing = request.app.state.indexing
    return indexing


@router.get("/collections", response_model=list[CollectionState])
def list_collections(request: Request) -> Any:
    """The LocalDocs collections a chat can search, with the state of their indexing."""
    indexing = _indexing(request)
    return [
        c.to_dict() | {"indexing": job.as_dict() if (job := indexing.get(c.name)) else None}
        for c in localdocs_of(request).list()
    ]


@router.get("/collections/folders", response_model=FoldersOut)
def folders_policy(request: Request) -> Any:
    """Whether the page may add folders here, and under which."""
    settings = _settings(request)
    return {
        "can_add": refusal(settings) is None,
        "roots": [os.path.realpath(r) for r in settings.docs_roots],
        "message": refusal(settings),
    }


@router.post("/collections", response_model=CollectionState, status_code=202)
def add_folder(body: FolderBody, request: Request) -> Any:
    """Add a folder to a collection (made if new) and index it in the background.

    Allowed on a loopback server, or under the ``--docs-root`` folders; see
    ``GET /api/collections/folders``. Poll ``GET /api/collections`` for progress.
    """
    real = allowed_folder(_settings(request), body.folder)
    docs = localdocs_of(request)
    try:
        info = docs.add(body.name.strip(), [real])
    except ValueError as exc:
        raise ApiError(400, str(exc), param="name") from None
    job = _indexing(request).start(docs.path, info.name)
    return info.to_dict() | {"indexing": job.as_dict()}
