"""Every FAISS id layout decodes to what was encoded, for every value the layout allows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgmatch.catalog.ids import (
    MAX_HASH_VARIANT,
    MAX_KEYPOINTS_PER_VIEW,
    MAX_REFERENCE_ID,
    MAX_VIEW,
    descriptor_id,
    descriptor_ids,
    hash_entry_id,
    hash_entry_ids,
    split_descriptor_label,
    split_descriptor_labels,
    split_hash_label,
)

reference_ids = st.integers(1, MAX_REFERENCE_ID)
views = st.integers(0, MAX_VIEW)
keypoints = st.integers(0, MAX_KEYPOINTS_PER_VIEW)
variants = st.integers(0, MAX_HASH_VARIANT)


@given(reference_ids, variants)
def test_a_hash_entry_id_decodes_to_its_reference_and_variant(reference: int, variant: int) -> None:
    label = hash_entry_id(reference, variant)
    assert 0 <= label <= np.iinfo(np.int64).max
    assert split_hash_label(label) == (reference, variant)
    assert int(hash_entry_ids(reference, MAX_HASH_VARIANT + 1)[variant]) == label


@given(reference_ids, views, keypoints)
def test_a_descriptor_id_decodes_to_its_reference_view_and_keypoint(
    reference: int, view: int, keypoint: int
) -> None:
    label = descriptor_id(reference, view, keypoint)
    assert 0 <= label <= np.iinfo(np.int64).max
    assert split_descriptor_label(label) == (reference, view, keypoint)
    found = split_descriptor_labels(np.array([label, -1], dtype=np.int64))
    assert [int(column[0]) for column in found] == [reference, view, keypoint]
    assert [int(column[1]) for column in found] == [-1, -1, -1]


@given(reference_ids, views, st.integers(0, 64))
def test_a_views_ids_are_its_keypoints_in_order(reference: int, view: int, count: int) -> None:
    labels = descriptor_ids(reference, view, count)
    assert labels.tolist() == [descriptor_id(reference, view, k) for k in range(count)]


@given(st.tuples(reference_ids, views, keypoints), st.tuples(reference_ids, views, keypoints))
def test_different_descriptors_never_share_an_id(
    first: tuple[int, int, int], second: tuple[int, int, int]
) -> None:
    assert (descriptor_id(*first) == descriptor_id(*second)) == (first == second)


@pytest.mark.parametrize(
    ("reference", "view", "keypoint"),
    [(MAX_REFERENCE_ID + 1, 0, 0), (1, MAX_VIEW + 1, 0), (1, 0, MAX_KEYPOINTS_PER_VIEW + 1)],
)
def test_a_field_too_large_for_its_bits_is_refused(
    reference: int, view: int, keypoint: int
) -> None:
    with pytest.raises(ValueError, match="outside"):
        descriptor_id(reference, view, keypoint)
    with pytest.raises(ValueError, match="outside"):
        hash_entry_id(reference if reference > MAX_REFERENCE_ID else 1, MAX_HASH_VARIANT + 1)
