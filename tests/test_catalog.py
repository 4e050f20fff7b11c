"""The catalog: persistence round-trips, index caches that heal, stable ids, safe concurrency."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imgmatch.bench.samples import generated_photo
from imgmatch.catalog import Catalog, NewReference, resolve_catalog_dir
from imgmatch.catalog.descriptor_index import search_in_list_order
from imgmatch.config import DetectorConfig, SearchConfig
from imgmatch.errors import CatalogError, ReferenceNotFoundError
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.images import RGBImage


def textured(seed: int) -> RGBImage:
    return generated_photo(np.random.default_rng(seed), (480, 360))


def entry(fingerprint: Fingerprint, name: str, design: str | None = None) -> NewReference:
    return NewReference(
        fingerprint=fingerprint,
        path=f"refs/{name}.jpg",
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        design=design or name,
        brand="Atelier Exemple",
        metadata={"family": "test"},
    )


@pytest.fixture(scope="module")
def fingerprints() -> list[Fingerprint]:
    fingerprinter = Fingerprinter(DetectorConfig())
    return [fingerprinter.reference(textured(seed)) for seed in range(6)]


def search_snapshot(catalog: Catalog, queries: list[Fingerprint]) -> list[object]:
    """Everything a check depends on, for comparing catalogs."""
    snapshot: list[object] = []
    for query in queries:
        hits = catalog.search_hashes({k: v for k, v in query.hashes.items()}, 10)
        neighbours = catalog.search_descriptors(query.features.descriptors, 3)
        snapshot.append(sorted((h.reference_id, h.hasher, h.variant, h.distance) for h in hits))
        snapshot.append(neighbours.reference_ids.tolist())
        snapshot.append(neighbours.distances.tolist())
    return snapshot


def test_catalog_dir_resolution_follows_c1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IMGMATCH_CATALOG", raising=False)
    assert resolve_catalog_dir(None) == Path("imgmatch-data")
    monkeypatch.setenv("IMGMATCH_CATALOG", str(tmp_path / "env"))
    assert resolve_catalog_dir(None) == tmp_path / "env"
    assert resolve_catalog_dir(tmp_path / "flag") == tmp_path / "flag"


def test_add_get_and_readd_same_file_is_a_noop(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    with Catalog(tmp_path / "cat") as catalog:
        first = catalog.add(entry(fingerprints[0], "love"))
        again = catalog.add(entry(fingerprints[0], "love"))
        assert first.added and not again.added
        assert again.reference.reference_id == first.reference.reference_id
        assert catalog.count() == 1
        stored = catalog.get(first.reference.reference_id)
        assert (stored.design, stored.brand, stored.metadata) == (
            "love",
            "Atelier Exemple",
            {"family": "test"},
        )


def test_restart_gives_identical_search_results(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    with Catalog(tmp_path / "cat") as catalog:
        catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints)])
        before = search_snapshot(catalog, fingerprints)
    reopened = Catalog(tmp_path / "cat")
    assert reopened.index_source == "loaded"
    assert search_snapshot(reopened, fingerprints) == before
    assert reopened.verify() == []
    reopened.close()


@pytest.mark.parametrize(
    ("damage", "name", "source"),
    [
        ("delete", "descriptors", "rebuilt"),
        ("truncate", "descriptors", "rebuilt"),
        ("garble", "descriptors", "rebuilt"),
        # A hash index alone is rebuilt; the (trained, far larger) descriptor index is kept.
        ("garble", "phash", "rebuilt hash indexes"),
    ],
)
def test_damaged_index_file_is_rebuilt_with_identical_results(
    tmp_path: Path, fingerprints: list[Fingerprint], damage: str, name: str, source: str
) -> None:
    with Catalog(tmp_path / "cat") as catalog:
        catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints)])
        before = search_snapshot(catalog, fingerprints)
    index_file = tmp_path / "cat" / f"{name}.faiss"
    if damage == "delete":
        index_file.unlink()
    elif damage == "truncate":
        index_file.write_bytes(index_file.read_bytes()[:100])
    else:
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
    with Catalog(tmp_path / "cat") as healed:
        assert healed.index_source == source
        assert search_snapshot(healed, fingerprints) == before
    with Catalog(tmp_path / "cat") as again:
        assert again.index_source == "loaded"


def test_crash_before_flush_leaves_a_consistent_catalog(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    catalog = Catalog(tmp_path / "cat")
    catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints[:3])])
    catalog.flush()
    catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints[3:], 3)])
    expected = search_snapshot(catalog, fingerprints)
    # No close(): the index files on disk are a generation behind, as after a kill -9.
    recovered = Catalog(tmp_path / "cat")
    assert recovered.index_source == "rebuilt"
    assert recovered.count() == 6
    assert search_snapshot(recovered, fingerprints) == expected
    recovered.close()


def test_remove_keeps_every_other_result_and_id(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    with Catalog(tmp_path / "cat") as catalog:
        ids = _add_all(catalog, fingerprints)
        removed = ids[2]
        catalog.remove(removed)
        with pytest.raises(ReferenceNotFoundError):
            catalog.get(removed)
        with pytest.raises(ReferenceNotFoundError):
            catalog.remove(removed)
        after = search_snapshot(catalog, fingerprints)
        assert removed not in np.asarray(
            catalog.search_descriptors(fingerprints[2].features.descriptors, 3).reference_ids
        )
        assert [r.reference_id for r in catalog.references()] == [i for i in ids if i != removed]
    # A catalog built without the removed reference answers the same for everything else.
    with Catalog(tmp_path / "fresh") as fresh:
        fresh.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints) if i != 2])
        fresh_snapshot = search_snapshot(fresh, fingerprints)
    assert _strip_ids(after) == _strip_ids(fresh_snapshot)


def test_remove_many_removes_all_at_once_and_passes_over_ids_gone(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    with Catalog(tmp_path / "cat") as catalog:
        ids = _add_all(catalog, fingerprints)
        catalog.remove(ids[0])
        removed = catalog.remove_many([ids[0], ids[1], ids[3]])
        assert [r.reference_id for r in removed] == [ids[1], ids[3]]
        assert [r.reference_id for r in catalog.references()] == [ids[2], *ids[4:]]
        found = np.asarray(
            catalog.search_descriptors(fingerprints[3].features.descriptors, 3).reference_ids
        )
        assert not np.isin(found, [*ids[:2], ids[3]]).any()
        with pytest.raises(ReferenceNotFoundError):
            catalog.remove_many([ids[2], ids[1]], missing_ok=False)
        # Refused whole: the id that was there is still there.
        assert catalog.get(ids[2]).reference_id == ids[2]


def _add_all(catalog: Catalog, fingerprints: list[Fingerprint]) -> list[int]:
    """Add one reference per fingerprint (designs d0, d1, ...); their ids, in order."""
    outcomes = catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(fingerprints)])
    return [o.reference.reference_id for o in outcomes]


def _strip_ids(snapshot: list[object]) -> list[object]:
    """Ids differ between two catalogs; distances and hit counts must not."""
    return [
        item if i % 3 == 2 else len(item)  # type: ignore[arg-type]
        for i, item in enumerate(snapshot)
    ]


@pytest.mark.parametrize("deep_quantizer_lists", [65_536, 64], ids=["shallow", "deep"])
def test_ivf_index_agrees_with_exact_search(tmp_path: Path, deep_quantizer_lists: int) -> None:
    """Above `exact_search_max_descriptors` the catalog switches to IVF; its nearest
    neighbours must mostly be the exact ones, with either quantizer depth."""
    fingerprinter = Fingerprinter(DetectorConfig())
    prints = [fingerprinter.reference(textured(100 + seed)) for seed in range(12)]
    queries = [fingerprinter.listing(textured(100 + seed)) for seed in range(3)]
    exact = Catalog(tmp_path / "exact", SearchConfig(exact_search_max_descriptors=10**9))
    approx = Catalog(
        tmp_path / "ivf",
        SearchConfig(
            exact_search_max_descriptors=1_000, ivf_deep_quantizer_lists=deep_quantizer_lists
        ),
    )
    for catalog in (exact, approx):
        catalog.add_many([entry(fp, f"d{i}") for i, fp in enumerate(prints)])
        catalog.rebuild()
    assert exact.stats().descriptor_index == "flat"
    assert approx.stats().descriptor_index.startswith("ivf")
    agree = total = 0
    for query in queries:
        a = exact.search_descriptors(query.features.descriptors, 1)
        b = approx.search_descriptors(query.features.descriptors, 1)
        close = a.distances[:, 0] <= 40  # the matches that matter: near-duplicates
        agree += int((a.distances[close, 0] == b.distances[close, 0]).sum())
        total += int(close.sum())
    recall = agree / total
    print(f"IVF top-1 recall against exact on {total} close queries: {recall:.3f}")
    assert total > 500
    assert recall >= 0.9
    # Queries are scanned in the order of their lists: the answers are FAISS's own, unchanged.
    stacked = np.concatenate([query.features.descriptors for query in queries])
    index = approx._indexes.descriptor_index
    for probes in (1, 3, index.nlist + 5):
        index.nprobe = probes
        plain_distances, plain_labels = index.search(stacked, 5)
        ordered_distances, ordered_labels = search_in_list_order(index, stacked, 5)
        assert np.array_equal(plain_distances, ordered_distances), probes
        assert np.array_equal(plain_labels, ordered_labels), probes
    index.nprobe = approx.config.ivf_probes
    # The quantizer chain (and its probes) survives the index file: same answers after reopening.
    before = approx.search_descriptors(queries[0].features.descriptors, 3)
    approx.close()
    reopened = Catalog(tmp_path / "ivf", approx.config, create=False)
    after = reopened.search_descriptors(queries[0].features.descriptors, 3)
    assert reopened.verify() == []
    assert np.array_equal(before.distances, after.distances)
    assert np.array_equal(before.reference_ids, after.reference_ids)
    reopened.close()
    exact.close()


def test_searches_while_adding_never_crash(tmp_path: Path, fingerprints: list[Fingerprint]) -> None:
    catalog = Catalog(tmp_path / "cat")
    catalog.add(entry(fingerprints[0], "seed"))
    errors: list[BaseException] = []
    stop = threading.Event()

    # The seed and 15 adds get ids 1..16 (AUTOINCREMENT): anything else is a torn label.
    possible_ids = set(range(1, 17))
    completed = []

    def search() -> None:
        try:
            while not stop.is_set():
                result = catalog.search_descriptors(fingerprints[1].features.descriptors, 3)
                found = {int(r) for r in np.unique(result.reference_ids) if r >= 0}
                if not found <= possible_ids:
                    raise AssertionError(f"ids never assigned: {found - possible_ids}")
                valid = result.reference_ids >= 0
                if not ((result.distances[valid] >= 0) & (result.distances[valid] <= 256)).all():
                    raise AssertionError("a distance outside 0..256 bits")
                catalog.search_hashes(fingerprints[1].hashes, 10)
                completed.append(1)
        except BaseException as exc:  # any crash in a thread is the failure under test
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    for round_ in range(15):
        outcome = catalog.add(entry(fingerprints[round_ % 6], f"r{round_}"))
        if round_ % 3 == 2:
            catalog.remove(outcome.reference.reference_id)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    catalog.close()
    assert not any(thread.is_alive() for thread in threads), "a search hung"
    assert errors == []
    assert completed, "no search completed while references were added"


def test_another_process_changes_are_seen(tmp_path: Path, fingerprints: list[Fingerprint]) -> None:
    reader = Catalog(tmp_path / "cat")
    writer = Catalog(tmp_path / "cat")
    added = writer.add(entry(fingerprints[4], "late")).reference
    hits = reader.search_hashes(fingerprints[4].hashes, 0)
    assert added.reference_id in {h.reference_id for h in hits}
    writer.close()
    reader.close()


def test_missing_catalog_and_foreign_files_are_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        Catalog(tmp_path / "absent", create=False)
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "catalog.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError):
        Catalog(bogus)


def test_replacing_a_reference_another_writer_removed_still_adds(
    tmp_path: Path, fingerprints: list[Fingerprint]
) -> None:
    """An index run planned to replace a reference that a concurrent run (or a service DELETE)
    removed meanwhile: the new entry is added, nothing raises."""
    with Catalog(tmp_path / "cat") as catalog:
        old = catalog.add(entry(fingerprints[0], "a")).reference
        catalog.remove(old.reference_id)
        replacement = replace(entry(fingerprints[1], "b"), replaces=old.reference_id)
        outcome = catalog.add(replacement)
        assert outcome.added
        assert [r.path for r in catalog.references()] == ["refs/b.jpg"]
        assert outcome.reference.fingerprint_signature == fingerprints[1].signature != ""


def test_fingerprint_signature_names_only_what_shapes_reference_fingerprints() -> None:
    from imgmatch.fingerprint import fingerprint_signature

    base = DetectorConfig()
    same = [
        base.with_overrides(clahe_clip_limit=2),
        base.with_overrides(hashers=tuple(reversed(base.hashers))),
        base.with_overrides(listing_orb_features=500, flag_threshold=0.9, opencv_threads=2),
    ]
    assert {fingerprint_signature(config) for config in same} == {fingerprint_signature(base)}
    for changed in ({"orb_features": 500}, {"hashers": ("phash",)}, {"feature_side_px": 800}):
        assert fingerprint_signature(base.with_overrides(**changed)) != fingerprint_signature(base)
