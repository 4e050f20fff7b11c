"""The detector: which protected designs a listing photo copies, where, how surely, and why.

Two paths find candidates and one step verifies them:
- hash path: the listing's perceptual hashes, range-searched among the references' hashes in
  all 8 flips/rotations. Every configured hasher must agree (same variant, within the radius):
  a reused photo.
- ORB path: every listing descriptor's nearest reference descriptors, a ratio test against the
  best neighbour of another design, and votes per reference view.
- verification: RANSAC on the top candidates' correspondences gives inliers, the share of
  matches they explain, and the reference's outline in the listing (the box).
The score combines both kinds of evidence and only grows with more of either.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog import Catalog, DescriptorNeighbours, HashHit, Reference
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.errors import InvalidImageError, ReferenceNotFoundError
from imgmatch.features import (
    DESCRIPTOR_BYTES,
    NEXT_CORNER,
    Verification,
    clip_box,
    verify_geometry,
)
from imgmatch.fingerprint import (
    VIEW_MIRRORED,
    Fingerprint,
    Fingerprinter,
    fingerprint_signature,
)
from imgmatch.hashing import DIHEDRALS
from imgmatch.images import RGBImage, decode_image

Box = tuple[int, int, int, int]
THRESHOLD_SETTING = "flag_threshold"


@dataclass(frozen=True)
class Match:
    """One protected design found in a listing, with the best reference photo as evidence."""

    reference_id: int
    reference_path: str
    design: str
    brand: str
    score: float
    hash_distance: int | None
    inliers: int
    inlier_ratio: float
    transform: str
    box: Box | None
    evidence: str
    # Verified correspondences (reference x, y, listing x, y), for drawing; not in C4 output.
    correspondences: tuple[tuple[float, float, float, float], ...] = field(default=(), repr=False)

    def to_dict(self, *, correspondences: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["box"] = list(self.box) if self.box is not None else None
        data["score"] = round(self.score, 4)
        data["inlier_ratio"] = round(self.inlier_ratio, 4)
        if correspondences:
            data["correspondences"] = [[round(v, 1) for v in c] for c in self.correspondences]
        else:
            del data["correspondences"]
        return data


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one listing photo (contract C4)."""

    path: str | None
    status: str
    flagged: bool
    matches: tuple[Match, ...]
    timing_ms: dict[str, float]
    threshold: float
    width: int | None = None
    height: int | None = None
    error: str | None = None
    error_type: str | None = None

    def to_dict(self, *, correspondences: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "status": self.status,
            "flagged": self.flagged,
            "matches": [m.to_dict(correspondences=correspondences) for m in self.matches],
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
        }
        if self.status == "ok":
            data["width"], data["height"] = self.width, self.height
        else:
            data["error"] = self.error
            data["error_type"] = self.error_type
        return data

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None


def error_result(path: str | None, error: InvalidImageError, decode_ms: float) -> CheckResult:
    """The `status: error` result for an input that could not be decoded."""
    return CheckResult(
        path=path,
        status="error",
        flagged=False,
        matches=(),
        timing_ms={"decode": decode_ms},
        threshold=math.nan,
        error=str(error),
        error_type=error.reason,
    )


@dataclass(frozen=True)
class _Votes:
    """The votes one reference view drew, in listing-descriptor order: for each, the listing
    descriptor (query), the reference keypoint it matched, and their distance in bits."""

    queries: NDArray[np.int64]
    keypoints: NDArray[np.int64]
    distances: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.queries)

    def closest_per_keypoint(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(reference keypoints, listing queries): one correspondence per reference keypoint,
        its closest vote (the first among equals), in the order each keypoint was first voted for.
        """
        position = np.arange(len(self.queries))
        # Grouped by keypoint, closest first, earliest first among equals.
        order = np.lexsort((position, self.distances, self.keypoints))
        sorted_keypoints = self.keypoints[order]
        leads = np.ones(len(order), dtype=bool)
        leads[1:] = sorted_keypoints[1:] != sorted_keypoints[:-1]
        chosen = order[leads]
        # np.unique lists keypoints in the same (ascending) order as `chosen`.
        _, first_vote = np.unique(self.keypoints, return_index=True)
        chosen = chosen[np.argsort(first_vote, kind="stable")]
        return self.keypoints[chosen], self.queries[chosen]


@dataclass
class _Candidate:
    """Evidence gathered for one reference while checking one listing."""

    reference_id: int
    hash_distance: int | None = None
    hash_variant: int | None = None
    # Per reference view (in the order of their first vote), the votes it drew.
    votes: dict[int, _Votes] = field(default_factory=dict)
    verification: Verification | None = None
    view: int = 0
    reference_points: NDArray[np.float32] | None = None
    listing_points: NDArray[np.float32] | None = None
    # Index of each correspondence's listing keypoint.
    query_indices: NDArray[np.int64] | None = None


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
    """Checks listing photos against a catalog. Thread-safe; fingerprinting state is per thread."""

    def __init__(
        self,
        catalog: Catalog,
        config: DetectorConfig | None = None,
        limits: ImageLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config or DetectorConfig()
        self.limits = limits or ImageLimits()
        self._local = threading.local()

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
    def threshold(self) -> float:
        """The flag threshold: the catalog's calibrated one where set, else the config's."""
        stored = self.catalog.get_setting(THRESHOLD_SETTING)
        return float(stored) if stored is not None else self.config.flag_threshold

    def check_source(
        self, source: bytes | Path, *, path: str | None = None, min_score: float | None = None
    ) -> CheckResult:
        """Decode and check one listing; an undecodable input gives a `status: error` result."""
        label = path if path is not None else (str(source) if isinstance(source, Path) else None)
        start = time.perf_counter()
        try:
            decoded = decode_image(source, self.limits)
        except InvalidImageError as exc:
            return error_result(label, exc, (time.perf_counter() - start) * 1000)
        decode_ms = (time.perf_counter() - start) * 1000
        result = self.check(decoded.pixels, path=label, scale=decoded.scale, min_score=min_score)
        return CheckResult(
            path=result.path,
            status=result.status,
            flagged=result.flagged,
            matches=result.matches,
            timing_ms={"decode": decode_ms, **result.timing_ms},
            threshold=result.threshold,
            width=decoded.original_size[0],
            height=decoded.original_size[1],
        )

    def check(
        self,
        image: RGBImage,
        *,
        path: str | None = None,
        scale: float = 1.0,
        min_score: float | None = None,
    ) -> CheckResult:
        """Check one decoded listing photo.

        `scale` maps the array's pixels to the listing file's (boxes are reported in the
        file's coordinates); `min_score` (default: the flag threshold) drops weaker candidates.
        """
        watch = _Stopwatch()
        with watch.stage("features"):
            fingerprint = self.fingerprinter.listing(image)
        return self.check_fingerprint(
            fingerprint, path=path, scale=scale, min_score=min_score, watch=watch
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
    ) -> CheckResult:
        """Check a listing fingerprint already computed (batch callers search many at once and
        pass each listing's `neighbours`)."""
        watch = watch or _Stopwatch()
        threshold = self.threshold
        floor = threshold if min_score is None else min_score
        with watch.stage("search"):
            candidates = self._hash_candidates(fingerprint)
            if neighbours is None:
                neighbours = self.search_descriptors([fingerprint])[0]
            self._vote(neighbours, self.catalog.design_codes(), candidates)
        with watch.stage("verify"):
            shortlisted = self._shortlist(candidates)
            references = self._still_present(shortlisted)
            shortlisted = [c for c in shortlisted if c.reference_id in references]
            for candidate in shortlisted:
                self._verify(candidate, fingerprint, references[candidate.reference_id])
            self._assign_exclusively(shortlisted, references, fingerprint)
            matches = self._matches(shortlisted, references, fingerprint, scale, floor)
        return CheckResult(
            path=path,
            status="ok",
            flagged=bool(matches) and matches[0].score >= threshold,
            matches=tuple(matches),
            timing_ms=dict(watch.ms),
            threshold=threshold,
            width=round(fingerprint.width * scale),
            height=round(fingerprint.height * scale),
        )

    # ----------------------------------------------------------------------- hash path

    def _hash_candidates(self, fingerprint: Fingerprint) -> dict[int, _Candidate]:
        hits: list[HashHit] = self.catalog.search_hashes(
            fingerprint.hashes, self.config.max_hamming_distance
        )
        # Every hasher must agree on the same reference and the same flip/rotation.
        per_key: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
        for hit in hits:
            per_key[(hit.reference_id, hit.variant)][hit.hasher] = hit.distance
        candidates: dict[int, _Candidate] = {}
        required = set(fingerprint.hashes)
        for (reference_id, variant), distances in per_key.items():
            if set(distances) != required:
                continue
            distance = max(distances.values())
            current = candidates.get(reference_id)
            if current is None or current.hash_distance is None or distance < current.hash_distance:
                candidates[reference_id] = _Candidate(reference_id, distance, variant)
        return candidates

    # ----------------------------------------------------------------------- ORB path

    def search_descriptors(self, listings: Sequence[Fingerprint]) -> list[DescriptorNeighbours]:
        """The catalog neighbours of every listing's descriptors, in one FAISS call for all."""
        descriptor_sets = [listing.features.descriptors for listing in listings]
        stacked = np.concatenate(descriptor_sets or [np.empty((0, DESCRIPTOR_BYTES), np.uint8)])
        found = self.catalog.search_descriptors(stacked, self.config.knn_neighbours)
        bounds = np.cumsum([0, *(len(d) for d in descriptor_sets)])
        return [_slice_rows(found, a, b) for a, b in itertools.pairwise(bounds.tolist())]

    def _vote(
        self,
        neighbours: DescriptorNeighbours,
        design_codes: NDArray[np.int64],
        candidates: dict[int, _Candidate],
    ) -> None:
        """A vote for its nearest reference from every descriptor passing the ratio test.

        Only what can matter is kept: the views of the hash candidates, and views with enough
        votes to shortlist or verify; a synthetic-heavy or large catalog scatters most votes
        one or two per reference. Candidates are created in the order of their first vote.
        """
        passed, best = _ratio_test(neighbours, design_codes, self.config)
        if passed.size == 0:
            return
        reference_ids = neighbours.reference_ids[passed, 0]
        views = neighbours.views[passed, 0]
        # Group by (reference, view), keeping descriptor order inside a group.
        order = np.lexsort((passed, views, reference_ids))
        grouped_refs, grouped_views = reference_ids[order], views[order]
        changes = (grouped_refs[1:] != grouped_refs[:-1]) | (
            grouped_views[1:] != grouped_views[:-1]
        )
        starts = np.flatnonzero(np.r_[True, changes])
        stops = np.r_[starts[1:], len(order)]
        enough = min(self.config.min_votes, self._min_view_votes)
        # A group's first member is its first vote (descriptor order is the last sort key).
        kept = [
            (int(order[start]), start, stop)
            for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)
            if stop - start >= enough or int(grouped_refs[start]) in candidates
        ]
        unique_refs, first_of_reference = np.unique(reference_ids, return_index=True)
        first_vote = dict(zip(unique_refs.tolist(), first_of_reference.tolist(), strict=True))
        kept.sort(key=lambda group: (first_vote[int(grouped_refs[group[1]])], group[0]))
        keypoints = neighbours.keypoints[passed, 0]
        distances = best[passed]
        for _, start, stop in kept:
            members = order[start:stop]
            reference_id = int(grouped_refs[start])
            candidate = candidates.get(reference_id)
            if candidate is None:
                candidate = candidates[reference_id] = _Candidate(reference_id)
            candidate.votes[int(grouped_views[start])] = _Votes(
                passed[members], keypoints[members], distances[members]
            )

    @property
    def _min_view_votes(self) -> int:
        """Votes a reference view needs before it is worth verifying."""
        return max(4, self.config.min_inliers // 2)

    def _shortlist(self, candidates: dict[int, _Candidate]) -> list[_Candidate]:
        def strength(c: _Candidate) -> tuple[int, int]:
            votes = max((len(v) for v in c.votes.values()), default=0)
            return (int(c.hash_distance is not None), votes)

        eligible = [
            c
            for c in candidates.values()
            if c.hash_distance is not None
            or max((len(v) for v in c.votes.values()), default=0) >= self.config.min_votes
        ]
        eligible.sort(key=strength, reverse=True)
        return eligible[: self.config.max_candidates]

    def _still_present(self, candidates: list[_Candidate]) -> dict[int, Reference]:
        """The candidates' references; one removed since the search is dropped, never reported."""
        present = {}
        for candidate in candidates:
            try:
                present[candidate.reference_id] = self.catalog.get(candidate.reference_id)
            except ReferenceNotFoundError:
                continue
        return present

    def _verify(self, candidate: _Candidate, listing: Fingerprint, reference: Reference) -> None:
        best: (
            tuple[Verification, int, NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]
            | None
        ) = None
        for view, votes in candidate.votes.items():
            if len(votes) < self._min_view_votes:
                continue
            # One correspondence per reference keypoint: the closest listing descriptor wins.
            ref_idx, query_idx = votes.closest_per_keypoint()
            try:
                reference_keypoints = self.catalog.keypoints(candidate.reference_id, view)
            except ReferenceNotFoundError:
                return
            reference_points = reference_keypoints[ref_idx, :2]
            listing_points = listing.features.keypoints[query_idx, :2]
            verification = verify_geometry(
                reference_points, listing_points, (reference.width, reference.height), self.config
            )
            if verification is not None and (
                best is None or verification.inliers > best[0].inliers
            ):
                best = (verification, view, reference_points, listing_points, query_idx)
        if best is not None:
            candidate.verification, candidate.view = best[0], best[1]
            candidate.reference_points, candidate.listing_points = best[2], best[3]
            candidate.query_indices = best[4]

    def _assign_exclusively(
        self, candidates: list[_Candidate], references: dict[int, Reference], listing: Fingerprint
    ) -> None:
        """Give each listing keypoint to one design: the best-verified one that explains it.

        A tile of a collage also half-matches the other designs of its family (clover pendants
        share their chain, their rim); once the right design has explained those keypoints,
        what a rival has left must verify on its own or the rival is dropped. Likewise a rival
        that only hash-matched a listing another design's photo fills: two bangles shot in one
        studio pose share their coarse hashes, and the verified one is the photo.
        """
        claimed: dict[int, str] = {}
        regions: list[tuple[str, NDArray[np.float64]]] = []
        verified = [c for c in candidates if c.verification is not None]
        verified.sort(key=lambda c: -c.verification.inliers if c.verification else 0)
        for candidate in verified:
            design = references[candidate.reference_id].design
            queries = candidate.query_indices
            reference_points = candidate.reference_points
            listing_points = candidate.listing_points
            if queries is None or reference_points is None or listing_points is None:
                continue
            free = np.array([claimed.get(int(q), design) == design for q in queries], dtype=bool)
            if not free.all():
                reference = references[candidate.reference_id]
                candidate.query_indices = queries = queries[free]
                candidate.reference_points = reference_points[free]
                candidate.listing_points = listing_points[free]
                candidate.verification = verify_geometry(
                    candidate.reference_points,
                    candidate.listing_points,
                    (reference.width, reference.height),
                    self.config,
                )
            if candidate.verification is None:
                continue
            inlier_points = listing_points[free][candidate.verification.inlier_mask]
            if any(
                other != design
                and _share_inside(inlier_points, quad) >= self.config.max_explained_share
                for other, quad in regions
            ):
                # The region is a stronger design's reference photo; what matched inside it
                # is that photo's content, not a second product.
                candidate.verification = None
                continue
            regions.append((design, candidate.verification.quad))
            for query in queries[candidate.verification.inlier_mask]:
                claimed.setdefault(int(query), design)
        listing_area = float(listing.width * listing.height)
        filling = set()
        for design, quad in regions:
            box = clip_box(quad, listing.width, listing.height)
            if box and (box[2] - box[0]) * (box[3] - box[1]) >= (
                self.config.max_explained_share * listing_area
            ):
                filling.add(design)
        for candidate in candidates:
            design = references[candidate.reference_id].design
            if candidate.verification is None and filling - {design}:
                candidate.hash_distance = candidate.hash_variant = None

    # ----------------------------------------------------------------------- scoring

    def _matches(
        self,
        candidates: list[_Candidate],
        references: dict[int, Reference],
        listing: Fingerprint,
        scale: float,
        floor: float,
    ) -> list[Match]:
        by_design: dict[str, Match] = {}
        for candidate in candidates:
            match = self._score(candidate, references[candidate.reference_id], listing, scale)
            if match.score < floor or match.score <= 0.0:
                continue
            current = by_design.get(match.design)
            if current is None or match.score > current.score:
                by_design[match.design] = match
        return sorted(by_design.values(), key=lambda m: (-m.score, m.reference_id))

    def _score(
        self, candidate: _Candidate, reference: Reference, listing: Fingerprint, scale: float
    ) -> Match:
        config = self.config
        reasons: list[str] = []
        hash_score = 0.0
        transform = ""
        if candidate.hash_distance is not None and candidate.hash_variant is not None:
            hash_score = _hash_score(candidate.hash_distance, config)
            transform = DIHEDRALS[candidate.hash_variant].name
            reasons.append(
                f"perceptual hashes ({', '.join(config.hashers)}) within "
                f"{candidate.hash_distance} of {64} bits ({transform})"
            )
        orb_score, inliers, ratio, box = 0.0, 0, 0.0, None
        pairs: tuple[tuple[float, float, float, float], ...] = ()
        verification = candidate.verification
        if verification is not None:
            inliers, ratio = verification.inliers, verification.inlier_ratio
            width, height = listing.width, listing.height
            box = clip_box(verification.quad, width, height)
            box_share = 0.0
            if box is not None:
                box_share = (box[2] - box[0]) * (box[3] - box[1]) / float(width * height)
            # Weak inlier ratios and tiny boxes discount the inliers; more of either never hurts.
            evidence = inliers * min(1.0, ratio / config.min_inlier_ratio)
            evidence *= min(1.0, box_share / config.min_box_area_ratio)
            orb_score = evidence / (evidence + config.score_half_inliers)
            if not transform:
                transform = self._describe_geometry(candidate.view, verification, width, height)
            reasons.append(
                f"{inliers} ORB correspondences of {len(verification.inlier_mask)} agree on one "
                f"geometry ({ratio:.0%})"
            )
            if candidate.reference_points is not None and candidate.listing_points is not None:
                mask = verification.inlier_mask
                pairs = tuple(
                    (float(r[0]), float(r[1]), float(p[0] * scale), float(p[1] * scale))
                    for r, p in zip(
                        candidate.reference_points[mask],
                        candidate.listing_points[mask],
                        strict=True,
                    )
                )
            if box is not None:
                box = (
                    round(box[0] * scale),
                    round(box[1] * scale),
                    round(box[2] * scale),
                    round(box[3] * scale),
                )
        # Noisy-or: independent kinds of evidence, each only raising the score.
        score = 1.0 - (1.0 - hash_score) * (1.0 - orb_score)
        return Match(
            reference_id=reference.reference_id,
            reference_path=reference.path,
            design=reference.design,
            brand=reference.brand,
            score=score,
            hash_distance=candidate.hash_distance,
            inliers=inliers,
            inlier_ratio=ratio,
            transform=transform or "unknown",
            box=box,
            evidence="; ".join(reasons) if reasons else "too little evidence",
            correspondences=pairs,
        )

    @staticmethod
    def _describe_geometry(view: int, verification: Verification, width: int, height: int) -> str:
        parts = ["mirrored"] if view == VIEW_MIRRORED else []
        transform = verification.transform
        angle = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
        if abs(angle) >= 5:
            parts.append(f"rotated-{round(-angle) % 360}")
        quad = verification.quad
        outside = (
            quad[:, 0].min() < -0.05 * width
            or quad[:, 1].min() < -0.05 * height
            or quad[:, 0].max() > 1.05 * width
            or quad[:, 1].max() > 1.05 * height
        )
        if outside:
            parts.append("cropped")
        box = clip_box(quad, width, height)
        if box is not None and (box[2] - box[0]) * (box[3] - box[1]) < 0.6 * width * height:
            parts.append("embedded")
        return "+".join(parts) if parts else "similar"


def _hash_score(distance: int, config: DetectorConfig) -> float:
    """Evidence of a hash match: 1 at 0 bits, at least 0.5 (flags alone) up to
    `hash_only_flag_distance`, below 0.5 and falling towards 0 up to `max_hamming_distance`."""
    near = config.hash_only_flag_distance + 1
    if distance < near:
        return 1.0 - 0.4 * distance / max(near - 1, 1)
    span = config.max_hamming_distance + 2 - near
    return 0.5 * max(0.0, config.max_hamming_distance + 1 - distance) / span


def _share_inside(points: NDArray[np.float32], quad: NDArray[np.float64]) -> float:
    """Share of `points` inside the convex quadrilateral `quad`."""
    if len(points) == 0:
        return 0.0
    edges = quad[NEXT_CORNER] - quad
    relative = points[:, None, :].astype(np.float64) - quad[None, :, :]
    cross = edges[None, :, 0] * relative[:, :, 1] - edges[None, :, 1] * relative[:, :, 0]
    inside = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    return float(inside.mean())


def _ratio_test(
    neighbours: DescriptorNeighbours, design_codes: NDArray[np.int64], config: DetectorConfig
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(queries whose nearest neighbour passes, every query's nearest distance).

    A query passes when its nearest reference descriptor is close and clearly closer than the
    nearest one of another design.
    """
    distances = neighbours.distances.astype(np.int64)
    reference_ids = neighbours.reference_ids
    if distances.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # A neighbour whose reference was removed since the search has no design: invalid. Only
    # known ids are looked up: an empty catalog has an empty table and no neighbours at all.
    known = (reference_ids >= 0) & (reference_ids < len(design_codes))
    codes = np.full(reference_ids.shape, -1, dtype=np.int64)
    codes[known] = design_codes[reference_ids[known]]
    valid = codes >= 0
    rows = np.arange(len(distances))
    other_design = valid & (codes != codes[:, :1])
    has_rival = other_design.any(axis=1)
    # Without a rival among the k neighbours, the k-th distance bounds the rival's.
    rival = np.where(
        has_rival,
        distances[rows, other_design.argmax(axis=1)],
        np.maximum(distances[:, -1], config.max_descriptor_distance_bits + 1),
    )
    best = distances[:, 0]
    passed = np.flatnonzero(
        valid[:, 0]
        & (best <= config.max_descriptor_distance_bits)
        & (best < config.ratio_test * rival)
    )
    return passed, best


def _slice_rows(neighbours: DescriptorNeighbours, start: int, stop: int) -> DescriptorNeighbours:
    return DescriptorNeighbours(
        neighbours.distances[start:stop],
        neighbours.reference_ids[start:stop],
        neighbours.views[start:stop],
        neighbours.keypoints[start:stop],
    )
