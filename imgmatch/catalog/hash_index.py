"""The index of one hasher's codes: exact Hamming range search over every stored variant.

FAISS holds the codes under `ids.hash_entry_id`s; this wrapper takes and returns reference ids
and variants, and is built for the width of its hasher's codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.ids import MAX_HASH_VARIANT, hash_entry_ids, split_hash_label
from imgmatch.hashing import HASH_BITS, HASHERS, PackedBits


def hasher_bits(name: str) -> int:
    """The width of a hasher's codes. A hasher this imgmatch does not know (stored by another
    version) is taken at the width every hasher has had so far; no listing searches it."""
    hasher = HASHERS.get(name)
    return HASH_BITS if hasher is None else hasher.bits


class HashIndex:
    """Exact index of one hasher's codes, keyed by (reference id, variant)."""

    def __init__(self, bits: int, index: Any = None) -> None:
        self.bits = bits
        self.faiss: Any = index if index is not None else self._new(bits)

    @staticmethod
    def _new(bits: int) -> Any:
        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))

    @classmethod
    def from_codes(cls, bits: int, rows: Sequence[tuple[int, bytes]]) -> HashIndex:
        """An index of stored (reference id, code) rows; a code holds one hash per variant."""
        index = cls(bits)
        code_bytes = bits // 8
        if rows:
            ids = [hash_entry_ids(rid, len(code) // code_bytes) for rid, code in rows]
            codes = np.frombuffer(b"".join(code for _, code in rows), np.uint8)
            index.faiss.add_with_ids(codes.reshape(-1, code_bytes), np.concatenate(ids))
        return index

    @property
    def size(self) -> int:
        """How many codes (variants) it holds."""
        return int(self.faiss.ntotal)

    def add(self, reference_id: int, codes: PackedBits) -> None:
        """Index a reference's codes, one row per variant."""
        rows = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.bits // 8)
        self.faiss.add_with_ids(rows, hash_entry_ids(reference_id, len(rows)))

    def remove(self, reference_ids: Sequence[int]) -> None:
        """Take every variant of these references out (one scan of the index for all)."""
        variants = MAX_HASH_VARIANT + 1
        ids = [hash_entry_ids(rid, variants) for rid in reference_ids]
        if ids:
            self.faiss.remove_ids(np.concatenate(ids))

    def within(self, codes: PackedBits, max_distance: int) -> list[tuple[int, int, int]]:
        """(reference id, variant, distance in bits) of every stored code within `max_distance`
        bits of any of `codes`."""
        if self.size == 0:
            return []
        # range_search is strict (<): +1 includes the threshold itself.
        _, distances, labels = self.faiss.range_search(
            np.ascontiguousarray(codes, dtype=np.uint8), max_distance + 1
        )
        # FAISS returns the bit counts as float32; a distance is a whole number.
        bit_counts: NDArray[np.int64] = distances.astype(np.int64)
        return [
            (*split_hash_label(label), distance)
            for label, distance in zip(labels.tolist(), bit_counts.tolist(), strict=True)
        ]


def hash_indexes_from_rows(rows: Sequence[tuple[int, str, bytes]]) -> dict[str, HashIndex]:
    """One index per hasher from stored (reference id, hasher, code) rows."""
    by_hasher: dict[str, list[tuple[int, bytes]]] = {}
    for reference_id, hasher, code in rows:
        by_hasher.setdefault(hasher, []).append((reference_id, code))
    return {
        name: HashIndex.from_codes(hasher_bits(name), codes) for name, codes in by_hasher.items()
    }
