"""``llm4all share``: opt in to sharing rated chats as public training data (off by default)."""

from __future__ import annotations

import click


@click.group(name="share")
def share_group() -> None:
    """Opt in to sharing rated chats as public training data (off by default)."""
