"""ORB extraction and RANSAC verification on their own, apart from the catalog and the detector.

Extraction: deterministic, in the given image's pixels, within its budget, spread so that a
plain object beside a busy one keeps keypoints, and mirrored like the mirror image.
Verification: recovers a known similarity or perspective among outliers, names its inliers and
maps the reference's outline, and refuses too few points and implausible models.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from imgmatch.config import DetectorConfig
from imgmatch.features import (
    DESCRIPTOR_BYTES,
    KEYPOINT_FIELDS,
    FeatureExtractor,
    clip_box,
    verify_geometry,
)

CONFIG = DetectorConfig()
REFERENCE_SIZE = (400, 300)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(CONFIG)


# ----------------------------------------------------------------------------- extraction


def test_extraction_is_deterministic_and_row_aligned(
    extractor: FeatureExtractor, make_photo: Callable[..., np.ndarray]
) -> None:
    photo = make_photo(1, (640, 480))
    first, second = extractor.extract(photo), extractor.extract(photo)
    assert np.array_equal(first.keypoints, second.keypoints)
    assert np.array_equal(first.descriptors, second.descriptors)
    assert first.keypoints.dtype == np.float32 and first.descriptors.dtype == np.uint8
    assert first.keypoints.shape == (len(first), KEYPOINT_FIELDS)
    assert first.descriptors.shape == (len(first), DESCRIPTOR_BYTES)


@pytest.mark.parametrize("size", [(1600, 1200), (640, 480), (320, 240)])
def test_keypoints_are_in_the_given_images_pixels_and_within_budget(
    extractor: FeatureExtractor, make_photo: Callable[..., np.ndarray], size: tuple[int, int]
) -> None:
    """Whatever the photo's size, ORB runs at the working size and the keypoints come back in
    the photo's own coordinates, spread over all of it."""
    width, height = size
    features = extractor.extract(make_photo(2, size))
    assert CONFIG.orb_features * 0.8 <= len(features) <= CONFIG.orb_features
    x, y = features.keypoints[:, 0], features.keypoints[:, 1]
    assert x.min() >= 0 and y.min() >= 0 and x.max() < width and y.max() < height
    assert x.max() > 0.8 * width and y.max() > 0.8 * height


def test_a_listing_keeps_more_resolution_and_more_features(
    make_photo: Callable[..., np.ndarray],
) -> None:
    photo = make_photo(3, (1600, 1200))
    listing = FeatureExtractor(CONFIG, listing=True)
    reference = FeatureExtractor(CONFIG)
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    assert listing.normalised_gray(gray)[0].shape == (768, 1024)
    assert reference.normalised_gray(gray)[0].shape == (480, 640)
    assert len(listing.extract(photo)) > CONFIG.orb_features


def test_a_plain_object_beside_a_busy_one_keeps_keypoints(extractor: FeatureExtractor) -> None:
    """Left half: dense noise (every pixel a strong corner). Right half: a plain bright shape
    on gray with a few clean corners. Plain ORB spends the whole budget on the noise."""
    rng = np.random.default_rng(9)
    image = np.full((480, 640, 3), 120, np.uint8)
    image[:, :320] = rng.integers(0, 256, (480, 320, 1), dtype=np.uint8)
    for index in range(6):
        x0, y0 = 360 + 45 * index, 60 + 60 * index
        cv2.rectangle(image, (x0, y0), (x0 + 30, y0 + 50), (235, 235, 235), -1)
    features = extractor.extract(image)
    on_plain_side = int((features.keypoints[:, 0] >= 330).sum())
    assert on_plain_side >= 20, on_plain_side
    strongest = cv2.ORB_create(nfeatures=CONFIG.orb_features, fastThreshold=10)  # type: ignore[attr-defined]
    plain_orb = strongest.detect(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
    assert sum(k.pt[0] >= 330 for k in plain_orb) < on_plain_side


def test_mirrored_extraction_finds_the_mirror_images_keypoints(
    extractor: FeatureExtractor, make_photo: Callable[..., np.ndarray]
) -> None:
    photo = make_photo(4, (640, 480))
    mirrored = extractor.extract(photo, mirrored=True)
    of_mirror_image = extractor.extract(np.ascontiguousarray(photo[:, ::-1]))
    points = mirrored.keypoints[:, :2]
    others = of_mirror_image.keypoints[:, :2]
    nearest = np.min(np.linalg.norm(points[:, None, :] - others[None, :, :], axis=2), axis=1)
    assert float((nearest <= 1.0).mean()) >= 0.9


def test_a_uniform_image_has_no_features(extractor: FeatureExtractor) -> None:
    features = extractor.extract(np.full((300, 400, 3), 200, np.uint8))
    assert len(features) == 0
    assert features.descriptors.shape == (0, DESCRIPTOR_BYTES)


# ----------------------------------------------------------------------------- verification


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
