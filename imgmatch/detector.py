"""The detector: which protected designs a listing photo copies, where, how surely, and why.

A check runs in stages, each in its own module and each returning frozen values:
candidates (hash evidence, ORB votes, shortlist) -> verification (RANSAC per reference view)
-> assignment (each listing keypoint to one design) -> scoring (one `Match` per design) ->
policy (the verdict). The detector orchestrates them over a `ReferenceIndex`, times them, and
wraps the outcome in a `CheckResult`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from imgmatch.assignment import assign_exclusively
from imgmatch.candidates import hash_evidence, shortlist, split_neighbours, votes
from imgmatch.catalog import Catalog, DescriptorNeighbours
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.errors import InvalidImageError
from imgmatch.features import DESCRIPTOR_BYTES
from imgmatch.fingerprint import Fingerprint, Fingerprinter, fingerprint_signature
from imgmatch.images import RGBImage, decode_image
from imgmatch.policy import THRESHOLD_SETTING, ListingContext, Policy, threshold_policy
from imgmatch.reference_index import ReferenceIndex
from imgmatch.results import CheckResult, Match, error_result
from imgmatch.scoring import best_per_design, score_evidence
from imgmatch.verification import shortlisted_references, verify_candidate

# Where callers have always found them.
__all__ = ["THRESHOLD_SETTING", "CheckResult", "Detector", "Match", "error_result"]


class _Stopwatch:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


class Detector:
    """Checks listing photos against a catalog. Thread-safe; fingerprinting state is per thread.

    Checks read the references through `index` (the catalog itself unless another view of it is
    given); `policy` (default: the catalog's flag threshold, read at each check) decides flags.
    """

    def __init__(
        self,
        catalog: Catalog,
        config: DetectorConfig | None = None,
        limits: ImageLimits | None = None,
        *,
        index: ReferenceIndex | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.catalog = catalog
        self.index: ReferenceIndex = catalog if index is None else index
        # Whether `index` reads one generation throughout (a snapshot, or a given index).
        self._pinned = index is not None
        self.config = config or DetectorConfig()
        self.limits = limits or ImageLimits()
        self._policy = policy
        self._local = threading.local()

    @contextmanager
    def pinned(self) -> Iterator[Detector]:
        """This detector reading the catalog at one generation throughout the block: one check,
        or a batch of checks, never sees a reference that another read of it misses. A
        detector given its own `index` reads that as it is."""
        if self._pinned:
            yield self
            return
        with self.catalog.snapshot() as view:
            pinned = copy.copy(self)
            pinned.index, pinned._pinned = view, True
            yield pinned

    @property
    def fingerprinter(self) -> Fingerprinter:
        """This thread's fingerprinter (OpenCV's ORB object is not shared between threads)."""
        fingerprinter: Fingerprinter | None = getattr(self._local, "fingerprinter", None)
        if fingerprinter is None:
            fingerprinter = Fingerprinter(self.config)
            self._local.fingerprinter = fingerprinter
        return fingerprinter

    def stale_references(self) -> int:
        """References fingerprinted by another imgmatch version or with other settings: their
        fingerprints do not compare with this detector's listings until `imgmatch index`
        fingerprints their files again."""
        return self.catalog.count_fingerprinted_otherwise(fingerprint_signature(self.config))

    @property
    def policy(self) -> Policy:
        """The policy given, else the threshold policy of the catalog's current settings."""
        if self._policy is not None:
            return self._policy
        return threshold_policy(self.catalog.get_setting(THRESHOLD_SETTING), self.config)

    @property
    def threshold(self) -> float:
        """The flag threshold: the catalog's calibrated one where set, else the config's."""
        return self.policy.threshold

    def check_source(
        self,
        source: bytes | Path,
        *,
        path: str | None = None,
        min_score: float | None = None,
        context: ListingContext | None = None,
    ) -> CheckResult:
        """Decode and check one listing; an undecodable input gives a `status: error` result."""
        label = path if path is not None else (str(source) if isinstance(source, Path) else None)
        start = time.perf_counter()
        try:
            decoded = decode_image(source, self.limits)
        except InvalidImageError as exc:
            return error_result(label, exc, (time.perf_counter() - start) * 1000)
        decode_ms = (time.perf_counter() - start) * 1000
        result = self.check(
            decoded.pixels, path=label, scale=decoded.scale, min_score=min_score, context=context
        )
        width, height = decoded.original_size
        timing_ms = {"decode": decode_ms, **result.timing_ms}
        return replace(result, timing_ms=timing_ms, width=width, height=height)

    def check(
        self,
        image: RGBImage,
        *,
        path: str | None = None,
        scale: float = 1.0,
        min_score: float | None = None,
        context: ListingContext | None = None,
    ) -> CheckResult:
        """Check one decoded listing photo.

        `scale` maps the array's pixels to the listing file's (boxes are reported in the
        file's coordinates); `min_score` (default: the flag threshold) drops weaker candidates.
        """
        watch = _Stopwatch()
        with watch.stage("features"):
            fingerprint = self.fingerprinter.listing(image)
        return self.check_fingerprint(
            fingerprint, path=path, scale=scale, min_score=min_score, watch=watch, context=context
        )

    def check_fingerprint(
        self,
        fingerprint: Fingerprint,
        *,
        path: str | None = None,
        scale: float = 1.0,
        min_score: float | None = None,
        watch: _Stopwatch | None = None,
        neighbours: DescriptorNeighbours | None = None,
        context: ListingContext | None = None,
    ) -> CheckResult:
        """Check a listing fingerprint already computed (batch callers search many at once and
        pass each listing's `neighbours`)."""
        watch = watch or _Stopwatch()
        policy = self.policy
        floor = policy.threshold if min_score is None else min_score
        with self.pinned() as detector:
            matches = detector.find_matches(fingerprint, floor, scale, neighbours, watch)
        verdict = policy.decide(matches, context)
        return CheckResult(
            path=path,
            status="ok",
            flagged=verdict.flagged,
            matches=matches,
            timing_ms=dict(watch.ms),
            threshold=verdict.threshold,
            width=round(fingerprint.width * scale),
            height=round(fingerprint.height * scale),
        )

    def find_matches(
        self,
        fingerprint: Fingerprint,
        floor: float,
        scale: float = 1.0,
        neighbours: DescriptorNeighbours | None = None,
        watch: _Stopwatch | None = None,
    ) -> tuple[Match, ...]:
        """The evidence alone: one match per design scoring at least `floor`, best first.
        Outside `pinned`, it reads through a snapshot of its own."""
        if not self._pinned:
            with self.pinned() as detector:
                return detector.find_matches(fingerprint, floor, scale, neighbours, watch)
        config, watch = self.config, watch or _Stopwatch()
        with watch.stage("search"):
            hits = self.index.search_hashes(fingerprint.hashes, config.max_hamming_distance)
            hashed = hash_evidence(hits, list(fingerprint.hashes))
            if neighbours is None:
                neighbours = self.search_descriptors([fingerprint])[0]
            voted = votes(neighbours, self.index.design_codes(), hashed, config)
        with watch.stage("verify"):
            shortlisted = shortlist(hashed, voted, config)
            references = shortlisted_references(shortlisted, self.index)
            keypoints = fingerprint.features.keypoints
            verified = [
                verify_candidate(c, references[c.reference_id], keypoints, self.index, config)
                for c in shortlisted
            ]
            size = (fingerprint.width, fingerprint.height)
            assigned = assign_exclusively(verified, references, size, config)
            scored = (
                score_evidence(e, references[e.reference_id], size, scale, config.hashers, config)
                for e in assigned
            )
            return best_per_design(scored, floor)

    def search_descriptors(self, listings: Sequence[Fingerprint]) -> list[DescriptorNeighbours]:
        """The catalog neighbours of every listing's descriptors, in one FAISS call for all.
        Their ids mean something only at the generation searched: search and check them in one
        `pinned` block."""
        descriptor_sets = [listing.features.descriptors for listing in listings]
        stacked = np.concatenate(descriptor_sets or [np.empty((0, DESCRIPTOR_BYTES), np.uint8)])
        found = self.index.search_descriptors(stacked, self.config.knn_neighbours)
        return split_neighbours(found, [len(d) for d in descriptor_sets])
