"""Perceptual hashes: pinned golden codes, the dihedral naming table, and robustness to reuse."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from imgmatch.hashing import (
    DIHEDRALS,
    HASH_BITS,
    HASHERS,
    compute_hashes,
    gray_thumbnail,
    hamming_distance,
)

# What a seller did to the official photo, written independently of hashing.DIHEDRALS (numpy
# rot90 with k=-1 turns clockwise), so the test checks that table's names and PIL transposes.
SELLER_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identical": lambda a: a,
    "mirrored": np.fliplr,
    "rotated-90": lambda a: np.rot90(a, -1),
    "rotated-180": lambda a: np.rot90(a, 2),
    "rotated-270": lambda a: np.rot90(a, 1),
    "mirrored-rotated-90": lambda a: np.rot90(np.fliplr(a), -1),
    "flipped": np.flipud,
    "mirrored-rotated-270": lambda a: np.rot90(np.fliplr(a), 1),
}

# Golden codes of make_photo(42), packed MSB-first, as hex. A change here means every
# stored catalog's hashes changed too: bump fingerprint.FINGERPRINT_VERSION, so that the next
# `imgmatch index` fingerprints stored references again.
GOLDEN_PHASH = "b21acfc9c9461c2f"
GOLDEN_DHASH = "890d2d8c9696cd0c"
# The same picture drawn at 800x600 (resampled linearly to the 512 px square, as the 480x360 one
# is, before the 4x4 block average).
GOLDEN_LARGE_PHASH = "b21acfcdc1461c2f"
GOLDEN_LARGE_DHASH = "890d2d8d9696cd0c"


@pytest.fixture(scope="module")
def base(make_photo: Callable[..., np.ndarray]) -> np.ndarray:
    return make_photo(42)


@pytest.fixture(scope="module")
def base_hashes(base: np.ndarray) -> dict[str, np.ndarray]:
    return compute_hashes(base, ("phash", "dhash"))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_golden_phash_and_dhash(base_hashes: dict[str, np.ndarray]) -> None:
    assert base_hashes["phash"].shape == (1, HASH_BITS // 8)
    assert base_hashes["phash"].dtype == np.uint8
    assert base_hashes["phash"][0].tobytes().hex() == GOLDEN_PHASH
    assert base_hashes["dhash"][0].tobytes().hex() == GOLDEN_DHASH


def test_golden_hashes_of_a_larger_rendering(
    make_photo: Callable[..., np.ndarray],
) -> None:
    hashes = compute_hashes(make_photo(42, (800, 600)), ("phash", "dhash"))
    assert hashes["phash"][0].tobytes().hex() == GOLDEN_LARGE_PHASH
    assert hashes["dhash"][0].tobytes().hex() == GOLDEN_LARGE_DHASH


def test_hashing_is_deterministic(base: np.ndarray) -> None:
    first = compute_hashes(base, tuple(HASHERS), variants=8)
    second = compute_hashes(base.copy(), tuple(HASHERS), variants=8)
    for name in HASHERS:
        assert first[name].shape == (8, 8)
        assert np.array_equal(first[name], second[name])


@pytest.mark.parametrize("name", sorted(HASHERS))
def test_each_variant_is_exactly_imagehash_of_the_turned_thumbnail(
    make_photo: Callable[..., np.ndarray], name: str
) -> None:
    """The variants are computed together (two shrinks, flips, one numpy call), not by 8
    imagehash calls: bit for bit the same codes, for every hasher and turn."""
    hasher = HASHERS[name]
    for seed in range(6):
        photo = make_photo(seed)
        for image in (photo, np.ascontiguousarray(photo[: photo.shape[0] // 2])):
            thumbnail = gray_thumbnail(image)
            variants = compute_hashes(image, (name,), variants=len(DIHEDRALS))[name]
            for row, dihedral in zip(variants, DIHEDRALS, strict=True):
                turned = thumbnail if dihedral.turn is None else thumbnail.transpose(dihedral.turn)
                assert row.tobytes() == hasher.compute(turned).tobytes(), (seed, dihedral.name)


def test_dihedral_table_covers_the_seller_transforms() -> None:
    assert [d.name for d in DIHEDRALS] == list(SELLER_TRANSFORMS)
    assert DIHEDRALS[0].turn is None


@pytest.mark.parametrize("transform", list(SELLER_TRANSFORMS))
def test_each_reference_variant_is_the_transform_it_is_named_after(
    base: np.ndarray, transform: str
) -> None:
    """A reference is hashed in the 8 variants, a listing as it is: the listing made by a
    seller's transform must meet the variant named after it."""
    variants = compute_hashes(base, ("phash", "dhash"), variants=len(DIHEDRALS))
    listing = compute_hashes(
        np.ascontiguousarray(SELLER_TRANSFORMS[transform](base)), ("phash", "dhash")
    )
    index = [d.name for d in DIHEDRALS].index(transform)
    for name in ("phash", "dhash"):
        distances = [hamming_distance(listing[name][0], row) for row in variants[name]]
        assert distances[index] <= 2, (name, distances)
        # ...and only that variant: the table must not alias two transforms.
        assert min(d for i, d in enumerate(distances) if i != index) > 10, (name, distances)


@pytest.mark.parametrize(
    "size", [(1000, 1000), (1279, 959), (2050, 1538), (2000, 300), (300, 2000), (1100, 500)]
)
def test_exact_flips_of_large_photos_hash_exactly_like_the_original(
    make_photo: Callable[..., np.ndarray], size: tuple[int, int]
) -> None:
    """Sizes that no whole factor divides, and long thin ones whose short side must grow while
    the long side shrinks: the thumbnail's shrink must stay mirror-symmetric, or every
    mirrored reuse starts bits away from its reference."""
    photo = make_photo(7, size)
    variants = compute_hashes(photo, ("phash", "dhash"), variants=len(DIHEDRALS))
    names = [d.name for d in DIHEDRALS]
    for transform in ("mirrored", "flipped", "rotated-180"):
        listing = compute_hashes(
            np.ascontiguousarray(SELLER_TRANSFORMS[transform](photo)), ("phash", "dhash")
        )
        for name in ("phash", "dhash"):
            row = variants[name][names.index(transform)]
            assert hamming_distance(listing[name][0], row) == 0, (transform, name)


def test_hamming_distance_on_hand_made_codes() -> None:
    zeros = np.zeros(8, np.uint8)
    ones = np.full(8, 0xFF, np.uint8)
    one_bit = zeros.copy()
    one_bit[3] = 0b0001_0000
    assert hamming_distance(zeros, zeros) == 0
    assert hamming_distance(zeros, ones) == 64
    assert hamming_distance(zeros, one_bit) == 1
    assert hamming_distance(ones, one_bit) == 63
    alternating = np.full(8, 0b1010_1010, np.uint8)
    assert hamming_distance(alternating, np.full(8, 0b0101_0101, np.uint8)) == 64
    assert hamming_distance(alternating, zeros) == 32
    # Symmetric, and the result is a plain int (it goes into JSON).
    assert hamming_distance(one_bit, ones) == hamming_distance(ones, one_bit)
    assert type(hamming_distance(zeros, ones)) is int


def test_reuse_stays_close_and_an_unrelated_photo_is_far(
    base: np.ndarray, base_hashes: dict[str, np.ndarray], make_photo: Callable[..., np.ndarray]
) -> None:
    reference = base_hashes["phash"][0]
    half = np.asarray(Image.fromarray(base).resize((240, 180), Image.Resampling.BILINEAR))
    listings = {
        "base_jpeg-q30": jpeg_round_trip(base, 30),
        "base_resize-50": half,
        "base_resize-50_jpeg-q30": jpeg_round_trip(half, 30),
    }
    for name, listing in listings.items():
        distance = hamming_distance(reference, compute_hashes(listing, ("phash",))["phash"][0])
        assert distance <= 8, name
    unrelated = compute_hashes(make_photo(43), ("phash",))["phash"][0]
    assert hamming_distance(reference, unrelated) > 16
