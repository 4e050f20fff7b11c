"""The catalog of reference photos: the one door to storage (SQLite) and search (FAISS).

SQLite is the source of truth: references, their metadata and their fingerprints (`store`).
The FAISS binary indexes are caches built from it (`faiss_indexes`): one per hasher for the
64-bit hash codes, one for the 256-bit ORB descriptors. Index files are written atomically and
stamped with the database generation and their sha256 (`index_files`); a stale, missing,
oversized or corrupt file is rebuilt from SQLite, never loaded blindly. FAISS stores only
integers, so the catalog keeps its own id scheme (`ids`).

Damage that a rebuild cannot mend (in the database, or where an index file should be) is a
`CatalogDamagedError` that names the file and what to do. Where only some references' rows are
damaged, the catalog still opens so that `verify` can list them and `remove` can take them out;
searching and adding refuse until then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.faiss_indexes import (
    apply_search_parameters,
    descriptor_index_kind,
    hash_indexes_from_rows,
    is_ivf,
    new_descriptor_index,
    new_hash_index,
    search_in_list_order,
)
from imgmatch.catalog.ids import (
    HASH_VARIANT_BITS,
    descriptor_id,
    descriptor_ids,
    hash_entry_ids,
    split_descriptor_labels,
    split_hash_label,
)
from imgmatch.catalog.index_files import (
    DESCRIPTOR_INDEX,
    index_file_problem,
    index_path,
    read_index,
    write_index,
)
from imgmatch.catalog.records import (
    CATALOG_ENV,
    DEFAULT_CATALOG_DIR,
    AddOutcome,
    CatalogStats,
    DescriptorNeighbours,
    HashHit,
    NewReference,
    Reference,
    resolve_catalog_dir,
    sha256_file,
)
from imgmatch.catalog.schema import DATABASE_NAME, SCHEMA_VERSION
from imgmatch.catalog.store import Store
from imgmatch.config import SearchConfig
from imgmatch.errors import CatalogDamagedError, CatalogError, ReferenceNotFoundError
from imgmatch.features import DESCRIPTOR_BYTES, Keypoints
from imgmatch.fingerprint import Fingerprint
from imgmatch.hashing import PackedBits
from imgmatch.locking import ReadWriteLock

__all__ = [
    "CATALOG_ENV",
    "DATABASE_NAME",
    "DEFAULT_CATALOG_DIR",
    "SCHEMA_VERSION",
    "AddOutcome",
    "Catalog",
    "CatalogStats",
    "DescriptorNeighbours",
    "HashHit",
    "NewReference",
    "Reference",
    "descriptor_id",
    "hash_entry_ids",
    "resolve_catalog_dir",
    "sha256_file",
]


class Catalog:
    """References, their fingerprints, and the FAISS indexes that search them.

    Thread-safe: searches run concurrently; adds and removes wait for searches in flight and
    block new ones while the in-memory indexes change. Other processes writing the same catalog
    are noticed at the next search (the database generation changed) and the indexes reloaded.
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        config: SearchConfig | None = None,
        *,
        create: bool = True,
    ) -> None:
        self.directory = resolve_catalog_dir(directory)
        self.config = config or SearchConfig()
        # FAISS parallelises one search over OpenMP threads; concurrent searches (service
        # threads, worker processes) then oversubscribe the cores, so the count is a setting.
        faiss.omp_set_num_threads(self.config.faiss_threads)
        self._index_lock = ReadWriteLock()
        self._store = Store(self.directory, create=create)
        try:
            self._refuse_index_paths_that_are_not_files()
        except BaseException:
            self._store.close()
            raise
        self._hash_indexes: dict[str, Any] = {}
        self._descriptor_index: Any = None
        self._descriptor_trained_size = 0
        self._loaded_generation = -1
        # True while the in-memory indexes differ from the files on disk.
        self._dirty = False
        self._design_codes: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._design_codes_generation = -1
        self.index_source = ""
        # Why the indexes cannot be built from the database, and at which generation: they are
        # tried again only once the database changed (a damaged reference was removed, say).
        self._index_problem: tuple[int, CatalogDamagedError] | None = None
        try:
            self._ensure_indexes()
        except CatalogDamagedError as exc:
            self._index_problem = (self._store.generation(), exc)
            self.index_source = "unavailable"

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Write the index caches and close the database."""
        try:
            self.flush()
        finally:
            self._store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def damage(self) -> CatalogDamagedError | None:
        """The damage this catalog has met since it was opened (None: none so far): the
        indexes cannot be built, or a read found a damaged page or row."""
        if self._index_problem is not None:
            return self._index_problem[1]
        return self._store.damage

    def require_searchable(self) -> None:
        """Raise the `CatalogDamagedError` that keeps the indexes from being built, if any."""
        self._refresh_if_changed()

    def flush(self) -> None:
        """Write every index cache whose stamp is behind the database (atomic, stamped)."""
        with self._index_lock.reading():
            if not self._dirty:
                return
            generation = self._loaded_generation
            for name, index in self._named_indexes():
                stamp = write_index(index_path(self.directory, name), index, generation)
                with self._store.transaction():
                    self._store.set_meta(f"index.{name}", stamp)
            self._dirty = False

    # ----------------------------------------------------------------------- references

    def add(self, entry: NewReference) -> AddOutcome:
        """Store one reference photo; see `add_many`."""
        return self.add_many([entry])[0]

    def add_many(self, entries: Sequence[NewReference]) -> list[AddOutcome]:
        """Store reference photos in one transaction and make them searchable at once.

        A photo whose sha256 is already in the catalog is not fingerprinted again; its path and
        metadata are refreshed from the new entry.
        """
        self.require_searchable()
        store = self._store
        outcomes: list[AddOutcome] = []
        new_rows: list[tuple[int, Fingerprint]] = []
        removed: list[tuple[int, list[tuple[int, int]]]] = []
        changed = False
        with store.transaction():
            for entry in entries:
                # Another writer may have removed it meanwhile: the entry is then added or
                # refreshed by its sha256 like any other.
                if entry.replaces is not None:
                    with contextlib.suppress(ReferenceNotFoundError):
                        removed.append((entry.replaces, store.delete(entry.replaces)))
                existing = store.id_of_sha256(entry.sha256)
                if existing is not None:
                    changed = store.refresh(existing, entry) or changed
                    outcomes.append(AddOutcome(store.get(existing), added=False))
                    continue
                if entry.fingerprint is None:
                    raise CatalogError(f"{entry.path}: not in the catalog and no fingerprint given")
                reference_id = store.insert(entry, entry.fingerprint)
                new_rows.append((reference_id, entry.fingerprint))
                outcomes.append(AddOutcome(store.get(reference_id), added=True))
            # Any change bumps the generation: other processes then reload, caches are re-stamped.
            changed = changed or bool(new_rows) or bool(removed)
            generation = store.bump_generation() if changed else store.generation()
        if changed:
            self._update_indexes(generation, removed, new_rows)
        return outcomes

    def remove(self, reference_id: int) -> Reference:
        """Delete a reference and its fingerprints; every other id stays as it was."""
        return self.remove_many([reference_id], missing_ok=False)[0]

    def remove_many(
        self, reference_ids: Iterable[int], *, missing_ok: bool = True
    ) -> list[Reference]:
        """Delete references and their fingerprints in one transaction and one pass over the
        search indexes (each pass scans an index whole: at 10,000 references, ~0.3 s); ids
        already gone are passed over, or raise with `missing_ok` False. Returns those deleted."""
        store = self._store
        references, removed = [], []
        with store.transaction():
            for reference_id in reference_ids:
                try:
                    # Lenient: a reference whose metadata is damaged can still be removed.
                    references.append(store.get(reference_id, lenient=True))
                except ReferenceNotFoundError:
                    if missing_ok:
                        continue
                    raise
                removed.append((reference_id, store.delete(reference_id)))
            if not removed:
                return []
            generation = store.bump_generation()
        self._update_indexes(generation, removed, [])
        return references

    def find_by_path(self, path: str) -> list[Reference]:
        """Every reference stored under exactly this path, newest first (a run of `index`
        stopped between two batches of moved files can leave two)."""
        with self._store.lock:
            return [self._store.get(rid) for rid in self._store.ids_at_path(path)]

    def design_codes(self) -> NDArray[np.int64]:
        """A number per design, indexed by reference id (-1: no such reference).

        Two references share a number exactly when they share a design; the numbering holds for
        one database generation (cached per generation; do not modify the array).
        """
        generation = self._store.generation()
        with self._store.lock:
            if self._design_codes_generation != generation:
                rows = self._store.designs_by_id()
                size = max((rid for rid, _ in rows), default=-1) + 1
                codes = np.full(size, -1, dtype=np.int64)
                numbers: dict[str, int] = {}
                for rid, design in rows:
                    codes[rid] = numbers.setdefault(design, len(numbers))
                self._design_codes = codes
                self._design_codes_generation = generation
            return self._design_codes

    def get(self, reference_id: int) -> Reference:
        """The reference with this id, or `ReferenceNotFoundError`."""
        return self._store.get(reference_id)

    def count_fingerprinted_otherwise(self, signature: str) -> int:
        """How many references were fingerprinted with another signature (or an unknown one)."""
        return self._store.count_signed_otherwise(signature)

    def find_by_sha256(self, sha256: str) -> Reference | None:
        with self._store.lock:
            reference_id = self._store.id_of_sha256(sha256)
            return None if reference_id is None else self._store.get(reference_id)

    def references(
        self,
        *,
        design: str | None = None,
        brand: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Reference]:
        """References in id order, optionally filtered by exact design and/or brand."""
        return self._store.references(design, brand, offset, limit)

    def count(self, *, design: str | None = None, brand: str | None = None) -> int:
        """How many references, optionally filtered like `references`."""
        return self._store.count(design, brand)

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        """The stored keypoints of one view of a reference (for geometric verification)."""
        return self._store.keypoints(reference_id, view)

    def stats(self) -> CatalogStats:
        self.require_searchable()
        refs, designs, brands = self._store.counts()
        generation = self._store.generation()
        with self._index_lock.reading():
            descriptors = int(self._descriptor_index.ntotal)
            kind = descriptor_index_kind(self._descriptor_index)
        index_bytes = sum(p.stat().st_size for p in self.directory.glob("*.faiss"))
        return CatalogStats(
            references=refs,
            designs=designs,
            brands=brands,
            descriptors=descriptors,
            descriptor_index=kind,
            database_bytes=self._store.file_bytes(),
            index_bytes=index_bytes,
            generation=generation,
        )

    def get_setting(self, key: str) -> str | None:
        """A catalog-level setting (e.g. the calibrated flag threshold), or None."""
        return self._store.meta(f"setting.{key}")

    def set_setting(self, key: str, value: str) -> None:
        with self._store.transaction():
            self._store.set_meta(f"setting.{key}", value)

    # ----------------------------------------------------------------------- searching

    def search_hashes(self, hashes: dict[str, PackedBits], max_distance: int) -> list[HashHit]:
        """Every (reference, hasher, variant) within `max_distance` bits of a listing's codes.

        `variant` is the flip/rotation of the reference that matched (`hashing.DIHEDRALS`).
        """
        self._refresh_if_changed()
        hits: list[HashHit] = []
        with self._index_lock.reading():
            for name, codes in hashes.items():
                index = self._hash_indexes.get(name)
                if index is None or index.ntotal == 0:
                    continue
                # range_search is strict (<): +1 includes the threshold itself.
                # Every code of the listing counts alike: which row a hit came from is not kept.
                _, distances, labels = index.range_search(
                    np.ascontiguousarray(codes, dtype=np.uint8), max_distance + 1
                )
                # FAISS returns the bit counts as float32; a HashHit holds a whole number.
                bit_counts = distances.astype(np.int64).tolist()
                for label, distance in zip(labels.tolist(), bit_counts, strict=True):
                    reference_id, variant = split_hash_label(label)
                    hits.append(HashHit(reference_id, name, variant, distance))
        return hits

    def search_descriptors(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """The k nearest reference descriptors of every query descriptor, in one FAISS call."""
        self._refresh_if_changed()
        queries = np.ascontiguousarray(descriptors, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
        with self._index_lock.reading():
            if self._descriptor_index.ntotal == 0 or len(queries) == 0:
                empty = np.full((len(queries), k), -1, dtype=np.int64)
                return DescriptorNeighbours(
                    np.zeros((len(queries), k), np.int32), empty, empty.copy(), empty.copy()
                )
            distances, labels = search_in_list_order(self._descriptor_index, queries, k)
        reference_ids, views, keypoints = split_descriptor_labels(labels)
        return DescriptorNeighbours(distances.astype(np.int32), reference_ids, views, keypoints)

    # ----------------------------------------------------------------------- maintenance

    def verify(self) -> list[str]:
        """Problems found in the database (pages, rows, fingerprint checksums, metadata) and
        the index caches; an empty list means healthy."""
        problems = self._store.problems()
        try:
            self._refresh_if_changed()
            expected = self._store.descriptor_count()
            with self._index_lock.reading():
                if self._descriptor_index.ntotal != expected:
                    problems.append(
                        f"descriptor index holds {self._descriptor_index.ntotal} descriptors, "
                        f"database {expected}"
                    )
            generation = self._store.generation()
            for name in [*self._store.hasher_names(), DESCRIPTOR_INDEX]:
                reason = self._index_file_problem(name, generation)
                if reason:
                    problems.append(f"index file {index_path(self.directory, name)}: {reason}")
        except CatalogError as exc:
            problems.append(f"the search indexes cannot be built: {exc}")
        # One damaged page can fail several checks with the same message.
        return list(dict.fromkeys(problems))

    def rebuild(self) -> None:
        """Rebuild every FAISS index from SQLite and write the caches."""
        with self._index_lock.writing():
            self._rebuild_or_record()
        self.require_searchable()
        self.flush()

    # ----------------------------------------------------------------------- indexes

    def _refuse_index_paths_that_are_not_files(self) -> None:
        """A folder (or anything but a file) where an index file belongs can be neither read
        nor replaced; moving it is the user's call, not the catalog's."""
        for name in [DESCRIPTOR_INDEX, *self._store.hasher_names()]:
            path = index_path(self.directory, name)
            if path.exists() and not path.is_file():
                raise CatalogDamagedError(
                    f"{path} is not a file: move it out of the catalog folder, then run "
                    "`imgmatch catalog rebuild` to write the index again"
                )

    def _update_indexes(
        self,
        generation: int,
        removed: Sequence[tuple[int, list[tuple[int, int]]]],
        added: Sequence[tuple[int, Fingerprint]],
    ) -> None:
        """Bring the in-memory indexes to `generation`: in place when they were at the one
        before, else rebuilt. The database change is committed: a damaged row met by the
        rebuild is kept for the next search, not raised here."""
        with self._index_lock.writing():
            if self._loaded_generation == generation - 1:
                self._unindex(removed)
                for reference_id, fingerprint in added:
                    self._index_fingerprint(reference_id, fingerprint)
                self._loaded_generation = generation
                self._dirty = True
                self._maybe_retrain()
            else:
                self._rebuild_or_record()

    def _rebuild_or_record(self) -> None:
        """Rebuild from SQLite (caller holds the index write lock); keep the damage that stops
        it, with the generation it was met at."""
        generation = self._store.generation()
        try:
            self._rebuild_locked()
        except CatalogDamagedError as exc:
            self._index_problem = (generation, exc)
            return
        self._index_problem = None

    def _named_indexes(self) -> Iterable[tuple[str, Any]]:
        yield from self._hash_indexes.items()
        yield DESCRIPTOR_INDEX, self._descriptor_index

    def _index_file_problem(self, name: str, generation: int) -> str | None:
        return index_file_problem(
            index_path(self.directory, name),
            name,
            self._store.meta(f"index.{name}"),
            generation,
            self.config.max_index_file_bytes,
        )

    def _ensure_indexes(self) -> None:
        """Load the index caches where their stamps match the database; rebuild otherwise."""
        with self._index_lock.writing():
            generation = self._store.generation()
            if self._index_file_problem(DESCRIPTOR_INDEX, generation) is not None:
                self._rebuild_locked()
                self.index_source = "rebuilt"
                return
            descriptor_index = read_index(index_path(self.directory, DESCRIPTOR_INDEX))
            if descriptor_index.ntotal != self._store.descriptor_count():
                self._rebuild_locked()
                self.index_source = "rebuilt"
                return
            names = self._store.hasher_names()
            if all(self._index_file_problem(name, generation) is None for name in names):
                self._hash_indexes = {
                    name: read_index(index_path(self.directory, name)) for name in names
                }
                self.index_source = "loaded"
            else:
                # Only the small hash indexes are rebuilt (after their id layout changed, say):
                # the descriptor index, trained and far larger, stays as it was.
                read_generation, hash_rows, _ = self._store.read_fingerprint_rows(views=False)
                if read_generation != generation:
                    self._rebuild_locked()
                    self.index_source = "rebuilt"
                    return
                self._hash_indexes = hash_indexes_from_rows(hash_rows)
                self._dirty = True
                self.index_source = "rebuilt hash indexes"
            self._descriptor_index = descriptor_index
            self._descriptor_trained_size = int(descriptor_index.ntotal)
            self._loaded_generation = generation
            apply_search_parameters(descriptor_index, self.config)

    def _refresh_if_changed(self) -> None:
        """Reload when another process (or connection) changed the catalog since we loaded;
        raise the damage that keeps the indexes from being built."""
        if self._needs_rebuild():
            with self._index_lock.writing():
                if self._needs_rebuild():
                    self._rebuild_or_record()
        if self._index_problem is not None:
            raise self._index_problem[1]

    def _needs_rebuild(self) -> bool:
        generation = self._store.generation()
        # A rebuild that met damage is tried again only once the database has changed.
        failed = self._index_problem is not None and self._index_problem[0] == generation
        return generation != self._loaded_generation and not failed

    def _rebuild_locked(self) -> None:
        """Build every index from SQLite. Caller holds the index write lock."""
        generation, hash_rows, view_rows = self._store.read_fingerprint_rows(views=True)
        self._hash_indexes = hash_indexes_from_rows(hash_rows)
        total = sum(int(row[2]) for row in view_rows)
        descriptors = np.empty((total, DESCRIPTOR_BYTES), dtype=np.uint8)
        ids = np.empty(total, dtype=np.int64)
        at = 0
        for reference_id, view, count, blob in view_rows:
            descriptors[at : at + count] = np.frombuffer(blob, np.uint8).reshape(
                -1, DESCRIPTOR_BYTES
            )
            ids[at : at + count] = descriptor_ids(reference_id, view, count)
            at += count
        self._descriptor_index = new_descriptor_index(self.config, descriptors)
        if total:
            self._descriptor_index.add_with_ids(descriptors, ids)
        self._descriptor_trained_size = total
        self._loaded_generation = generation
        self._dirty = True
        apply_search_parameters(self._descriptor_index, self.config)

    def _maybe_retrain(self) -> None:
        """Switch exact -> IVF, or retrain IVF, once the catalog outgrew what it was built for."""
        total = int(self._descriptor_index.ntotal)
        ivf = is_ivf(self._descriptor_index)
        outgrew_exact = not ivf and total > self.config.exact_search_max_descriptors
        outgrew_training = ivf and total > self._descriptor_trained_size * (
            self.config.ivf_retrain_growth
        )
        if outgrew_exact or outgrew_training:
            self._rebuild_or_record()

    def _index_fingerprint(self, reference_id: int, fingerprint: Fingerprint) -> None:
        for name, codes in fingerprint.hashes.items():
            index = self._hash_indexes.get(name)
            if index is None:
                index = self._hash_indexes[name] = new_hash_index()
            index.add_with_ids(
                np.ascontiguousarray(codes, dtype=np.uint8),
                hash_entry_ids(reference_id, len(codes)),
            )
        for view, features in enumerate(fingerprint.views):
            if len(features) == 0:
                continue
            self._descriptor_index.add_with_ids(
                np.ascontiguousarray(features.descriptors, dtype=np.uint8),
                descriptor_ids(reference_id, view, len(features)),
            )

    def _unindex(self, removed: Sequence[tuple[int, list[tuple[int, int]]]]) -> None:
        """Take (reference id, its (view, count) pairs) out of the in-memory indexes.

        One removal per index for all of them: each `remove_ids` scans the whole index, so a
        batch of replaced references (a re-fingerprint after a version change) must not cost
        one scan each.
        """
        if not removed:
            return
        # A reference fingerprinted before schema 3 has one hash variant, later ones 8.
        ids = np.concatenate(
            [hash_entry_ids(reference_id, 1 << HASH_VARIANT_BITS) for reference_id, _ in removed]
        )
        for index in self._hash_indexes.values():
            index.remove_ids(ids)
        removed_descriptors = [
            descriptor_ids(reference_id, view, count)
            for reference_id, views in removed
            for view, count in views
            if count
        ]
        if removed_descriptors:
            self._descriptor_index.remove_ids(np.concatenate(removed_descriptors))
