"""ORB local features on a normalised gray image (their verification is in `geometry`).

Local features survive what perceptual hashes do not: crops, overlays, collages, pasting onto
another photo, and (sometimes) a new photo of the same object. Both references and listings are
reduced to the same working size and contrast-normalised, so that the same design yields the same
corners whatever the photo's resolution or exposure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from imgmatch.config import DetectorConfig
from imgmatch.images import GrayImage, RGBImage, to_gray

Keypoints = NDArray[np.float32]
"""(n, 4) float32: x, y (pixels of the image given), size (pixels), angle (degrees)."""
Descriptors = NDArray[np.uint8]
"""(n, 32) uint8: 256-bit ORB descriptors."""

DESCRIPTOR_BYTES = 32
KEYPOINT_FIELDS = 4


@dataclass(frozen=True)
class FeatureSet:
    """Keypoints and their descriptors, row for row."""

    keypoints: Keypoints
    descriptors: Descriptors

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @staticmethod
    def empty() -> FeatureSet:
        return FeatureSet(
            np.zeros((0, KEYPOINT_FIELDS), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
        )


class FeatureExtractor:
    """ORB with the detector's settings; one per thread (OpenCV objects keep state)."""

    def __init__(self, config: DetectorConfig, *, listing: bool = False) -> None:
        self._config = config
        cv2.setNumThreads(config.opencv_threads)
        # References are studio shots normalised to one size; a listing keeps up to
        # `listing_max_side_px` of its own resolution, because a pasted or collaged copy
        # occupies only part of it.
        self._min_side = config.feature_side_px
        self._max_side = config.listing_max_side_px if listing else config.feature_side_px
        self._target = config.listing_orb_features if listing else config.orb_features
        self._orb = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=self._target * config.orb_oversampling,
            scaleFactor=config.orb_scale_factor,
            nlevels=config.orb_levels,
            edgeThreshold=config.orb_edge_threshold_px,
            patchSize=config.orb_edge_threshold_px * 2 + 1,
            fastThreshold=config.orb_fast_threshold,
        )
        self._clahe = cv2.createCLAHE(clipLimit=config.clahe_clip_limit, tileGridSize=(8, 8))

    def normalised_gray(self, gray: GrayImage) -> tuple[NDArray[np.uint8], float]:
        """`gray` at the working size with equalised local contrast, and its scale factor."""
        height, width = gray.shape
        side = min(max(max(height, width), self._min_side), self._max_side)
        scale = side / max(height, width)
        if abs(scale - 1.0) > 1e-3:
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = np.asarray(cv2.resize(gray, size, interpolation=interpolation), np.uint8)
        return np.asarray(self._clahe.apply(gray), dtype=np.uint8), scale

    def extract(self, image: RGBImage, mirrored: bool = False) -> FeatureSet:
        """ORB features of `image` (or of its mirror image), in `image`'s pixel coordinates."""
        return self.extract_gray(to_gray(image), mirrored)

    def extract_gray(self, gray: GrayImage, mirrored: bool = False) -> FeatureSet:
        """`extract` of an image already made gray (`to_gray`): ORB wants 8-bit gray, and the
        perceptual hashes start from the same gray image."""
        gray, scale = self.normalised_gray(gray)
        if mirrored:
            gray = np.ascontiguousarray(gray[:, ::-1])
        detected = self._orb.detect(gray, None)
        if not detected:
            return FeatureSet.empty()
        chosen = [detected[i] for i in self._spread(detected, gray.shape)]
        keypoints, descriptors = self._orb.compute(gray, chosen)
        if descriptors is None or not keypoints:
            return FeatureSet.empty()
        table = np.empty((len(keypoints), KEYPOINT_FIELDS), np.float32)
        table[:, :2] = _points(keypoints)
        table[:, 2] = _attribute(keypoints, "size", np.float32)
        table[:, 3] = _attribute(keypoints, "angle", np.float32)
        table[:, :3] /= scale
        return FeatureSet(table, np.ascontiguousarray(descriptors, dtype=np.uint8))

    def _spread(self, keypoints: Sequence[cv2.KeyPoint], shape: tuple[int, ...]) -> list[int]:
        """Indices of the keypoints to keep, pyramid level by level: the strongest few of each
        grid cell first, then the strongest of the level.

        ORB alone keeps the strongest corners, so a busy region (a chain, a textured backdrop,
        one tile of a collage) crowds out a plain one (a polished bangle), which then cannot be
        matched. Each level keeps ORB's own share of the budget so scales still correspond.
        """
        if len(keypoints) <= self._target:
            return list(range(len(keypoints)))
        cells = self._config.orb_grid_cells
        height, width = shape[:2]
        points = _points(keypoints)
        response = _attribute(keypoints, "response", np.float32)
        octave = _attribute(keypoints, "octave", np.int64)
        column = np.minimum((points[:, 0] * cells / width).astype(np.int64), cells - 1)
        row = np.minimum((points[:, 1] * cells / height).astype(np.int64), cells - 1)
        cell = row * cells + column
        chosen: list[NDArray[np.int64]] = []
        for level in np.unique(octave):
            members = np.flatnonzero(octave == level)
            budget = max(1, round(len(members) * self._target / len(keypoints)))
            order = members[np.lexsort((-response[members], cell[members]))]
            # Rank of each keypoint within its cell, strongest first.
            first_in_cell = np.searchsorted(cell[order], cell[order], side="left")
            rank = np.arange(len(order)) - first_in_cell
            quota = max(1, int(budget * self._config.orb_grid_share) // (cells * cells))
            spread = order[rank < quota]
            spread = spread[np.argsort(-response[spread])][:budget]
            rest = order[rank >= quota]
            rest = rest[np.argsort(-response[rest])][: budget - len(spread)]
            chosen.extend([spread, rest])
        return np.concatenate(chosen).tolist()


# Descriptors compared with all others at a time while counting distinct features.
_DISTINCT_QUERY_ROWS = 128


def distinct_features(features: FeatureSet, min_distance_bits: int, up_to: int) -> int:
    """How many of `features` have no other feature of the set within `min_distance_bits`,
    counted up to `up_to` (a photo has enough long before all its features are compared).

    Counts what can tell an image apart: a checkerboard has a thousand corners, all alike.
    """
    descriptors = features.descriptors
    if len(descriptors) < 2:
        return min(len(descriptors), up_to)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    found = 0
    for start in range(0, len(descriptors), _DISTINCT_QUERY_ROWS):
        queries = descriptors[start : start + _DISTINCT_QUERY_ROWS]
        pairs = matcher.knnMatch(queries, descriptors, k=2)
        # A descriptor's nearest match is normally itself; an exact twin may come first
        # instead, and is then at distance 0 all the same.
        found += sum(
            (pair[1] if pair[0].trainIdx == start + row else pair[0]).distance > min_distance_bits
            for row, pair in enumerate(pairs)
        )
        if found >= up_to:
            return up_to
    return found


# A listing's ~3,000 detected keypoints are Python objects: reading their fields one by one in
# list comprehensions took ~2 ms per image, as long as CLAHE. OpenCV converts the points in C++,
# and fromiter reads the other fields without building lists.
def _points(keypoints: Sequence[cv2.KeyPoint]) -> NDArray[np.float32]:
    """(n, 2) float32 x, y of OpenCV keypoints."""
    return np.asarray(cv2.KeyPoint.convert(keypoints), np.float32).reshape(-1, 2)


def _attribute(
    keypoints: Sequence[cv2.KeyPoint], name: str, dtype: type[np.generic]
) -> NDArray[Any]:
    """One field (`size`, `angle`, `response`, `octave`) of every keypoint, as a `dtype` array."""
    return np.fromiter(map(attrgetter(name), keypoints), dtype, count=len(keypoints))
