"""Synthetic reference fingerprints for catalog-scale runs, made by perturbing real ones.

Only 32 real references ship with imgmatch; a 10,000-reference catalog is filled with
fingerprints derived from them. Each synthetic reference copies the features of one real
reference with bits of every descriptor flipped and every keypoint jittered, and a hash code
with enough bits flipped to be no near-duplicate of any real one. They are stored with the path
`synthetic:N` and the design `synthetic-N`, so no figure can mistake them for real photos.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog import Catalog, NewReference
from imgmatch.features import DESCRIPTOR_BYTES, FeatureSet
from imgmatch.fingerprint import Fingerprint
from imgmatch.hashing import HASH_BITS

SYNTHETIC_PREFIX = "synthetic"
# Masks are drawn from a fixed pool: drawing 256 random bits per descriptor for millions of
# descriptors would dominate the benchmark's own runtime.
_MASK_POOL_SIZE = 1 << 16


@dataclass(frozen=True)
class SyntheticSpec:
    """How far a synthetic reference lies from the real one it was made from.

    With 32 of 256 descriptor bits flipped a synthetic descriptor is still closer to its source
    than descriptors of unrelated photos are (typically 90+ bits), so synthetic references do
    attract votes and make search and verification work: a pessimistic catalog. Only a few
    flipped bits would make them near-duplicates of one real design, which the cross-design
    ratio test then rejects, hiding every true match.
    """

    descriptor_flip_bits: int = 32
    hash_flip_bits: int = 24
    keypoint_jitter_px: float = 2.0
    # Masks are drawn from a pool this large (small pools: fast tiny runs in tests).
    mask_pool_size: int = _MASK_POOL_SIZE


def _bit_masks(rng: np.random.Generator, count: int, bits: int, flips: int) -> NDArray[np.uint8]:
    """`count` packed masks of `bits` bits with exactly `flips` bits set each."""
    order = np.argsort(rng.random((count, bits)), axis=1)[:, :flips]
    dense = np.zeros((count, bits), dtype=np.uint8)
    np.put_along_axis(dense, order, 1, axis=1)
    return np.packbits(dense, axis=1)


def synthetic_masks(rng: np.random.Generator, spec: SyntheticSpec) -> NDArray[np.uint8]:
    """The pool of packed descriptor masks with `spec.descriptor_flip_bits` of 256 bits set."""
    return _bit_masks(rng, spec.mask_pool_size, DESCRIPTOR_BYTES * 8, spec.descriptor_flip_bits)


class SyntheticFactory:
    """Makes synthetic fingerprints from a list of real ones, reproducibly from a seed."""

    def __init__(
        self, real: Sequence[Fingerprint], seed: int, spec: SyntheticSpec | None = None
    ) -> None:
        if not real:
            raise ValueError("synthetic fingerprints need at least one real fingerprint")
        self.real = list(real)
        self.spec = spec or SyntheticSpec()
        self._rng = np.random.default_rng(seed)
        self._descriptor_masks = synthetic_masks(self._rng, self.spec)
        self._hash_masks = _bit_masks(self._rng, 4096, HASH_BITS, self.spec.hash_flip_bits)

    def fingerprint(self) -> Fingerprint:
        """One synthetic fingerprint, from a randomly chosen real one."""
        rng = self._rng
        base = self.real[int(rng.integers(len(self.real)))]
        views = []
        for view in base.views:
            count = len(view)
            masks = self._descriptor_masks[rng.integers(len(self._descriptor_masks), size=count)]
            keypoints = view.keypoints.copy()
            keypoints[:, :2] += rng.normal(0.0, self.spec.keypoint_jitter_px, (count, 2))
            keypoints[:, 0] = np.clip(keypoints[:, 0], 0, base.width - 1)
            keypoints[:, 1] = np.clip(keypoints[:, 1], 0, base.height - 1)
            views.append(FeatureSet(keypoints, np.bitwise_xor(view.descriptors, masks)))
        hashes = {
            name: np.bitwise_xor(codes, self._hash_masks[rng.integers(len(self._hash_masks))])
            for name, codes in base.hashes.items()
        }
        return Fingerprint(base.width, base.height, hashes, tuple(views), base.signature)

    def references(self, start: int, count: int) -> Iterator[NewReference]:
        """`count` synthetic catalog entries numbered from `start`."""
        for number in range(start, start + count):
            label = f"{SYNTHETIC_PREFIX}:{number}"
            yield NewReference(
                fingerprint=self.fingerprint(),
                path=label,
                sha256=hashlib.sha256(label.encode()).hexdigest(),
                design=f"{SYNTHETIC_PREFIX}-{number}",
                metadata={"synthetic": "true"},
            )


def grow_catalog(
    catalog: Catalog, factory: SyntheticFactory, target: int, batch_size: int = 2000
) -> int:
    """Add synthetic references until the catalog holds `target`; returns how many were added."""
    added = 0
    while (have := catalog.count()) < target:
        batch = min(batch_size, target - have)
        catalog.add_many(list(factory.references(have, batch)))
        added += batch
    return added
