"""Output for people: aligned tables, colour only on a terminal, progress of long operations."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

COLOURS = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}
STATUS_COLOURS = {
    "active": "green",
    "inactive": "bold",
    "ready": "green",
    "degraded": "red",
    "failed": "red",
    "fits": "green",
    "no": "red",
}


def colour_on(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str | None, stream: TextIO | None = None) -> str:
    if colour is None or not colour_on(stream or sys.stdout):
        return text
    return f"\033[{COLOURS[colour]}m{text}\033[0m"


def status(text: str, stream: TextIO | None = None) -> str:
    """A lifecycle or upload status, coloured by what it means."""
    return paint(text, STATUS_COLOURS.get(text), stream)


def error(message: str) -> None:
    """One finished error message on stderr: `error: ...`, the prefix red on a terminal."""
    print(f"{paint('error:', 'red', sys.stderr)} {message}", file=sys.stderr)


def table(rows: Sequence[Sequence[object]], rule: bool = False, colour_column: int | None = None) -> None:
    """Aligned columns, the first row a header (underlined with ``rule``); the cells of ``colour_column``
    coloured by their meaning (on a terminal)."""
    cells = [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for n, row in enumerate(cells):
        padded = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        if n and colour_column is not None:
            cell = row[colour_column]
            padded[colour_column] = status(cell) + " " * (widths[colour_column] - len(cell))
        print("  ".join(padded).rstrip())
        if rule and n == 0:
            print("  ".join("-" * w for w in widths))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """Bytes done of a total: one rewritten line on a terminal (at most 10 times a second), else a line at
    every further tenth, so that logs of CI jobs stay short."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, done: int = 0) -> None:
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
        self.started, self.start_bytes = time.monotonic(), done
        self.shown_at, self.shown_tenth = 0.0, done * 10 // max(total, 1)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (self.done - self.start_bytes) / elapsed
        share = self.done / self.total if self.total else 1.0
        eta = f", {max(self.total - self.done, 0) / rate:.0f} s left" if rate > 0 and share < 1 else ""
        return f"{self.label}: {_size(self.done)} of {_size(self.total)} ({share:.0%}, {_size(rate)}/s{eta})"

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.tty:
            if now - self.shown_at >= 0.1 or done >= self.total:
                self.shown_at = now
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
        else:
            tenth = done * 10 // max(self.total, 1)
            if tenth > self.shown_tenth:
                self.shown_tenth = tenth
                print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
