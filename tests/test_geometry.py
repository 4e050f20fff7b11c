"""RANSAC verification on its own: recovers a known similarity or perspective among outliers,
names its inliers and maps the reference's outline, and refuses too few points and implausible
models."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from imgmatch.config import DetectorConfig
from imgmatch.geometry import clip_box, verify_geometry

CONFIG = DetectorConfig()
REFERENCE_SIZE = (400, 300)


def _apply(matrix: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    mapped = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def _similarity(scale: float, degrees: float, shift: tuple[float, float]) -> NDArray[np.float64]:
    angle = np.radians(degrees)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]], [0.0, 0.0, 1.0]])


def _correspondences(
    matrix: NDArray[np.float64], inliers: int, outliers: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """`inliers` exact correspondences under `matrix`, then `outliers` random ones."""
    rng = np.random.default_rng(seed)
    width, height = REFERENCE_SIZE
    reference = rng.uniform((0, 0), (width, height), (inliers + outliers, 2))
    listing = _apply(matrix, reference)
    listing[inliers:] = rng.uniform((0, 0), (800, 600), (outliers, 2))
    return reference.astype(np.float32), listing.astype(np.float32)


def _corners() -> NDArray[np.float64]:
    width, height = REFERENCE_SIZE
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)


def test_a_similarity_among_outliers_is_recovered_with_its_inliers_and_outline() -> None:
    truth = _similarity(0.6, 20.0, (250.0, 80.0))
    reference, listing = _correspondences(truth, inliers=60, outliers=25, seed=1)
    found = verify_geometry(reference, listing, REFERENCE_SIZE, CONFIG)
    assert found is not None
    assert found.inlier_mask[:60].all()
    assert found.inliers == int(found.inlier_mask.sum()) <= 60 + 2
    assert found.inlier_ratio == pytest.approx(found.inliers / 85)
    assert np.allclose(found.transform / found.transform[2, 2], truth, atol=0.02)
    assert np.allclose(found.quad, _apply(truth, _corners()), atol=1.0)


def test_a_perspective_copy_is_verified_by_the_homography() -> None:
    truth = np.array([[0.9, 0.15, 120.0], [0.05, 1.0, 60.0], [0.0008, 0.0004, 1.0]])
    reference, listing = _correspondences(truth, inliers=80, outliers=20, seed=2)
    found = verify_geometry(reference, listing, REFERENCE_SIZE, CONFIG)
    assert found is not None
    assert found.inlier_mask[:80].all()
    # A similarity cannot explain the perspective: the outline is the homography's.
    assert np.allclose(found.quad, _apply(truth, _corners()), atol=2.0)


def test_too_few_correspondences_are_not_verified() -> None:
    truth = _similarity(1.0, 0.0, (10.0, 10.0))
    reference, listing = _correspondences(truth, inliers=CONFIG.min_inliers - 1, outliers=0, seed=3)
    assert verify_geometry(reference, listing, REFERENCE_SIZE, CONFIG) is None


def test_a_reference_shrunk_to_a_speck_is_no_copy() -> None:
    """Every point agrees, but on shrinking the reference to 1/2500 of its area: implausible."""
    truth = _similarity(0.02, 0.0, (300.0, 300.0))
    reference, listing = _correspondences(truth, inliers=40, outliers=0, seed=4)
    assert verify_geometry(reference, listing, REFERENCE_SIZE, CONFIG) is None


def test_a_perspective_that_sends_the_outline_behind_the_camera_is_no_copy() -> None:
    """The homography explains every point of the reference's left half, but maps its right
    corners behind the camera: refused, and what is left (a similarity) explains few points."""
    truth = np.array([[1.0, 0.0, 50.0], [0.0, 1.0, 50.0], [-0.003, 0.0, 1.0]])
    rng = np.random.default_rng(5)
    reference = rng.uniform((0, 0), (200, 300), (60, 2))
    listing = _apply(truth, reference)
    found = verify_geometry(
        reference.astype(np.float32), listing.astype(np.float32), REFERENCE_SIZE, CONFIG
    )
    assert found is None or found.inliers < len(reference) // 2


@pytest.mark.parametrize(
    ("quad", "box"),
    [
        ([[10.2, 20.7], [110.0, 20.0], [110.0, 80.1], [10.0, 80.0]], (10, 20, 110, 81)),
        ([[-50.0, -10.0], [700.0, -10.0], [700.0, 500.0], [-50.0, 500.0]], (0, 0, 640, 480)),
        ([[700.0, 10.0], [800.0, 10.0], [800.0, 50.0], [700.0, 50.0]], None),
    ],
    ids=["inside", "clipped", "outside"],
)
def test_clip_box(quad: list[list[float]], box: tuple[int, int, int, int] | None) -> None:
    assert clip_box(np.array(quad, np.float64), 640, 480) == box
