"""The integers FAISS stores for the catalog, and what they mean.

A hash entry carries `reference_id << 3 | variant` (which of the 8 flips/rotations of the
reference it hashes); a descriptor carries `reference_id << 20 | view << 16 | keypoint`.
Removing a reference never renumbers another.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

KEYPOINT_BITS = 16
VIEW_BITS = 4
REFERENCE_SHIFT = KEYPOINT_BITS + VIEW_BITS
HASH_VARIANT_BITS = 3
# Ids are int64: reference ids must leave room for the view and keypoint bits.
MAX_REFERENCE_ID = (1 << (63 - REFERENCE_SHIFT)) - 1
MAX_KEYPOINTS_PER_VIEW = (1 << KEYPOINT_BITS) - 1


def descriptor_id(reference_id: int, view: int, keypoint: int) -> int:
    """The FAISS id of one reference descriptor."""
    return (reference_id << REFERENCE_SHIFT) | (view << KEYPOINT_BITS) | keypoint


def descriptor_ids(reference_id: int, view: int, count: int) -> NDArray[np.int64]:
    """The FAISS ids of a view's `count` descriptors, in keypoint order."""
    return descriptor_id(reference_id, view, 0) + np.arange(count, dtype=np.int64)


def hash_entry_ids(reference_id: int, variants: int) -> NDArray[np.int64]:
    """The FAISS ids of a reference's first `variants` hash variants."""
    return (reference_id << HASH_VARIANT_BITS) + np.arange(variants, dtype=np.int64)


def split_hash_label(label: int) -> tuple[int, int]:
    """(reference id, variant) of a hash entry's FAISS id."""
    return label >> HASH_VARIANT_BITS, label & ((1 << HASH_VARIANT_BITS) - 1)


def split_descriptor_labels(
    labels: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(reference ids, views, keypoints) of descriptor FAISS ids; -1 where a label is -1."""
    valid = labels >= 0
    reference_ids = np.where(valid, labels >> REFERENCE_SHIFT, -1)
    views = np.where(valid, (labels >> KEYPOINT_BITS) & ((1 << VIEW_BITS) - 1), -1)
    keypoints = np.where(valid, labels & ((1 << KEYPOINT_BITS) - 1), -1)
    return reference_ids, views, keypoints
