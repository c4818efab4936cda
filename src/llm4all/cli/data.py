"""``llm4all data``: training data: read any format, curate it, look at it on a map."""

from __future__ import annotations

import click

from llm4all.cli import LazyGroup


@click.group(
    name="data",
    cls=LazyGroup,
    lazy_commands={
        "convert": ("llm4all.cli.data_curate", "convert_command"),
        "curate": ("llm4all.cli.data_curate", "curate_command"),
        "map": ("llm4all.cli.data_map", "map_command"),
    },
)
def data_group() -> None:
    """Training data: read any format, curate it, look at it on a map."""
