"""Verification of shortlisted candidates: each reference view's votes become correspondences,
and the view whose geometry explains the most of them is the reference's evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imgmatch.candidates import Candidate, HashEvidence, min_view_votes
from imgmatch.catalog import Reference
from imgmatch.config import DetectorConfig
from imgmatch.features import Keypoints
from imgmatch.geometry import Correspondences, Verification, verify_geometry
from imgmatch.reference_index import ReferenceIndex


@dataclass(frozen=True)
class VerifiedView:
    """The reference view whose geometry verified, the correspondences RANSAC saw, and the model."""

    view: int
    correspondences: Correspondences
    verification: Verification


@dataclass(frozen=True)
class ReferenceEvidence:
    """What one reference has for it after verification: hash evidence and/or a verified view."""

    reference_id: int
    hash: HashEvidence | None
    geometry: VerifiedView | None = None


def verify_candidate(
    candidate: Candidate,
    reference: Reference,
    listing_keypoints: Keypoints,
    index: ReferenceIndex,
    config: DetectorConfig,
) -> ReferenceEvidence:
    """The candidate's best-verified view (most inliers; the first among equals), if any.

    `index` must read the generation the candidate was found at (a snapshot): its keypoints
    are then there.
    """
    best: VerifiedView | None = None
    for view, votes in candidate.views:
        if len(votes) < min_view_votes(config):
            continue
        # One correspondence per reference keypoint: the closest listing descriptor wins.
        reference_rows, queries = votes.closest_per_keypoint()
        reference_keypoints = index.keypoints(candidate.reference_id, view)
        correspondences = Correspondences(
            reference_keypoints[reference_rows, :2], listing_keypoints[queries, :2], queries
        )
        verification = verify_geometry(
            correspondences.reference_points,
            correspondences.listing_points,
            (reference.width, reference.height),
            config,
        )
        if verification is not None and (
            best is None or verification.inliers > best.verification.inliers
        ):
            best = VerifiedView(view, correspondences, verification)
    return ReferenceEvidence(candidate.reference_id, candidate.hash, best)


def shortlisted_references(
    candidates: Sequence[Candidate], index: ReferenceIndex
) -> dict[int, Reference]:
    """The candidates' references, read at the generation they were found at."""
    return {candidate.reference_id: index.get(candidate.reference_id) for candidate in candidates}
