"""The geometry that verifies a match: RANSAC from reference to listing, plausibility, boxes.

Matched descriptors alone are votes; a copy shows as many correspondences agreeing on one
geometry. A similarity (rotation, scale, shift) covers reuse, crops and collages; a homography
covers perspective (a re-photographed screen, a warped copy). A model is kept only when the
reference's outline it implies could be a picture of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from imgmatch.config import DetectorConfig

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""

# Four correspondences fix a homography; fewer cannot verify anything.
MIN_MODEL_POINTS = 4
# A mapped corner whose homogeneous depth is below this lies at or behind the camera (the
# division that places it would blow up or flip it).
_MIN_DEPTH = 1e-6
# Each corner of a quad (4 x 2) followed by the next one, round the polygon.
NEXT_CORNER = np.array([1, 2, 3, 0])


@dataclass(frozen=True)
class Correspondences:
    """Matched points, row for row: a reference point, its listing point, and the index of the
    listing keypoint (which listing descriptor matched)."""

    reference_points: NDArray[np.float32]
    listing_points: NDArray[np.float32]
    queries: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, keep: NDArray[np.bool_]) -> Correspondences:
        return Correspondences(
            self.reference_points[keep], self.listing_points[keep], self.queries[keep]
        )


@dataclass(frozen=True)
class Verification:
    """A geometric model that explains enough correspondences."""

    inliers: int
    inlier_ratio: float
    # 3x3 transform from reference pixels to listing pixels.
    transform: NDArray[np.float64]
    # Reference corners mapped into the listing (4 x 2), before clipping.
    quad: NDArray[np.float64]
    inlier_mask: NDArray[np.bool_]


def verify_geometry(
    reference_points: NDArray[np.float32],
    listing_points: NDArray[np.float32],
    reference_size: tuple[int, int],
    config: DetectorConfig,
) -> Verification | None:
    """Fit reference -> listing geometry with RANSAC; None where no plausible model explains it.

    Tries a similarity and a homography, and keeps the plausible one with more inliers.
    """
    count = len(reference_points)
    if count < max(MIN_MODEL_POINTS, config.min_inliers):
        return None
    src = reference_points.reshape(-1, 1, 2).astype(np.float32)
    dst = listing_points.reshape(-1, 1, 2).astype(np.float32)
    best: Verification | None = None
    affine, mask = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=config.ransac_reprojection_px,
        maxIters=config.ransac_max_iterations,
        confidence=config.ransac_confidence,
    )
    if affine is not None and mask is not None:
        model = np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
        best = _plausible(model, np.asarray(mask, np.uint8), reference_size, count, config)
    homography, mask = cv2.findHomography(
        src,
        dst,
        cv2.USAC_MAGSAC,
        config.ransac_reprojection_px,
        maxIters=config.ransac_max_iterations,
        confidence=config.ransac_confidence,
    )
    if homography is not None and mask is not None:
        candidate = _plausible(
            np.asarray(homography, np.float64),
            np.asarray(mask, np.uint8),
            reference_size,
            count,
            config,
        )
        if candidate is not None and (
            best is None or candidate.inliers > best.inliers * config.homography_min_inlier_gain
        ):
            best = candidate
    return best


def _plausible(
    transform: NDArray[np.float64],
    mask: NDArray[np.uint8],
    reference_size: tuple[int, int],
    count: int,
    config: DetectorConfig,
) -> Verification | None:
    width, height = reference_size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    homogeneous = np.hstack([corners, np.ones((4, 1))]) @ transform.T
    if np.any(homogeneous[:, 2] <= _MIN_DEPTH):
        return None  # a corner maps behind the camera: not a picture of the reference
    quad = homogeneous[:, :2] / homogeneous[:, 2:3]
    if not _is_convex(quad):
        return None
    area = _polygon_area(quad)
    reference_area = float(width * height)
    scale = config.max_area_scale
    if not reference_area / scale <= area <= reference_area * scale:
        return None
    sides = np.linalg.norm(quad[NEXT_CORNER] - quad, axis=1)
    aspect = max(width, height) / min(width, height)
    if sides.min() <= 0 or sides.max() / sides.min() > config.max_side_ratio_over_aspect * aspect:
        return None  # extreme perspective or a collapsed side
    inlier_mask = mask.reshape(-1).astype(bool)
    inliers = int(inlier_mask.sum())
    return Verification(inliers, inliers / count, transform, quad, inlier_mask)


def _polygon_area(quad: NDArray[np.float64]) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, y[NEXT_CORNER]) - np.dot(y, x[NEXT_CORNER])))


def _is_convex(quad: NDArray[np.float64]) -> bool:
    edges = quad[NEXT_CORNER] - quad
    following = edges[NEXT_CORNER]
    cross = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def clip_box(quad: NDArray[np.float64], width: int, height: int) -> Box | None:
    """Axis-aligned box of `quad` clipped to the image; None where nothing is left inside."""
    x0 = max(0, int(np.floor(quad[:, 0].min())))
    y0 = max(0, int(np.floor(quad[:, 1].min())))
    x1 = min(width, int(np.ceil(quad[:, 0].max())))
    y1 = min(height, int(np.ceil(quad[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1)


def box_area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def share_inside(points: NDArray[np.float32], quad: NDArray[np.float64]) -> float:
    """Share of `points` inside the convex quadrilateral `quad`."""
    if len(points) == 0:
        return 0.0
    edges = quad[NEXT_CORNER] - quad
    relative = points[:, None, :].astype(np.float64) - quad[None, :, :]
    cross = edges[None, :, 0] * relative[:, :, 1] - edges[None, :, 1] * relative[:, :, 0]
    inside = np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)
    return float(inside.mean())
