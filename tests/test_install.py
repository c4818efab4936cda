"""The first hour: what the README's install brings, what a missing package says, the test run.

- Every package the code imports at module level is a main dependency, so the
  plain ``pip install -e .`` brings the server and the web UI.
- A wheel built from this checkout, installed with ``--no-deps`` into a fresh
  venv, declares fastapi and uvicorn (``pip check`` lists what a plain install
  would add). Built with ``--no-build-isolation``: no network.
- A missing package is one line naming the pip command, through the real
  ``llm4all`` command with the package hidden by a ``sitecustomize``.
- The end of a test run says how many browser tests were skipped and how to
  enable them; under ``CI=true`` they fail (an inner pytest run on a copy of
  ``conftest.py``).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from llm4all.cli._common import install_hint, missing_module, normalise, requirement_name

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "llm4all"
LLM4ALL = Path(sys.executable).with_name("llm4all")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The main dependencies and each extra's, by normalised name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].items()
    return (
        {requirement_name(r) for r in project["dependencies"]},
        {extra: {requirement_name(r) for r in reqs} for extra, reqs in extras},
    )


def _module_level_imports() -> dict[tuple[str, Path], None]:
    """(third-party module, file) for each import at the top of a module of the package."""
    found: dict[tuple[str, Path], None] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only, not inside functions
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top != "llm4all":
                    found[top, path.relative_to(PACKAGE)] = None
    return found


def test_every_package_imported_at_module_level_is_a_main_dependency() -> None:
    """A package imported when a command's modules load must come with the plain install.

    ``llm4all/integrations/NAME/`` is the one place for the packages of the extra NAME:
    nothing in the core imports it, and its users install the extra.
    """
    main, extras = _declared()
    assert {"fastapi", "uvicorn"} <= main  # `llm4all serve` and `llm4all ui`
    distributions = packages_distributions()
    undeclared = []
    for module, where in _module_level_imports():
        allowed = set(main)
        if where.parts[0] == "integrations" and len(where.parts) > 2:
            allowed |= extras.get(where.parts[1], set())
        dists = {normalise(d) for d in distributions.get(module, [module])}
        if not dists & allowed:
            undeclared.append(f"{module} in {where}")
    assert undeclared == []
    core = [p for p in PACKAGE.rglob("*.py") if "integrations" not in p.relative_to(PACKAGE).parts]
    assert not [p for p in core if "llm4all.integrations" in p.read_text()]


def test_install_hint_names_the_extra_or_the_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests install every extra: torch is there, so hide it as a user without [gpu] has it.
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real_find_spec(n, *a)
    )
    assert install_hint("torch") == "pip install 'llm4all[gpu]'"
    assert install_hint("peft") == "pip install 'llm4all[gpu]'"
    assert install_hint("umap") == "pip install 'llm4all[data]'"  # the package is umap-learn
    assert install_hint("sklearn") == "pip install 'llm4all[data]'"
    assert install_hint("datasketch") == "pip install 'llm4all[data]'"
    assert install_hint("psycopg") == "pip install 'llm4all[datalake]'"
    assert install_hint("langchain_core") == "pip install 'llm4all[langchain]'"
    assert install_hint("fastapi") == "pip install 'fastapi>=0.115'"
    assert install_hint("markdown_it") == "pip install 'markdown-it-py>=3'"
    assert install_hint("no_such_package_xyz") is None
    assert missing_module("torch.cuda", "llm4all x") == (
        "llm4all x needs torch, which is not installed: pip install 'llm4all[gpu]'"
    )
    assert missing_module("fastapi.no_such_module", "llm4all serve") == (
        "llm4all serve cannot import fastapi.no_such_module from the installed fastapi: "
        "pip install -U 'fastapi>=0.115'"
    )


HIDE = '''
import sys

HIDDEN = set({hidden!r})


class Hide:
    """Behaves as if the packages were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Hide())
'''


def _llm4all_without(
    tmp_path: Path, hidden: list[str], *args: str
) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HIDE.format(hidden=hidden))
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [str(LLM4ALL), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("hidden", "args", "message"),
    [
        (
            "fastapi",
            ["serve", "--no-preload", "--port", "1"],
            "llm4all serve needs fastapi, which is not installed: pip install 'fastapi>=0.115'",
        ),
        (
            "uvicorn",
            ["ui", "--no-browser", "--port", "1"],
            "llm4all ui needs uvicorn, which is not installed: pip install 'uvicorn>=0.30'",
        ),
    ],
)
def test_a_missing_package_is_one_line_naming_the_install(
    tmp_path: Path, hidden: str, args: list[str], message: str
) -> None:
    proc = _llm4all_without(tmp_path, [hidden], *args)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_debug_shows_the_traceback_of_a_missing_package(tmp_path: Path) -> None:
    proc = _llm4all_without(tmp_path, ["fastapi"], "--debug", "serve", "--no-preload")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "ModuleNotFoundError: No module named 'fastapi" in proc.stderr


@pytest.mark.slow
def test_a_fresh_venv_gets_the_server_from_the_plain_install(tmp_path: Path) -> None:
    """The wheel of this checkout in a new venv: the plain install would add fastapi and uvicorn."""
    pytest.importorskip("hatchling", reason="pip install -e '.[dev]' (the build backend)")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, REPO],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("llm4all-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "-q", "install", "--no-deps", "--no-index", wheel],
        check=True,
        timeout=300,
    )
    check = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, check=False
    )
    missing = set(
        re.findall(r"^llm4all \S+ requires (\S+), which is not installed", check.stdout, re.M)
    )
    assert {"fastapi", "uvicorn", "llama-cpp-python", "click"} <= {normalise(m) for m in missing}
    assert (venv / "bin" / "llm4all").exists()


# -- the test run itself ------------------------------------------------------------------------
BROWSER_TESTS = """
from conftest import playwright_or_skip


def test_plain():
    pass


def test_page_one():
    playwright_or_skip()


def test_page_two():
    playwright_or_skip()


def test_page_three():
    playwright_or_skip()
"""


def _inner_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on a copy of this suite's conftest.py and three browser tests, without a browser."""
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), suite / "conftest.py")
    (suite / "test_browser.py").write_text(textwrap.dedent(BROWSER_TESTS))
    environ = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    environ.update(LLM4ALL_CHROMIUM=str(tmp_path / "no-chromium"), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", suite, suite],
        cwd=suite,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_the_end_of_a_run_says_how_many_browser_tests_were_skipped(tmp_path: Path) -> None:
    proc = _inner_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout
    summary = [line for line in proc.stdout.splitlines() if "browser tests skipped" in line]
    assert len(summary) == 1, proc.stdout
    assert f"3 browser tests skipped: {tmp_path / 'no-chromium'} is not installed" in summary[0]
    assert "enable them with: sudo apt-get install chromium" in summary[0]


@pytest.mark.slow
def test_under_ci_a_missing_browser_fails_the_browser_tests(tmp_path: Path) -> None:
    proc = _inner_pytest(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout
    assert re.search(r"\b3 failed, 1 passed\b", proc.stdout), proc.stdout
    assert "browser tests need a browser under CI" in proc.stdout
