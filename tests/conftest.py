"""Shared fixtures: real models, an isolated llm4all home per test.

Every test runs with ``LLM4ALL_HOME`` in its own ``tmp_path`` (so chats,
settings and sidecars never leave it). Model files are large, so tests that
need a real model read it from the user's model store, which ``.ci/run``
fills with ``llm4all models pull`` before the tests; if a model is missing the
session pulls it once from PyPI, the same way a user would.

The browser tests need Debian's Chromium: without it they are skipped, the
end of the run says how many and the command that enables them, and under CI
(``CI=true``) each of them fails instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm4all import paths

FAST_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"

# Resolved once, before any test points LLM4ALL_HOME elsewhere.
REAL_MODELS_DIR = Path(os.environ.get("LLM4ALL_MODELS") or paths.models_dir())


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh llm4all home for each test; models come from the real store."""
    home = tmp_path / "llm4all-home"
    monkeypatch.setenv("LLM4ALL_HOME", str(home))
    monkeypatch.setenv("LLM4ALL_MODELS", str(REAL_MODELS_DIR))
    return home


def _model_path(name: str) -> Path:
    from llm4all.models import ModelStore

    return ModelStore(REAL_MODELS_DIR).resolve(name, allow_download=True).path


@pytest.fixture(scope="session")
def fast_model_path() -> Path:
    """The 98 MB SmolLM2-135M-Instruct GGUF."""
    return _model_path(FAST_MODEL)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The 491 MB Qwen2.5-Coder-0.5B-Instruct GGUF (the default chat model)."""
    return _model_path(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def fast_model(fast_model_path: Path) -> Iterator[object]:
    """SmolLM2 loaded once for the session (greedy by default)."""
    import llm4all

    model = llm4all.Model(
        fast_model_path, n_ctx=2048, params=llm4all.GenerationParams(temperature=0)
    )
    yield model
    model.close()


@pytest.fixture(scope="session")
def default_model(default_model_path: Path) -> Iterator[object]:
    import llm4all

    model = llm4all.Model(
        default_model_path, n_ctx=4096, params=llm4all.GenerationParams(temperature=0)
    )
    yield model
    model.close()


BASE_MODEL = "gemma-3-270m"


@pytest.fixture(scope="session")
def base_model_path() -> Path:
    """The 253 MB Gemma 3 270M GGUF: a base model (plain text completion, no chat tuning)."""
    return _model_path(BASE_MODEL)


EMBEDDING_MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="session")
def embedding_model_path() -> Path:
    """all-MiniLM-L6-v2 as GGUF, converted once from its PyPI package's safetensors."""
    return _model_path(EMBEDDING_MODEL)


@pytest.fixture(scope="session")
def embedder(embedding_model_path: Path) -> Iterator[object]:
    """The MiniLM embedder, loaded once for the session."""
    from llm4all.embeddings import Embedder

    with Embedder(embedding_model_path) as loaded:
        yield loaded


#: The fact the LocalDocs chat tests ask about; it is in ``notes/events.md`` only.
FACT = "The Zorblax conference will be held in Tallinn on 14 March."


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """A small folder of notes for LocalDocs tests: a Markdown file with headings and a text file."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "events.md").write_text(
        f"# Events\n\nOffice party on Friday.\n\n## Travel\n\n{FACT}\n"
    )
    (folder / "pets.txt").write_text("The office cat is called Biscuit.\n")
    return folder


# -- the browser tests --------------------------------------------------------------------------
#: The browser the web UI tests drive (``LLM4ALL_CHROMIUM`` points elsewhere).
CHROMIUM = Path(os.environ.get("LLM4ALL_CHROMIUM") or "/usr/bin/chromium")
NO_BROWSER = "no browser for the web UI tests"  # starts every browser skip: the summary counts them


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def browser_missing() -> tuple[str, str] | None:
    """What the browser tests lack and the one command that installs it, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed", "sudo apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed", "pip install -e '.[dev]'"
    return None


def playwright_or_skip() -> Any:
    """Playwright's ``sync_playwright``, or a skip naming what is missing (a failure under CI)."""
    missing = browser_missing()
    if missing:
        what, command = missing
        if in_ci():
            pytest.fail(f"browser tests need a browser under CI: {what} ({command})")
        pytest.skip(f"{NO_BROWSER}: {what} ({command})")
    from playwright.sync_api import sync_playwright

    return sync_playwright


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the run's last line: how many browser tests were skipped, and how to enable them."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = [
        report
        for report in reporter.stats.get("skipped", [])
        if NO_BROWSER in str(getattr(report, "longrepr", ""))
    ]
    missing = browser_missing()
    if skipped and missing:
        what, command = missing
        reporter.write_line(
            f"{len(skipped)} browser tests skipped: {what}; enable them with: {command}",
            yellow=True,
            bold=True,
        )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs), for a really full disk; needs root and mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
