"""The URL source against a real HTTP server on 127.0.0.1 (with and without Range)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from llm4all.errors import ChecksumMismatch, DownloadError, InsufficientDisk
from llm4all.models.sources import cached_verification, fetch_url, partial_path
from model_helpers import RecordingProgress, sha256_of, write_tiny_gguf
from servers import serve_files

DATA = os.urandom(300_000)
SHA = sha256_of(DATA)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder / "model.gguf"


def test_full_download_is_verified_and_recorded(dest: Path) -> None:
    progress = RecordingProgress()
    with serve_files({"/m.gguf": DATA}) as server:
        digest = fetch_url(
            server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA, progress=progress
        )
    assert digest == SHA
    assert dest.read_bytes() == DATA
    assert not partial_path(dest).exists()
    assert server.requests[0].range is None
    assert progress.totals == [len(DATA)]
    assert progress.advanced == len(DATA)
    assert progress.events[-1] == ("done", None)
    record = cached_verification(dest)
    assert record is not None and record.sha256 == SHA and record.size == len(DATA)


def test_resume_asks_only_for_the_rest(dest: Path) -> None:
    partial_path(dest).write_bytes(DATA[:100_000])
    progress = RecordingProgress()
    with serve_files({"/m.gguf": DATA}) as server:
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA, progress=progress)
    assert [r.range for r in server.requests] == ["bytes=100000-"]
    assert server.requests[0].status == 206
    assert server.bytes_sent == len(DATA) - 100_000
    assert dest.read_bytes() == DATA
    assert progress.advanced == len(DATA)  # the kept prefix counts as done


def test_interrupted_download_keeps_the_part_and_resumes(dest: Path) -> None:
    with serve_files({"/m.gguf": DATA}, cut_after=120_000) as server:
        with pytest.raises(DownloadError, match="resume"):
            fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA)
        assert partial_path(dest).stat().st_size == 120_000
        server.cut_after = None
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA)
    assert server.requests[-1].range == "bytes=120000-"
    assert dest.read_bytes() == DATA


def test_server_that_ignores_range_restarts(dest: Path) -> None:
    partial_path(dest).write_bytes(b"x" * 50_000)  # not even a real prefix: must be replaced
    with serve_files({"/m.gguf": DATA}, honor_range=False) as server:
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA)
    assert server.requests[0].range == "bytes=50000-"
    assert server.requests[0].status == 200
    assert server.bytes_sent == len(DATA)
    assert dest.read_bytes() == DATA


def test_complete_part_is_finished_without_a_request(dest: Path) -> None:
    partial_path(dest).write_bytes(DATA)
    with serve_files({"/m.gguf": DATA}) as server:
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA)
    assert server.requests == []
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_removes_the_file_and_says_so(dest: Path) -> None:
    wrong = "0" * 64
    with serve_files({"/m.gguf": DATA}) as server, pytest.raises(ChecksumMismatch) as info:
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=wrong)
    assert info.value.expected == wrong and info.value.actual == SHA
    assert info.value.removed
    assert "removed" in str(info.value)
    assert not dest.exists() and not partial_path(dest).exists()


def test_404_is_a_download_error(dest: Path) -> None:
    with serve_files({}) as server, pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch_url(server.url("/missing.gguf"), dest, size=10, sha256=SHA)
    assert info.value.source.endswith("/missing.gguf")
    assert not dest.exists()


def test_connection_refused_is_a_download_error(dest: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch_url(f"http://127.0.0.1:{port}/m.gguf", dest, size=10, sha256=SHA)


def test_insufficient_disk_is_refused_before_downloading(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tiny_disk(path: Any) -> Any:
        return shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    with serve_files({"/m.gguf": DATA}) as server, pytest.raises(InsufficientDisk) as info:
        fetch_url(server.url("/m.gguf"), dest, size=len(DATA), sha256=SHA)
    assert server.requests == []
    assert info.value.needed_bytes == len(DATA) and info.value.free_bytes == 1000
    assert "free disk" in str(info.value)


def test_without_sha256_the_announced_length_and_gguf_header_decide(
    dest: Path, tmp_path: Path
) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    with serve_files({"/ok.gguf": model, "/page.gguf": b"<html>not a model</html>" * 10}) as server:
        digest = fetch_url(server.url("/ok.gguf"), dest, size=123_456, sha256=None)
        assert digest == sha256_of(model) and dest.read_bytes() == model
        other = dest.with_name("other.gguf")
        with pytest.raises(DownloadError, match="not a usable model"):
            fetch_url(server.url("/page.gguf"), other, size=None, sha256=None)
    assert not other.exists() and not partial_path(other).exists()
