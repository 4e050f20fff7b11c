"""Perceptual hashes (through imagehash) packed to bytes, and the 8 dihedral variants of an image.

A reused official photo is usually the photo itself, resized, recompressed, recoloured, mirrored or
turned. Its perceptual hash stays within a few bits of the original's. A reference is hashed in
all 8 flips/rotations a seller could apply, once, when it is indexed; a listing is then hashed
once, as it is, and still meets every mirrored or rotated reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
import scipy.fftpack
from numpy.typing import NDArray
from PIL import Image

from imgmatch.images import GrayImage, RGBImage, to_gray

PackedBits = NDArray[np.uint8]
"""Bits packed 8 to a byte, most significant first (numpy.packbits order)."""

HASH_BITS = 64
# Hashes are taken from one small gray thumbnail: the 8 variants are then exact transposes of each
# other and cost almost nothing. Every hasher shrinks further, so nothing is lost.
_THUMBNAIL_SIDE_PX = 128
# The thumbnail averages whole blocks of this many pixels a side of a square this much larger.
_THUMBNAIL_BLOCK_PX = 4

StackedBits = Callable[[NDArray[np.uint8]], NDArray[np.bool_]]


@dataclass(frozen=True)
class Hasher:
    """One perceptual hash: a name and a function from a gray thumbnail to 64 bits.

    `compute_bits` is imagehash itself, the definition. `size` (width, height) is what imagehash
    shrinks its input to (with LANCZOS), and `stacked_bits` repeats imagehash's arithmetic on a
    stack of such shrunk images, (n, height, width) -> (n, 8, 8): a reference's 8 variants then
    cost two shrinks and one numpy call instead of 8 imagehash calls. Both are None for a hash
    whose input size depends on the image (whash); its variants are hashed one by one.
    """

    name: str
    compute_bits: Callable[[Image.Image], NDArray[np.bool_]]
    size: tuple[int, int] | None = None
    stacked_bits: StackedBits | None = None
    # How wide one code is: what the catalog's index of this hasher's codes is built for.
    bits: int = HASH_BITS

    @property
    def code_bytes(self) -> int:
        return self.bits // 8

    def compute(self, thumbnail: Image.Image) -> PackedBits:
        """Hash a gray thumbnail (see `gray_thumbnail`) into 8 packed bytes, through imagehash."""
        return np.packbits(self.compute_bits(thumbnail).reshape(-1))

    def compute_variants(
        self, thumbnail: Image.Image, turns: Sequence[Image.Transpose | None]
    ) -> PackedBits:
        """Hash `thumbnail` turned by each of `turns` (None: as it is): (len(turns), 8) bytes.

        Each row equals `compute(thumbnail.transpose(turn))`. Every turn is a flip of the
        thumbnail or of its transpose, and PIL's resize commutes with flips, so the thumbnail
        and its transpose are shrunk once each and the variants are flips of those.
        """
        if self.size is None or self.stacked_bits is None or list(turns) == [None]:
            # One hash of the thumbnail as it is (a listing's): imagehash alone is quicker.
            return np.stack([self.compute(_turn(thumbnail, turn)) for turn in turns])
        shrunk: dict[bool, NDArray[np.uint8]] = {}
        views = []
        for turn in turns:
            transposed, flip = _AS_FLIP[turn]
            if transposed not in shrunk:
                source = thumbnail.transpose(Image.Transpose.TRANSPOSE) if transposed else thumbnail
                shrunk[transposed] = np.asarray(source.resize(self.size, Image.Resampling.LANCZOS))
            views.append(flip(shrunk[transposed]))
        bits = self.stacked_bits(np.stack(views))
        return np.packbits(bits.reshape(len(views), -1), axis=1)


def _turn(image: Image.Image, turn: Image.Transpose | None) -> Image.Image:
    return image if turn is None else image.transpose(turn)


Flip = Callable[[NDArray[np.uint8]], NDArray[np.uint8]]
# Each PIL transpose as (applied to the transposed image?, numpy flip of rows and/or columns).
_AS_FLIP: dict[Image.Transpose | None, tuple[bool, Flip]] = {
    None: (False, lambda a: a),
    Image.Transpose.FLIP_LEFT_RIGHT: (False, lambda a: a[:, ::-1]),
    Image.Transpose.FLIP_TOP_BOTTOM: (False, lambda a: a[::-1]),
    Image.Transpose.ROTATE_180: (False, lambda a: a[::-1, ::-1]),
    Image.Transpose.TRANSPOSE: (True, lambda a: a),
    Image.Transpose.ROTATE_90: (True, lambda a: a[::-1]),
    Image.Transpose.ROTATE_270: (True, lambda a: a[:, ::-1]),
    Image.Transpose.TRANSVERSE: (True, lambda a: a[::-1, ::-1]),
}


def _phash_stacked(pixels: NDArray[np.uint8]) -> NDArray[np.bool_]:
    # imagehash.phash: scipy's DCT of the 32x32 image along columns then rows; the 8x8 lowest
    # frequencies against their median.
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)
    low = dct[:, :8, :8]
    return np.asarray(low > np.median(low, axis=(1, 2), keepdims=True))


def _dhash_stacked(pixels: NDArray[np.uint8]) -> NDArray[np.bool_]:
    # imagehash.dhash: each pixel of the 9x8 image against its left neighbour.
    return pixels[:, :, 1:] > pixels[:, :, :-1]


def _ahash_stacked(pixels: NDArray[np.uint8]) -> NDArray[np.bool_]:
    # imagehash.average_hash: each pixel of the 8x8 image against their mean.
    return np.asarray(pixels > pixels.mean(axis=(1, 2), keepdims=True))


# pHash shrinks to hash_size x highfreq_factor (4, imagehash's default) before its DCT.
HASHERS: dict[str, Hasher] = {
    "phash": Hasher(
        "phash", lambda img: imagehash.phash(img, hash_size=8).hash, (32, 32), _phash_stacked
    ),
    "dhash": Hasher(
        "dhash", lambda img: imagehash.dhash(img, hash_size=8).hash, (9, 8), _dhash_stacked
    ),
    "ahash": Hasher(
        "ahash",
        lambda img: imagehash.average_hash(img, hash_size=8).hash,
        (8, 8),
        _ahash_stacked,
    ),
    "whash": Hasher("whash", lambda img: imagehash.whash(img, hash_size=8).hash),
}


@dataclass(frozen=True)
class Dihedral:
    """What a seller did to the photo (`name`), as the PIL transpose that does it (`turn`)."""

    name: str
    turn: Image.Transpose | None


# PIL's ROTATE_90 turns counter-clockwise, so a seller's 90-degree clockwise turn is PIL's
# ROTATE_270. Index 0 is the identity: a listing is hashed with it alone.
DIHEDRALS: tuple[Dihedral, ...] = (
    Dihedral("identical", None),
    Dihedral("mirrored", Image.Transpose.FLIP_LEFT_RIGHT),
    Dihedral("rotated-90", Image.Transpose.ROTATE_270),
    Dihedral("rotated-180", Image.Transpose.ROTATE_180),
    Dihedral("rotated-270", Image.Transpose.ROTATE_90),
    Dihedral("mirrored-rotated-90", Image.Transpose.TRANSVERSE),
    Dihedral("flipped", Image.Transpose.FLIP_TOP_BOTTOM),
    Dihedral("mirrored-rotated-270", Image.Transpose.TRANSPOSE),
)


def gray_thumbnail(image: RGBImage | GrayImage) -> Image.Image:
    """Shrink an RGB image, or its gray image (`to_gray`), to the square gray thumbnail every
    hasher starts from.

    The image is first resampled to a square of whole blocks, then each block is averaged:
    both steps are mirror-symmetric, so a mirrored or flipped copy hashes like the original
    (the exact-flip test holds it to that), and averaging whole blocks is OpenCV's fast path.
    Linear resampling only serves up to a 2x shrink (it would skip pixels beyond): an image
    with a longer side is first area-averaged down to the square's side along each axis that
    is longer than it, the slower way. OpenCV's area resize interpolates instead of averaging
    as soon as one axis grows, so it must not grow the other axis in the same step.
    """
    gray = to_gray(image) if image.ndim == 3 else image
    height, width = gray.shape
    side = _THUMBNAIL_SIDE_PX * _THUMBNAIL_BLOCK_PX
    if max(height, width) > 2 * side:
        shrunk = (min(width, side), min(height, side))
        gray = np.asarray(cv2.resize(gray, shrunk, interpolation=cv2.INTER_AREA), np.uint8)
    square = cv2.resize(gray, (side, side), interpolation=cv2.INTER_LINEAR)
    thumbnail = (_THUMBNAIL_SIDE_PX, _THUMBNAIL_SIDE_PX)
    return Image.fromarray(cv2.resize(square, thumbnail, interpolation=cv2.INTER_AREA))


def compute_hashes(
    image: RGBImage | GrayImage, hasher_names: tuple[str, ...], variants: int = 1
) -> dict[str, PackedBits]:
    """Hash an RGB image, or its gray image (`to_gray`), with each named hasher, in its first
    `variants` dihedral variants.

    Returns, per hasher name, a (variants, 8) uint8 array; row i is the hash of the image
    turned as a seller would by `DIHEDRALS[i]`.
    """
    thumbnail = gray_thumbnail(image)
    turns = [d.turn for d in DIHEDRALS[:variants]]
    return {name: HASHERS[name].compute_variants(thumbnail, turns) for name in hasher_names}


def hamming_distance(a: PackedBits, b: PackedBits) -> int:
    """Number of differing bits between two packed codes of the same length."""
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())
