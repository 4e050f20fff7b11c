"""Checking many listing photos: parallel fingerprints, batched search, results in input order.

Worker processes decode and fingerprint listings; this process searches their descriptors in
batches (one FAISS call for many listings), then verifies each listing on its own share of the
neighbours. A file that cannot be used gives a `status: error` result and the rest go on.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from imgmatch.detector import CheckResult, Detector
from imgmatch.errors import ImgmatchError
from imgmatch.parallel import FingerprintOutcome, fingerprint_files
from imgmatch.progress import ProgressReporter, SilentProgress
from imgmatch.sources import ListingInput, ListingSet, SkippedPath, gather_listings

DEFAULT_DECODE_TIMEOUT_S = 30.0
# Listings per FAISS call. The more descriptors one call holds, the more of them share the lists
# they probe, which the catalog then scans together. Results stream a batch at a time: every
# 1.5-3 s at the 20-45 images/s `python -m imgmatch.bench.batch` measures.
DEFAULT_SEARCH_BATCH_LISTINGS = 64


class ResumeError(ImgmatchError):
    """`--resume` was asked for an output that cannot be resumed."""


@dataclass(frozen=True)
class CheckOptions:
    """How a check run works (not what it checks)."""

    # One process unless asked: a library caller (the service) must not get a pool by surprise.
    workers: int = 1
    min_score: float | None = None
    search_batch_listings: int = DEFAULT_SEARCH_BATCH_LISTINGS
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S


@dataclass(frozen=True)
class ListingResult:
    """A check result (C4) with the listing's manifest id and extra columns, if any."""

    listing: ListingInput
    result: CheckResult

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.listing.listing_id is not None:
            data["listing_id"] = self.listing.listing_id
        data.update(self.result.to_dict())
        if self.listing.extra:
            data["manifest"] = dict(self.listing.extra)
        return data


@dataclass(frozen=True)
class CheckSummary:
    """What one check run did: counts, throughput, and the failures grouped by reason."""

    processed: int
    flagged: int
    failed: int
    skipped: tuple[SkippedPath, ...]
    unsupported: int
    resumed: int
    elapsed_s: float
    threshold: float
    catalog: str
    failures_by_reason: dict[str, tuple[str, ...]]

    @property
    def images_per_s(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary for automation (`--summary-json`)."""
        return {
            "command": "check",
            "catalog": self.catalog,
            "threshold": self.threshold,
            "processed": self.processed,
            "flagged": self.flagged,
            "failed": self.failed,
            "skipped": len(self.skipped),
            "unsupported": self.unsupported,
            "resumed": self.resumed,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "failures_by_reason": {k: list(v) for k, v in sorted(self.failures_by_reason.items())},
            "skipped_paths": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


class ResultSink(Protocol):
    """Where results go as they arrive: `start` learns the manifests' extra columns, `close`
    gets the summary once the run is over."""

    def start(self, extra_columns: tuple[str, ...]) -> None: ...

    def write(self, item: ListingResult) -> None: ...

    def close(self, summary: CheckSummary) -> None: ...


def check_listings(
    detector: Detector,
    listings: Sequence[ListingInput],
    options: CheckOptions,
    progress: ProgressReporter | None = None,
) -> Iterator[ListingResult]:
    """Check `listings` and yield their results in input order; `progress` is told as each
    listing's fingerprint is done (its result comes after its batch is searched)."""
    progress = progress or SilentProgress()
    outcomes = fingerprint_files(
        [listing.path for listing in listings if listing.unreadable is None],
        "listing",
        workers=options.workers,
        config=detector.config,
        limits=detector.limits,
        decode_timeout_s=options.decode_timeout_s,
        # While this process searches and verifies one batch, the workers fingerprint the
        # next: with only one batch in flight they would sit idle until it is done.
        in_flight=2 * options.search_batch_listings + 2 * options.workers,
    )
    batch: list[tuple[ListingInput, FingerprintOutcome]] = []
    for listing in listings:
        if listing.unreadable is None:
            outcome = next(outcomes)
        else:
            error = f"{listing.path}: {listing.unreadable}"
            outcome = FingerprintOutcome(
                listing.path, None, error=error, error_type=listing.unreadable
            )
        batch.append((listing, outcome))
        progress.prepared()
        if len(batch) >= options.search_batch_listings:
            yield from _check_batch(detector, batch, options.min_score)
            batch = []
    yield from _check_batch(detector, batch, options.min_score)


def _check_batch(
    detector: Detector,
    batch: list[tuple[ListingInput, FingerprintOutcome]],
    min_score: float | None,
) -> Iterator[ListingResult]:
    # The whole batch reads one generation of the catalog; its results are collected before
    # any is handed on, so that the snapshot is not held while the caller writes them out.
    with detector.pinned() as pinned:
        results = list(_check_pinned_batch(pinned, batch, min_score))
    yield from results


def _check_pinned_batch(
    detector: Detector,
    batch: list[tuple[ListingInput, FingerprintOutcome]],
    min_score: float | None,
) -> Iterator[ListingResult]:
    prints = [o.fingerprint for _, o in batch if o.fingerprint is not None]
    start = time.perf_counter()
    found = iter(detector.search_descriptors(prints))
    search_ms = (time.perf_counter() - start) * 1000
    total = max(sum(len(fp.features.descriptors) for fp in prints), 1)
    for listing, outcome in batch:
        label = str(listing.path)
        if outcome.fingerprint is None:
            yield ListingResult(listing, _error_result(label, outcome))
            continue
        count = len(outcome.fingerprint.features.descriptors)
        result = detector.check_fingerprint(
            outcome.fingerprint,
            path=label,
            scale=outcome.scale,
            min_score=min_score,
            neighbours=next(found),
        )
        # One FAISS call served the whole batch; each listing is charged its share by
        # descriptor count, which is what the search cost scales with.
        timing = {
            "decode": outcome.decode_ms,
            "features": outcome.features_ms,
            "search": result.timing_ms.get("search", 0.0) + search_ms * count / total,
            "verify": result.timing_ms.get("verify", 0.0),
        }
        width, height = outcome.original_size or (result.width, result.height)
        yield ListingResult(listing, replace(result, timing_ms=timing, width=width, height=height))


def _error_result(label: str, outcome: FingerprintOutcome) -> CheckResult:
    return CheckResult(
        path=label,
        status="error",
        flagged=False,
        matches=(),
        timing_ms={"decode": outcome.decode_ms},
        threshold=float("nan"),
        error=outcome.error,
        error_type=outcome.error_type,
    )


def completed_keys(jsonl_path: Path) -> set[tuple[str, str]]:
    """Results already in a jsonl output, as `ListingInput.key`s (listing_id, path), for
    `--resume`.

    A last line cut short by a crash is removed from the file, so the run appends after the
    last complete result.
    """
    if not jsonl_path.exists():
        return set()
    data = jsonl_path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with jsonl_path.open("r+b") as stream:
            stream.truncate(len(complete))
    keys: set[tuple[str, str]] = set()
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResumeError(f"{jsonl_path}:{number}: not a jsonl result ({exc})") from exc
        if not isinstance(record, dict) or "path" not in record:
            raise ResumeError(f"{jsonl_path}:{number}: not a jsonl result (no path)")
        keys.add((str(record.get("listing_id", "")), str(record["path"])))
    return keys


def run_check(
    detector: Detector,
    paths: Sequence[Path],
    sink: ResultSink,
    *,
    manifests: Sequence[Path] = (),
    done: Iterable[tuple[str, str]] = (),
    options: CheckOptions | None = None,
    progress: ProgressReporter | None = None,
) -> CheckSummary:
    """Check every listing under `paths` and in `manifests` except those whose key is in `done`
    (a resumed run), stream each result into `sink`, and return the run's summary."""
    started = time.perf_counter()
    options = options or CheckOptions()
    progress = progress or SilentProgress()
    found: ListingSet = gather_listings(paths, manifests)
    done = set(done)
    todo = [listing for listing in found.listings if listing.key not in done]
    processed = flagged = 0
    failures: dict[str, list[str]] = defaultdict(list)
    sink.start(found.extra_columns)
    progress.start(len(todo))
    try:
        for item in check_listings(detector, todo, options, progress):
            sink.write(item)
            processed += 1
            flagged += int(item.result.flagged)
            if item.result.status == "error":
                failures[item.result.error_type or "invalid image"].append(str(item.listing.path))
            progress.advance(failed=item.result.status == "error")
    finally:
        progress.finish()
    summary = CheckSummary(
        processed=processed,
        flagged=flagged,
        failed=sum(len(v) for v in failures.values()),
        skipped=tuple(found.skipped),
        unsupported=found.unsupported,
        resumed=len(found.listings) - len(todo),
        elapsed_s=time.perf_counter() - started,
        threshold=detector.threshold,
        catalog=os.fspath(detector.catalog.directory),
        failures_by_reason={k: tuple(v) for k, v in failures.items()},
    )
    sink.close(summary)
    return summary
