"""The process pool: a worker that dies on one file takes every file in flight with it; those
are retried one at a time, so only the file that kills a worker is reported as failed. And pool
workers end with the command that started them, however it ends."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgmatch import parallel
from imgmatch.catalog import Catalog
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.indexing import index_references
from imgmatch.parallel import FileFingerprinter, FingerprintOutcome

# A file whose name starts with this makes the worker process exit at once, as a crash in a
# native decoder would: no exception, no result, a broken pool.
CRASH_PREFIX = "crash"


class _CrashingFingerprinter(FileFingerprinter):
    def __call__(self, path: Path) -> FingerprintOutcome:
        if path.name.startswith(CRASH_PREFIX):
            os._exit(70)
        return super().__call__(path)


def _init_crashing_worker(
    lifeline: Connection, config: DetectorConfig, limits: ImageLimits
) -> None:
    """Pool initializer: the real worker set-up, then a fingerprinter that dies on crash files."""
    parallel._init_worker(lifeline, "listing", config, limits, 0.0)
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
    context = multiprocessing.get_context("forkserver")
    # The workers' lifeline: held open here until the test ends, as the command holds its own.
    lifeline_reader, lifeline = context.Pipe(duplex=False)

    def new_pool() -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            2,
            mp_context=context,
            initializer=_init_crashing_worker,
            initargs=(lifeline_reader, config, limits),
        )
        pools.append(pool)
        return pool

    # Every file is submitted at once, so the crash breaks the pool with the others in flight.
    outcomes = list(parallel._pooled(iter(paths), len(paths), new_pool))
    lifeline.close()  # the workers of every pool end with it

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


PROC = Path("/proc")
WORKERS = 2
# A killed command's processes must be gone within this many seconds.
CLEANUP_LIMIT_S = 5.0

pytestmark = pytest.mark.skipif(
    not (PROC / "self" / "stat").exists(), reason="needs Linux /proc to find child processes"
)

# A process is (pid, start time in clock ticks): a pid reused by another process is not it.
Process = tuple[int, int]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of `pid`, or None if there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _descendants(root: int) -> set[Process]:
    children: dict[int, list[Process]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found: set[Process] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child[0])
    return found


def _running(process: Process) -> bool:
    stat = _stat(process[0])
    # A zombie has exited; only its parent's (or init's) reaping is left.
    return stat is not None and stat[2] == process[1] and stat[0] not in ("Z", "X")


def _command_line(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _kill_mid_run(arguments: list[str]) -> tuple[set[Process], set[Process]]:
    """Start `imgmatch ARGUMENTS`, SIGKILL it once its workers are busy; return the processes
    it had started and those of them still running `CLEANUP_LIMIT_S` later."""
    command = [sys.executable, "-c", "from imgmatch.cli import app; app()", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: set[Process] = set()
    try:
        # The resource tracker, the forkserver and the workers.
        deadline = time.monotonic() + 120
        while len(started) < WORKERS + 2 and process.poll() is None:
            assert time.monotonic() < deadline, "the pool never started"
            time.sleep(0.05)
            started = _descendants(process.pid)
        time.sleep(0.3)
        started |= _descendants(process.pid)
        assert process.poll() is None, "the run ended before it was killed: give it more work"
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + CLEANUP_LIMIT_S
        left = {p for p in started if _running(p)}
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = {p for p in left if _running(p)}
        return started, left
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        # Whatever the outcome, leave nothing of this test running.
        for pid, start in started:
            if _running((pid, start)):
                os.kill(pid, signal.SIGKILL)


def _assert_nothing_left(started: set[Process], left: set[Process]) -> None:
    assert len(started) >= WORKERS + 2
    assert not left, f"still running {CLEANUP_LIMIT_S:g} s after the kill: " + "; ".join(
        f"{pid} {_command_line(pid)}" for pid, _ in sorted(left)
    )


@pytest.fixture
def many_photos(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> Iterator[Path]:
    """Enough distinct photos that two workers take several seconds over them."""
    folder = tmp_path / "photos"
    for seed in range(120):
        write_image(folder / f"photo_{seed:03d}.jpg", make_photo(seed, (480, 360)), quality=90)
    yield folder


@pytest.mark.slow
def test_kill_9_of_index_mid_run_leaves_no_process_behind(
    many_photos: Path, tmp_path: Path
) -> None:
    started, left = _kill_mid_run(
        ["index", str(many_photos), "--catalog", str(tmp_path / "cat"),
         "--workers", str(WORKERS), "--quiet"]
    )  # fmt: skip
    _assert_nothing_left(started, left)


@pytest.mark.slow
def test_kill_9_of_check_mid_run_leaves_no_process_behind(
    many_photos: Path, tmp_path: Path
) -> None:
    references = tmp_path / "refs"
    references.mkdir()
    for name in ("photo_000.jpg", "photo_001.jpg"):
        shutil.copy2(many_photos / name, references / name)
    with Catalog(tmp_path / "cat") as catalog:
        assert index_references(catalog, [references]).added == 2
    started, left = _kill_mid_run(
        ["check", str(many_photos), "--catalog", str(tmp_path / "cat"), "--format", "jsonl",
         "--workers", str(WORKERS), "--quiet"]
    )  # fmt: skip
    _assert_nothing_left(started, left)


class BreakingPool(Executor):
    """Runs each task at once in this process, like a pool whose worker died just before its
    `breaks_at`-th submission (`None`: never)."""

    def __init__(self, breaks_at: int | None) -> None:
        self.breaks_at = breaks_at
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        if self.breaks_at is not None and self.submitted >= self.breaks_at:
            raise BrokenProcessPool("a child process terminated abruptly")
        future: Future[Any] = Future()
        future.set_result(FingerprintOutcome(args[0], None))
        return future


def test_a_worker_dying_between_two_results_loses_no_file_and_stops_nothing() -> None:
    paths = [Path(f"listing_{n}.jpg") for n in range(12)]
    pools = iter([BreakingPool(breaks_at=6), BreakingPool(None), BreakingPool(None)])
    outcomes = list(parallel._pooled(iter(paths), 4, lambda: next(pools)))
    assert [outcome.path for outcome in outcomes] == paths
    assert all(outcome.error is None for outcome in outcomes)
