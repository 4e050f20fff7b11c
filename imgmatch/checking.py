"""Checking many listing photos: discovery, per-file errors, results in input order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from imgmatch.detector import CheckResult, Detector, error_result
from imgmatch.errors import CorruptImageError
from imgmatch.sources import discover_images


def check_paths(
    detector: Detector, paths: Sequence[Path], *, min_score: float | None = None
) -> Iterator[CheckResult]:
    """Check every image under `paths`; a file that cannot be used yields a `status: error`
    result and the rest go on."""
    discovery = discover_images(paths)
    for skipped in discovery.skipped:
        yield error_result(str(skipped.path), CorruptImageError(skipped.reason), 0.0)
    for path in discovery.files:
        yield detector.check_source(path, path=str(path), min_score=min_score)
