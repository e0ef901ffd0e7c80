"""Console output: messages mirrored into the run's log file, and progress bars for long steps."""
from __future__ import annotations

import contextlib
import os
import time
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
    """A run's console and log file, and its stage clock: `with log.stage("features"):` charges the time spent
    inside to that stage (to the innermost one when stages nest), so the stages add up to the run's wall time."""

    def __init__(self, log_file: Path | None = None, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.log_file = log_file
        self.quiet = quiet
        self.stages: dict[str, float] = {}
        self.startup_s: float | None = None  # the process's start-up before the run (set by the CLI)
        self._open: list[str] = []
        self._mark = 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._charge()
        self._open.append(name)
        try:
            yield
        finally:
            self._charge()
            self._open.pop()

    def _charge(self) -> None:
        now = time.perf_counter()
        if self._open:
            self.stages[self._open[-1]] = self.stages.get(self._open[-1], 0.0) + now - self._mark
        self._mark = now

    def stage_table(self, wall: float) -> dict[str, float]:
        """Seconds per stage, with start-up (the process's time before the run, from the CLI) and 'other' (the wall
        time outside every stage), rounded for summary.json."""
        table = {} if self.startup_s is None else {"start-up": round(self.startup_s, 2)}
        table.update({k: round(v, 2) for k, v in self.stages.items()})
        table["other"] = round(max(0.0, wall - sum(self.stages.values())), 2)
        return table

    def describe_stages(self, wall: float) -> None:
        table = self.stage_table(wall)
        self.info("time by stage: " + ", ".join(f"{k} {v:.1f}s" for k, v in table.items() if v >= 0.05))

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


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included), from /proc on Linux; 0
    elsewhere."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0
