"""``llm4all docs``: LocalDocs collections from the terminal.

    llm4all docs add notes ~/Notes ~/Projects/README.md
    llm4all docs index notes          # incremental: only new and changed files
    llm4all docs search notes "when is the dentist?"
    llm4all docs watch notes          # keep the index in step with the folders
    llm4all docs ls
    llm4all docs rm notes

Progress bars (with ETA) go to stderr; results go to stdout. Every file name
and excerpt is printed through :func:`llm4all.display.printable`, so a name
with a newline or an escape sequence stays on its line. What was not indexed
is always said, with why: counts by reason, each file with ``--verbose``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from llm4all.cli._common import echo_json, err_console
from llm4all.cli.progress import CountProgress
from llm4all.display import printable

if TYPE_CHECKING:
    from llm4all.localdocs import CollectionInfo, IndexReport, LocalDocs

# LocalDocs (and with it SQLite, numpy and the loaders) is imported by the commands
# that use it, so that ``llm4all run`` and ``chat`` start without it.

#: Files listed per kind (failed, notes) before "… and N more"; --verbose lists all.
LIST_LIMIT = 10


def _verbose_option(func: Any) -> Any:
    return click.option(
        "-v", "--verbose", is_flag=True, help="List every file skipped or noted, with why."
    )(func)


def _open() -> LocalDocs:
    from llm4all.localdocs import LocalDocs

    return LocalDocs()


@click.group("docs")
def docs_group() -> None:
    """LocalDocs: chat with your own files (collections of folders)."""


@docs_group.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "embedding_model", help="Embedding model (default: all-minilm-l6-v2).")
@click.option("--no-index", is_flag=True, help="Only record the folders; index later.")
@_verbose_option
def add_command(
    name: str, paths: tuple[str, ...], embedding_model: str | None, no_index: bool, verbose: bool
) -> None:
    """Create collection NAME from PATHS (folders or files), or add PATHS to it, and index it."""
    with _open() as docs:
        docs.add(name, paths, embedding_model)
        if not no_index:
            _index(docs, name, verbose)


@docs_group.command("index")
@click.argument("name", required=False)
@_verbose_option
def index_command(name: str | None, verbose: bool) -> None:
    """Bring collection NAME (default: all) up to date: new, changed and deleted files."""
    with _open() as docs:
        names = [name] if name else docs.names()
        if not names:
            err_console.print("no collections yet; create one with `llm4all docs add NAME PATH`")
        for n in names:
            _index(docs, n, verbose)


def _index(docs: LocalDocs, name: str, verbose: bool) -> IndexReport:
    with CountProgress() as progress:
        report = docs.index(name, progress)
    _print_report(report, verbose)
    return report


def _print_report(r: IndexReport, verbose: bool) -> None:
    click.echo(
        f"{printable(r.collection)}: {r.files_seen} files ({r.files_changed} new or changed, "
        f"{r.files_unchanged} unchanged, {r.files_removed} removed, {r.files_failed} failed); "
        f"{r.chunks_added} chunks added, {r.chunks_embedded} embedded",
        err=True,
    )
    _list("failed", r.failures, verbose, err=True)
    _skipped(r.skipped, verbose, err=True)
    _list("note", r.notes, verbose, err=True)


def _skipped(skipped: list[tuple[str, str]], verbose: bool, err: bool) -> None:
    """``skipped 7: 3 hidden, 2 image, 2 binary``, then each file with ``--verbose``."""
    if not skipped:
        return
    counts = Counter(reason for _, reason in skipped).most_common()
    by_reason = ", ".join(f"{n} {printable(reason)}" for reason, n in counts)
    hint = "" if verbose else " (--verbose lists them)"
    click.echo(f"  skipped {len(skipped)}: {by_reason}{hint}", err=err)
    if verbose:
        _list("skipped", skipped, verbose, err)


def _list(kind: str, items: list[tuple[str, str]], verbose: bool, err: bool) -> None:
    """``  KIND PATH: WHY`` per item, at most :data:`LIST_LIMIT` unless ``verbose``."""
    shown = items if verbose else items[:LIST_LIMIT]
    for path, why in shown:
        click.echo(f"  {kind} {printable(path)}: {printable(why)}", err=err)
    if len(shown) < len(items):
        more = len(items) - len(shown)
        click.echo(f"  … and {more} more {kind} (--verbose lists them)", err=err)


@docs_group.command("watch")
@click.argument("name")
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between scans."
)
@_verbose_option
def watch_command(name: str, interval: float, verbose: bool) -> None:
    """Keep collection NAME indexed as its files change (Ctrl-C stops)."""
    with _open() as docs:
        docs.info(name)  # fail now on an unknown name
        err_console.print(
            Text(f"watching {printable(name)} every {interval:g} s; Ctrl-C stops", style="dim")
        )

        def report(r: IndexReport) -> None:
            if r.files_changed or r.files_removed or r.files_failed or r.chunks_embedded:
                _print_report(r, verbose)

        try:
            docs.watch(name, interval, on_run=report)
        except KeyboardInterrupt:
            err_console.print("[dim]stopped[/dim]")


@docs_group.command("search")
@click.argument("name")
@click.argument("query")
@click.option("-k", "--top", "k", type=int, default=5, show_default=True, help="Results to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search_command(name: str, query: str, k: int, as_json: bool) -> None:
    """Search collection NAME (comma-separated for several) for QUERY."""
    with _open() as docs:
        hits = docs.search([n.strip() for n in name.split(",") if n.strip()], query, k)
    from llm4all.localdocs import source_lines
    from llm4all.localdocs.context import references

    refs = references(hits)
    if as_json:
        echo_json(refs)
        return
    if not refs:
        err_console.print("no results")
    for ref, line in zip(refs, source_lines(refs), strict=True):
        click.echo(click.style(printable(line), bold=True))
        click.echo("    " + printable(" ".join(str(ref["excerpt"]).split())[:300]))


@docs_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the collections as JSON.")
@_verbose_option
def ls_command(as_json: bool, verbose: bool) -> None:
    """List collections: folders, files, chunks, and files not indexed (with why)."""
    with _open() as docs:
        infos = docs.list()
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    if not infos:
        err_console.print("no collections yet; create one with `llm4all docs add NAME PATH`")
    for info in infos:
        _print_info(info, verbose)


def _print_info(i: CollectionInfo, verbose: bool) -> None:
    state = (
        "up to date" if i.embedded == i.chunks and i.indexed_at else "needs `llm4all docs index`"
    )
    click.echo(
        f"{click.style(printable(i.name), bold=True)}  {i.files} files, {i.chunks} chunks "
        f"({i.embedded} embedded), {i.chars / 1e6:.1f} MB of text, {i.embedding_model}, {state}"
    )
    for folder in i.folders:
        click.echo(f"  {printable(folder)}")
    _list("failed", i.failed, True, err=False)
    _skipped(i.skipped, verbose, err=False)
    _list("note", i.notes, verbose, err=False)


@docs_group.command("rm")
@click.argument("name")
def rm_command(name: str) -> None:
    """Delete collection NAME from the index (your files are not touched)."""
    with _open() as docs:
        docs.remove(name)
    click.echo(f"removed {printable(name)}", err=True)


def _known_collections(
    ctx: click.Context, param: click.Parameter, names: tuple[str, ...]
) -> tuple[str, ...]:
    if names:
        with _open() as docs:
            missing = sorted(set(names) - set(docs.names()))
        if missing:
            raise click.BadParameter(
                f"no collection named {', '.join(missing)} (see `llm4all docs ls`)"
            )
    return names


def docs_option(func: Any) -> Any:
    """``--docs NAME`` (repeatable) for ``llm4all chat`` and ``llm4all run``; names are checked."""
    return click.option(
        "--docs",
        "collections",
        multiple=True,
        metavar="NAME",
        callback=_known_collections,
        help="Answer from LocalDocs collection NAME (repeatable); sources are listed.",
    )(func)


def print_sources(sources: list[dict[str, Any]]) -> None:
    """The references under an answer, on stderr: ``[1] /path/file.md, lines 3–9 — Heading``."""
    from llm4all.localdocs import source_lines

    if sources:
        err_console.print("[dim]Sources:[/dim]")
        for line in source_lines(sources):
            err_console.print(Text(f"  {printable(line)}", style="dim"), soft_wrap=True)
