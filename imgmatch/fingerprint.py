"""Fingerprint: everything computed from one image once, for references and listings alike."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from imgmatch.config import DetectorConfig
from imgmatch.errors import IndistinctImageError
from imgmatch.features import FeatureExtractor, FeatureSet, distinct_features
from imgmatch.hashing import DIHEDRALS, PackedBits, compute_hashes
from imgmatch.images import RGBImage, to_gray

# Feature views of a reference: the photo as shot, and its mirror image.
VIEW_ORIGINAL = 0
VIEW_MIRRORED = 1

# Bump when the same image and settings give another fingerprint (a new hash thumbnail, another
# feature normalisation): references stored before are then fingerprinted again by the next
# `imgmatch index`, instead of being compared with listings computed another way.
FINGERPRINT_VERSION = 5
# The settings that change what is stored for a reference (listing-only settings do not).
_REFERENCE_SETTINGS = (
    "hashers",
    "feature_side_px",
    "orb_features",
    "orb_oversampling",
    "orb_grid_cells",
    "orb_grid_share",
    "orb_scale_factor",
    "orb_levels",
    "orb_fast_threshold",
    "orb_edge_threshold_px",
    "clahe_clip_limit",
    "index_mirrored_references",
)


def fingerprint_signature(config: DetectorConfig) -> str:
    """Names how reference fingerprints are computed: the version and the settings that shape
    them. Two fingerprints compare only when their signatures are equal."""
    settings = {name: getattr(config, name) for name in _REFERENCE_SETTINGS}
    # Equal settings must give equal signatures: 2 and 2.0 alike, hashers in any order.
    settings = {
        name: sorted(value) if name == "hashers" else float(value)
        for name, value in settings.items()
    }
    text = json.dumps(settings, sort_keys=True)
    return f"v{FINGERPRINT_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Fingerprint:
    """Hashes, ORB features and size of one image.

    `hashes[name]` is a (variants, 8) uint8 array: the 8 dihedral variants for a reference (what
    a seller could make of the photo: `hashing.DIHEDRALS`), one row for a listing. `views[0]`
    holds the features of the image as given; a reference may also hold `views[1]`, the
    features of its mirror image. `signature` is the `fingerprint_signature` of the settings it
    was computed with ("" where unknown).
    """

    width: int
    height: int
    hashes: dict[str, PackedBits]
    views: tuple[FeatureSet, ...]
    signature: str = ""

    @property
    def features(self) -> FeatureSet:
        return self.views[VIEW_ORIGINAL]


class Fingerprinter:
    """Computes fingerprints with one detector configuration. Not thread-safe: one per thread."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.signature = fingerprint_signature(config)
        self._extractor = FeatureExtractor(config)
        self._listing_extractor = FeatureExtractor(config, listing=True)

    def reference(self, image: RGBImage) -> Fingerprint:
        """Fingerprint a reference photo: hashes in all 8 variants, features as shot and
        mirrored.

        The flips and turns are hashed here, once per reference, so that a listing, checked
        far more often, is hashed only as it is. A photo too plain to tell apart from other
        images raises `IndistinctImageError`.
        """
        gray = to_gray(image)
        views = [self._extractor.extract_gray(gray)]
        self._require_distinct(views[0])
        if self.config.index_mirrored_references:
            views.append(self._extractor.extract_gray(gray, mirrored=True))
        return Fingerprint(
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            hashes=compute_hashes(gray, self.config.hashers, variants=len(DIHEDRALS)),
            views=tuple(views),
            signature=self.signature,
        )

    def _require_distinct(self, features: FeatureSet) -> None:
        """Refuse a reference too plain to tell apart from other images (`IndistinctImageError`):
        its hashes would match every listing as plain as itself."""
        needed = self.config.min_distinct_reference_features
        distinct = distinct_features(features, self.config.distinct_feature_bits, up_to=needed)
        if distinct < needed:
            raise IndistinctImageError(
                f"too little detail to protect: {distinct} distinctive features, a reference "
                f"needs {needed} (a gradient, a pattern or a plain background would match any "
                "listing as plain); use a photo of the design"
            )

    def listing(self, image: RGBImage) -> Fingerprint:
        """Fingerprint a listing photo: hashes and features of the photo as it is."""
        gray = to_gray(image)
        return Fingerprint(
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            hashes=compute_hashes(gray, self.config.hashers),
            views=(self._listing_extractor.extract_gray(gray),),
            signature=self.signature,
        )
