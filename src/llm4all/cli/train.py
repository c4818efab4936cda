"""``llm4all train``: fine-tune a model with LoRA, and export it as a GGUF the chat loads."""

from __future__ import annotations

import click


@click.group(name="train")
def train_command() -> None:
    """Fine-tune a model with LoRA, and export it as a GGUF the chat loads."""
