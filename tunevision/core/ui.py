"""Console output: messages mirrored into the run's log file, and progress bars for long steps."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RunLog:
    def __init__(self, log_file: Path | None = None, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.log_file = log_file
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)  # paths and commands stay copyable
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(_plain(message) + "\n")

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[int], None]]:
        """Yield advance(n); the bar disappears when done and its line goes to the log."""
        if self.quiet:
            yield lambda n: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def _plain(message: str) -> str:
    return Text.from_markup(message).plain
