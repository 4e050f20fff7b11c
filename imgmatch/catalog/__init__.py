"""The catalog of reference photos: the one door to storage (SQLite) and search (FAISS).

SQLite is the source of truth: references, their metadata and their fingerprints (`store`).
The FAISS binary indexes are caches built from it, each behind a small typed wrapper
(`hash_index`: one per hasher, as wide as its codes; `descriptor_index`: the 256-bit ORB
descriptors), kept current by `indexes`.
Index files are written atomically and
stamped with the database generation and their sha256 (`index_files`); a stale, missing,
oversized or corrupt file is rebuilt from SQLite, never loaded blindly. FAISS stores only
integers, so the catalog keeps its own id scheme (`ids`).

Damage that a rebuild cannot mend (in the database, or where an index file should be) is a
`CatalogDamagedError` that names the file and what to do. Where only some references' rows are
damaged, the catalog still opens so that `verify` can list them and `remove` can take them out;
searching and adding refuse until then.

A check reads through `Catalog.snapshot()`, a view pinned at one generation (`snapshot`), so
that its hash search, descriptor search, references and keypoints all agree.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.ids import descriptor_id, hash_entry_ids
from imgmatch.catalog.indexes import SearchIndexes
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
from imgmatch.catalog.rows import read_generation
from imgmatch.catalog.schema import DATABASE_NAME, SCHEMA_VERSION
from imgmatch.catalog.snapshot import CatalogView, number_designs
from imgmatch.catalog.store import Store
from imgmatch.config import SearchConfig
from imgmatch.errors import CatalogDamagedError, CatalogError, ReferenceNotFoundError
from imgmatch.features import Keypoints
from imgmatch.fingerprint import Fingerprint
from imgmatch.hashing import PackedBits

__all__ = [
    "CATALOG_ENV",
    "DATABASE_NAME",
    "DEFAULT_CATALOG_DIR",
    "SCHEMA_VERSION",
    "AddOutcome",
    "Catalog",
    "CatalogStats",
    "CatalogView",
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
        self._store = Store(self.directory, create=create)
        try:
            self._indexes = SearchIndexes(self.directory, self.config, self._store)
        except BaseException:
            self._store.close()
            raise
        self._design_codes: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._design_codes_generation = -1
        self._design_codes_lock = threading.Lock()

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
    def index_source(self) -> str:
        """How the search indexes were made at opening: "loaded" from their files, "rebuilt"
        (or "rebuilt hash indexes") from SQLite, or "unavailable" (damaged rows)."""
        return self._indexes.source

    @property
    def damage(self) -> CatalogDamagedError | None:
        """The damage this catalog has met since it was opened (None: none so far): the
        indexes cannot be built, or a read found a damaged page or row."""
        return self._indexes.problem or self._store.damage

    def require_searchable(self) -> None:
        """Raise the `CatalogDamagedError` that keeps the indexes from being built, if any."""
        self._indexes.require_current()

    def flush(self) -> None:
        """Write every index cache whose stamp is behind the database (atomic, stamped)."""
        self._indexes.flush()

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
            self._indexes.update(generation, removed, new_rows)
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
        self._indexes.update(generation, removed, [])
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
        with self.snapshot() as view:
            return view.design_codes()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[CatalogView]:
        """The catalog at its current generation, for one check or one batch of checks: every
        read through the view answers at that generation, whatever is added or removed
        meanwhile. Adds and removals in this process wait until the block ends, so keep it
        short, and do not write to the catalog from inside it (that would wait for itself)."""
        store = self._store
        while True:
            # Bring the indexes to the database's generation (another process may have
            # written); a damaged catalog refuses here.
            self._indexes.require_current()
            with self._indexes.pinned() as indexed, store.readers.transaction() as db:
                with store.recording():
                    generation = read_generation(db, store.path)
                if generation == indexed:
                    yield CatalogView(generation, store, db, self._indexes, self._view_designs)
                    return
            # A write landed between the two: its index update is waiting for the lock just
            # released (or the indexes must reload); look again once it is done.

    def _view_designs(self, view: CatalogView) -> NDArray[np.int64]:
        with self._design_codes_lock:
            if self._design_codes_generation == view.generation:
                return self._design_codes
        codes = number_designs(view.designs())
        with self._design_codes_lock:
            self._design_codes, self._design_codes_generation = codes, view.generation
        return codes

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
        descriptors, kind = self._indexes.descriptors()
        refs, designs, brands = self._store.counts()
        generation = self._store.generation()
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
        return self._indexes.search_hashes(hashes, max_distance)

    def search_descriptors(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """The k nearest reference descriptors of every query descriptor, in one FAISS call."""
        return self._indexes.search_descriptors(descriptors, k)

    # ----------------------------------------------------------------------- maintenance

    def verify(self) -> list[str]:
        """Problems found in the database (pages, rows, fingerprint checksums, metadata) and
        the index caches; an empty list means healthy."""
        problems = self._store.problems()
        try:
            problems += self._indexes.problems()
        except CatalogError as exc:
            problems.append(f"the search indexes cannot be built: {exc}")
        # One damaged page can fail several checks with the same message.
        return list(dict.fromkeys(problems))

    def rebuild(self) -> None:
        """Rebuild every FAISS index from SQLite and write the caches."""
        self._indexes.rebuild()
        self.flush()
