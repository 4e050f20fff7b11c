"""ORB extraction on its own, apart from the catalog and the detector: deterministic, in the
given image's pixels, within its budget, spread so that a plain object beside a busy one keeps
keypoints, and mirrored like the mirror image."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from imgmatch.config import DetectorConfig
from imgmatch.features import DESCRIPTOR_BYTES, KEYPOINT_FIELDS, FeatureExtractor

CONFIG = DetectorConfig()


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(CONFIG)


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
