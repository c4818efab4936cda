"""The model store: the folder of GGUF files and the one way to find a model.

The store is a flat folder (``paths.models_dir()``) of ``*.gguf`` files and
their sidecars: ``FILE.verified`` (the cached size/sha256 check),
``FILE.model.json`` (what ``add`` recorded about a sideloaded file),
``FILE.part`` (a download in progress). A file whose name is a catalog file
name *is* that catalog model; any other ``*.gguf`` is a local model, named by
its sidecar or by its file stem.

:meth:`ModelStore.resolve` is the single lookup every caller uses (the engine,
the CLI, the server): a catalog name, a file name, a local model's name or a
path to a ``.gguf`` file becomes a :class:`ResolvedModel` — a verified file on
disk and, for catalog models, the catalog entry (chat template override,
system prompt). Catalog files are verified (size + sha256) before first use;
the result is cached in the sidecar, so later loads cost one ``stat``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from llm4all import paths
from llm4all.errors import (
    ChecksumMismatch,
    DownloadError,
    InsufficientDisk,
    InsufficientMemory,
    ModelLoadError,
    ModelNotFound,
    ModelNotInstalled,
)
from llm4all.models.catalog import Catalog, CatalogEntry, load_catalog
from llm4all.models.gguf import GGUFMetadata, read_metadata
from llm4all.models.kinds import kind_from_metadata
from llm4all.models.sources import (
    NULL_PROGRESS,
    Progress,
    Verified,
    cached_verification,
    copy_into,
    fetch,
    hash_file,
    partial_path,
    record_verified,
    verified_path,
    verify_file,
    write_json_atomic,
)

try:  # POSIX; on Windows two concurrent pulls of one model are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Loading needs the file plus this share of it (KV cache, compute buffers) plus a fixed margin.
RAM_OVERHEAD_FACTOR = 1.2
RAM_OVERHEAD_BYTES = 200 * 2**20


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready to load: verified, on disk, with its catalog entry if it has one."""

    path: Path
    name: str
    entry: CatalogEntry | None = None

    @property
    def chat_template(self) -> str | None:
        """The catalog's template override (None: use the file's own template)."""
        return self.entry.chat_template if self.entry else None

    @property
    def system_prompt(self) -> str | None:
        return self.entry.system_prompt if self.entry else None


@dataclass(frozen=True)
class InstalledModel:
    """A ``*.gguf`` file in the store."""

    name: str
    path: Path
    size: int
    entry: CatalogEntry | None = None
    #: For local (non-catalog) files: architecture, parameters, quantization, kind, …
    described: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.entry.kind if self.entry else str(self.described.get("kind", "chat"))


@dataclass(frozen=True)
class ModelDetails:
    """Everything ``models info`` shows about one model."""

    name: str
    entry: CatalogEntry | None
    path: Path | None
    installed: bool
    metadata: GGUFMetadata | None
    verified: Verified | None
    described: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "installed": self.installed,
            "path": str(self.path) if self.path else None,
            "verified": self.verified.__dict__ if self.verified else None,
            "catalog": self.entry.to_dict() if self.entry else None,
            "local": dict(self.described) or None,
            "metadata": self.metadata.summary() if self.metadata else None,
        }


def memory_needed(size_bytes: int) -> int:
    """RAM a model file of this size needs to load. Example: 1 GB → about 1.4 GB."""
    return int(size_bytes * RAM_OVERHEAD_FACTOR) + RAM_OVERHEAD_BYTES


def ensure_fits_in_ram(size_bytes: int, *, available: int | None = None) -> int:
    """Raise :class:`InsufficientMemory` unless a model of this size fits in free RAM.

    Returns the bytes it will need. ``available`` overrides psutil (for tests).
    """
    needed = memory_needed(size_bytes)
    free = psutil.virtual_memory().available if available is None else available
    if needed > free:
        raise InsufficientMemory(needed, int(free))
    return needed


def describe_metadata(meta: GGUFMetadata) -> dict[str, Any]:
    """What the store records about a local model, from its GGUF header."""
    kind = kind_from_metadata(meta.architecture, meta.chat_template, meta.values, meta.path.name)
    return {
        "architecture": meta.architecture,
        "model_name": meta.name,
        "parameters": meta.parameters_label,
        "quantization": meta.quantization,
        "context_length": meta.context_length,
        "kind": kind,
        "size": meta.size,
    }


def _model_sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".model.json")


class ModelStore:
    """The folder of model files, with the catalog that says how to fill it."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        catalog: Catalog | None = None,
        index_url: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else paths.models_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog if catalog is not None else load_catalog()
        self.index_url = index_url  # replaces pip's configured indexes for PyPI sources

    def path_of(self, entry: CatalogEntry) -> Path:
        """Where a catalog model's file lives (whether or not it is there)."""
        return self.root / entry.filename

    # --- listing -------------------------------------------------------------

    def installed(self) -> list[InstalledModel]:
        """The models in the store, catalog ones first, then local ones, by name."""
        models = [self._describe_file(p) for p in sorted(self.root.glob("*.gguf")) if p.is_file()]
        return sorted(models, key=lambda m: (m.entry is None, m.name.lower()))

    def _describe_file(self, path: Path) -> InstalledModel:
        size = path.stat().st_size
        entry = self.catalog.by_filename(path.name)
        if entry is not None:
            return InstalledModel(entry.name, path, size, entry)
        described = self._read_sidecar(path)
        if not described:
            try:
                described = describe_metadata(read_metadata(path))
            except ModelLoadError as exc:
                described = {"error": exc.reason}
        return InstalledModel(str(described.get("name") or path.stem), path, size, None, described)

    @staticmethod
    def _read_sidecar(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(_model_sidecar(path).read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def find_installed(self, name: str) -> InstalledModel | None:
        """The installed model with this name, file name or file stem (case-insensitive)."""
        key = name.lower()
        for model in self.installed():
            if key in (model.name.lower(), model.path.name.lower(), model.path.stem.lower()):
                return model
        return None

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """Known names that look like ``name``: substrings first, then close spellings."""
        names = list(
            dict.fromkeys([e.name for e in self.catalog] + [m.name for m in self.installed()])
        )
        key = name.lower()
        found = [n for n in names if key and key in n.lower()]
        lowered = {n.lower(): n for n in names}
        found += [
            lowered[n] for n in difflib.get_close_matches(key, list(lowered), n=limit, cutoff=0.5)
        ]
        return list(dict.fromkeys(found))[:limit]

    # --- resolving -----------------------------------------------------------

    def resolve(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        allow_download: bool = True,
        progress: Progress | None = None,
    ) -> ResolvedModel:
        """Find a model by catalog name, file name, local name or path; verify it.

        ``None`` means the catalog's default chat model.
        A catalog model that is not installed is pulled when ``allow_download``,
        else :class:`ModelNotInstalled` is raised. An unknown name raises
        :class:`ModelNotFound` with suggestions; a broken file raises
        :class:`ModelLoadError` or :class:`ChecksumMismatch`.
        """
        progress = progress if progress is not None else NULL_PROGRESS
        if name_or_path is None:
            return self._resolve_entry(self.catalog.default(), allow_download, progress)
        text = os.fspath(name_or_path)
        if _looks_like_path(text):
            return self._resolve_path(Path(text).expanduser(), progress)
        entry = self.catalog.get(text) or self.catalog.by_filename(text)
        if entry is not None:
            return self._resolve_entry(entry, allow_download, progress)
        local = self.find_installed(text)
        if local is not None:
            verify_file(local.path, size=None, sha256=None, remove_bad=False)
            return ResolvedModel(local.path, local.name, None)
        if text.lower().endswith(".gguf") and Path(text).is_file():
            return self._resolve_path(Path(text), progress)  # a file in the working folder
        raise ModelNotFound(text, self.suggestions(text))

    def _in_store(self, path: Path) -> bool:
        return path.parent.resolve() == self.root.resolve()

    def _resolve_path(self, path: Path, progress: Progress) -> ResolvedModel:
        if path.is_file() and self._in_store(path):
            # A file inside the store is what the store says it is.
            entry = self.catalog.by_filename(path.name)
            if entry is not None:
                return self._resolve_entry(entry, False, progress)
            local = self._describe_file(path)
            verify_file(path, size=None, sha256=None, remove_bad=False)
            return ResolvedModel(path, local.name, None)
        read_metadata(path)  # refuse a broken file here, with a clear reason
        return ResolvedModel(path.resolve(), path.stem, None)

    def _resolve_entry(
        self, entry: CatalogEntry, allow_download: bool, progress: Progress
    ) -> ResolvedModel:
        path = self.path_of(entry)
        if path.exists():
            verify_file(path, size=entry.size, sha256=entry.sha256, progress=progress)
        elif allow_download:
            self.pull(entry.name, progress)
        else:
            raise ModelNotInstalled(entry.name)
        return ResolvedModel(path, entry.name, entry)

    def verify(self, name: str, progress: Progress | None = None) -> Verified:
        """Verify an installed catalog model now (re-hashing unless the cache is current)."""
        progress = progress if progress is not None else NULL_PROGRESS
        entry = self._catalog_entry(name)
        path = self.path_of(entry)
        if not path.exists():
            raise ModelNotInstalled(entry.name)
        return verify_file(path, size=entry.size, sha256=entry.sha256, progress=progress)

    # --- changing the store --------------------------------------------------

    def _catalog_entry(self, name: str) -> CatalogEntry:
        entry = self.catalog.get(name) or self.catalog.by_filename(name)
        if entry is None:
            raise ModelNotFound(name, self.suggestions(name))
        return entry

    def pull(self, name: str, progress: Progress | None = None) -> Path:
        """Download a catalog model (no-op when it is installed and verifies); returns its path.

        Sources are tried in order; when all fail, the first one's error is raised.
        """
        progress = progress if progress is not None else NULL_PROGRESS
        entry = self._catalog_entry(name)
        dest = self.path_of(entry)
        with self._lock(dest):
            if dest.exists():
                try:
                    verify_file(dest, size=entry.size, sha256=entry.sha256, progress=progress)
                    return dest
                except ChecksumMismatch:
                    log.warning("installed %s failed verification; downloading it again", dest.name)
            errors: list[Exception] = []
            for source in entry.sources:
                try:
                    fetch(
                        source,
                        dest,
                        size=entry.size,
                        sha256=entry.sha256,
                        progress=progress,
                        index_url=self.index_url,
                    )
                    return dest
                except InsufficientDisk:
                    raise
                except (DownloadError, ChecksumMismatch) as exc:
                    log.info("%s: %s failed: %s", entry.name, source.describe(), exc)
                    errors.append(exc)
            raise errors[0]

    @contextlib.contextmanager
    def _lock(self, dest: Path) -> Iterator[None]:
        """Serialise pulls of one file across processes (a second waits, then finds it done)."""
        lock_path = dest.with_name(f".{dest.name}.lock")
        with lock_path.open("a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def add(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        link: bool = True,
        progress: Progress | None = None,
    ) -> InstalledModel:
        """Sideload a local GGUF file into the store (a hard link when possible, else a copy).

        The header is validated first. A file named like a catalog file must
        match that entry's checksum and becomes that catalog model.
        """
        progress = progress if progress is not None else NULL_PROGRESS
        src = Path(path).expanduser().resolve()
        meta = read_metadata(src)
        entry = self.catalog.by_filename(src.name)
        model_name = entry.name if entry else (name or src.stem)
        if entry is None:
            self._check_new_name(model_name)
        dest = self.root / src.name
        if dest.exists() and not dest.samefile(src):
            raise FileExistsError(f"{dest} already exists in the model store; remove it first")
        digest = (
            hash_file(src) if dest.exists() else copy_into(src, dest, link=link, progress=progress)
        )
        if entry is not None and entry.sha256 is not None and digest != entry.sha256:
            dest.unlink()
            raise ChecksumMismatch(str(src), entry.sha256, digest, removed=False)
        record_verified(dest, digest)
        if entry is None:
            described = describe_metadata(meta) | {
                "name": model_name,
                "source": str(src),
                "sha256": digest,
                "added": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            write_json_atomic(_model_sidecar(dest), described)
        return self._describe_file(dest)

    def _check_new_name(self, name: str) -> None:
        if not name.strip() or "/" in name or "\\" in name:
            raise ValueError(f"invalid model name {name!r}")
        if self.catalog.get(name) is not None or self.find_installed(name) is not None:
            raise FileExistsError(
                f"a model named {name!r} already exists; choose another with --name"
            )

    def remove(self, name: str) -> Path:
        """Delete an installed model (or a catalog model's partial download); returns its path."""
        model = self.find_installed(name)
        if model is None:
            entry = self.catalog.get(name)
            if entry is None:
                raise ModelNotFound(name, self.suggestions(name))
            part = partial_path(self.path_of(entry))
            if not part.exists():
                raise ModelNotInstalled(entry.name)
            _unlink_all(self.path_of(entry))
            return part
        _unlink_all(model.path)
        return model.path

    def info(self, name: str) -> ModelDetails:
        """Catalog fields, installed state and GGUF metadata of a model (or of any .gguf path)."""
        if _looks_like_path(name) and not self._in_store(Path(name).expanduser()):
            path = Path(name).expanduser()
            meta = read_metadata(path)
            return ModelDetails(path.stem, None, path, False, meta, None, describe_metadata(meta))
        model = self.find_installed(Path(name).name if _looks_like_path(name) else name)
        entry = model.entry if model else self.catalog.get(name) or self.catalog.by_filename(name)
        if model is None:
            if entry is None:
                raise ModelNotFound(name, self.suggestions(name))
            return ModelDetails(entry.name, entry, self.path_of(entry), False, None, None)
        return ModelDetails(
            name=model.name,
            entry=entry,
            path=model.path,
            installed=True,
            metadata=read_metadata(model.path),
            verified=cached_verification(model.path),
            described=model.described,
        )


def _looks_like_path(text: str) -> bool:
    """A model named with a folder part (``./m.gguf``, ``~/models/m.gguf``) is a path."""
    return os.sep in text or "/" in text or text.startswith("~")


def _unlink_all(path: Path) -> None:
    for p in (
        path,
        verified_path(path),
        _model_sidecar(path),
        partial_path(path),
        path.with_name(path.name + ".part.json"),
    ):
        p.unlink(missing_ok=True)
