"""Progress bars on stderr for the CLI: downloads (bytes) and LocalDocs (counts).

Kept apart from the commands so that ``llm4all run`` can show a download bar
without importing the model-management or LocalDocs commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as _RichBar
from rich.table import Column

from llm4all.cli._common import err_console


class RichProgress:
    """A :class:`llm4all.models.Progress` drawn as rich progress bars on stderr.

    Use as a context manager; the live display starts with the first phase, so
    nothing is drawn when there is nothing to wait for.
    """

    def __init__(
        self, console: Console | None = None, columns: Sequence[ProgressColumn] = ()
    ) -> None:
        """Bytes, speed and time left by default; ``columns`` replaces them."""
        self._bar = _RichBar(
            *(
                columns
                or (
                    TextColumn(
                        "{task.description}", table_column=Column(max_width=32, no_wrap=True)
                    ),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                )
            ),
            console=console or err_console,
        )
        self._task: TaskID | None = None
        self._live = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live:
            self._bar.stop()
            self._live = False

    def start(self, total: int | None, description: str) -> None:
        if not self._live:
            self._bar.start()
            self._live = True
        self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None and n:
            self._bar.advance(self._task, n)

    def done(self) -> None:
        if self._task is not None:
            task = next(t for t in self._bar.tasks if t.id == self._task)
            if task.total is None:  # an unknown length is known now
                self._bar.update(self._task, total=task.completed)
            self._task = None


class CountProgress(RichProgress):
    """LocalDocs progress (files read, chunks embedded) as rich bars with an ETA."""

    def __init__(self) -> None:
        super().__init__(
            err_console,
            (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            ),
        )
