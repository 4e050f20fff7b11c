"""The catalog's search indexes in memory, kept at the database's generation.

Loaded from the index files where their stamps match the database, else rebuilt from SQLite.
Searches run concurrently; an add, a removal or a rebuild waits for them and blocks new ones.
A rebuild stopped by damaged rows is not retried until the database changes: the damage is
kept and raised by every search instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.descriptor_index import DescriptorIndex, Removed
from imgmatch.catalog.hash_index import HashIndex, hash_indexes_from_rows, hasher_bits
from imgmatch.catalog.ids import descriptor_ids
from imgmatch.catalog.index_files import (
    DESCRIPTOR_INDEX,
    index_file_problem,
    index_path,
    read_index,
    write_index,
)
from imgmatch.catalog.records import DescriptorNeighbours, HashHit
from imgmatch.catalog.store import Store
from imgmatch.config import SearchConfig
from imgmatch.errors import CatalogDamagedError
from imgmatch.features import DESCRIPTOR_BYTES
from imgmatch.fingerprint import Fingerprint
from imgmatch.hashing import PackedBits
from imgmatch.locking import ReadWriteLock


class SearchIndexes:
    """One FAISS index per hasher and one for the descriptors, built from one `Store`."""

    def __init__(self, directory: Path, config: SearchConfig, store: Store) -> None:
        self._directory = directory
        self._config = config
        self._store = store
        self._lock = ReadWriteLock()
        self._hash_indexes: dict[str, HashIndex] = {}
        self._descriptors: DescriptorIndex | None = None
        self._loaded_generation = -1
        # True while the in-memory indexes differ from the files on disk.
        self._dirty = False
        # The damage that stopped the last rebuild, and the generation it was met at.
        self._problem: tuple[int, CatalogDamagedError] | None = None
        # How the indexes came to be: "loaded", "rebuilt", "rebuilt hash indexes", "unavailable".
        self.source = ""
        self._refuse_paths_that_are_not_files()
        try:
            self._load()
        except CatalogDamagedError as exc:
            self._problem = (store.generation(), exc)
            self.source = "unavailable"

    @property
    def problem(self) -> CatalogDamagedError | None:
        return None if self._problem is None else self._problem[1]

    def require_current(self) -> None:
        """Reload when another process (or connection) changed the catalog since we loaded;
        raise the damage that keeps the indexes from being built."""
        if self._needs_rebuild():
            with self._lock.writing():
                if self._needs_rebuild():
                    self._rebuild_or_record()
        if self._problem is not None:
            raise self._problem[1]

    def update(
        self, generation: int, removed: Sequence[Removed], added: Sequence[tuple[int, Fingerprint]]
    ) -> None:
        """Bring the indexes to `generation`: in place when they were at the one before, else
        rebuilt. The database change is committed: a damaged row met by the rebuild is kept
        for the next search, not raised here."""
        with self._lock.writing():
            if self._loaded_generation == generation - 1:
                self._unindex(removed)
                for reference_id, fingerprint in added:
                    self._index_fingerprint(reference_id, fingerprint)
                self._loaded_generation = generation
                self._dirty = True
                self._maybe_retrain()
            else:
                self._rebuild_or_record()

    def rebuild(self) -> None:
        """Rebuild every index from SQLite now; raise the damage that stops it."""
        with self._lock.writing():
            self._rebuild_or_record()
        self.require_current()

    def flush(self) -> None:
        """Write every index file whose stamp is behind the database (atomic, stamped)."""
        with self._lock.reading():
            if not self._dirty:
                return
            generation = self._loaded_generation
            for name, index in self._named_indexes():
                stamp = write_index(index_path(self._directory, name), index, generation)
                with self._store.transaction():
                    self._store.set_meta(f"index.{name}", stamp)
            self._dirty = False

    def descriptors(self) -> tuple[int, str]:
        """(descriptors indexed, "flat" or "ivf<lists>")."""
        self.require_current()
        with self._lock.reading():
            return self._descriptor_index.size, self._descriptor_index.kind

    @property
    def descriptor_index(self) -> Any:
        """The FAISS descriptor index itself, for inspection."""
        return self._descriptor_index.faiss

    @property
    def _descriptor_index(self) -> DescriptorIndex:
        if self._descriptors is None:
            raise CatalogDamagedError("the search indexes were never built")
        return self._descriptors

    def problems(self) -> list[str]:
        """What `verify` reports about the indexes and their files."""
        self.require_current()
        problems = []
        expected = self._store.descriptor_count()
        with self._lock.reading():
            if self._descriptor_index.size != expected:
                problems.append(
                    f"descriptor index holds {self._descriptor_index.size} descriptors, "
                    f"database {expected}"
                )
        generation = self._store.generation()
        for name in [*self._store.hasher_names(), DESCRIPTOR_INDEX]:
            reason = self._file_problem(name, generation)
            if reason:
                problems.append(f"index file {index_path(self._directory, name)}: {reason}")
        return problems

    # ----------------------------------------------------------------------- searching

    @contextlib.contextmanager
    def pinned(self) -> Iterator[int]:
        """Hold the indexes at their generation (yielded): adds, removals and reloads wait until
        the block ends. Inside it, search with `hashes_near` and `descriptor_neighbours` only:
        the lock is not reentrant."""
        with self._lock.reading():
            yield self._loaded_generation

    def search_hashes(self, hashes: dict[str, PackedBits], max_distance: int) -> list[HashHit]:
        self.require_current()
        with self._lock.reading():
            return self.hashes_near(hashes, max_distance)

    def search_descriptors(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        self.require_current()
        with self._lock.reading():
            return self.descriptor_neighbours(descriptors, k)

    def hashes_near(self, hashes: dict[str, PackedBits], max_distance: int) -> list[HashHit]:
        """`search_hashes` for a caller that holds the indexes `pinned`."""
        # Every code of the listing counts alike: which row a hit came from is not kept.
        return [
            HashHit(reference_id, name, variant, distance)
            for name, codes in hashes.items()
            if (index := self._hash_indexes.get(name)) is not None
            for reference_id, variant, distance in index.within(codes, max_distance)
        ]

    def descriptor_neighbours(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """`search_descriptors` for a caller that holds the indexes `pinned`."""
        return self._descriptor_index.nearest(descriptors, k)

    # ----------------------------------------------------------------------- internals

    def _refuse_paths_that_are_not_files(self) -> None:
        """A folder (or anything but a file) where an index file belongs can be neither read
        nor replaced; moving it is the user's call, not the catalog's."""
        for name in [DESCRIPTOR_INDEX, *self._store.hasher_names()]:
            path = index_path(self._directory, name)
            if path.exists() and not path.is_file():
                raise CatalogDamagedError(
                    f"{path} is not a file: move it out of the catalog folder, then run "
                    "`imgmatch catalog rebuild` to write the index again"
                )

    def _file_problem(self, name: str, generation: int) -> str | None:
        return index_file_problem(
            index_path(self._directory, name),
            name,
            self._store.meta(f"index.{name}"),
            generation,
            self._config.max_index_file_bytes,
        )

    def _load(self) -> None:
        """Load the index files where their stamps match the database; rebuild otherwise."""
        with self._lock.writing():
            generation = self._store.generation()
            if self._file_problem(DESCRIPTOR_INDEX, generation) is not None:
                self._rebuild_locked()
                self.source = "rebuilt"
                return
            descriptor_index = read_index(index_path(self._directory, DESCRIPTOR_INDEX))
            if descriptor_index.ntotal != self._store.descriptor_count():
                self._rebuild_locked()
                self.source = "rebuilt"
                return
            names = self._store.hasher_names()
            if all(self._file_problem(name, generation) is None for name in names):
                self._hash_indexes = {
                    name: HashIndex(
                        hasher_bits(name), read_index(index_path(self._directory, name))
                    )
                    for name in names
                }
                self.source = "loaded"
            else:
                # Only the small hash indexes are rebuilt (after their id layout changed, say):
                # the descriptor index, trained and far larger, stays as it was.
                read_generation, hash_rows, _ = self._store.read_fingerprint_rows(views=False)
                if read_generation != generation:
                    self._rebuild_locked()
                    self.source = "rebuilt"
                    return
                self._hash_indexes = hash_indexes_from_rows(hash_rows)
                self._dirty = True
                self.source = "rebuilt hash indexes"
            self._descriptors = DescriptorIndex(
                descriptor_index, self._config, int(descriptor_index.ntotal)
            )
            self._loaded_generation = generation

    def _needs_rebuild(self) -> bool:
        generation = self._store.generation()
        # A rebuild that met damage is tried again only once the database has changed.
        failed = self._problem is not None and self._problem[0] == generation
        return generation != self._loaded_generation and not failed

    def _rebuild_or_record(self) -> None:
        """Rebuild from SQLite (caller holds the write lock); keep the damage that stops it."""
        generation = self._store.generation()
        try:
            self._rebuild_locked()
        except CatalogDamagedError as exc:
            self._problem = (generation, exc)
            return
        self._problem = None

    def _rebuild_locked(self) -> None:
        """Build every index from SQLite. Caller holds the write lock. The rows are all read
        and checked before anything is replaced: damage leaves the indexes as they were."""
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
        self._descriptors = DescriptorIndex.build(self._config, descriptors, ids)
        self._loaded_generation = generation
        self._dirty = True

    def _maybe_retrain(self) -> None:
        """Switch exact -> IVF, or retrain IVF, once the catalog outgrew what it was built for."""
        index = self._descriptor_index
        outgrew_exact = not index.is_ivf and index.size > self._config.exact_search_max_descriptors
        outgrew_training = (
            index.is_ivf and index.size > index.trained_size * self._config.ivf_retrain_growth
        )
        if outgrew_exact or outgrew_training:
            self._rebuild_or_record()

    def _named_indexes(self) -> Iterable[tuple[str, Any]]:
        """Each index's FAISS object under the name of its file."""
        for name, index in self._hash_indexes.items():
            yield name, index.faiss
        yield DESCRIPTOR_INDEX, self._descriptor_index.faiss

    def _index_fingerprint(self, reference_id: int, fingerprint: Fingerprint) -> None:
        for name, codes in fingerprint.hashes.items():
            index = self._hash_indexes.get(name)
            if index is None:
                index = self._hash_indexes[name] = HashIndex(hasher_bits(name))
            index.add(reference_id, codes)
        for view, features in enumerate(fingerprint.views):
            self._descriptor_index.add(reference_id, view, features.descriptors)

    def _unindex(self, removed: Sequence[Removed]) -> None:
        """Take removed references out of the in-memory indexes: one removal per index for
        all of them, so that a batch of replaced references (a re-fingerprint after a version
        change) does not cost one scan of each index per reference."""
        if not removed:
            return
        reference_ids = [reference_id for reference_id, _ in removed]
        for index in self._hash_indexes.values():
            index.remove(reference_ids)
        self._descriptor_index.remove(removed)
