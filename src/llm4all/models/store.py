"""The model store: the folder of GGUF files and the one way to find a model.

The store is a flat folder (``paths.models_dir()``) of ``*.gguf`` files and
their sidecars: ``FILE.verified`` (the cached size/sha256 check),
``FILE.model.json`` (a file's names and what ``add`` or a ``hf.co/`` pull
recorded about it, :mod:`llm4all.models.sidecar`),
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
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4all import paths
from llm4all.errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadInterrupted,
    InsufficientDisk,
    ModelLoadError,
    ModelNotFound,
    ModelNotInstalled,
)
from llm4all.models import hub, sidecar
from llm4all.models.catalog import Catalog, CatalogEntry, load_catalog, suggest
from llm4all.models.gguf import GGUFMetadata, read_metadata
from llm4all.models.kinds import kind_from_metadata
from llm4all.models.memory import ram_gib
from llm4all.models.sources import (
    NULL_PROGRESS,
    Progress,
    Verified,
    cached_verification,
    claim_part,
    copy_into,
    fetch,
    fetch_url,
    make_client,
    partial_path,
    record_verified,
    resumable_bytes,
    verified_path,
    verify_file,
)

try:  # POSIX; on Windows two concurrent pulls of one model are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


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

    @property
    def ram_required_gb(self) -> float:
        """About how much RAM it needs loaded, in GiB: the same figure under every name."""
        return ram_gib(self.size)


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
        """The models in the store, catalog ones first, then local ones, by name.

        A file with several names (``models add FILE --name other``) is listed once per name.
        """
        models = [
            model
            for p in sorted(self.root.glob("*.gguf"))
            if p.is_file()
            for model in self._describe_file(p)
        ]
        return sorted(models, key=lambda m: (m.entry is None, m.name.lower()))

    def _describe_file(self, path: Path) -> list[InstalledModel]:
        """The file under each of its names (a catalog file's catalog name first)."""
        size = path.stat().st_size
        recorded = sidecar.read(path)
        entry = self.catalog.by_filename(path.name)
        if entry is not None:
            names = list(dict.fromkeys([entry.name, *sidecar.names(recorded)]))
            return [InstalledModel(n, path, size, entry) for n in names]
        described = recorded
        if not described:
            try:
                described = describe_metadata(read_metadata(path))
            except ModelLoadError as exc:
                described = {"error": exc.reason}
        names = sidecar.names(described) or [path.stem]
        return [InstalledModel(n, path, size, None, described) for n in names]

    def names_of(self, path: Path) -> list[str]:
        """Every name of a file in the store (empty when it is not there)."""
        return [m.name for m in self._describe_file(path)] if path.is_file() else []

    def find_installed(self, name: str) -> InstalledModel | None:
        """The installed model with this name, file name or file stem (case-insensitive).

        A ``hf.co/USER/REPO`` name without a quantization finds the file of that
        repository whose quantization comes first in :data:`hub.DEFAULT_QUANTS`.
        """
        ref = hub.parse_ref(name)
        key = ref.name.lower() if ref is not None else name.lower()
        models = self.installed()
        for model in models:
            if key == model.name.lower():
                return model
        if ref is not None:
            return _installed_from_hub(ref, models)
        for model in models:
            if key in (model.path.name.lower(), model.path.stem.lower()):
                return model
        return None

    def suggestions(self, name: str, limit: int = 3) -> list[str]:
        """Known names that look like ``name`` (ollama-style names by family; see :func:`suggest`)."""
        names = [e.name for e in self.catalog] + [m.name for m in self.installed()]
        return suggest(name, list(dict.fromkeys(names)), limit)

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
        ref = hub.parse_ref(text)
        if ref is not None:
            return self._resolve_hub(ref, allow_download, progress)
        if names_a_path(text):
            return self._resolve_path(Path(text).expanduser(), progress)
        entry = self.catalog.get(text) or self.catalog.by_filename(text)
        if entry is not None:
            return self._resolve_entry(entry, allow_download, progress)
        local = self.find_installed(text)
        if local is not None:
            return self._resolve_installed(local, progress)
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
            local = self._describe_file(path)[0]
            verify_file(path, size=None, sha256=None, remove_bad=False)
            return ResolvedModel(path, local.name, None)
        read_metadata(path)  # refuse a broken file here, with a clear reason
        return ResolvedModel(path.resolve(), path.stem, None)

    def _resolve_hub(
        self, ref: hub.HubRef, allow_download: bool, progress: Progress
    ) -> ResolvedModel:
        found = self.find_installed(ref.name)
        if found is None and not allow_download:
            raise ModelNotInstalled(ref.name)
        if found is None:
            self.pull(ref.name, progress)
            found = self.find_installed(ref.name)
            assert found is not None, ref
        return self._resolve_installed(found, progress)

    def _resolve_installed(self, model: InstalledModel, progress: Progress) -> ResolvedModel:
        """An installed model under the name it was asked by (a catalog file keeps its entry)."""
        if model.entry is not None:
            entry = model.entry
            verify_file(model.path, size=entry.size, sha256=entry.sha256, progress=progress)
        else:
            verify_file(model.path, size=None, sha256=None, remove_bad=False)
        return ResolvedModel(model.path, model.name, model.entry)

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
        ``hf.co/USER/REPO[:QUANT]`` names pull from a Hugging Face repository
        (:mod:`llm4all.models.hub`). Ctrl-C keeps what came and raises
        :class:`DownloadInterrupted`, which says how far it got.
        """
        progress = progress if progress is not None else NULL_PROGRESS
        ref = hub.parse_ref(name)
        if ref is not None:
            return self._pull_hub(ref, progress)
        entry = self._catalog_entry(name)
        dest = self.path_of(entry)
        with self._lock(dest), _resumable(entry.name, dest, entry.size):
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

    def _pull_hub(self, ref: hub.HubRef, progress: Progress) -> Path:
        with make_client() as client:
            client.headers.update(hub.auth_headers())
            file = hub.choose_file(ref, hub.list_files(ref, client))
            name, url = file.model_name(ref.repo), hub.download_url(ref, file)
            dest = self.root / file.filename
            facts: dict[str, Any] = {
                "hub": {"repo": ref.repo, "path": file.path, "revision": ref.revision}
            }
            with self._lock(dest):
                if dest.exists():
                    self._check_same_file(dest, file.size, file.sha256, url)
                else:
                    claim_part(dest, {"url": url, "size": file.size, "sha256": file.sha256})
                    with _resumable(name, dest, file.size):
                        digest = fetch_url(
                            url,
                            dest,
                            size=file.size,
                            sha256=file.sha256,
                            progress=progress,
                            client=client,
                        )
                    self._check_catalog_file(dest, digest)
                    if self.catalog.by_filename(dest.name) is None:
                        facts |= describe_metadata(read_metadata(dest))
                        facts |= {"source": url, "sha256": digest, "added": sidecar.now()}
                sidecar.add_name(dest, name, **facts)
        return dest

    def _check_same_file(self, dest: Path, size: int, sha256: str | None, url: str) -> None:
        """``dest`` is already in the store: it must be the file the hub offers."""
        try:
            verify_file(dest, size=size, sha256=sha256, remove_bad=False)
            same = sha256 is not None or dest.stat().st_size == size
        except ChecksumMismatch:
            same = False
        if not same:
            raise FileExistsError(
                f"{dest} already exists in the model store and is not {url}; remove it first"
            )

    def _check_catalog_file(self, dest: Path, digest: str) -> None:
        """A download named like a catalog file must be that file."""
        entry = self.catalog.by_filename(dest.name)
        if entry is not None and entry.sha256 is not None and digest != entry.sha256:
            _unlink_all(dest)
            raise ChecksumMismatch(str(dest), entry.sha256, digest)

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
        check: bool = True,
    ) -> InstalledModel:
        """Sideload a local GGUF file into the store (a hard link when possible, else a copy).

        The header is validated first; with ``check`` the file is also proven to
        load and work (``engine/probe.py``), once, in a child process. A file
        named like a catalog file must match that entry's checksum and becomes
        that catalog model.
        """
        progress = progress if progress is not None else NULL_PROGRESS
        src = Path(path).expanduser().resolve()
        meta = read_metadata(src)
        if check:
            from llm4all.engine.probe import check_model_file  # the engine is a layer up

            check_model_file(src)
        entry = self.catalog.by_filename(src.name)
        model_name = name or (entry.name if entry else src.stem)
        dest = self.root / src.name
        if dest.exists() and not dest.samefile(src):
            raise FileExistsError(f"{dest} already exists in the model store; remove it first")
        if dest.exists():  # the same file again: at most a new name for it
            return self._name_file(dest, model_name)
        if model_name != (entry.name if entry else None):
            self._check_new_name(model_name)
        digest = copy_into(src, dest, link=link, progress=progress)
        if entry is not None and entry.sha256 is not None and digest != entry.sha256:
            dest.unlink()
            raise ChecksumMismatch(str(src), entry.sha256, digest, removed=False)
        record_verified(dest, digest)
        if entry is None:
            facts = {"source": str(src), "sha256": digest, "added": sidecar.now()}
            sidecar.add_name(dest, model_name, **describe_metadata(meta), **facts)
        elif model_name != entry.name:
            sidecar.add_name(dest, model_name)
        return self._name_file(dest, model_name)

    def _name_file(self, path: Path, name: str) -> InstalledModel:
        """The store's file under ``name``, which is added to its names if it is new."""
        known = {m.name.lower(): m for m in self._describe_file(path)}
        if name.lower() not in known:
            self._check_new_name(name)
            sidecar.add_name(path, name)
            known = {m.name.lower(): m for m in self._describe_file(path)}
        return known[name.lower()]

    def _check_new_name(self, name: str) -> None:
        if not name.strip() or "/" in name or "\\" in name:
            raise ValueError(f"invalid model name {name!r}")
        if self.catalog.get(name) is not None or self.find_installed(name) is not None:
            raise FileExistsError(
                f"a model named {name!r} already exists; choose another with --name"
            )

    def remove(self, name: str) -> Path:
        """Delete an installed model (or a catalog model's partial download); returns its path.

        A file with other names keeps them: only this name goes (as ``ollama rm``
        of one tag), unless it is the file's catalog name.
        """
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
        if len(self.names_of(model.path)) > 1 and (model.entry is None or name_is_alias(model)):
            sidecar.drop_name(model.path, model.name)
        else:
            _unlink_all(model.path)
        return model.path

    def info(self, name: str) -> ModelDetails:
        """Catalog fields, installed state and GGUF metadata of a model (or of any .gguf path)."""
        ref = hub.parse_ref(name)
        if ref is not None and self.find_installed(name) is None:
            raise ModelNotInstalled(ref.name)
        if names_a_path(name) and not self._in_store(Path(name).expanduser()):
            path = Path(name).expanduser()
            meta = read_metadata(path)
            return ModelDetails(path.stem, None, path, False, meta, None, describe_metadata(meta))
        model = self.find_installed(Path(name).name if names_a_path(name) else name)
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


def name_is_alias(model: InstalledModel) -> bool:
    """A catalog file's other name (from ``add --name`` or a ``hf.co/`` pull)."""
    return model.entry is not None and model.name != model.entry.name


def _installed_from_hub(ref: hub.HubRef, models: list[InstalledModel]) -> InstalledModel | None:
    """The installed file ``ref`` names (``hf.co/USER/REPO``: the best quantization there is)."""
    prefix = f"hf.co/{ref.repo}".lower()
    mine = [m for m in models if m.name.lower().startswith((prefix + ":", prefix + "/"))]
    if ref.path is not None:
        wanted = ref.path.rsplit("/", 1)[-1].lower()
        return next((m for m in mine if m.path.name.lower() == wanted), None)
    if ref.quant is not None or not mine:
        return None
    rank = {q: i for i, q in enumerate(hub.DEFAULT_QUANTS)}
    return min(mine, key=lambda m: rank.get(hub.quantization_of(m.path.name) or "", len(rank)))


@contextlib.contextmanager
def _resumable(name: str, dest: Path, total: int | None) -> Iterator[None]:
    """Turn Ctrl-C during a download into :class:`DownloadInterrupted` (how far, and resume)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        have = resumable_bytes(dest)
        if isinstance(exc, DownloadInterrupted) or not have:
            raise
        raise DownloadInterrupted(name, have, total) from None


def names_a_path(text: str) -> bool:
    """A model named with a folder part (``./m.gguf``, ``~/models/m.gguf``) is a path.

    ``hf.co/USER/REPO`` names are not (see :mod:`llm4all.models.hub`).
    """
    looks = os.sep in text or "/" in text or "\\" in text or text.startswith(("~", "."))
    return looks and hub.parse_ref(text) is None


def _unlink_all(path: Path) -> None:
    from llm4all import hf

    hf.forget(path)  # a float copy rebuilt for transformers goes with its file
    for p in (
        path,
        verified_path(path),
        sidecar.sidecar_path(path),
        partial_path(path),
        path.with_name(path.name + ".part.json"),
    ):
        p.unlink(missing_ok=True)
