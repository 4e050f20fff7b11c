"""Perceptual hashes (through imagehash) packed to bytes, and the 8 dihedral variants of an image.

A reused official photo is usually the photo itself, resized, recompressed, recoloured, mirrored or
turned. Its perceptual hash stays within a few bits of the original's; hashing the listing in all
8 flips/rotations lets one reference hash catch every mirrored or rotated reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from imgmatch.images import RGBImage

PackedBits = NDArray[np.uint8]
"""Bits packed 8 to a byte, most significant first (numpy.packbits order)."""

HASH_BITS = 64
# Hashes are taken from one small gray thumbnail: the 8 variants are then exact transposes of each
# other and cost almost nothing. Every hasher shrinks further, so nothing is lost.
_THUMBNAIL_SIDE_PX = 128


@dataclass(frozen=True)
class Hasher:
    """One perceptual hash: a name and a function from a gray thumbnail to 64 bits.

    `square_px` is the square size the hash itself shrinks its input to first (imagehash
    resizes with LANCZOS, as `gray_thumbnail` does); None where it is not square or depends on
    the input.
    """

    name: str
    compute_bits: Callable[[Image.Image], NDArray[np.bool_]]
    square_px: int | None = None

    def compute(self, thumbnail: Image.Image) -> PackedBits:
        """Hash a gray thumbnail (see `gray_thumbnail`) into 8 packed bytes."""
        return np.packbits(self.compute_bits(thumbnail).reshape(-1))

    def shrink(self, thumbnail: Image.Image) -> Image.Image:
        """The thumbnail at the size this hash shrinks to, or as it is.

        imagehash resizes an image already at its size by copying it, so the hash of the shrunk
        thumbnail is the hash of the thumbnail; and the 8 variants of a listing can turn this
        small image instead of each being shrunk again.
        """
        if self.square_px is None:
            return thumbnail
        size = (self.square_px, self.square_px)
        return thumbnail.resize(size, Image.Resampling.LANCZOS)


# pHash shrinks to hash_size x highfreq_factor (4, imagehash's default) before its DCT.
HASHERS: dict[str, Hasher] = {
    "phash": Hasher("phash", lambda img: imagehash.phash(img, hash_size=8).hash, 8 * 4),
    "dhash": Hasher("dhash", lambda img: imagehash.dhash(img, hash_size=8).hash),
    "ahash": Hasher("ahash", lambda img: imagehash.average_hash(img, hash_size=8).hash, 8),
    "whash": Hasher("whash", lambda img: imagehash.whash(img, hash_size=8).hash),
}


@dataclass(frozen=True)
class Dihedral:
    """What a seller did to the photo (`name`), and the PIL transpose that undoes it."""

    name: str
    undo: Image.Transpose | None


# The undo of a seller's 90-degree clockwise turn is a 90-degree counter-clockwise one, which
# PIL calls ROTATE_90. Index 0 is the identity: references are hashed with it alone.
DIHEDRALS: tuple[Dihedral, ...] = (
    Dihedral("identical", None),
    Dihedral("mirrored", Image.Transpose.FLIP_LEFT_RIGHT),
    Dihedral("rotated-90", Image.Transpose.ROTATE_90),
    Dihedral("rotated-180", Image.Transpose.ROTATE_180),
    Dihedral("rotated-270", Image.Transpose.ROTATE_270),
    Dihedral("mirrored-rotated-90", Image.Transpose.TRANSVERSE),
    Dihedral("flipped", Image.Transpose.FLIP_TOP_BOTTOM),
    Dihedral("mirrored-rotated-270", Image.Transpose.TRANSPOSE),
)


def gray_thumbnail(image: RGBImage) -> Image.Image:
    """Shrink an RGB image to the square gray thumbnail every hasher starts from."""
    gray = Image.fromarray(image, mode="RGB").convert("L")
    return gray.resize((_THUMBNAIL_SIDE_PX, _THUMBNAIL_SIDE_PX), Image.Resampling.LANCZOS)


def compute_hashes(
    image: RGBImage, hasher_names: tuple[str, ...], variants: int = 1
) -> dict[str, PackedBits]:
    """Hash `image` with each named hasher, in its first `variants` dihedral variants.

    Returns, per hasher name, a (variants, 8) uint8 array; row i is the hash of the image with
    `DIHEDRALS[i].undo` applied.
    """
    thumbnail = gray_thumbnail(image)
    hashes = {}
    for name in hasher_names:
        hasher = HASHERS[name]
        base = hasher.shrink(thumbnail)
        views = [base if d.undo is None else base.transpose(d.undo) for d in DIHEDRALS[:variants]]
        hashes[name] = np.stack([hasher.compute(view) for view in views])
    return hashes


def hamming_distance(a: PackedBits, b: PackedBits) -> int:
    """Number of differing bits between two packed codes of the same length."""
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())
