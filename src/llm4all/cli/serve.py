"""``llm4all serve``: the OpenAI-compatible API server.

The server binds 127.0.0.1 unless told otherwise; any other address needs an
API key (``--api-key``) or an explicit ``--insecure``. The preloaded model is
pulled first if it is a catalog model that is not installed yet (the server
itself never downloads). Generation flags (``--temp``, ``--top-k``, …) set
the server-wide defaults that requests override field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import err_console
from llm4all.cli.options import (
    backend_flags,
    backend_options,
    generation_options,
    generation_overrides,
)
from llm4all.params import GenerationParams, LoadParams, help_of


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=4891, show_default=True, help="Port (GPT4All's).")
@click.option("-m", "--model", "model_name", help="Model to preload and use by default.")
@click.option(
    "--api-key",
    envvar="LLM4ALL_API_KEY",
    help="Require 'Authorization: Bearer KEY' (env LLM4ALL_API_KEY).",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    envvar="LLM4ALL_ALLOWED_HOSTS",
    help="Also answer requests for host NAME (repeatable; .example.lan: a domain; *: any). "
    "IPs, localhost and this machine's name always are; others get 403 (DNS rebinding).",
)
@click.option(
    "--docs-root",
    "docs_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="DIR",
    help="Let the web page add LocalDocs folders under DIR only (repeatable). Without it, "
    "a loopback server allows any folder and any other server none.",
)
@click.option(
    "--cors",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser requests from ORIGIN (repeatable).",
)
@click.option(
    "--parallel",
    type=int,
    default=4,
    show_default=True,
    help="KV slots: requests decoded together.",
)
@click.option(
    "--ctx",
    type=int,
    default=LoadParams().n_ctx,
    show_default=True,
    help="Context window of each request.",
)
@click.option(
    "--max-loaded", type=int, default=2, show_default=True, help="Models kept loaded at once."
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0, min_open=True),
    help="GiB the loaded models may take together (default: the free RAM); "
    "a load beyond it unloads idle models, or is refused with 503.",
)
@click.option(
    "--keep-alive",
    type=float,
    default=300.0,
    show_default=True,
    help="Idle seconds before a model unloads (negative: never).",
)
@click.option(
    "--max-body",
    type=int,
    default=8 * 2**20,
    show_default=True,
    help="Largest request body in bytes.",
)
@click.option(
    "--max-tokens-cap", type=int, help="Most tokens one answer may ask for (also the default)."
)
@click.option(
    "--max-queue",
    type=int,
    default=64,
    show_default=True,
    help="Requests waiting per model before 429.",
)
@click.option("-t", "--threads", type=int, help=help_of(LoadParams, "n_threads"))
@click.option(
    "--gpu-layers",
    "--ngl",
    "n_gpu_layers",
    type=int,
    default=0,
    help=help_of(LoadParams, "n_gpu_layers"),
)
@click.option(
    "--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Model store folder."
)
@click.option(
    "--draft",
    "drafts",
    multiple=True,
    metavar="MODEL=DRAFT",
    help="Speculative decoding for MODEL: DRAFT is a model, auto (the catalog's) or lookup "
    "(repeatable; used while the model has one stream).",
)
@click.option(
    "--no-preload", is_flag=True, help="Load the model on the first request instead of now."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@backend_options
@generation_options
def serve_command(
    model_name: str | None,
    keep_alive: float,
    cors: tuple[str, ...],
    threads: int | None,
    no_preload: bool,
    log_level: str,
    max_memory: float | None,
    drafts: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Serve local models over an OpenAI-compatible HTTP API.

    Example: llm4all serve --parallel 8, then point any OpenAI client at
    http://127.0.0.1:4891/v1
    """
    from llm4all.server import ServerSettings, serve

    defaults = GenerationParams(**generation_overrides(kwargs))
    backend, flags = backend_flags(kwargs)
    settings = ServerSettings(
        model=model_name,
        keep_alive=None if keep_alive < 0 else keep_alive,
        cors_origins=cors,
        n_threads=threads,
        preload=not no_preload,
        max_memory=None if max_memory is None else int(max_memory * 2**30),
        defaults=defaults,
        drafts=tuple(_draft_pair(d) for d in drafts),
        backend=backend,
        backend_flags=flags,
        **kwargs,
    )
    if settings.preload:
        _pull_if_needed(settings)
    where = f"http://{settings.host}:{settings.port}/v1"
    err_console.print(f"llm4all serving on {where} (OpenAPI: {where[:-3]}/docs)", soft_wrap=True)
    serve(settings, log_level=log_level)


def _draft_pair(text: str) -> tuple[str, str]:
    model, sep, draft = text.partition("=")
    if not sep or not model or not draft:
        raise click.BadParameter(f"{text!r}: give MODEL=DRAFT", param_hint="--draft")
    return model, draft


def _pull_if_needed(settings: Any) -> None:
    from llm4all.cli.progress import RichProgress
    from llm4all.models import ModelStore, remotes

    if settings.model is not None and remotes.get(settings.model) is not None:
        return  # a registered remote: nothing to pull
    with RichProgress(err_console) as progress:
        ModelStore(settings.models_dir).resolve(settings.model, progress=progress)
