"""Decoding and fingerprinting many files in a process pool, results in input order.

Only pixels -> fingerprint work runs in the workers; everything that touches the catalog stays in
the calling process (one writer, one FAISS index in memory). Each worker limits OpenCV, FAISS and
BLAS to one thread: N workers on N cores must not each start N threads.

Workers end with the process that started them, however it ends (`kill -9`, the OOM killer, a
crash): each watches a pipe only that process can write to, and exits when the pipe closes.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.errors import InvalidImageError
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.images import RGBImage, decode_image

# Set before the worker imports its native libraries, so their thread pools start at one thread.
_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
# Tasks in flight per worker: enough that no worker waits while the caller is busy searching.
TASKS_IN_FLIGHT_PER_WORKER = 4

FINGERPRINT_KINDS: dict[str, Callable[[Fingerprinter, RGBImage], Fingerprint]] = {
    "reference": Fingerprinter.reference,
    "listing": Fingerprinter.listing,
}


class DecodeTimeoutError(InvalidImageError):
    """Decoding took longer than the per-file limit (a decompression trap or a stuck reader)."""

    reason = "decode time limit"


class WorkerCrashedError(InvalidImageError):
    """The worker process died on this file (a crash in a native decoder)."""

    reason = "worker crashed"


@dataclass(frozen=True)
class FingerprintOutcome:
    """One file's fingerprint, or why there is none, with the time each stage took."""

    path: Path
    fingerprint: Fingerprint | None
    scale: float = 1.0
    original_size: tuple[int, int] | None = None
    decode_ms: float = 0.0
    features_ms: float = 0.0
    error: str | None = None
    error_type: str | None = None


def default_workers() -> int:
    """The cores this process may run on (all of them unless restricted by affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class FileFingerprinter:
    """Decodes and fingerprints one file at a time; the per-process state of a pool worker."""

    def __init__(
        self, kind: str, config: DetectorConfig, limits: ImageLimits, decode_timeout_s: float
    ) -> None:
        self.fingerprint_image = FINGERPRINT_KINDS[kind]
        self.fingerprinter = Fingerprinter(config)
        self.limits = limits
        self.decode_timeout_s = decode_timeout_s

    def __call__(self, path: Path) -> FingerprintOutcome:
        start = time.perf_counter()
        try:
            with _time_limit(self.decode_timeout_s, path):
                decoded = decode_image(path, self.limits)
            decoded_at = time.perf_counter()
            fingerprint = self.fingerprint_image(self.fingerprinter, decoded.pixels)
        except InvalidImageError as exc:
            return FingerprintOutcome(
                path,
                None,
                decode_ms=(time.perf_counter() - start) * 1000,
                error=str(exc),
                error_type=exc.reason,
            )
        return FingerprintOutcome(
            path,
            fingerprint,
            scale=decoded.scale,
            original_size=decoded.original_size,
            decode_ms=(decoded_at - start) * 1000,
            features_ms=(time.perf_counter() - decoded_at) * 1000,
        )


@contextlib.contextmanager
def _time_limit(seconds: float, path: Path) -> Iterator[None]:
    """Raise DecodeTimeoutError in this thread after `seconds` (main thread only: SIGALRM)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DecodeTimeoutError(f"{path}: decoding took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_worker: FileFingerprinter | None = None
# A worker's exit status when the process that started it is gone.
EXIT_PARENT_GONE = 1


def _init_worker(
    lifeline: Connection,
    kind: str,
    config: DetectorConfig,
    limits: ImageLimits,
    decode_timeout_s: float,
) -> None:
    global _worker
    # Ctrl-C goes to the whole process group; only the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_parent, args=(lifeline,), name="imgmatch-lifeline", daemon=True
    ).start()
    # The fingerprinter sets OpenCV to DetectorConfig.opencv_threads (one) as it is built.
    _worker = FileFingerprinter(kind, config, limits, decode_timeout_s)


def _exit_with_parent(lifeline: Connection) -> None:
    """End this worker as soon as the parent's end of `lifeline` is closed.

    A pool worker would otherwise outlive a parent killed with SIGKILL: it waits for tasks on a
    queue whose write end it holds itself, so it never sees the parent go. And the forkserver
    and the resource tracker it was started through wait for every holder of their pipes to go,
    workers included: one stray worker keeps all three alive. A parent-death signal (Linux
    prctl) would not help, because a worker's parent is the forkserver, not imgmatch.
    """
    # Readable means closed: the parent never writes to it. Waiting on the pipe releases the GIL.
    multiprocessing.connection.wait([lifeline])
    os._exit(EXIT_PARENT_GONE)


def _work(path: Path) -> FingerprintOutcome:
    if _worker is None:
        raise RuntimeError("pool worker used before its initializer ran")
    return _worker(path)


def fingerprint_files(
    paths: Iterable[Path],
    kind: str,
    *,
    workers: int,
    config: DetectorConfig,
    limits: ImageLimits,
    decode_timeout_s: float,
    in_flight: int = 0,
) -> Iterator[FingerprintOutcome]:
    """Fingerprint `paths` ('reference' or 'listing' kind) and yield outcomes in input order.

    `workers` 1 runs in this process (no pool to start, nothing to pickle); more use a pool of
    that many processes with up to `in_flight` files submitted ahead (default: 4 per worker).
    A file that fails, times out or crashes its worker yields an outcome with an error.
    """
    if workers <= 1:
        fingerprinter = FileFingerprinter(kind, config, limits, decode_timeout_s)
        yield from map(fingerprinter, paths)
        return
    window = max(in_flight, workers * TASKS_IN_FLIGHT_PER_WORKER)
    yield from _pooled(
        iter(paths), window, _PoolFactory(workers, kind, config, limits, decode_timeout_s)
    )


@dataclass(frozen=True)
class _PoolFactory:
    workers: int
    kind: str
    config: DetectorConfig
    limits: ImageLimits
    decode_timeout_s: float

    def __call__(self) -> ProcessPoolExecutor:
        saved = {name: os.environ.get(name) for name in _SINGLE_THREAD_ENV}
        os.environ.update(_SINGLE_THREAD_ENV)
        try:
            pool = _LifelinePool(
                self.workers, self.kind, self.config, self.limits, self.decode_timeout_s
            )
            # Start the workers now, while the single-thread environment is in place.
            for future in [pool.submit(os.getpid) for _ in range(self.workers)]:
                future.result()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return pool


class _LifelinePool(ProcessPoolExecutor):
    """A process pool whose workers exit when this process does, or when the pool is shut down.

    Only this process holds the write end of the lifeline pipe; the workers watch its read end
    (`_exit_with_parent`). The write end is not inherited by anything this process starts
    (file descriptors are not inheritable by default), so it closes when this process ends,
    whatever ends it.
    """

    def __init__(
        self,
        workers: int,
        kind: str,
        config: DetectorConfig,
        limits: ImageLimits,
        decode_timeout_s: float,
    ) -> None:
        # forkserver: workers fork from a clean server process, not from this one, whose FAISS
        # OpenMP pool and progress thread do not survive a fork.
        context = multiprocessing.get_context("forkserver")
        # The read end stays open here too: workers started later are sent a copy of it.
        self._lifeline_reader, self._lifeline = context.Pipe(duplex=False)
        super().__init__(
            workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self._lifeline_reader, kind, config, limits, decode_timeout_s),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        # Workers still busy after a shutdown without waiting (a broken pool being replaced)
        # have nothing left to deliver: closing the lifeline ends them now.
        self._lifeline.close()
        self._lifeline_reader.close()


def _submit(pool: ProcessPoolExecutor, path: Path) -> Future[FingerprintOutcome]:
    """`path`'s task in `pool`; a pool that broke since its last result gives a failed future,
    which the caller retries with the other tasks in flight, instead of an exception here."""
    try:
        return pool.submit(_work, path)
    except BrokenProcessPool as exc:
        failed: Future[FingerprintOutcome] = Future()
        failed.set_exception(exc)
        return failed


def _pooled(
    paths: Iterator[Path], window: int, new_pool: Callable[[], ProcessPoolExecutor]
) -> Iterator[FingerprintOutcome]:
    pending: deque[tuple[Path, Future[FingerprintOutcome]]] = deque()
    first = next(paths, None)
    if first is None:
        # Nothing to do (a no-change re-index): starting workers would be most of the run.
        return
    paths = itertools.chain([first], paths)
    pool = new_pool()
    try:
        while True:
            while len(pending) < window and (path := next(paths, None)) is not None:
                pending.append((path, _submit(pool, path)))
            if not pending:
                return
            path, future = pending.popleft()
            try:
                yield future.result()
                continue
            except BrokenProcessPool:
                suspects = [path, *(p for p, _ in pending)]
                pending.clear()
            # A worker died and took every task in flight with it. Retry those one at a time
            # in a fresh pool, so only the file that kills a worker is reported as failed.
            pool.shutdown(wait=False, cancel_futures=True)
            pool = new_pool()
            for suspect in suspects:
                try:
                    yield pool.submit(_work, suspect).result()
                except BrokenProcessPool:
                    error = WorkerCrashedError(f"{suspect}: the worker process died decoding it")
                    yield FingerprintOutcome(
                        suspect, None, error=str(error), error_type=error.reason
                    )
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
