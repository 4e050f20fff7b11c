"""A check reads the catalog at one generation, whatever a concurrent writer does meanwhile.

The writer here replaces a reference with an identical copy under a new id (what re-indexing a
moved file does). At every generation a check of a copy of it finds hash and keypoint evidence
on one reference; a check that read the old id in one stage and the new id in another would
find something else (the hash evidence on one id, the keypoint evidence on the other).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import imgmatch.detector
from imgmatch.catalog import Catalog, NewReference
from imgmatch.checking import CheckOptions, check_listings
from imgmatch.config import DetectorConfig
from imgmatch.detector import CheckResult, Detector
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.images import RGBImage, load_image
from imgmatch.sources import ListingInput

REFERENCE, OTHER = "D004_0.jpg", "D019_0.jpg"
# How long the test waits for a write it started in the middle of a check: long enough for
# one to finish when nothing holds it, short enough to wait out when the snapshot does.
WRITE_WAIT_S = 1.0


def _new_reference(fingerprint: Fingerprint, name: str, replaces: int | None = None) -> Any:
    sha256 = hashlib.sha256(name.encode()).hexdigest()
    return NewReference(fingerprint, f"refs/{name}", sha256, "D004", replaces=replaces)


def _evidence(result: CheckResult) -> list[dict[str, Any]]:
    """What a check found, without the ids and paths that a replacement renews."""
    return [
        {k: v for k, v in m.to_dict().items() if k not in ("reference_id", "reference_path")}
        for m in result.matches
    ]


@pytest.fixture
def setup(bundled_references: Path, tmp_path: Path) -> tuple[Catalog, Fingerprint, RGBImage]:
    fingerprinter = Fingerprinter(DetectorConfig())
    reference = fingerprinter.reference(load_image(bundled_references / REFERENCE))
    catalog = Catalog(tmp_path / "catalog")
    catalog.add(_new_reference(reference, "v0"))
    other = fingerprinter.reference(load_image(bundled_references / OTHER))
    catalog.add(NewReference(other, "refs/other", hashlib.sha256(b"o").hexdigest(), "D019"))
    listing = np.ascontiguousarray(load_image(bundled_references / REFERENCE)[4:, 3:])
    return catalog, reference, listing


class _Replacer:
    """Replaces the reference by an identical copy under a new id, in a thread of its own."""

    def __init__(self, catalog: Catalog, fingerprint: Fingerprint) -> None:
        self.catalog, self.fingerprint, self.version = catalog, fingerprint, 0
        self.threads: list[threading.Thread] = []

    def replace_once(self) -> None:
        current = self.catalog.find_by_path(f"refs/v{self.version}")[0].reference_id
        self.version += 1
        self.catalog.add(_new_reference(self.fingerprint, f"v{self.version}", current))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.replace_once)
        thread.start()
        self.threads.append(thread)
        return thread


def test_a_write_in_the_middle_of_a_check_is_not_seen_by_it(
    setup: tuple[Catalog, Fingerprint, RGBImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, reference, listing = setup
    detector = Detector(catalog)
    expected = _evidence(detector.check(listing, min_score=0.0))
    assert expected and expected[0]["hash_distance"] is not None and expected[0]["inliers"]
    replacer = _Replacer(catalog, reference)
    real_hash_evidence = imgmatch.detector.hash_evidence

    def hash_evidence_then_write(*args: Any, **kwargs: Any) -> Any:
        # The hash search is done; the replacement lands before the descriptor search, unless
        # the check's snapshot holds it off.
        replacer.start().join(WRITE_WAIT_S)
        return real_hash_evidence(*args, **kwargs)

    monkeypatch.setattr(imgmatch.detector, "hash_evidence", hash_evidence_then_write)
    during = _evidence(detector.check(listing, min_score=0.0))
    monkeypatch.undo()
    for thread in replacer.threads:
        thread.join()
    assert during == expected
    # The replacement is there once the check is over, with both kinds of evidence.
    after = detector.check(listing, min_score=0.0).matches[0]
    assert after.reference_path == "refs/v1"
    assert after.hash_distance is not None and after.inliers
    catalog.close()


def test_checks_while_a_writer_replaces_references_never_mix_generations(
    setup: tuple[Catalog, Fingerprint, RGBImage],
) -> None:
    catalog, reference, listing = setup
    detector = Detector(catalog)
    expected = _evidence(detector.check(listing, min_score=0.0))
    stop = threading.Event()
    seen: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []

    def check() -> None:
        try:
            while not stop.is_set():
                seen.append(_evidence(detector.check(listing, min_score=0.0)))
        except BaseException as exc:  # a crash in a thread is a failure under test
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    replacer = _Replacer(catalog, reference)
    # What a check finds at each generation, computed while no write runs: a new id can
    # reorder nearest-neighbour ties, so generations may differ slightly from each other.
    generations = [expected]
    for _ in range(12):
        replacer.replace_once()
        generations.append(_evidence(detector.check(listing, min_score=0.0)))
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    catalog.close()
    assert not any(thread.is_alive() for thread in threads), "a check hung"
    assert errors == []
    assert seen, "no check ran while the writer wrote"
    mixed = [evidence for evidence in seen if evidence not in generations]
    assert mixed == [], f"{len(mixed)} of {len(seen)} checks mixed two generations"


def test_a_batch_reads_one_generation_for_all_its_listings(
    setup: tuple[Catalog, Fingerprint, RGBImage],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch path searches every listing's descriptors at once, then verifies them one by
    one: a write between the two must not be seen by any of them."""
    catalog, reference, listing = setup
    path = tmp_path / "listing.png"
    Image.fromarray(listing).save(path)
    detector = Detector(catalog)
    expected = _evidence(detector.check(listing, min_score=0.0))
    listings = [ListingInput(path) for _ in range(3)]
    replacer = _Replacer(catalog, reference)
    real_search = Detector.search_descriptors

    def search_then_write(self: Detector, *args: Any) -> Any:
        found = real_search(self, *args)
        replacer.start().join(WRITE_WAIT_S)
        return found

    monkeypatch.setattr(Detector, "search_descriptors", search_then_write)
    options = CheckOptions(workers=1, min_score=0.0)
    results = [item.result for item in check_listings(detector, listings, options)]
    for thread in replacer.threads:
        thread.join()
    assert [_evidence(result) for result in results] == [expected] * 3
    catalog.close()
