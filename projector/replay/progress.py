"""Progress of a long command: a bar per row on a terminal, plain periodic lines otherwise.

Rows are named (`partition 0`, `jobs`); each has a count done, an optional total, and shows
its rate and ETA. On a terminal the rows are redrawn in place at most every 0.2 s; in a log
(no TTY) one line per row is printed every `interval` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

BAR_WIDTH = 24


@dataclass
class _Row:
    done: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    def line(self, name: str, unit: str, now: float, bar: bool) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = min(1.0, self.done / self.total)
            left = max(0, self.total - self.done)
            eta = (
                f"ETA {left / rate:,.0f} s"
                if rate > 0 and left
                else "done"
                if not left
                else "ETA ?"
            )
            count = f"{self.done:,}/{self.total:,} {unit}"
            shown = (
                "["
                + "#" * round(fraction * BAR_WIDTH)
                + "." * (BAR_WIDTH - round(fraction * BAR_WIDTH))
                + "] "
                if bar
                else ""
            )
            return f"{name}: {shown}{fraction:4.0%} {count}, {rate:,.0f} {unit}/s, {eta}"
        return f"{name}: {self.done:,} {unit}, {rate:,.0f} {unit}/s"


class Progress:
    def __init__(self, unit: str, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self._rows: dict[str, _Row] = {}
        self._drawn = 0
        self._last = 0.0

    def set_total(self, row: str, total: int | None) -> None:
        self._rows.setdefault(row, _Row()).total = total

    def update(self, row: str, done: int) -> None:
        self._rows.setdefault(row, _Row()).done = done
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._show(now)

    def advance(self, row: str, count: int) -> None:
        self.update(row, self._rows.setdefault(row, _Row()).done + count)

    def done(self, row: str) -> int:
        return self._rows[row].done if row in self._rows else 0

    def close(self) -> None:
        """Show the final state once more."""
        self._show(time.monotonic())

    def _show(self, now: float) -> None:
        self._last = now
        lines = [row.line(name, self.unit, now, self.tty) for name, row in self._rows.items()]
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()
