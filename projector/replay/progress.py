"""Progress of a long command: rich's live bars on a terminal, plain periodic lines in a log.

Rows are named (`partition 0`, `jobs`); each has a count done and an optional total, and shows
its rate and, with a total, its ETA. In a log (no terminal) one line per row is printed every
`interval` seconds and once at the end, so that a CI log or `kubectl logs` shows how far it got.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class _Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} {self.unit}/s")


@dataclass
class _Row:
    done: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    def line(self, name: str, unit: str, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-9)
        if not self.total:
            return f"{name}: {self.done:,} {unit}, {rate:,.0f} {unit}/s"
        left = max(0, self.total - self.done)
        eta = "done" if not left else f"ETA {left / rate:,.0f} s" if rate > 0 else "ETA ?"
        fraction = min(1.0, self.done / self.total)
        count = f"{self.done:,}/{self.total:,} {unit}"
        return f"{name}: {fraction:4.0%} {count}, {rate:,.0f} {unit}/s, {eta}"


class Progress:
    def __init__(self, unit: str, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.unit = unit
        self.stream = stream or sys.stderr
        self.interval = interval
        self._rows: dict[str, _Row] = {}
        self._last = 0.0
        self._live: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.stream.isatty():
            self._live = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                _Rate(unit),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._live.start()

    def set_total(self, row: str, total: int | None) -> None:
        self._row(row).total = total
        if self._live is not None:
            self._live.update(self._task(row), total=total)

    def update(self, row: str, done: int) -> None:
        self._row(row).done = done
        if self._live is not None:
            self._live.update(self._task(row), completed=done)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._print_lines(now)

    def advance(self, row: str, count: int) -> None:
        self.update(row, self._row(row).done + count)

    def done(self, row: str) -> int:
        return self._rows[row].done if row in self._rows else 0

    def close(self) -> None:
        """Show the final state once more (a terminal keeps the bars)."""
        if self._live is not None:
            self._live.stop()
        else:
            self._print_lines(time.monotonic())

    def _row(self, row: str) -> _Row:
        return self._rows.setdefault(row, _Row())

    def _task(self, row: str) -> TaskID:
        assert self._live is not None
        if row not in self._tasks:
            self._tasks[row] = self._live.add_task(row, total=self._rows[row].total)
        return self._tasks[row]

    def _print_lines(self, now: float) -> None:
        self._last = now
        lines = [row.line(name, self.unit, now) for name, row in self._rows.items()]
        self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()
