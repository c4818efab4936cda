"""The backend registry: one hook, an entry-point group, for built-in and third-party backends.

A backend is a :class:`Backend`: a name, the references it claims, the class of
its load options, and a ``load(ref, options) -> Engine`` function. It is
registered by an entry point in the group ``llm4all.backends`` (as `llm`'s
plugins are), whose value is a :class:`Backend` or a function returning one::

    [project.entry-points."llm4all.backends"]
    mybackend = "my_package.llm4all_backend:backend"

The built-in llama.cpp backend is registered by the same entry point in
llm4all's own ``pyproject.toml``; :func:`register_backend` (what the entry
points end up calling) also registers the built-ins in code, so a source tree
whose metadata predates an entry point still finds them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from llm4all.engine.base import Engine
from llm4all.engine.refs import ModelRef
from llm4all.errors import InvalidParameter
from llm4all.params import LoadParams

log = logging.getLogger(__name__)

GROUP = "llm4all.backends"
#: Built-in backends: entry-point name -> "module:attribute" (the same as in pyproject.toml).
BUILTINS = {
    "llamacpp": "llm4all.engine.builtin:llamacpp",
    "remote": "llm4all.engine.remote:backend",
    "transformers": "llm4all.engine.transformers:backend",
}


@dataclass(frozen=True)
class Backend:
    """One way to load models. See the module docstring."""

    name: str
    load: Callable[[ModelRef, Any], Engine]
    claims: Callable[[ModelRef], bool]
    #: The dataclass of this backend's load options (``LoadParams`` for llama.cpp).
    options: type = LoadParams
    #: Names this backend knows before the model store is asked (a registered remote).
    resolve: Callable[[str], ModelRef | None] | None = None
    description: str = ""
    #: Lower goes first when several backends claim a reference.
    priority: int = field(default=100)


_BACKENDS: dict[str, Backend] = {}
_lock = threading.Lock()
_discovered = False


def register_backend(
    backend: Backend | str, loader: Callable[[Path, Any], Engine] | None = None
) -> None:
    """Make ``backend`` available to :func:`load_engine`.

    The old form ``register_backend(name, loader)`` (a loader of a path and
    ``LoadParams``) still works: it claims local files.
    """
    if isinstance(backend, str):
        if loader is None:
            raise TypeError("register_backend(name, loader) needs a loader")
        path_loader = loader
        backend = Backend(
            backend,
            lambda ref, options: path_loader(_path_of(ref), options),
            lambda ref: ref.is_local,
        )
    with _lock:
        _BACKENDS[backend.name] = backend


def _path_of(ref: ModelRef) -> Path:
    if ref.path is None:
        raise InvalidParameter("model", ref.name, "a local model file")
    return ref.path


def _load_entry(name: str, value: str) -> None:
    try:
        module, _, attr = value.partition(":")
        obj: Any = __import__(module, fromlist=[attr])
        for part in attr.split("."):
            obj = getattr(obj, part)
        backend = obj if isinstance(obj, Backend) else obj()
        if not isinstance(backend, Backend):
            raise TypeError(f"{value} is not an llm4all Backend")
    except Exception:
        log.warning("backend %s (%s) could not be loaded", name, value, exc_info=True)
        return
    register_backend(backend)


def discover() -> None:
    """Register every backend of the entry-point group (once), then any built-in missing."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    seen: set[str] = set()
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in seen:  # an editable install can list a distribution twice
            continue
        seen.add(ep.name)
        _load_entry(ep.name, ep.value)
    for name, value in BUILTINS.items():
        if name not in _BACKENDS:
            _load_entry(name, value)


def get_backend(name: str) -> Backend:
    discover()
    try:
        return _BACKENDS[name]
    except KeyError:
        raise InvalidParameter("backend", name, f"one of {', '.join(backends())}") from None


def backend_options(name: str, load: Mapping[str, Any], **flags: Any) -> Any:
    """Backend ``name``'s own load options from llama.cpp's ``load`` fields and its flags
    (``gen_config=…``, ``device=…``, ``dtype=…`` for transformers), checked before a load.

    Raises :class:`InvalidParameter` naming the first flag when the backend takes none.
    """
    from_cli = getattr(get_backend(name).options, "from_cli", None)
    if from_cli is None:
        first = next(iter(flags))
        raise InvalidParameter(first, flags[first], f"none: the {name} backend has no such option")
    return from_cli(load, **flags)


def backends() -> list[str]:
    """The names of the registered backends."""
    discover()
    return sorted(_BACKENDS)


def backend_for(ref: ModelRef, name: str | None = None) -> Backend:
    """The backend that loads ``ref``: the one named, else the first that claims it."""
    wanted = name or ref.backend
    if wanted is not None:
        return get_backend(wanted)
    discover()
    for backend in sorted(_BACKENDS.values(), key=lambda b: (b.priority, b.name)):
        if backend.claims(ref):
            return backend
    raise InvalidParameter("model", ref.name, f"a model one of {', '.join(backends())} can load")


def load_engine(
    ref: ModelRef | str | Path,
    options: Any = None,
    backend: str | None = None,
) -> Engine:
    """Load ``ref`` (a reference, or a path to a model file) with its backend.

    ``options`` are the backend's load options (``LoadParams`` for llama.cpp;
    None: its defaults).
    """
    if not isinstance(ref, ModelRef):
        ref = ModelRef.file(ref)
    chosen = backend_for(ref, backend)
    return chosen.load(ref, options if options is not None else chosen.options())


def resolve(
    name: str | Path | None,
    *,
    allow_download: bool = True,
    progress: Any = None,
    models_dir: Path | None = None,
) -> ModelRef:
    """A name to a reference: a backend's own names first (a registered remote),
    then the model store (a catalog name, an installed file, a path; None is the
    default model, downloaded first when allowed)."""
    if name is not None and not isinstance(name, Path):
        discover()
        for backend in sorted(_BACKENDS.values(), key=lambda b: (b.priority, b.name)):
            if backend.resolve is not None:
                found = backend.resolve(name)
                if found is not None:
                    return found
    if name is not None and Path(name).expanduser().is_dir():  # a model folder (Hugging Face)
        return ModelRef.file(Path(name).expanduser())
    from llm4all.models import ModelStore

    resolved = ModelStore(models_dir).resolve(
        None if name is None else str(name), allow_download=allow_download, progress=progress
    )
    return ModelRef.file(resolved.path, name=resolved.name, entry=resolved.entry)
