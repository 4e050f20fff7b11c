"""Fingerprint: everything computed from one image once, for references and listings alike."""

from __future__ import annotations

from dataclasses import dataclass

from imgmatch.config import DetectorConfig
from imgmatch.features import FeatureExtractor, FeatureSet
from imgmatch.hashing import DIHEDRALS, PackedBits, compute_hashes
from imgmatch.images import RGBImage

# Feature views of a reference: the photo as shot, and its mirror image.
VIEW_ORIGINAL = 0
VIEW_MIRRORED = 1


@dataclass(frozen=True)
class Fingerprint:
    """Hashes, ORB features and size of one image.

    `hashes[name]` is a (variants, 8) uint8 array: one row for a reference, the 8 dihedral
    variants for a listing. `views[0]` holds the features of the image as given; a reference may
    also hold `views[1]`, the features of its mirror image.
    """

    width: int
    height: int
    hashes: dict[str, PackedBits]
    views: tuple[FeatureSet, ...]

    @property
    def features(self) -> FeatureSet:
        return self.views[VIEW_ORIGINAL]


class Fingerprinter:
    """Computes fingerprints with one detector configuration. Not thread-safe: one per thread."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._extractor = FeatureExtractor(config)
        self._listing_extractor = FeatureExtractor(config, listing=True)

    def reference(self, image: RGBImage) -> Fingerprint:
        """Fingerprint a reference photo: identity hashes, features as shot and mirrored."""
        views = [self._extractor.extract(image)]
        if self.config.index_mirrored_references:
            views.append(self._extractor.extract(image, mirrored=True))
        return Fingerprint(
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            hashes=compute_hashes(image, self.config.hashers, variants=1),
            views=tuple(views),
        )

    def listing_hashes(self, image: RGBImage) -> dict[str, PackedBits]:
        """The hashes of a listing photo in all 8 dihedral variants."""
        return compute_hashes(image, self.config.hashers, variants=len(DIHEDRALS))

    def listing(self, image: RGBImage) -> Fingerprint:
        """Fingerprint a listing photo: hashes in all 8 variants, features as given."""
        return Fingerprint(
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            hashes=self.listing_hashes(image),
            views=(self._listing_extractor.extract(image),),
        )
