"""``llm4all data map IN… -o map.html``: every row embedded, laid out, clustered, in one page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from llm4all.cli._common import err_console
from llm4all.data.formats import FORMATS

SHOWN_PROBLEMS = 20
"""Skipped rows listed one per line; the rest are counted."""


@click.command(name="map")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("map.html"),
              show_default=True, help="The HTML file to write.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)),
              help="The input format (default: detected per file).")  # fmt: skip
@click.option("--sample", type=click.IntRange(min=100), metavar="N",
              help="Fit the layout on N random rows and place the rest (for large sets).")  # fmt: skip
@click.option("--min-cluster-size", type=click.IntRange(min=2), metavar="N",
              help="Rows that make a cluster (default: grows with the map).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of layout and sampling.")
@click.option("--renderer", type=click.Choice(["auto", "svg", "webgl"]), default="auto",
              show_default=True, help="Draw points as SVG or WebGL (auto: WebGL above 5,000 rows).")  # fmt: skip
@click.option("--model", "embedding_model", help="Embedding model (default: all-minilm-l6-v2).")
@click.option("--cache", type=click.Path(path_type=Path),
              help="The vector cache (default: <llm4all home>/datamap/embeddings.db).")  # fmt: skip
@click.option("--title", help="The map's title (default: the output file's name).")
@click.option("--threads", type=int, help="CPU threads for embedding.")
def map_command(
    inputs: tuple[Path, ...],
    output: Path,
    fmt: str | None,
    sample: int | None,
    min_cluster_size: int | None,
    seed: int,
    renderer: str,
    embedding_model: str | None,
    cache: Path | None,
    title: str | None,
    threads: int | None,
) -> None:
    """Draw a training set as a map: similar rows close together, clusters named by their words.

    The page opens offline in any browser: hover a point to read its row, colour
    by cluster, source, curation rule or kept/dropped, search, select with the
    lasso, and export the marked rows for `llm4all data curate --keep-drop`.
    """
    from llm4all.cli.progress import RichProgress
    from llm4all.data.formats import input_files, read_many
    from llm4all.datamap import EmbeddingCache, MapOptions, default_path, model_key
    from llm4all.datamap import html as page
    from llm4all.datamap.build import layout_map, payload
    from llm4all.embeddings import Embedder

    options = MapOptions(
        sample=sample,
        seed=seed,
        min_cluster_size=min_cluster_size,
        webgl=None if renderer == "auto" else renderer == "webgl",
        title=title or output.stem,
    )
    problems: list[str] = []
    files = input_files(inputs)  # a missing file fails here, before the model loads
    rows_in = _conversations(read_many(files, fmt), problems)
    started = time.perf_counter()
    with RichProgress(err_console) as download:
        embedder = Embedder(embedding_model, progress=download, n_threads=threads)
    with embedder, EmbeddingCache(cache or default_path(), model_key(embedder)) as store:
        rows, verdicts, vectors = _embed(rows_in, embedder, store)
        hits = store.hits
    _report_problems(problems)
    if not rows:
        raise click.ClickException("no rows to map")
    say = _say
    say(f"{len(rows):,} rows: {hits:,} vectors from the cache, {len(rows) - hits:,} embedded")
    result = layout_map(rows, vectors, verdicts, options, progress=say)
    size = page.write(payload(result), output)
    elapsed = time.perf_counter() - started
    say(f"wrote {output} ({size / 1e6:.1f} MB, {len(result.keywords)} clusters) in {elapsed:.0f} s")


def _conversations(rows: Iterator[Any], problems: list[str]) -> Iterator[Any]:
    """The conversations among ``rows``; the problems are collected for one report at the end."""
    from llm4all.data.formats import RowProblem

    for row in rows:
        if isinstance(row, RowProblem):
            problems.append(str(row))
        else:
            yield row


def _embed(rows: Iterator[Any], embedder: Any, store: Any) -> Any:
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from llm4all.datamap.build import embed_rows

    columns = (SpinnerColumn(), TextColumn("embedding rows"), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("embed", total=None)
        return embed_rows(
            rows,
            lambda texts: embedder.embed_array(texts, long_text_mode="truncate"),
            store,
            progress=lambda done: bar.advance(task, done),
        )


def _report_problems(problems: list[str]) -> None:
    for line in problems[:SHOWN_PROBLEMS]:
        err_console.print(f"skipped {line}", markup=False, highlight=False, soft_wrap=True)
    if len(problems) > SHOWN_PROBLEMS:
        err_console.print(f"… and {len(problems) - SHOWN_PROBLEMS} more rows skipped", markup=False)


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
