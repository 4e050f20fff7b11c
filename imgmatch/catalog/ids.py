"""The integers FAISS stores for the catalog, and what they mean.

Every id layout has an encoder and a decoder, side by side, and a round-trip test:

- a hash entry: `reference_id << 3 | variant` (which of the 8 flips/rotations of the reference
  it hashes): `hash_entry_id` / `split_hash_label`;
- a descriptor: `reference_id << 20 | view << 16 | keypoint`: `descriptor_id` /
  `split_descriptor_label` (and `descriptor_ids` / `split_descriptor_labels` for arrays).

Removing a reference never renumbers another.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

KEYPOINT_BITS = 16
VIEW_BITS = 4
REFERENCE_SHIFT = KEYPOINT_BITS + VIEW_BITS
HASH_VARIANT_BITS = 3
# Ids are int64 and -1 means "none": reference ids must leave room for the view and keypoint
# bits without reaching the sign bit.
MAX_REFERENCE_ID = (1 << (63 - REFERENCE_SHIFT)) - 1
MAX_VIEW = (1 << VIEW_BITS) - 1
MAX_KEYPOINTS_PER_VIEW = (1 << KEYPOINT_BITS) - 1
MAX_HASH_VARIANT = (1 << HASH_VARIANT_BITS) - 1


def _check_field(name: str, value: int, largest: int) -> None:
    # A field out of range would silently run into its neighbour's bits: a bug, not bad input.
    if not 0 <= value <= largest:
        raise ValueError(f"{name} {value} is outside 0..{largest}")


def hash_entry_id(reference_id: int, variant: int) -> int:
    """The FAISS id of one hash variant of a reference."""
    _check_field("reference id", reference_id, MAX_REFERENCE_ID)
    _check_field("hash variant", variant, MAX_HASH_VARIANT)
    return (reference_id << HASH_VARIANT_BITS) | variant


def hash_entry_ids(reference_id: int, variants: int) -> NDArray[np.int64]:
    """The FAISS ids of a reference's first `variants` hash variants."""
    return hash_entry_id(reference_id, 0) + np.arange(variants, dtype=np.int64)


def split_hash_label(label: int) -> tuple[int, int]:
    """(reference id, variant) of a hash entry's FAISS id."""
    return label >> HASH_VARIANT_BITS, label & MAX_HASH_VARIANT


def descriptor_id(reference_id: int, view: int, keypoint: int) -> int:
    """The FAISS id of one reference descriptor."""
    _check_field("reference id", reference_id, MAX_REFERENCE_ID)
    _check_field("view", view, MAX_VIEW)
    _check_field("keypoint", keypoint, MAX_KEYPOINTS_PER_VIEW)
    return (reference_id << REFERENCE_SHIFT) | (view << KEYPOINT_BITS) | keypoint


def split_descriptor_label(label: int) -> tuple[int, int, int]:
    """(reference id, view, keypoint) of a descriptor's FAISS id."""
    return (
        label >> REFERENCE_SHIFT,
        (label >> KEYPOINT_BITS) & MAX_VIEW,
        label & MAX_KEYPOINTS_PER_VIEW,
    )


def descriptor_ids(reference_id: int, view: int, count: int) -> NDArray[np.int64]:
    """The FAISS ids of a view's `count` descriptors, in keypoint order."""
    return descriptor_id(reference_id, view, 0) + np.arange(count, dtype=np.int64)


def split_descriptor_labels(
    labels: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """(reference ids, views, keypoints) of descriptor FAISS ids; -1 where a label is -1."""
    valid = labels >= 0
    reference_ids = np.where(valid, labels >> REFERENCE_SHIFT, -1)
    views = np.where(valid, (labels >> KEYPOINT_BITS) & MAX_VIEW, -1)
    keypoints = np.where(valid, labels & MAX_KEYPOINTS_PER_VIEW, -1)
    return reference_ids, views, keypoints
