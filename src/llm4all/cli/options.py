"""Click options derived from the parameter dataclasses (declared once, in params.py).

``@generation_options`` adds one flag per :class:`GenerationParams` field
(``--top-k``, ``--min-p``, …, with ``--temp`` as the familiar short name);
``@load_options`` does the same for the load knobs users touch. The command
then calls :func:`generation_overrides` / :func:`load_overrides` to get only
the values the user actually gave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from llm4all.params import GenerationParams, LoadParams

F = TypeVar("F", bound=Callable[..., Any])

# Flag spellings users know from llama.cpp and GPT4All, where they differ from the field name.
_ALIASES = {
    "temperature": ["--temp"],
    "max_tokens": ["-n"],
    "n_ctx": ["--ctx"],
    "n_threads": ["-t", "--threads"],
    "n_gpu_layers": ["--ngl", "--gpu-layers"],
}
_LOAD_FLAGS = ("n_ctx", "n_threads", "n_batch", "n_gpu_layers", "check_memory", "draft", "lookup")
_PREFIX = "gen_"
_LOAD_PREFIX = "load_"


def _field_option(f: dataclasses.Field[Any], prefix: str) -> Callable[[F], F]:
    flag = "--" + f.name.replace("_", "-")
    names = [flag, *_ALIASES.get(f.name, []), prefix + f.name]
    help_text = str(f.metadata.get("help", ""))
    if isinstance(f.default, bool):
        on, off = flag, "--no-" + flag[2:]
        return click.option(f"{on}/{off}", prefix + f.name, default=None, help=help_text)
    if f.name == "stop":
        return click.option(*names, multiple=True, help=help_text + " (repeatable)")
    if f.name == "draft":  # a model name or file, "auto": the catalog's suggestion
        help_text += "; a name, a file, or auto (the catalog's suggested draft)"
        return click.option(*names, metavar="MODEL", help=help_text)
    if f.name in ("grammar", "json_schema"):
        return click.option(*names, metavar="TEXT|@FILE", help=help_text + "; @path reads a file")
    kind: type = float if isinstance(f.default, float) else int
    return click.option(*names, type=kind, default=None, help=help_text)


def generation_options(func: F) -> F:
    """Add a flag for every generation parameter."""
    for f in reversed(dataclasses.fields(GenerationParams)):
        func = _field_option(f, _PREFIX)(func)
    return func


def load_options(func: F) -> F:
    """Add flags for the load parameters users commonly set."""
    fields = {f.name: f for f in dataclasses.fields(LoadParams)}
    for name in reversed(_LOAD_FLAGS):
        func = _field_option(fields[name], _LOAD_PREFIX)(func)
    return func


def lora_option(func: F) -> F:
    """Add ``--lora ADAPTER`` (given to the load as ``lora``; see :func:`load_overrides`)."""
    return click.option(
        "--lora",
        _LOAD_PREFIX + "lora",
        type=click.Path(exists=True),
        metavar="ADAPTER",
        help="Apply a LoRA adapter at load: a GGUF (from `llm4all train export`) for llama.cpp, "
        "a PEFT adapter folder for --backend transformers.",
    )(func)


def _read_at_file(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    return value


def generation_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the generation flags out of a command's kwargs; keep those the user set."""
    out: dict[str, Any] = {}
    for key in [k for k in kwargs if k.startswith(_PREFIX)]:
        value = kwargs.pop(key)
        name = key[len(_PREFIX) :]
        if value is None or value == ():
            continue
        out[name] = _read_at_file(value) if name in ("grammar", "json_schema") else value
    return out


def load_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the load flags out of a command's kwargs; keep those the user set."""
    out: dict[str, Any] = {}
    for key in [k for k in kwargs if k.startswith(_LOAD_PREFIX)]:
        value = kwargs.pop(key)
        if value is not None:
            out[key[len(_LOAD_PREFIX) :]] = value
    return out


_BACKEND_PREFIX = "backend_"


def backend_options(func: F) -> F:
    """Add ``--backend`` and the transformers backend's ``--gen-config``/``--device``/``--dtype``."""
    options = [
        click.option(
            "--backend",
            "backend_name",
            metavar="NAME",
            help="Load the model with this backend (llamacpp, transformers, …; "
            "default: the one that claims the model).",
        ),
        click.option(
            "--gen-config",
            "backend_gen_config",
            multiple=True,
            metavar="KEY=VALUE|FILE",
            help="A transformers GenerationConfig field (num_beams=2), or a JSON/TOML file of "
            "them (repeatable; implies --backend transformers).",
        ),
        click.option(
            "--device",
            "backend_device",
            metavar="DEVICE",
            help="transformers backend: auto, cpu, cuda, cuda:N or mps (default: auto).",
        ),
        click.option(
            "--dtype",
            "backend_dtype",
            type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
            help="transformers backend: the weights' dtype (default: auto).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def backend_flags(kwargs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Pop the backend flags: ``(backend name, the flags given)``; flags imply transformers."""
    values = {
        k[len(_BACKEND_PREFIX) :]: kwargs.pop(k)
        for k in list(kwargs)
        if k.startswith(_BACKEND_PREFIX)
    }
    backend: str | None = values.pop("name", None)
    given = {k: v for k, v in values.items() if v not in (None, ())}
    if given and backend is None:
        backend = "transformers"
    if given and backend is not None:
        from llm4all.engine import get_backend

        if not hasattr(get_backend(backend).options, "from_cli"):
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise click.UsageError(f"{flags}: only with --backend transformers, not {backend}")
    return backend, given


def backend_overrides(kwargs: dict[str, Any], load: dict[str, Any]) -> tuple[str | None, Any]:
    """Pop the backend flags; ``(backend name, that backend's load options or None)``.

    The backend's options class builds itself from the flags (``from_cli``);
    a bad field fails here, before the model loads.
    """
    backend, given = backend_flags(kwargs)
    if not given or backend is None:
        return backend, None
    from llm4all.engine import backend_options

    return backend, backend_options(backend, load, **given)
