"""A generation-pinned view of the catalog: what one check (or one batch of checks) reads.

A check reads the references several times: hash search, descriptor search, design numbers,
references and keypoints. Read from the catalog directly, each read sees whatever generation
is current at that moment, so a reference added or removed meanwhile could be found by one
read and be missing from the next. A `CatalogView` answers every read at one generation: the
search indexes are held at it (writers wait until the view is closed) and the database is read
in one read transaction that began at it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.records import DescriptorNeighbours, HashHit, Reference
from imgmatch.catalog.rows import read_designs, read_keypoints, read_reference
from imgmatch.features import Keypoints
from imgmatch.hashing import PackedBits

if TYPE_CHECKING:
    from imgmatch.catalog.indexes import SearchIndexes
    from imgmatch.catalog.store import Store


class CatalogView:
    """The catalog at one generation, as a `ReferenceIndex`. Made by `Catalog.snapshot()`;
    valid until that block ends, for one thread at a time."""

    def __init__(
        self,
        generation: int,
        store: Store,
        db: sqlite3.Connection,
        indexes: SearchIndexes,
        design_codes: Callable[[CatalogView], NDArray[np.int64]],
    ) -> None:
        self.generation = generation
        self._store = store
        self._db = db
        self._indexes = indexes
        self._design_codes = design_codes

    def search_hashes(self, hashes: dict[str, PackedBits], max_distance: int) -> list[HashHit]:
        """Every (reference, hasher, variant) within `max_distance` bits of a listing's codes."""
        return self._indexes.hashes_near(hashes, max_distance)

    def search_descriptors(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """The k nearest reference descriptors of every query descriptor, in one FAISS call."""
        return self._indexes.descriptor_neighbours(descriptors, k)

    def design_codes(self) -> NDArray[np.int64]:
        """A number per design, indexed by reference id (-1: no such reference); shared by the
        views of one generation (do not modify the array)."""
        return self._design_codes(self)

    def designs(self) -> list[tuple[int, str]]:
        """(reference id, design) of every reference at this generation."""
        with self._store.recording():
            return read_designs(self._db)

    def get(self, reference_id: int) -> Reference:
        """The reference with this id, or `ReferenceNotFoundError`."""
        with self._store.recording():
            return read_reference(self._db, self._store.path, reference_id)

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        """The stored keypoints of one view of a reference (for geometric verification)."""
        with self._store.recording():
            return read_keypoints(self._db, self._store.path, reference_id, view)


def number_designs(rows: list[tuple[int, str]]) -> NDArray[np.int64]:
    """A number per design, indexed by reference id (-1: no such reference)."""
    size = max((reference_id for reference_id, _ in rows), default=-1) + 1
    codes = np.full(size, -1, dtype=np.int64)
    numbers: dict[str, int] = {}
    for reference_id, design in rows:
        codes[reference_id] = numbers.setdefault(design, len(numbers))
    return codes
