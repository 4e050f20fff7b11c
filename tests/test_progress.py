"""Progress displays: what they count, and a rate that is the run's pace, not one burst's."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgmatch import progress as progress_module
from imgmatch.catalog import Catalog
from imgmatch.checking import CheckOptions, run_check
from imgmatch.detector import Detector
from imgmatch.indexing import index_references
from imgmatch.progress import BarProgress, LineProgress, RateWindow
from imgmatch.report import open_sink


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The progress module's clock, moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


class Events:
    """Records the order in which a run tells its progress what happened."""

    def __init__(self) -> None:
        self.log = ""
        self.total = 0
        self.notes: list[str] = []

    def start(self, total: int) -> None:
        self.total = total

    def prepared(self) -> None:
        self.log += "P"

    def advance(self, *, failed: bool = False) -> None:
        self.log += "R"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> None:
        return None


def test_the_line_rate_is_the_recent_pace_not_the_average_since_the_start(
    clock: FakeClock,
) -> None:
    stream = io.StringIO()
    line = LineProgress("check", stream)
    line.start(200)
    # 100 results at 10/s, then the run slows down to 2/s for 25 s.
    for number in range(1, 101):
        clock.now = number * 0.1
        line.advance()
    for number in range(1, 51):
        clock.now = 10 + number * 0.5
        line.advance()
    line.finish()
    last = stream.getvalue().splitlines()[-1]
    # The last 20 s held 40 results: 2.0/s, and 50 left take 25 s (the average, 4.3/s, says 12).
    assert "150/200 (2.0/s, ETA 25 s, 0 failed)" in last


def test_the_bar_rate_after_a_burst_of_results_is_the_pace_of_the_run(clock: FakeClock) -> None:
    stream = io.StringIO()
    bar = BarProgress("check", stream)
    bar.start(100)
    # Nothing for 8 s (the first search batch being fingerprinted), then 64 results at once.
    clock.now = 8.0
    for _ in range(64):
        bar.advance()
    bar.finish()
    rates = re.findall(r"([\d.]+)/s", stream.getvalue())
    assert rates and float(rates[-1]) == pytest.approx(8.0)


def test_the_bar_shows_fingerprinted_listings_ahead_of_results(clock: FakeClock) -> None:
    stream = io.StringIO()
    bar = BarProgress("check", stream, stage="fingerprinted")
    bar.start(100)
    for _ in range(64):
        bar.prepared()
    clock.now = 6.0
    bar.finish()
    assert "0/100, 64 fingerprinted" in stream.getvalue()
    assert "-/s" in stream.getvalue()


def test_a_run_with_nothing_to_do_prints_no_nan(clock: FakeClock) -> None:
    stream = io.StringIO()
    line = LineProgress("check", stream)
    line.start(0)
    line.finish()
    assert "nan" not in stream.getvalue()
    assert stream.getvalue() == "check: 0/0 (-/s, ETA -, 0 failed)\n"


def test_the_line_reports_fingerprints_while_no_result_has_come(clock: FakeClock) -> None:
    stream = io.StringIO()
    line = LineProgress("check", stream, stage="fingerprinted")
    line.start(100)
    for number in range(1, 21):
        clock.now = number * 0.6
        line.prepared()
    assert stream.getvalue().splitlines() == [
        "check: 0/100, 17 fingerprinted (-/s, ETA -, 0 failed)"
    ]


def test_rate_window_before_and_after_the_first_item() -> None:
    window = RateWindow(started=100.0, window_s=20.0)
    assert window.per_s(105.0) is None
    window.record(105.0)
    assert window.per_s(110.0) == pytest.approx(0.1)
    # Once the item has left the window the rate is zero, not unknown.
    assert window.per_s(130.0) == 0.0


def test_check_counts_each_fingerprint_before_its_batch_is_searched(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> None:
    for seed in range(2):
        write_image(tmp_path / "refs" / f"ref_{seed}.jpg", make_photo(seed, (320, 240)))
    for seed in range(5):
        write_image(tmp_path / "listings" / f"l_{seed}.jpg", make_photo(seed + 10, (320, 240)))
    (tmp_path / "listings" / "l_5_broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    events = Events()
    with Catalog(tmp_path / "cat") as catalog:
        index_references(catalog, [tmp_path / "refs"])
        run_check(
            Detector(catalog),
            [tmp_path / "listings"],
            open_sink("jsonl", tmp_path / "out.jsonl"),
            options=CheckOptions(search_batch_listings=2),
            progress=events,
        )
    assert events.total == 6
    # Each batch of two: both fingerprints, then both results.
    assert events.log == "PPRRPPRRPPRR"
