"""The contract of `ReferenceIndex`, what a check reads from the references, run over every
implementation: a new one (a pinned view, a sharded catalog) is added to IMPLEMENTATIONS and
must pass the same tests. And the detector reads the references through it and nothing else."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgmatch.catalog import Catalog, CatalogView, NewReference
from imgmatch.config import DetectorConfig
from imgmatch.detector import Detector
from imgmatch.errors import ReferenceNotFoundError
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.hashing import DIHEDRALS
from imgmatch.images import load_image
from imgmatch.reference_index import ReferenceIndex

# (file, design): two photos of one design (the second a crop of the first), and two others.
STORED = (("D000_0.jpg", "D000"), ("D000_0.jpg#crop", "D000"), ("D004_0.jpg", "D004"))
STORED += (("D019_0.jpg", "D019"),)
PROTOCOL_METHODS = {"search_hashes", "search_descriptors", "design_codes", "get", "keypoints"}


@dataclass(frozen=True)
class Stored:
    """What an implementation was given for one reference, and the id it assigned."""

    reference_id: int
    design: str
    fingerprint: Fingerprint


# Makes an implementation holding the entries: (the index, the ids it assigned, its teardown).
Factory = Callable[
    [Path, list[tuple[str, str, Fingerprint]]], tuple[Any, list[int], Callable[[], None]]
]


def catalog_index(
    directory: Path, entries: list[tuple[str, str, Fingerprint]]
) -> tuple[Catalog, list[int]]:
    """Today's catalog: SQLite and FAISS in a folder."""
    catalog = Catalog(directory)
    ids = []
    for path, design, fingerprint in entries:
        sha256 = hashlib.sha256(path.encode()).hexdigest()
        entry = NewReference(fingerprint, path, sha256, design)
        ids.append(catalog.add(entry).reference.reference_id)
    return catalog, ids


def catalog(
    directory: Path, entries: list[tuple[str, str, Fingerprint]]
) -> tuple[Catalog, list[int], Callable[[], None]]:
    index, ids = catalog_index(directory, entries)
    return index, ids, index.close


def snapshot(
    directory: Path, entries: list[tuple[str, str, Fingerprint]]
) -> tuple[CatalogView, list[int], Callable[[], None]]:
    """A view of the catalog pinned at the generation the entries made."""
    index, ids = catalog_index(directory, entries)
    stack = contextlib.ExitStack()
    stack.callback(index.close)
    return stack.enter_context(index.snapshot()), ids, stack.close


IMPLEMENTATIONS: dict[str, Factory] = {"catalog": catalog, "snapshot": snapshot}


@pytest.fixture(scope="module")
def fingerprints(bundled_references: Path) -> list[tuple[str, str, Fingerprint]]:
    fingerprinter = Fingerprinter(DetectorConfig())
    entries = []
    for name, design in STORED:
        image = load_image(bundled_references / name.split("#")[0])
        if name.endswith("#crop"):
            height, width = image.shape[:2]
            image = np.ascontiguousarray(image[height // 4 :, : width * 3 // 4])
        entries.append((name, design, fingerprinter.reference(image)))
    return entries


@pytest.fixture(scope="module", params=sorted(IMPLEMENTATIONS))
def implementation(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fingerprints: list[tuple[str, str, Fingerprint]],
) -> Iterator[tuple[ReferenceIndex, list[Stored]]]:
    make = IMPLEMENTATIONS[request.param]
    index, ids, close = make(tmp_path_factory.mktemp("index"), fingerprints)
    stored = [
        Stored(rid, design, fingerprint)
        for rid, (_, design, fingerprint) in zip(ids, fingerprints, strict=True)
    ]
    yield index, stored
    close()


def test_every_variant_of_a_references_hashes_finds_it_at_zero_bits(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    for reference in stored:
        hashes = reference.fingerprint.hashes
        for variant in range(len(DIHEDRALS)):
            query = {name: codes[variant : variant + 1] for name, codes in hashes.items()}
            hits = index.search_hashes(query, 4)
            assert all(0 <= hit.distance <= 4 for hit in hits)
            found = {
                (h.hasher, h.variant) for h in hits if h.reference_id == reference.reference_id
            }
            exact = {(h.hasher, h.variant) for h in hits if h.distance == 0}
            assert {(name, variant) for name in hashes} <= found & exact


def test_hash_search_stops_at_its_radius(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    reference = stored[3]
    query = {name: codes[:1].copy() for name, codes in reference.fingerprint.hashes.items()}
    for codes in query.values():
        codes[0, :3] ^= np.uint8(0x80)  # 3 bits flipped, one in each of the first 3 bytes

    def distance_to_variant_0(radius: int) -> set[int]:
        hits = index.search_hashes(query, radius)
        return {
            h.distance for h in hits if (h.reference_id, h.variant) == (reference.reference_id, 0)
        }

    assert distance_to_variant_0(2) == set()
    assert distance_to_variant_0(3) == {3}


def test_a_references_own_descriptors_are_their_nearest_neighbours(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    by_id = {s.reference_id: s for s in stored}
    for reference in stored:
        for view in reference.fingerprint.views:
            queries = view.descriptors[::7]
            found = index.search_descriptors(queries, 3)
            assert found.distances.shape == found.reference_ids.shape == (len(queries), 3)
            assert found.views.shape == found.keypoints.shape == (len(queries), 3)
            assert (found.distances[:, 0] == 0).all()
            assert (np.diff(found.distances, axis=1) >= 0).all()
            for row, query in enumerate(queries):
                owner = by_id[int(found.reference_ids[row, 0])]
                stored_view = owner.fingerprint.views[int(found.views[row, 0])]
                assert np.array_equal(stored_view.descriptors[found.keypoints[row, 0]], query)


def test_no_queries_give_no_rows(implementation: tuple[ReferenceIndex, list[Stored]]) -> None:
    index, _ = implementation
    found = index.search_descriptors(np.empty((0, 32), np.uint8), 5)
    assert found.reference_ids.shape == found.distances.shape == (0, 5)


def test_design_codes_are_equal_exactly_for_equal_designs(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    codes = index.design_codes()
    for first in stored:
        assert codes[first.reference_id] >= 0
        for second in stored:
            same_code = codes[first.reference_id] == codes[second.reference_id]
            assert same_code == (first.design == second.design)
    unknown = max(s.reference_id for s in stored) + 1000
    assert unknown >= len(codes) or codes[unknown] == -1


def test_get_gives_the_reference_or_a_typed_error(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    for reference in stored:
        found = index.get(reference.reference_id)
        assert (found.reference_id, found.design) == (reference.reference_id, reference.design)
        assert (found.width, found.height) == (
            reference.fingerprint.width,
            reference.fingerprint.height,
        )
    with pytest.raises(ReferenceNotFoundError):
        index.get(max(s.reference_id for s in stored) + 1000)


def test_keypoints_are_each_views_own_or_a_typed_error(
    implementation: tuple[ReferenceIndex, list[Stored]],
) -> None:
    index, stored = implementation
    for reference in stored:
        for view, features in enumerate(reference.fingerprint.views):
            keypoints = index.keypoints(reference.reference_id, view)
            assert np.array_equal(keypoints, features.keypoints)
        with pytest.raises(ReferenceNotFoundError):
            index.keypoints(reference.reference_id, len(reference.fingerprint.views))
    with pytest.raises(ReferenceNotFoundError):
        index.keypoints(max(s.reference_id for s in stored) + 1000, 0)


class _OnlyTheProtocol:
    """Forwards the protocol's methods to an index and records their names; has nothing else."""

    def __init__(self, index: ReferenceIndex) -> None:
        self._index = index
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name not in PROTOCOL_METHODS:
            raise AttributeError(name)
        self.called.add(name)
        return getattr(self._index, name)


def test_a_check_reads_the_references_only_through_the_index(
    bundled_references: Path,
    tmp_path: Path,
    fingerprints: list[tuple[str, str, Fingerprint]],
) -> None:
    catalog, _ = catalog_index(tmp_path / "catalog", fingerprints)
    proxy = _OnlyTheProtocol(catalog)
    listing = load_image(bundled_references / "D004_0.jpg")[40:, 30:]
    result = Detector(catalog, index=proxy).check(listing, min_score=0.0)  # type: ignore[arg-type]
    assert result.matches and result.matches[0].design == "D004"
    assert proxy.called == PROTOCOL_METHODS
    direct = Detector(catalog).check(listing, min_score=0.0)
    assert [m.to_dict() for m in result.matches] == [m.to_dict() for m in direct.matches]
    catalog.close()
