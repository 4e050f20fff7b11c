"""The methods compared on the same data: two baselines people use today, three imgmatch modes.

A method is built once from the references (`build`, timed as index build) and then scores one
listing (`check`), returning predictions and its stage timings in milliseconds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from imgmatch.bench.metrics import Prediction
from imgmatch.bench.samples_set import ListingItem, ReferenceItem
from imgmatch.bench.synthetic import SyntheticSpec, synthetic_masks
from imgmatch.catalog import Catalog, NewReference
from imgmatch.config import DetectorConfig
from imgmatch.detector import Detector
from imgmatch.fingerprint import Fingerprinter
from imgmatch.images import RGBImage, decode_image

# Brute-force ORB baseline, as usually written: OpenCV defaults plus Lowe's ratio test.
BASELINE_ORB_FEATURES = 1500
BASELINE_SIDE_PX = 1024
BASELINE_RATIO = 0.8
BASELINE_MIN_GOOD_MATCHES = 8
BASELINE_RANSAC_PX = 6.0
# Inliers at which the baseline's score reaches 0.5 (same shape as imgmatch's ORB score).
BASELINE_HALF_INLIERS = 12
HASH_BITS = 64


@dataclass(frozen=True)
class MethodRun:
    predictions: tuple[Prediction, ...]
    timing_ms: dict[str, float]


class Method:
    """One way of finding copies: `build` on references, then `check` each listing."""

    name = ""
    description = ""
    # The threshold the method ships with, where it has one (imgmatch: DetectorConfig's).
    shipped_threshold: float | None = None

    def build(self, references: Sequence[ReferenceItem], workdir: Path) -> None:
        raise NotImplementedError

    def check(self, listing: ListingItem) -> MethodRun:
        raise NotImplementedError

    def catalog_bytes(self) -> int:
        return 0

    def close(self) -> None:
        """Release what `build` made."""


def _decode(listing: ListingItem) -> tuple[RGBImage, float, dict[str, float]]:
    start = time.perf_counter()
    decoded = decode_image(listing.data)
    return decoded.pixels, decoded.scale, {"decode": (time.perf_counter() - start) * 1000}


class PHashScan(Method):
    """(a) imagehash pHash of the listing against every reference's, by linear scan."""

    name = "phash-scan"
    description = "imagehash pHash, linear scan, score 1 - distance/64"

    def build(self, references: Sequence[ReferenceItem], workdir: Path) -> None:
        self._designs = [r.design for r in references]
        self._codes = np.stack(
            [imagehash.phash(Image.fromarray(r.image)).hash.reshape(-1) for r in references]
        )

    def check(self, listing: ListingItem) -> MethodRun:
        image, _, timing = _decode(listing)
        start = time.perf_counter()
        code = imagehash.phash(Image.fromarray(image)).hash.reshape(-1)
        timing["features"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        distances = (self._codes != code).sum(axis=1)
        height, width = image.shape[:2]
        predictions = tuple(
            Prediction(listing.name, design, 1.0 - int(d) / HASH_BITS, (0, 0, width, height))
            for design, d in zip(self._designs, distances, strict=True)
        )
        timing["search"] = (time.perf_counter() - start) * 1000
        return MethodRun(predictions, timing)

    def catalog_bytes(self) -> int:
        return int(self._codes.size // 8)


class BruteForceOrb(Method):
    """(b) OpenCV ORB, BFMatcher (Hamming) against every reference, ratio test, RANSAC."""

    name = "bruteforce-orb"
    description = "OpenCV ORB 1500, BFMatcher kNN against every reference, ratio 0.8, RANSAC"

    def build(self, references: Sequence[ReferenceItem], workdir: Path) -> None:
        self._orb = cv2.ORB_create(nfeatures=BASELINE_ORB_FEATURES)  # type: ignore[attr-defined]
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._refs = []
        for ref in references:
            points, descriptors, _ = self._features(ref.image)
            height, width = ref.image.shape[:2]
            self._refs.append((ref.design, points, descriptors, width, height))
        self._real_count = len(self._refs)

    def _features(self, image: RGBImage) -> tuple[np.ndarray, np.ndarray | None, float]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, BASELINE_SIDE_PX / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        keypoints, descriptors = self._orb.detectAndCompute(gray, None)
        points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2) / scale
        return points, descriptors, scale

    def check(self, listing: ListingItem) -> MethodRun:
        image, _, timing = _decode(listing)
        start = time.perf_counter()
        points, descriptors, _ = self._features(image)
        timing["features"] = (time.perf_counter() - start) * 1000
        search_ms = verify_ms = 0.0
        predictions = []
        height, width = image.shape[:2]
        for design, ref_points, ref_descriptors, ref_w, ref_h in self._refs:
            if descriptors is None or ref_descriptors is None or len(descriptors) < 2:
                continue
            start = time.perf_counter()
            pairs = self._matcher.knnMatch(ref_descriptors, descriptors, k=2)
            good = [
                p[0]
                for p in pairs
                if len(p) == 2 and p[0].distance < BASELINE_RATIO * p[1].distance
            ]
            search_ms += (time.perf_counter() - start) * 1000
            if len(good) < BASELINE_MIN_GOOD_MATCHES:
                continue
            start = time.perf_counter()
            src = ref_points[[m.queryIdx for m in good]].reshape(-1, 1, 2)
            dst = points[[m.trainIdx for m in good]].reshape(-1, 1, 2)
            homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, BASELINE_RANSAC_PX)
            verify_ms += (time.perf_counter() - start) * 1000
            if homography is None or mask is None:
                continue
            inliers = int(mask.sum())
            corners = np.array([[0, 0], [ref_w, 0], [ref_w, ref_h], [0, ref_h]], np.float32)
            quad = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), homography).reshape(-1, 2)
            box = (
                max(0, int(quad[:, 0].min())),
                max(0, int(quad[:, 1].min())),
                min(width, int(quad[:, 0].max())),
                min(height, int(quad[:, 1].max())),
            )
            score = inliers / (inliers + BASELINE_HALF_INLIERS)
            predictions.append(Prediction(listing.name, design, score, box))
        timing["search"], timing["verify"] = search_ms, verify_ms
        return MethodRun(tuple(predictions), timing)

    def catalog_bytes(self) -> int:
        return sum(0 if d is None else d.nbytes + p.nbytes for _, p, d, _, _ in self._refs)

    def grow_synthetic(self, total: int, seed: int, spec: SyntheticSpec | None = None) -> None:
        """Add perturbed copies of the real references until there are `total` (scale runs).

        Same recipe as the imgmatch catalog's synthetic references (`SyntheticSpec`): every
        descriptor of a randomly chosen real reference with 32 of 256 bits flipped.
        """
        if len(self._refs) >= total:
            return
        rng = np.random.default_rng(seed + len(self._refs))
        # A fixed pool of masks: drawing 256 random bits per descriptor would take minutes.
        masks = synthetic_masks(rng, spec or SyntheticSpec())
        real = self._refs[: self._real_count]
        while len(self._refs) < total:
            _design, points, descriptors, width, height = real[int(rng.integers(len(real)))]
            if descriptors is not None:
                picked = masks[rng.integers(len(masks), size=len(descriptors))]
                descriptors = np.bitwise_xor(descriptors, picked)
            self._refs.append((f"synthetic-{len(self._refs)}", points, descriptors, width, height))


class ImgmatchMethod(Method):
    """(c)-(e) imgmatch's Detector on a real catalog, in one of its modes."""

    def __init__(self, name: str, description: str, config: DetectorConfig) -> None:
        self.name = name
        self.description = description
        self.config = config
        self.shipped_threshold = config.flag_threshold
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def build(self, references: Sequence[ReferenceItem], workdir: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"imgmatch-{self.name}-", dir=workdir)
        self.catalog = Catalog(Path(self._tmp.name))
        fingerprinter = Fingerprinter(self.config)
        self.catalog.add_many(
            [
                NewReference(
                    fingerprint=fingerprinter.reference(ref.image),
                    path=ref.name,
                    sha256=f"{number:064x}",
                    design=ref.design,
                )
                for number, ref in enumerate(references)
            ]
        )
        self.catalog.flush()
        self.detector = Detector(self.catalog, self.config)

    def check(self, listing: ListingItem) -> MethodRun:
        result = self.detector.check_source(listing.data, path=listing.name, min_score=0)
        predictions = tuple(
            Prediction(listing.name, m.design, m.score, m.box) for m in result.matches
        )
        return MethodRun(predictions, dict(result.timing_ms))

    def catalog_bytes(self) -> int:
        stats = self.catalog.stats()
        return stats.database_bytes + stats.index_bytes

    def close(self) -> None:
        self.catalog.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def imgmatch_methods(config: DetectorConfig | None = None) -> list[Method]:
    """imgmatch full, and each path alone by switching the other one off."""
    base = config or DetectorConfig()
    return [
        # No descriptor is ever close enough to vote: hash candidates only, never verified.
        ImgmatchMethod(
            "imgmatch-hash",
            "imgmatch hash path only (max_descriptor_distance_bits=-1)",
            base.with_overrides(max_descriptor_distance_bits=-1),
        ),
        # A negative radius finds no hash: ORB candidates and verification only.
        ImgmatchMethod(
            "imgmatch-orb",
            "imgmatch ORB path only (max_hamming_distance=-1)",
            base.with_overrides(max_hamming_distance=-1),
        ),
        ImgmatchMethod("imgmatch-full", "imgmatch, both paths (defaults)", base),
    ]


ALL_METHODS = ("phash-scan", "bruteforce-orb", "imgmatch-hash", "imgmatch-orb", "imgmatch-full")


def make_methods(names: Sequence[str]) -> list[Method]:
    methods: list[Method] = [PHashScan(), BruteForceOrb(), *imgmatch_methods()]
    return [m for m in methods if m.name in names]
