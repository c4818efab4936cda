"""Helpers shared by the CLI commands: the error edge and the console."""

from __future__ import annotations

import re
import sys
from typing import Any

import click
from rich.console import Console

from llm4all.errors import DownloadInterrupted, Llm4allError

#: Messages and progress go to stderr so that stdout carries only answers.
err_console = Console(stderr=True)


def run_guarded(cli: click.Group, debug: bool) -> int:
    """Run the click group and turn every failure into one line on stderr."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort as exc:
        # Ctrl-C in a download says how far it got and that it resumes.
        cause = exc.__cause__
        said = str(cause) if isinstance(cause, DownloadInterrupted) else "aborted"
        err_console.print(said, markup=False, highlight=False, soft_wrap=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if isinstance(exc, DownloadInterrupted):
            err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return 130
    except Llm4allError as exc:
        if debug:
            raise
        _fail(str(exc))
        return 1
    except ModuleNotFoundError as exc:
        if debug or not exc.name or exc.name.partition(".")[0] == "llm4all":
            raise  # a module of llm4all itself missing is a bug: show it
        _fail(missing_module(exc.name, _command(sys.argv[1:])))
        return 1
    except OSError as exc:
        if debug:
            raise
        _fail(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc))
        return 1
    return 0


def _command(args: list[str]) -> str:
    """``llm4all serve`` for ``["--debug", "serve", "-m", "x"]``: the command being run."""
    name = next((a for a in args if not a.startswith("-")), None)
    return f"llm4all {name}" if name else "llm4all"


def missing_module(module: str, command: str = "llm4all") -> str:
    """One line saying which package ``command`` lacks and the pip command that installs it.

    Example: ``missing_module("torch", "llm4all x")`` ->
    ``"llm4all x needs torch, which is not installed: pip install 'llm4all[gpu]'"``.
    """
    from importlib.util import find_spec

    top = module.partition(".")[0]
    hint = install_hint(top)
    if top != module and find_spec(top) is not None:  # installed, but without that module
        upgrade = f": {hint.replace('pip install', 'pip install -U', 1)}" if hint else ""
        return f"{command} cannot import {module} from the installed {top}{upgrade}"
    return f"{command} needs {top}, which is not installed" + (f": {hint}" if hint else "")


#: Modules whose distribution has another name (the rest differ at most by -/_ or "-py").
_DISTRIBUTIONS = {"umap": "umap-learn", "sklearn": "scikit-learn", "yaml": "pyyaml"}


def install_hint(module: str) -> str | None:
    """The pip command that installs ``module`` as llm4all declares it, from its installed metadata.

    A package of an extra is installed through the extra; a main dependency (missing
    after an install with ``--no-deps``) through its own requirement.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("llm4all") or []
    except PackageNotFoundError:  # run from a source tree that was never installed
        declared = []
    wanted = normalise(_DISTRIBUTIONS.get(module, module))
    hints = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        name = requirement_name(spec)
        if wanted not in (name, name.removesuffix("-py")):  # markdown_it is markdown-it-py
            continue
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra is None:
            return f"pip install '{spec.strip()}'"
        hints.append(extra[1])
    # The build backend inlines `dev`'s own extras into it: name the feature's extra, not `dev`.
    users = [extra for extra in hints if extra != "dev"] or hints
    return f"pip install 'llm4all[{users[0]}]'" if users else None


def requirement_name(requirement: str) -> str:
    """The normalised name of a requirement.

    Example: ``requirement_name("Foo_Bar[x]>=1; extra == 'y'") == "foo-bar"``.
    """
    return normalise(re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0])


def normalise(name: str) -> str:
    """A distribution or module name compared the PEP 503 way: ``Foo_Bar`` -> ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def load_model(
    name: str | None,
    load: dict[str, Any] | None = None,
    backend: str | None = None,
    options: Any = None,
) -> Any:
    """Resolve (pulling with a progress bar if needed) and load a model.

    ``backend`` names a backend; ``options`` are its own load options (then
    ``load`` was folded into them).
    """
    from llm4all.api import Model
    from llm4all.cli.progress import RichProgress

    with RichProgress(err_console) as progress:
        if options is not None:
            return Model(name, progress=progress, backend=backend, options=options)
        return Model(name, progress=progress, backend=backend, **(load or {}))


def quiet_native_logs(debug: bool) -> None:
    """llama.cpp is chatty at load time; show its log only with --debug."""
    import logging

    logging.getLogger("llm4all.llama_cpp").setLevel(logging.DEBUG if debug else logging.ERROR)
