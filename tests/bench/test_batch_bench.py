"""The batch throughput benchmark end to end on a tiny configuration: it runs and reports."""

from __future__ import annotations

import re

import pytest

from imgmatch.bench import batch
from imgmatch.bench.batch import CheckRun, merge_runs


def test_merged_runs_add_up_time_listings_and_stages() -> None:
    first = CheckRun(1, 2.0, 10, 4, 1, {"decode": 30.0, "search": 50.0})
    second = CheckRun(1, 3.0, 15, 6, 0, {"decode": 45.0, "verify": 9.0})
    merged = merge_runs([first, second])
    assert (merged.workers, merged.elapsed_s, merged.listings) == (1, 5.0, 25)
    assert (merged.flagged, merged.failed) == (10, 1)
    assert merged.stage_ms == {"decode": 75.0, "search": 50.0, "verify": 9.0}
    assert merged.images_per_s == pytest.approx(5.0)


def test_tiny_batch_bench_prints_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--listings", "6", "--references", "40", "--rounds", "1", "--workers", "2"]
    assert batch.main(argv) == 0
    out = capsys.readouterr().out
    # Even-numbered listings attack a bundled reference (resize+JPEG, crop, mirror); odd ones
    # are unrelated generated photos.
    assert "6 listings (3 flagged, 0 failed), 1 rounds" in out
    for figure in ("floor (decode + ORB features", "scaling ratio", "cost per image", "re-index"):
        assert figure in out
    floor = re.search(r"floor \(decode \+ ORB features, serial\): ([\d.]+) ms/image", out)
    assert floor is not None and float(floor.group(1)) > 0
