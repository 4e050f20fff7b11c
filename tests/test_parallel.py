"""The process pool: a worker that dies on one file takes every file in flight with it; those
are retried one at a time, so only the file that kills a worker is reported as failed."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from imgmatch import parallel
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.parallel import FileFingerprinter, FingerprintOutcome

# A file whose name starts with this makes the worker process exit at once, as a crash in a
# native decoder would: no exception, no result, a broken pool.
CRASH_PREFIX = "crash"


class _CrashingFingerprinter(FileFingerprinter):
    def __call__(self, path: Path) -> FingerprintOutcome:
        if path.name.startswith(CRASH_PREFIX):
            os._exit(70)
        return super().__call__(path)


def _init_crashing_worker(config: DetectorConfig, limits: ImageLimits) -> None:
    """Pool initializer: the real worker set-up, then a fingerprinter that dies on crash files."""
    parallel._init_worker("listing", config, limits, 0.0)
    parallel._worker = _CrashingFingerprinter("listing", config, limits, 0.0)


def test_files_in_flight_when_a_worker_dies_are_retried_and_only_the_killer_fails(
    tmp_path: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:
    config, limits = DetectorConfig(), ImageLimits()
    paths = [
        write_image(tmp_path / f"good_{i}.png", make_photo(300 + i, (240, 180))) for i in range(5)
    ]
    killer = write_image(tmp_path / f"{CRASH_PREFIX}_0.png", make_photo(399, (240, 180)))
    paths.insert(2, killer)
    pools: list[ProcessPoolExecutor] = []

    def new_pool() -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            2,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_crashing_worker,
            initargs=(config, limits),
        )
        pools.append(pool)
        return pool

    # Every file is submitted at once, so the crash breaks the pool with the others in flight.
    outcomes = list(parallel._pooled(iter(paths), len(paths), new_pool))

    assert [o.path for o in outcomes] == paths
    crashed = outcomes[2]
    assert crashed.fingerprint is None and crashed.error_type == "worker crashed"
    assert str(killer) in (crashed.error or "")
    expected = FileFingerprinter("listing", config, limits, 0.0)
    for outcome in outcomes[:2] + outcomes[3:]:
        assert outcome.error is None, outcome
        assert outcome.fingerprint is not None
        reference = expected(outcome.path).fingerprint
        assert reference is not None
        assert np.array_equal(
            outcome.fingerprint.features.descriptors, reference.features.descriptors
        )
    # The first pool broke; the retries needed a fresh one, and another after the killer.
    assert len(pools) >= 3
