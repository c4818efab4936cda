"""``llm4all eval``: evaluate models: ground-truth perplexity and side-by-side answers."""

from __future__ import annotations

import click


@click.group(name="eval")
def eval_group() -> None:
    """Evaluate models: ground-truth perplexity and side-by-side answers."""
