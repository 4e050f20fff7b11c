"""The typed wrappers around the FAISS indexes: a hash index is as wide as its hasher's codes,
and the descriptor index answers in (reference, view, keypoint), never in raw FAISS ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imgmatch.catalog import Catalog, NewReference
from imgmatch.catalog.descriptor_index import DescriptorIndex
from imgmatch.catalog.hash_index import HashIndex
from imgmatch.config import DetectorConfig, SearchConfig
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.hashing import DIHEDRALS, HASHERS
from imgmatch.images import RGBImage

WIDE_BITS = 128


@pytest.fixture(scope="module")
def reference(make_photo: Callable[..., RGBImage]) -> Fingerprint:
    photo = make_photo(7)
    return Fingerprinter(DetectorConfig()).reference(photo)


def test_a_hasher_with_wider_codes_gets_an_index_as_wide(
    reference: Fingerprint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(HASHERS, "wide", replace(HASHERS["phash"], name="wide", bits=WIDE_BITS))
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (len(DIHEDRALS), WIDE_BITS // 8), dtype=np.uint8)
    fingerprint = replace(reference, hashes={**reference.hashes, "wide": wide})
    catalog = Catalog(tmp_path / "cat")
    sha256 = hashlib.sha256(b"wide").hexdigest()
    stored = catalog.add(NewReference(fingerprint, "refs/wide.jpg", sha256, "W")).reference
    near = wide[2:3].copy()
    near[0, -1] ^= np.uint8(0b111)  # 3 bits flipped in the last byte: past a 64-bit code

    def found(store: Catalog, radius: int) -> set[tuple[int, int, int]]:
        hits = store.search_hashes({"wide": near}, radius)
        return {(h.reference_id, h.variant, h.distance) for h in hits}

    assert found(catalog, 2) == set()
    assert found(catalog, 3) == {(stored.reference_id, 2, 3)}
    catalog.close()
    reopened = Catalog(tmp_path / "cat", create=False)
    assert reopened.index_source == "loaded"
    assert found(reopened, 3) == {(stored.reference_id, 2, 3)}
    assert reopened.verify() == []
    reopened.close()


def test_a_hash_index_removes_every_variant_of_a_reference(reference: Fingerprint) -> None:
    codes = reference.hashes["phash"]
    index = HashIndex(HASHERS["phash"].bits)
    index.add(5, codes)
    index.add(6, codes[:1])
    assert index.size == len(codes) + 1
    index.remove([5])
    assert {(rid, variant) for rid, variant, _ in index.within(codes, 0)} == {(6, 0)}


def test_the_descriptor_index_answers_in_references_views_and_keypoints(
    reference: Fingerprint,
) -> None:
    empty = np.empty((0, 32), np.uint8)
    index = DescriptorIndex.build(SearchConfig(), empty, np.empty(0, np.int64))
    for view, features in enumerate(reference.views):
        index.add(9, view, features.descriptors)
    index.add(4, 0, reference.views[0].descriptors[:10])
    assert index.kind == "flat"
    queries = reference.views[-1].descriptors[20:30]
    found = index.nearest(queries, 1)
    assert (found.distances[:, 0] == 0).all()
    assert found.reference_ids[:, 0].tolist() == [9] * 10
    assert found.views[:, 0].tolist() == [len(reference.views) - 1] * 10
    assert found.keypoints[:, 0].tolist() == list(range(20, 30))
    index.remove([(9, [(view, len(f)) for view, f in enumerate(reference.views)])])
    assert index.size == 10
    assert set(index.nearest(queries, 1).reference_ids[:, 0].tolist()) == {4}
