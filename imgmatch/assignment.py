"""Exclusive assignment: each listing keypoint goes to one design, the best-verified one that
explains it.

A tile of a collage also half-matches the other designs of its family (clover pendants share
their chain, their rim); once the right design has explained those keypoints, what a rival has
left must verify on its own or the rival is dropped. A rival whose inliers lie inside a stronger
design's verified reference frame is that photo's content, not a second product, and is
dropped too. Likewise a rival that only hash-matched a listing another design's photo fills:
two bangles shot in one studio pose share their coarse hashes, and the verified one is the
photo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog import Reference
from imgmatch.config import DetectorConfig
from imgmatch.geometry import box_area, clip_box, share_inside, verify_geometry
from imgmatch.verification import ReferenceEvidence, VerifiedView


def assign_exclusively(
    evidence: Sequence[ReferenceEvidence],
    references: Mapping[int, Reference],
    listing_size: tuple[int, int],
    config: DetectorConfig,
) -> tuple[ReferenceEvidence, ...]:
    """`evidence` (in its order) after assignment: rivals verified again on the keypoints left
    to them, or dropped; hash evidence of unverified rivals of a listing-filling design
    dropped. `listing_size` is (width, height) in the listing fingerprint's pixels."""
    assigned = list(evidence)
    claimed: dict[int, str] = {}
    regions: list[tuple[str, NDArray[np.float64]]] = []
    # Strongest first (most inliers; among equals, in the evidence's order).
    verified = [(i, item.geometry) for i, item in enumerate(assigned) if item.geometry is not None]
    verified.sort(key=lambda pair: -pair[1].verification.inliers)
    for i, geometry in verified:
        item = assigned[i]
        reference = references[item.reference_id]
        design = reference.design
        queries = geometry.correspondences.queries
        free = np.array([claimed.get(int(q), design) == design for q in queries], dtype=bool)
        if not free.all():
            correspondences = geometry.correspondences.subset(free)
            verification = verify_geometry(
                correspondences.reference_points,
                correspondences.listing_points,
                (reference.width, reference.height),
                config,
            )
            if verification is None:
                assigned[i] = replace(item, geometry=None)
                continue
            geometry = VerifiedView(geometry.view, correspondences, verification)
            assigned[i] = item = replace(item, geometry=geometry)
        mask = geometry.verification.inlier_mask
        inlier_points = geometry.correspondences.listing_points[mask]
        if any(
            other != design and share_inside(inlier_points, quad) >= config.max_explained_share
            for other, quad in regions
        ):
            assigned[i] = replace(item, geometry=None)
            continue
        regions.append((design, geometry.verification.quad))
        for query in geometry.correspondences.queries[mask]:
            claimed.setdefault(int(query), design)
    filling = _filling_designs(regions, listing_size, config)
    for i, item in enumerate(assigned):
        if item.geometry is None and filling - {references[item.reference_id].design}:
            assigned[i] = replace(item, hash=None)
    return tuple(assigned)


def _filling_designs(
    regions: Sequence[tuple[str, NDArray[np.float64]]],
    listing_size: tuple[int, int],
    config: DetectorConfig,
) -> set[str]:
    """Designs whose verified region covers at least `max_explained_share` of the listing."""
    width, height = listing_size
    listing_area = float(width * height)
    filling = set()
    for design, quad in regions:
        box = clip_box(quad, width, height)
        if box and box_area(box) >= config.max_explained_share * listing_area:
            filling.add(design)
    return filling
