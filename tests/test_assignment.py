"""Exclusive assignment of listing keypoints across designs, on hand-made correspondences.

Two tiles of a collage, design A (strong) on the left and design B on the right. Some of B's
correspondences reach into A's tile, to listing keypoints A has already explained: those are
taken from B, and B must verify on what is left, or it is dropped. (In a check, each
listing descriptor votes for one reference only, so candidates found by the vote never share a
listing keypoint; the rule guards any candidates that do.)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from imgmatch.assignment import assign_exclusively
from imgmatch.catalog import Reference
from imgmatch.config import DetectorConfig
from imgmatch.geometry import Correspondences, verify_geometry
from imgmatch.verification import ReferenceEvidence, VerifiedView

CONFIG = DetectorConfig()
REFERENCE_SIZE = (400, 300)
LISTING_SIZE = (640, 320)
# Tile A is the reference at half size at the listing's left, tile B at its right.
TILE_SHIFT = {"A": (0.0, 10.0), "B": (330.0, 10.0)}


def _reference(reference_id: int, design: str) -> Reference:
    width, height = REFERENCE_SIZE
    return Reference(reference_id, f"{design}.jpg", design, "", "", width, height)


def _tile_points(design: str, count: int, seed: int) -> tuple[NDArray[np.float32], ...]:
    """`count` reference points and where they lie in the listing, in `design`'s tile."""
    rng = np.random.default_rng(seed)
    reference = rng.uniform((0, 0), REFERENCE_SIZE, (count, 2))
    listing = reference * 0.5 + np.array(TILE_SHIFT[design])
    return reference.astype(np.float32), listing.astype(np.float32)


def _evidence(
    reference_id: int,
    reference: NDArray[np.float32],
    listing: NDArray[np.float32],
    queries: NDArray[np.int64],
) -> ReferenceEvidence:
    verification = verify_geometry(reference, listing, REFERENCE_SIZE, CONFIG)
    assert verification is not None
    correspondences = Correspondences(reference, listing, queries)
    return ReferenceEvidence(reference_id, None, VerifiedView(0, correspondences, verification))


def _assign(b_own: int) -> tuple[ReferenceEvidence, ReferenceEvidence]:
    """A explains 60 listing keypoints (queries 0..59) in its tile. B has `b_own` keypoints in
    its own tile, plus 20 correspondences to A's keypoints 0..19 (outliers of B's geometry)."""
    a_reference, a_listing = _tile_points("A", 60, seed=1)
    strong = _evidence(1, a_reference, a_listing, np.arange(60))
    b_reference, b_listing = _tile_points("B", b_own, seed=2)
    stray = np.random.default_rng(3).uniform((0, 0), REFERENCE_SIZE, (20, 2)).astype(np.float32)
    rival = _evidence(
        2,
        np.concatenate([b_reference, stray]),
        np.concatenate([b_listing, a_listing[:20]]),
        np.r_[np.arange(100, 100 + b_own), np.arange(20)],
    )
    assert strong.geometry is not None and rival.geometry is not None
    assert rival.geometry.verification.inliers == b_own < strong.geometry.verification.inliers
    references = {1: _reference(1, "A"), 2: _reference(2, "B")}
    assigned = assign_exclusively([rival, strong], references, LISTING_SIZE, CONFIG)
    # A new value per stage: what came in is left as it was.
    assert rival.geometry.verification.inliers == b_own
    return assigned[1], assigned[0]


def test_a_rival_keeps_only_its_own_keypoints_and_is_verified_again() -> None:
    strong, rival = _assign(b_own=30)
    assert strong.geometry is not None and strong.geometry.verification.inliers == 60
    assert rival.geometry is not None
    assert rival.geometry.correspondences.queries.tolist() == list(range(100, 130))
    verification = rival.geometry.verification
    # Verified again on its own 30: all of them agree now, none is left to A's tile.
    assert (verification.inliers, verification.inlier_ratio) == (30, 1.0)
    listing_points = rival.geometry.correspondences.listing_points
    assert len(listing_points) == 30
    assert listing_points[:, 0].min() >= TILE_SHIFT["B"][0]


def test_a_rival_left_with_too_few_keypoints_is_dropped() -> None:
    strong, rival = _assign(b_own=CONFIG.min_inliers - 2)
    assert strong.geometry is not None
    assert rival.geometry is None
