"""``llm4all data``: training data: read any format, curate it, look at it on a map."""

from __future__ import annotations

import click


@click.group(name="data")
def data_group() -> None:
    """Training data: read any format, curate it, look at it on a map."""
