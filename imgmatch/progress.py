"""Progress of a long batch run: a live bar on a terminal, plain periodic lines elsewhere.

Progress goes to stderr: stdout may carry the results themselves (`--format jsonl`).

A run can count each item twice: `prepared` when its first stage is done (a check's fingerprint)
and `advance` when it is finished (its result written). `imgmatch check` searches listings in
batches, so results arrive in bursts while fingerprints arrive one by one: counting only results
would show nothing moving, then a jump. The rate and the ETA come from the results finished over
the last `RATE_WINDOW_S` seconds, so a burst of results is not mistaken for the pace of the run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

# Without a terminal, one line this often is enough for a log and costs nothing.
PLAIN_INTERVAL_S = 10.0
# Long enough to hold several search batches of a check (one every few seconds), short enough
# that the ETA follows a run that slows down or speeds up.
RATE_WINDOW_S = 20.0
# With the counts, rate, time left and failures, the bar's line fits 80 columns.
BAR_WIDTH_CHARS = 20

Clock = Callable[[], float]


class ProgressReporter(Protocol):
    def start(self, total: int) -> None: ...

    def prepared(self) -> None:
        """One item's first stage is done (for a check: its fingerprint)."""

    def advance(self, *, failed: bool = False) -> None:
        """One item is finished (for a check: its result is written)."""

    def note(self, text: str) -> None:
        """A line about the run (a new phase), shown above the progress."""

    def finish(self) -> None: ...


class SilentProgress:
    """`--quiet`: nothing at all."""

    def start(self, total: int) -> None:
        return None

    def prepared(self) -> None:
        return None

    def advance(self, *, failed: bool = False) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finish(self) -> None:
        return None


class RateWindow:
    """Items finished per second over the last `window_s` seconds (over the time since
    `started` while the run is younger than that)."""

    def __init__(self, started: float, window_s: float = RATE_WINDOW_S) -> None:
        self.started = started
        self.window_s = window_s
        self._finished: deque[float] = deque()
        self._any = False

    def record(self, now: float) -> None:
        self._finished.append(now)
        self._any = True

    def per_s(self, now: float) -> float | None:
        """The rate, or None before the first item is finished."""
        while self._finished and self._finished[0] <= now - self.window_s:
            self._finished.popleft()
        span = min(self.window_s, now - self.started)
        if not self._any or span <= 0:
            return None
        return len(self._finished) / span


class _Tally:
    """The counts both displays show; updated by the run, read by the bar's refresh thread."""

    def __init__(self, clock: Clock, stage: str | None) -> None:
        self.clock = clock
        self.stage = stage
        self.total = self.prepared = self.done = self.failed = 0
        self.window = RateWindow(clock())
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        with self._lock:
            self.total = total
            self.window = RateWindow(self.clock())

    def add_prepared(self) -> None:
        with self._lock:
            self.prepared += 1

    def add_done(self, failed: bool) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)
            self.window.record(self.clock())

    def rate_and_eta(self) -> tuple[float | None, float | None]:
        """Items per second and seconds left (None where not known yet)."""
        with self._lock:
            rate = self.window.per_s(self.clock())
            remaining = max(self.total - self.done, 0)
        if rate is None:
            return None, None
        if remaining == 0:
            return rate, 0.0
        return rate, remaining / rate if rate > 0 else None

    def counts(self) -> str:
        text = f"{self.done}/{self.total}"
        return f"{text}, {self.prepared} {self.stage}" if self.stage else text


def _rate_text(rate: float | None) -> str:
    return f"{rate:.1f}/s" if rate is not None else "-/s"


class _Column(ProgressColumn):
    """A column drawn from the tally rather than from rich's own task speed."""

    def __init__(self, render: Callable[[], Text]) -> None:
        super().__init__()
        self._render = render

    def render(self, task: Task) -> Text:
        return self._render()


class BarProgress:
    """A rich progress bar: finished (and, with a `stage`, prepared) of total, rate, ETA and the
    running failure count."""

    def __init__(
        self, label: str, stream: TextIO, *, stage: str | None = None, clock: Clock | None = None
    ) -> None:
        self._tally = _Tally(clock or time.monotonic, stage)
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            _Column(self._bar),
            _Column(lambda: Text(self._tally.counts())),
            _Column(self._rate),
            _Column(lambda: Text(f"{self._tally.failed} failed", style="red")),
            console=Console(file=stream),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None)

    def _bar(self) -> Text:
        tally = self._tally
        total = max(tally.total, 1)
        done = BAR_WIDTH_CHARS * min(tally.done, total) // total
        prepared = max(BAR_WIDTH_CHARS * min(tally.prepared, total) // total - done, 0)
        bar = Text("━" * done, style="green")
        bar.append("━" * prepared, style="yellow")
        bar.append("━" * (BAR_WIDTH_CHARS - done - prepared), style="bright_black")
        return bar

    def _rate(self) -> Text:
        rate, eta = self._tally.rate_and_eta()
        left = "-:--:--"
        if eta is not None:
            minutes, seconds = divmod(round(eta), 60)
            left = f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
        return Text(f"{_rate_text(rate)} {left}", style="cyan")

    def start(self, total: int) -> None:
        self._tally.start(total)
        self._progress.update(self._task, total=total)
        self._progress.start()

    def prepared(self) -> None:
        self._tally.add_prepared()

    def advance(self, *, failed: bool = False) -> None:
        self._tally.add_done(failed)
        self._progress.update(self._task, completed=self._tally.done)

    def note(self, text: str) -> None:
        self._progress.console.print(text, highlight=False, markup=False)

    def finish(self) -> None:
        self._progress.refresh()
        self._progress.stop()


class LineProgress:
    """A plain line every `interval_s` seconds, for logs and pipes."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        interval_s: float = PLAIN_INTERVAL_S,
        *,
        stage: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.label = label
        self.stream = stream
        self.interval_s = interval_s
        self._clock = clock or time.monotonic
        self._tally = _Tally(self._clock, stage)
        self._last = self._clock()

    def start(self, total: int) -> None:
        self._tally.start(total)
        self._last = self._clock()

    def prepared(self) -> None:
        self._tally.add_prepared()
        self._maybe_line()

    def advance(self, *, failed: bool = False) -> None:
        self._tally.add_done(failed)
        self._maybe_line()

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def finish(self) -> None:
        self._line()

    def _maybe_line(self) -> None:
        now = self._clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self._line()

    def _line(self) -> None:
        rate, eta = self._tally.rate_and_eta()
        left = f"{eta:.0f} s" if eta is not None else "-"
        print(
            f"{self.label}: {self._tally.counts()} ({_rate_text(rate)}, ETA {left}, "
            f"{self._tally.failed} failed)",
            file=self.stream,
            flush=True,
        )


def make_progress(
    label: str, *, quiet: bool, stream: TextIO | None = None, stage: str | None = None
) -> ProgressReporter:
    """The reporter that suits `stream` (default stderr): bar on a terminal, else lines.
    `stage` names the first stage of an item (`prepared`), where the run has one."""
    stream = stream or sys.stderr
    if quiet:
        return SilentProgress()
    if stream.isatty():
        return BarProgress(label, stream, stage=stage)
    return LineProgress(label, stream, stage=stage)
