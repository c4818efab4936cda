"""``llm4all models``: list, pull, add, remove and inspect models.

Tables and JSON go to stdout; progress bars and status lines go to stderr.
Errors are the library's own (``ModelNotFound`` …) and are turned into one
line by the CLI edge in :mod:`llm4all.cli._common`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llm4all.cli._common import echo_json, err_console
from llm4all.cli.progress import RichProgress
from llm4all.errors import Llm4allError
from llm4all.models import CatalogEntry, InstalledModel, ModelStore, remotes
from llm4all.models.recommend import Recommendation, SpeedSample, parameter_count, recommend
from llm4all.models.remotes import Remote
from llm4all.models.store import name_is_alias

log = logging.getLogger(__name__)
out_console = Console()


def _gib(n: float) -> str:
    """Example: ``_gib(1_117_320_768)`` → ``"1.04G"`` (binary units, like ``ls -h``)."""
    return f"{n / 2**30:.2f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


def _entry_row(entry: CatalogEntry, installed: InstalledModel | None) -> dict[str, Any]:
    return {
        "name": installed.name if installed else entry.name,
        "installed": installed is not None,
        "size": installed.size if installed else entry.size,
        "parameters": entry.parameters,
        "quantization": entry.quantization,
        "ram_gb": entry.ram_required_gb,
        "kind": entry.kind,
        "license": entry.license,
        "default": entry.default and (installed is None or installed.name == entry.name),
        "source": "catalog",
        "filename": entry.filename,
        "path": str(installed.path) if installed else None,
        "description": entry.description,
    }


def _local_row(model: InstalledModel) -> dict[str, Any]:
    d = model.described
    return {
        "name": model.name,
        "installed": True,
        "size": model.size,
        "parameters": d.get("parameters"),
        "quantization": d.get("quantization"),
        "ram_gb": model.ram_required_gb,
        "kind": model.kind,
        "license": None,
        "default": False,
        "source": "local",
        "filename": model.path.name,
        "path": str(model.path),
        "description": d.get("error") or d.get("model_name") or "",
    }


def _remote_row(remote: Remote) -> dict[str, Any]:
    return {
        "name": remote.name,
        "installed": True,
        "size": None,
        "parameters": None,
        "quantization": "remote",
        "ram_gb": None,
        "kind": remote.kind,
        "license": None,
        "default": False,
        "source": "remote",
        "filename": None,
        "path": None,
        "description": f"{remote.model} at {remote.base_url}",
        "base_url": remote.base_url,
        "model": remote.model,
        "api_key_env": remote.api_key_env,
    }


def model_rows(
    store: ModelStore, include_catalog: bool, recommended: str | None = None
) -> list[dict[str, Any]]:
    """Installed models first (catalog, then local, then remotes), then the rest of the catalog."""
    installed = store.installed()
    by_entry = {m.entry.name for m in installed if m.entry is not None}
    rows = [_entry_row(m.entry, m) if m.entry else _local_row(m) for m in installed]
    rows += [_remote_row(r) for r in remotes.load().values()]
    if include_catalog:
        rows += [_entry_row(e, None) for e in store.catalog if e.name not in by_entry]
    for row in rows:
        row["recommended"] = row["name"] == recommended
    return rows


def _table(rows: list[dict[str, Any]]) -> Table:
    # Compact on purpose: the catalog must stay readable in an 80-column terminal.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) + 1 for r in rows))
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("quant", no_wrap=True)
    table.add_column("RAM", justify="right", no_wrap=True)
    table.add_column("✓", justify="center", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("licence", no_wrap=True, min_width=10)
    for r in rows:
        table.add_row(
            r["name"] + ("*" if r["default"] else "") + ("+" if r["recommended"] else ""),
            _gib(r["size"]) if r["size"] is not None else "-",
            r["parameters"] or ("-" if r["source"] == "remote" else "?"),
            r["quantization"] or "?",
            f"{r['ram_gb']:g}G" if r["ram_gb"] is not None else "-",
            "✓" if r["installed"] else "",
            r["kind"],
            r["license"] or "",
        )
    captions = ["* the default chat model"] if any(r["default"] for r in rows) else []
    if any(r["recommended"] for r in rows):
        captions.append("+ recommended for this machine")
    table.caption = "; ".join(captions) or None
    return table


@click.group("models")
def models_group() -> None:
    """List, download, add and remove models."""


@models_group.command("list")
@click.option(
    "--all", "show_all", is_flag=True, help="Also list catalog models that are not installed."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(show_all: bool, as_json: bool) -> None:
    """List installed models (with --all: the whole catalog too)."""
    store = ModelStore()
    advice = recommendation(store)
    best = advice.entry.name if advice else None
    rows = model_rows(store, include_catalog=show_all, recommended=best)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        err_console.print(
            "No models installed yet. `llm4all models list --all` shows the catalog; "
            "`llm4all models pull NAME` installs one."
        )
        return
    out_console.print(_table(rows))
    more = len(store.catalog) - sum(r["source"] == "catalog" for r in rows)
    if more and not show_all:
        err_console.print(f"{more} more models in the catalog: `llm4all models list --all`")
    if advice is not None and not any(r["recommended"] for r in rows if r["installed"]):
        err_console.print(_advice_line(advice, installed=False), soft_wrap=True)


@models_group.command("pull")
@click.argument("name")
def pull_command(name: str) -> None:
    """Download a catalog model, or a GGUF from Hugging Face (and verify its checksum).

    NAME is a catalog name (`llm4all models list --all`) or a Hugging Face
    repository: hf.co/USER/REPO:Q4_K_M, hf.co/USER/REPO (its Q4_K_M or the
    nearest quantization) or hf.co/USER/REPO/FILE.gguf. An interrupted pull
    resumes when run again.
    """
    store = ModelStore()
    entry = store.catalog.get(name) or store.catalog.by_filename(name)
    if entry is not None and store.path_of(entry).exists():
        err_console.print(f"{entry.name} is already installed; verifying it")
    with RichProgress() as progress:
        path = store.pull(name, progress)
    found = store.find_installed(name)
    shown = found.name if found else entry.name if entry else name
    err_console.print(f"[green]✓[/] {escape(shown)} ({_gib(path.stat().st_size)})")
    click.echo(str(path))


@models_group.command("add")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--name", "name", default=None, help="Name to use (default: the file name without .gguf)."
)
@click.option(
    "--copy", "copy", is_flag=True, help="Always copy (default: hard-link when possible)."
)
def add_command(path: str, name: str | None, copy: bool) -> None:
    """Sideload a local GGUF file into the model store."""
    store = ModelStore()
    with RichProgress() as progress:
        model = store.add(path, name, link=not copy, progress=progress)
    others = [n for n in store.names_of(model.path) if n != model.name]
    if others:  # the file was in the store already: say what the names are now
        err_console.print(
            f"[green]✓[/] {escape(model.path.name)} is in the store as "
            f"{escape(', '.join(others))}; {escape(model.name)} is another name for it "
            f"(`llm4all models rm {escape(model.name)}` removes only that name)"
        )
        click.echo(str(model.path))
        return
    d = model.entry.to_dict() if model.entry else model.described
    facts = ", ".join(
        str(d.get(k)) for k in ("architecture", "parameters", "quantization") if d.get(k)
    )
    err_console.print(f"[green]✓[/] added {escape(model.name)} ({facts}, {_gib(model.size)})")
    click.echo(str(model.path))


@models_group.command("add-remote")
@click.argument("name")
@click.option("--base-url", required=True, help="The endpoint, e.g. http://gpu-box:8000/v1.")
@click.option(
    "--model",
    "model_id",
    required=True,
    help="The model id the endpoint serves (see its /v1/models).",
)
@click.option(
    "--api-key-env",
    metavar="VAR",
    default=None,
    help="The environment variable that holds the API key (the key itself is never stored).",
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the next byte.",
)
@click.option("--embedding", is_flag=True, help="An embedding model (for /v1/embeddings).")
@click.option("--replace", is_flag=True, help="Overwrite a remote of the same name.")
@click.option("--no-check", is_flag=True, help="Register without asking the endpoint first.")
def add_remote_command(
    name: str,
    base_url: str,
    model_id: str,
    api_key_env: str | None,
    timeout: float,
    embedding: bool,
    replace: bool,
    no_check: bool,
) -> None:
    """Register a model served by an OpenAI-compatible endpoint (vLLM, ollama, llm4all serve, …).

    From then on NAME works wherever a model name does: `llm4all chat -m NAME`,
    `llm4all.Model("NAME")`, the server and the web UI. The endpoint is asked
    for its model list first, so a wrong URL, key or model id fails here.
    """
    from llm4all.errors import InvalidParameter

    remote = Remote(
        name, base_url, model_id, api_key_env, timeout, "embedding" if embedding else "chat"
    )
    remotes.validate(remote)
    store = ModelStore()
    if store.catalog.get(name) or store.find_installed(name):
        raise InvalidParameter("name", name, "a name that is not a catalog or installed model")
    if api_key_env and not os.environ.get(api_key_env):
        err_console.print(f"note: ${escape(api_key_env)} is not set in this shell")
    if not no_check:
        from llm4all.engine.remote import load, ref_of

        with err_console.status(f"asking {escape(base_url)} for {escape(model_id)}…"):
            load(ref_of(remote)).close()
    remotes.add(remote, replace=replace)
    err_console.print(f"[green]✓[/] {escape(name)}: {escape(model_id)} at {escape(base_url)}")


@models_group.command("rm")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm_command(name: str, yes: bool) -> None:
    """Remove an installed model from the store (or forget a remote: nothing is deleted there)."""
    if remotes.remove(name) is not None:
        err_console.print(f"removed the remote {escape(name)}")
        return
    store = ModelStore()
    model = store.find_installed(name)
    others = [n for n in store.names_of(model.path) if n != model.name] if model else []
    if model is not None and others and (model.entry is None or name_is_alias(model)):
        store.remove(name)  # only a name: nothing to confirm
        err_console.print(
            f"removed the name {escape(model.name)}; {escape(model.path.name)} stays "
            f"as {escape(', '.join(others))}"
        )
        return
    if model is not None and not yes:
        also = f", also called {', '.join(others)}" if others else ""
        click.confirm(
            f"Remove {model.name} ({_gib(model.size)}, {model.path}{also})?",
            abort=True,
            err=True,
        )
    removed = store.remove(name)
    err_console.print(f"removed {escape(str(removed))}")


@models_group.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_command(name: str, as_json: bool) -> None:
    """Show a model's catalog entry, installed state and GGUF metadata (or a remote's endpoint)."""
    remote = remotes.get(name)
    details = _remote_details(remote) if remote else ModelStore().info(name).to_dict()
    if remote is None:  # where llama.cpp could run it besides the CPU
        from llm4all.engine.gpu import offload_backend

        details["gpu_offload"] = offload_backend()
    if as_json:
        echo_json(details)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("name", details["name"])
    if remote is None:
        grid.add_row("installed", f"yes: {details['path']}" if details["installed"] else "no")
        offload = details["gpu_offload"] or "none: a CPU-only llama.cpp build (docs/scale-out.md)"
        grid.add_row("gpu offload", offload)
    for section in ("remote", "catalog", "local", "metadata"):
        for key, value in (details.get(section) or {}).items():
            if key != "name" and value not in (None, ""):
                grid.add_row(f"{section}.{key}", _show(value))
    out_console.print(grid)


def _remote_details(remote: Remote) -> dict[str, Any]:
    entry = remote.to_dict()
    if remote.api_key_env:  # whether the key is there, never the key
        state = "set" if os.environ.get(remote.api_key_env) else "NOT SET"
        entry["api_key_env"] = f"{remote.api_key_env} ({state})"
    return {"name": remote.name, "installed": True, "path": None, "remote": entry}


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    if isinstance(value, dict):  # e.g. the Hugging Face repository a file came from
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)


# --- recommending a model ------------------------------------------------------------

SPEED_KEY = "models.speed_sample"
TIP_KEY = "models.recommendation_tip_shown"
#: The speed probe: bursts of tokens (about a second in all on the default model, two cores).
PROBE_BURSTS = 3
PROBE_TOKENS = 12


def _machine() -> dict[str, int]:
    """What a cached speed is valid for: a new CPU count or RAM size measures again."""
    import psutil

    return {"cpus": os.cpu_count() or 1, "ram_gib": round(psutil.virtual_memory().total / 2**30)}


def measure_speed(model: Any) -> SpeedSample | None:
    """Decode speed of a loaded :class:`llm4all.Model`: the best of a few short greedy answers.

    The best, not the mean: other programs only ever slow a burst down, so the
    fastest one is the closest to what the machine can do.
    """
    speeds = []
    for _ in range(PROBE_BURSTS):
        response = model.stream(
            "Count from 1 to 100, separated by commas.", max_tokens=PROBE_TOKENS, temperature=0
        )
        response.text()
        speeds.append(float(response.completion.timings.tokens_per_second))
    speed = max(speeds)
    name = model.entry.name if model.entry else model.name
    return SpeedSample(name, model.path.stat().st_size, speed) if speed > 0 else None


def speed_sample(store: ModelStore, model: Any = None) -> SpeedSample | None:
    """This machine's decode speed: cached in the settings, else measured once now.

    Measured with ``model`` (a loaded :class:`llm4all.Model`) or by loading the
    installed default model; None when there is nothing to measure with.
    """
    from llm4all.store import ChatStore

    with ChatStore() as settings:
        cached = settings.get_setting(SPEED_KEY)
        if isinstance(cached, dict) and cached.get("machine") == _machine():
            try:
                return SpeedSample(
                    str(cached["model"]), int(cached["size"]), float(cached["tokens_per_second"])
                )
            except (KeyError, TypeError, ValueError):
                pass
        sample = measure_speed(model) if model is not None else _measure_default(store)
        if sample is not None:
            settings.set_setting(
                SPEED_KEY,
                sample.__dict__
                | {"machine": _machine(), "measured": dt.datetime.now(dt.UTC).isoformat()},
            )
    return sample


def _measure_default(store: ModelStore) -> SpeedSample | None:
    from llm4all.api import Model

    default = store.catalog.default()
    if not store.path_of(default).exists():
        return None
    status = err_console.status(f"measuring this machine's speed once with {default.name}…")
    with status, Model(default.name, allow_download=False, n_ctx=512) as model:
        return measure_speed(model)


def recommendation(store: ModelStore, model: Any = None) -> Recommendation | None:
    """The catalog model to recommend here (see :mod:`llm4all.models.recommend`), or None.

    Advice is never worth a failure: a busy settings database or a default
    model that cannot load means no recommendation this time.
    """
    import psutil

    try:
        sample = speed_sample(store, model)
    except Llm4allError as exc:
        log.info("no recommendation: %s", exc)
        return None
    if sample is None:
        return None
    return recommend(store.catalog, sample, psutil.virtual_memory().total)


def _advice_line(advice: Recommendation, *, installed: bool) -> str:
    name = advice.entry.name
    how = (
        f"llm4all chat -m {name}"
        if installed
        else f"llm4all models pull {name}, then llm4all chat -m {name}"
    )
    return (
        f"tip: {name} answers better and runs at ~{advice.tokens_per_second:.0f} tok/s here: {how}"
    )


def startup_tip(model: Any) -> str | None:
    """One line recommending a better model, the first time the default model runs here.

    ``model`` is the loaded :class:`llm4all.Model`; if this machine's speed is
    not known yet it is measured with it, once (about a second). Returns None
    when the model is not the catalog default, when the tip was shown before,
    or when nothing better runs usably here.
    """
    from llm4all.store import ChatStore

    store = ModelStore()
    if model.entry is None or model.entry.name != store.catalog.default().name:
        return None
    with ChatStore() as settings:
        if settings.get_setting(TIP_KEY):
            return None
        settings.set_setting(TIP_KEY, True)
    advice = recommendation(store, model)
    if advice is None or parameter_count(advice.entry.parameters) <= parameter_count(
        model.entry.parameters
    ):
        return None  # nothing that answers better runs usably here
    return _advice_line(advice, installed=store.path_of(advice.entry).exists())


def print_startup_tip(model: Any) -> None:
    """:func:`startup_tip` on stderr, in an interactive terminal only (scripts never wait)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return
    try:
        tip = startup_tip(model)
    except Llm4allError as exc:  # a tip never stops a chat from starting
        log.info("no tip: %s", exc)
        return
    if tip:
        err_console.print(tip, style="dim", markup=False, highlight=False, soft_wrap=True)
