"""``llm4all datalake``: the datalake service that receives shared chats."""

from __future__ import annotations

import click


@click.group(name="datalake")
def datalake_group() -> None:
    """The datalake service that receives shared chats."""
