"""Golden fingerprints: the exact hashes, keypoints and descriptors of a bundled reference and a
listing, tied to the fingerprint version.

References stored in a catalog are compared with listings fingerprinted today. If the same image
and settings gave another fingerprint without a new `FINGERPRINT_VERSION`, stored references would
silently stop matching; these digests catch that. When a change of fingerprint is intended, bump
`FINGERPRINT_VERSION` and record the new digests under it (the failure message prints them).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imgmatch.config import DetectorConfig
from imgmatch.features import FeatureSet
from imgmatch.fingerprint import FINGERPRINT_VERSION, Fingerprint, Fingerprinter
from imgmatch.images import load_image

# Per fingerprint version, the digest of each kind of fingerprint of GOLDEN_IMAGE.
GOLDEN_IMAGE = "D004_0.jpg"
GOLDEN_DIGESTS: dict[int, dict[str, str]] = {
    5: {
        "reference": "614203779dde6f607e2b3ca1c40f62d73f2829dd58a85edf8427618fd8181b10",
        "listing": "6fc49addb11df5476630348bf4ee593ccd4092b52d50cea4956eee4a5c548dc4",
    },
}
# Keypoint coordinates are floats computed through a resize; a last-bit difference between two
# builds of the same OpenCV is not a change of fingerprint, a hundredth of a pixel is.
KEYPOINT_DECIMALS = 2


def fingerprint_digest(fingerprint: Fingerprint) -> str:
    """sha256 over size, every hasher's codes, and every view's keypoints and descriptors."""
    digest = hashlib.sha256()
    digest.update(f"{fingerprint.width}x{fingerprint.height}".encode())
    for name in sorted(fingerprint.hashes):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(fingerprint.hashes[name], np.uint8).tobytes())
    for view in fingerprint.views:
        keypoints = np.round(view.keypoints.astype(np.float64), KEYPOINT_DECIMALS)
        digest.update(str(keypoints.shape).encode())
        digest.update(np.ascontiguousarray(keypoints + 0.0).tobytes())
        digest.update(np.ascontiguousarray(view.descriptors, np.uint8).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("kind", ["reference", "listing"])
def test_fingerprint_matches_the_golden_digest_of_its_version(
    bundled_references: Path, kind: str
) -> None:
    image = load_image(bundled_references / GOLDEN_IMAGE)
    fingerprinter = Fingerprinter(DetectorConfig())
    fingerprint = (
        fingerprinter.reference(image) if kind == "reference" else fingerprinter.listing(image)
    )
    digest = fingerprint_digest(fingerprint)
    assert FINGERPRINT_VERSION in GOLDEN_DIGESTS, (
        f"fingerprint version {FINGERPRINT_VERSION} has no golden digests: record "
        f"{kind}={digest} (and the other kind) under it"
    )
    assert digest == GOLDEN_DIGESTS[FINGERPRINT_VERSION][kind], (
        f"the {kind} fingerprint of {GOLDEN_IMAGE} changed ({digest}) while FINGERPRINT_VERSION "
        f"stayed {FINGERPRINT_VERSION}: stored references would no longer compare with listings. "
        "Bump the version if the change is intended."
    )


def test_the_digest_sees_every_part_of_a_fingerprint(bundled_references: Path) -> None:
    """Changing any one hash bit, keypoint or descriptor byte changes the digest."""
    fingerprint = Fingerprinter(DetectorConfig()).reference(
        load_image(bundled_references / GOLDEN_IMAGE)
    )
    base = fingerprint_digest(fingerprint)
    name = sorted(fingerprint.hashes)[0]
    flipped_hash = fingerprint.hashes[name].copy()
    flipped_hash[-1, -1] ^= 1
    variants = [replace(fingerprint, hashes={**fingerprint.hashes, name: flipped_hash})]
    view = fingerprint.views[-1]
    moved = view.keypoints.copy()
    moved[-1, 0] += 0.05
    changed = view.descriptors.copy()
    changed[0, 0] ^= 0x80
    for keypoints, descriptors in ((moved, view.descriptors), (view.keypoints, changed)):
        views = (*fingerprint.views[:-1], FeatureSet(keypoints, descriptors))
        variants.append(replace(fingerprint, views=views))
    for variant in variants:
        assert fingerprint_digest(variant) != base
