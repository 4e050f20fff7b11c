"""Scores and evidence: how sure a match is, and why, in words.

Hash evidence is 1 at 0 bits and falls with the distance; ORB evidence grows with the verified
inliers, discounted by a weak inlier ratio or a tiny box. The two combine as a noisy-or, so more
of either kind of evidence never lowers the score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from imgmatch.catalog import Reference
from imgmatch.config import DetectorConfig
from imgmatch.fingerprint import VIEW_MIRRORED
from imgmatch.geometry import Box, Verification, box_area, clip_box
from imgmatch.hashing import DIHEDRALS, HASH_BITS
from imgmatch.results import Match
from imgmatch.verification import ReferenceEvidence


def hash_score(distance: int, config: DetectorConfig) -> float:
    """Evidence of a hash match: 1 at 0 bits, at least `hash_score_at_flag_distance` up to
    `hash_only_flag_distance`, below `hash_score_beyond_flag_max` and falling towards 0 up to
    `max_hamming_distance`."""
    near = config.hash_only_flag_distance + 1
    if distance < near:
        drop = 1.0 - config.hash_score_at_flag_distance
        return 1.0 - drop * distance / max(near - 1, 1)
    span = config.max_hamming_distance + 2 - near
    remaining = max(0.0, config.max_hamming_distance + 1 - distance)
    return config.hash_score_beyond_flag_max * remaining / span


def orb_score(inliers: int, inlier_ratio: float, box_share: float, config: DetectorConfig) -> float:
    """Evidence of a verified geometry: inliers / (inliers + score_half_inliers), the inliers
    discounted by a weak inlier ratio and a tiny box; more of either never hurts."""
    evidence = inliers * min(1.0, inlier_ratio / config.min_inlier_ratio)
    evidence *= min(1.0, box_share / config.min_box_area_ratio)
    return evidence / (evidence + config.score_half_inliers)


def noisy_or(first: float, second: float) -> float:
    """Independent kinds of evidence, each only raising the score."""
    return 1.0 - (1.0 - first) * (1.0 - second)


def describe_geometry(
    view: int, verification: Verification, width: int, height: int, config: DetectorConfig
) -> str:
    """The transform a verified geometry shows: mirrored, rotated-N, cropped, embedded, or
    `similar` where it shows none of them."""
    parts = ["mirrored"] if view == VIEW_MIRRORED else []
    transform = verification.transform
    angle = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    if abs(angle) >= config.rotated_min_degrees:
        parts.append(f"rotated-{round(-angle) % 360}")
    quad = verification.quad
    overhang = config.cropped_min_overhang_share
    outside = (
        quad[:, 0].min() < -overhang * width
        or quad[:, 1].min() < -overhang * height
        or quad[:, 0].max() > (1 + overhang) * width
        or quad[:, 1].max() > (1 + overhang) * height
    )
    if outside:
        parts.append("cropped")
    box = clip_box(quad, width, height)
    if box is not None and box_area(box) < config.embedded_max_area_share * width * height:
        parts.append("embedded")
    return "+".join(parts) if parts else "similar"


def score_evidence(
    evidence: ReferenceEvidence,
    reference: Reference,
    listing_size: tuple[int, int],
    scale: float,
    hashers: Sequence[str],
    config: DetectorConfig,
) -> Match:
    """One reference's evidence as a `Match`: score, transform, box and evidence text.

    `listing_size` is the listing fingerprint's (width, height); `scale` maps its pixels to the
    listing file's, in which boxes and correspondences are reported.
    """
    reasons: list[str] = []
    hashed, transform = 0.0, ""
    if evidence.hash is not None:
        hashed = hash_score(evidence.hash.distance, config)
        transform = DIHEDRALS[evidence.hash.variant].name
        reasons.append(
            f"perceptual hashes ({', '.join(hashers)}) within "
            f"{evidence.hash.distance} of {HASH_BITS} bits ({transform})"
        )
    verified, inliers, ratio = 0.0, 0, 0.0
    box: Box | None = None
    pairs: tuple[tuple[float, float, float, float], ...] = ()
    if evidence.geometry is not None:
        verification = evidence.geometry.verification
        inliers, ratio = verification.inliers, verification.inlier_ratio
        width, height = listing_size
        box = clip_box(verification.quad, width, height)
        box_share = 0.0 if box is None else box_area(box) / float(width * height)
        verified = orb_score(inliers, ratio, box_share, config)
        if not transform:
            transform = describe_geometry(
                evidence.geometry.view, verification, width, height, config
            )
        reasons.append(
            f"{inliers} ORB correspondences of {len(verification.inlier_mask)} agree on one "
            f"geometry ({ratio:.0%})"
        )
        correspondences = evidence.geometry.correspondences
        mask = verification.inlier_mask
        pairs = tuple(
            (float(r[0]), float(r[1]), float(p[0] * scale), float(p[1] * scale))
            for r, p in zip(
                correspondences.reference_points[mask],
                correspondences.listing_points[mask],
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
    return Match(
        reference_id=reference.reference_id,
        reference_path=reference.path,
        design=reference.design,
        brand=reference.brand,
        score=noisy_or(hashed, verified),
        hash_distance=evidence.hash.distance if evidence.hash is not None else None,
        inliers=inliers,
        inlier_ratio=ratio,
        transform=transform or "unknown",
        box=box,
        evidence="; ".join(reasons) if reasons else "too little evidence",
        correspondences=pairs,
    )


def best_per_design(matches: Iterable[Match], floor: float) -> tuple[Match, ...]:
    """The best-scored match of each design at or above `floor` (and above 0), best first;
    among equal scores, the first seen, then the lower reference id."""
    by_design: dict[str, Match] = {}
    for match in matches:
        if match.score < floor or match.score <= 0.0:
            continue
        current = by_design.get(match.design)
        if current is None or match.score > current.score:
            by_design[match.design] = match
    return tuple(sorted(by_design.values(), key=lambda m: (-m.score, m.reference_id)))
