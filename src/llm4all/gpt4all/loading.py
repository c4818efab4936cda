"""Finding, downloading and placing a model, the original API's way, on llm4all's store.

``retrieve_model`` and ``download_model`` keep the original signatures but go
through :class:`~llm4all.models.ModelStore` (catalog names, verified files,
PyPI and HTTP sources). Errors are llm4all's, with the exception types the
original raised mixed in so that old ``except`` clauses still catch them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from llm4all.errors import ChecksumMismatch, InvalidParameter, ModelNotFound, ModelNotInstalled
from llm4all.gpt4all.formats import (
    NOMIC_MODELS,
    ConfigType,
    append_extension_if_missing,
    models3_entry,
)
from llm4all.models import ModelStore, ResolvedModel, load_catalog
from llm4all.models.sources import NULL_PROGRESS, Progress, fetch_url, verified_path


class ModelNotFoundError(ModelNotFound, ValueError, FileNotFoundError):
    """No such model: not in llm4all's catalog, not in the model folder.

    Also a ``ValueError`` and a ``FileNotFoundError``: the original raised one or
    the other, depending on ``allow_download``.
    """

    def __init__(
        self, name: str, suggestions: Sequence[str] = (), folder: Path | None = None
    ) -> None:
        super().__init__(name, suggestions)
        if folder is not None:
            hint = f"; did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
            self.args = (
                f"unknown model {name!r}: it is not in llm4all's catalog (see GPT4All.list_models()) "
                f"and there is no such file in {folder}{hint}",
            )


class ModelNotInstalledError(ModelNotInstalled, FileNotFoundError):
    """A catalog model whose file is missing while ``allow_download=False``."""


class GPUUnavailable(InvalidParameter):
    """``device`` asked for a GPU but this llama.cpp build cannot offload to one."""

    def __init__(self, device: str) -> None:
        super().__init__("device", device, "'cpu'")
        self.args = (
            f"Unable to initialize model on GPU: {device!r}: this llama.cpp build has no GPU "
            "offload; use device='cpu' or install llama-cpp-python built for CUDA, Vulkan or Metal",
        )


def gpu_backend() -> str | None:
    """The offload backend's name in the original's words, or None on a CPU-only build."""
    from llm4all.engine.gpu import offload_backend  # loads llama.cpp

    backend = offload_backend()
    return None if backend is None else backend.lower()  # "cuda", "metal", "vulkan", …


def gpu_layers(device: str | None, ngl: int) -> int:
    """Layers to offload for the original's ``device`` (None: CPU, but Metal on Apple silicon)."""
    if device == "cpu":
        return 0
    if device is None:
        apple = sys.platform == "darwin" and platform.machine() == "arm64"
        return ngl if apple and gpu_backend() else 0
    if gpu_backend() is None:
        raise GPUUnavailable(device)
    return ngl


class _StderrProgress:
    """Download progress on stderr for ``verbose=True`` (where the original drew tqdm bars)."""

    def __init__(self) -> None:
        self._total: int | None = None
        self._done, self._shown, self._label = 0, -1, ""

    def start(self, total: int | None, description: str) -> None:
        self._total, self._done, self._shown, self._label = total, 0, -1, description

    def advance(self, n: int) -> None:
        self._done += n
        step = self._done * 100 // self._total if self._total else self._done >> 24
        if step != self._shown:
            self._shown = step
            amount = f"{step}%" if self._total else f"{self._done / 2**20:.0f} MiB"
            print(f"\r{self._label}: {amount}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._shown >= 0:
            print(file=sys.stderr)


def _check_download(path: Path, expected_size: int | None, expected_md5: str | None) -> None:
    """The original's size and md5 checks; a file that fails them is removed."""
    size = path.stat().st_size
    expected, actual = "", ""
    if expected_size is not None and size != expected_size:
        expected, actual = f"{expected_size:,} bytes", f"{size:,} bytes"
    elif expected_md5:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                md5.update(block)
        if md5.hexdigest() != expected_md5.lower():
            expected, actual = f"md5 {expected_md5.lower()}", f"md5 {md5.hexdigest()}"
    if expected:
        path.unlink(missing_ok=True)
        verified_path(path).unlink(missing_ok=True)
        raise ChecksumMismatch(str(path), expected, actual)


def _resolve(
    store: ModelStore, name: str | None, allow_download: bool, progress: Progress
) -> ResolvedModel:
    try:
        return store.resolve(name, allow_download=allow_download, progress=progress)
    except ModelNotFound as first:
        if name is None or append_extension_if_missing(name) == name:
            raise
        try:  # the original appended ".gguf" to a bare name
            return store.resolve(name + ".gguf", allow_download=allow_download, progress=progress)
        except ModelNotFound:
            raise first from None


def list_models() -> list[ConfigType]:
    """llm4all's catalog in the shape of GPT4All's ``models3.json``."""
    return [models3_entry(e) for e in load_catalog()]


def list_gpus() -> list[str]:
    """The GPU offload backend, if this llama.cpp build has one (else an empty list)."""
    backend = gpu_backend()
    return [backend] if backend else []


def retrieve_model(
    model_name: str | None = None,
    model_path: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
    verbose: bool = False,
) -> ConfigType:
    """Find a model (downloading a catalog model if allowed); returns its config with ``path``.

    ``model_name`` is a catalog name, a file name (``.gguf`` may be left off) or
    None for the default model; ``model_path`` the folder to look in and
    download into (default: the llm4all model store).
    """
    folder = None if model_path is None else Path(model_path).expanduser()
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f"Model directory does not exist: {str(folder)!r}")
    store = ModelStore(folder)
    name = None if model_name in NOMIC_MODELS else model_name
    progress = _StderrProgress() if verbose else NULL_PROGRESS
    try:
        resolved = _resolve(store, name, allow_download, progress)
    except ModelNotFound as exc:
        raise ModelNotFoundError(exc.name, exc.suggestions, store.root) from None
    except ModelNotInstalled as exc:
        raise ModelNotInstalledError(exc.name) from None
    if resolved.entry is not None:
        config = models3_entry(resolved.entry)
    else:
        config = {"name": resolved.name, "filename": resolved.path.name}
    config["path"] = str(resolved.path)
    if verbose:
        print(f"Found model file at {config['path']!r}", file=sys.stderr)
    return config


def download_model(
    model_filename: str,
    model_path: str | os.PathLike[str],
    verbose: bool = True,
    url: str | None = None,
    expected_size: int | None = None,
    expected_md5: str | None = None,
) -> Path:
    """Download a model into ``model_path``; returns the file's path.

    Without ``url`` the catalog says where from (and its sha256 is checked);
    with one, the file is fetched from there and checked against
    ``expected_size``/``expected_md5`` (and the catalog, for a catalog file name).
    """
    folder = Path(model_path).expanduser()
    store = ModelStore(folder)
    progress = _StderrProgress() if verbose else NULL_PROGRESS
    entry = store.catalog.by_filename(model_filename) or store.catalog.get(model_filename)
    if url is None:
        if entry is None:
            raise ModelNotFoundError(model_filename, store.suggestions(model_filename), folder)
        path = store.pull(entry.name, progress)
    else:
        path = folder / (entry.filename if entry else model_filename)
        size, sha256 = (entry.size, entry.sha256) if entry else (expected_size, None)
        fetch_url(url, path, size=size, sha256=sha256, progress=progress)
        _check_download(path, expected_size, expected_md5)
    if verbose:
        print(f"Model downloaded to {str(path)!r}", file=sys.stderr)
    return path
