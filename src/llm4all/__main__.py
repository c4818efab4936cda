"""``python -m llm4all`` is the ``llm4all`` command."""

from llm4all.cli import main

main()
