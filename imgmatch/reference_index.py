"""What a check reads from the references: the `ReferenceIndex` protocol.

The detector depends on this and on nothing else of the catalog, so that any store of
references can serve checks: today's `Catalog`, a generation-pinned view of it, or a catalog
sharded over machines. Every implementation must pass `tests/test_reference_index.py`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog import DescriptorNeighbours, HashHit, Reference
from imgmatch.features import Keypoints
from imgmatch.hashing import PackedBits


class ReferenceIndex(Protocol):
    """The read side of a reference catalog, as a check uses it."""

    def search_hashes(self, hashes: dict[str, PackedBits], max_distance: int) -> list[HashHit]:
        """Every (reference, hasher, variant) within `max_distance` bits of a listing's codes;
        `variant` is the flip/rotation of the reference that matched (`hashing.DIHEDRALS`)."""
        ...

    def search_descriptors(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """The k nearest reference descriptors of every query descriptor, nearest first;
        reference id -1 where fewer than k exist."""
        ...

    def design_codes(self) -> NDArray[np.int64]:
        """A number per design, indexed by reference id (-1: no such reference). Two references
        share a number exactly when they share a design."""
        ...

    def get(self, reference_id: int) -> Reference:
        """The reference with this id, or `ReferenceNotFoundError`."""
        ...

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        """The keypoints of one feature view of a reference, row for row with the descriptors
        `search_descriptors` numbers; `ReferenceNotFoundError` where there is no such view."""
        ...
