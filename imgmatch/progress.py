"""Progress of a long batch run: a live bar on a terminal, plain periodic lines elsewhere.

Progress goes to stderr: stdout may carry the results themselves (`--format jsonl`).
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Without a terminal, one line this often is enough for a log and costs nothing.
PLAIN_INTERVAL_S = 10.0


class ProgressReporter(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, *, failed: bool = False) -> None: ...

    def finish(self) -> None: ...


class SilentProgress:
    """`--quiet`: nothing at all."""

    def start(self, total: int) -> None:
        return None

    def advance(self, *, failed: bool = False) -> None:
        return None

    def finish(self) -> None:
        return None


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "-/s", style="cyan")


class BarProgress:
    """A rich progress bar: done/total, rate, ETA and the running failure count."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            console=Console(file=stream),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None, failed=0)
        self._failed = 0

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total)
        self._progress.start()

    def advance(self, *, failed: bool = False) -> None:
        self._failed += int(failed)
        self._progress.update(self._task, advance=1, failed=self._failed)

    def finish(self) -> None:
        self._progress.stop()


class LineProgress:
    """A plain line every `interval_s` seconds, for logs and pipes."""

    def __init__(self, label: str, stream: TextIO, interval_s: float = PLAIN_INTERVAL_S) -> None:
        self.label = label
        self.stream = stream
        self.interval_s = interval_s
        self._total = 0
        self._done = 0
        self._failed = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, total: int) -> None:
        self._total = total
        self._started = self._last = time.monotonic()

    def advance(self, *, failed: bool = False) -> None:
        self._done += 1
        self._failed += int(failed)
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._line(now)

    def finish(self) -> None:
        self._line(time.monotonic())

    def _line(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        remaining = (self._total - self._done) / rate if rate > 0 else float("nan")
        print(
            f"{self.label}: {self._done}/{self._total} ({rate:.1f}/s, "
            f"ETA {remaining:.0f} s, {self._failed} failed)",
            file=self.stream,
            flush=True,
        )


def make_progress(label: str, *, quiet: bool, stream: TextIO | None = None) -> ProgressReporter:
    """The reporter that suits `stream` (default stderr): bar on a terminal, else lines."""
    stream = stream or sys.stderr
    if quiet:
        return SilentProgress()
    if stream.isatty():
        return BarProgress(label, stream)
    return LineProgress(label, stream)
