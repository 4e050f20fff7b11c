"""The catalog of reference photos: the one door to storage (SQLite) and search (FAISS).

SQLite is the source of truth: references, their metadata and their fingerprints. The FAISS
binary indexes are caches built from it: one per hasher for the 64-bit hash codes (exact Hamming
range search), one for the 256-bit ORB descriptors (kNN; exact while that is fast, IVF beyond).
Index files are written atomically and stamped with the database generation and their sha256; a
stale, missing, oversized or corrupt file is rebuilt from SQLite, never loaded blindly.

FAISS stores only integers, so the catalog keeps its own id scheme: a hash entry carries
`reference_id << 3 | variant` (which of the 8 flips/rotations of the reference it hashes); a
descriptor carries `reference_id << 20 | view << 16 | keypoint`. Removing a reference never
renumbers another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.config import SearchConfig
from imgmatch.errors import CatalogError, ReferenceNotFoundError
from imgmatch.features import DESCRIPTOR_BYTES, KEYPOINT_FIELDS, Keypoints
from imgmatch.fingerprint import Fingerprint
from imgmatch.hashing import HASH_BITS, PackedBits
from imgmatch.locking import ReadWriteLock

CATALOG_ENV = "IMGMATCH_CATALOG"
DEFAULT_CATALOG_DIR = Path("imgmatch-data")
DATABASE_NAME = "catalog.sqlite3"
SCHEMA_VERSION = 3

_KEYPOINT_BITS = 16
_VIEW_BITS = 4
_REFERENCE_SHIFT = _KEYPOINT_BITS + _VIEW_BITS
_HASH_VARIANT_BITS = 3
_DESCRIPTOR_INDEX = "descriptors"
# What the ids in the hash index files mean; a hash index file stamped with another layout is
# rebuilt. 2: hash ids carry the variant (schema 3). Descriptor ids did not change.
_INDEX_LAYOUT = 2

# Schema 1 -> 2: references without a signature are marked unknown (''). Schema 2 -> 3 changes no
# table: a hash code may now hold the 8 variants of a reference (64 bytes), not one (8 bytes),
# which an imgmatch reading schema 2 would misread.
_ADD_SIGNATURE_COLUMN = (
    "ALTER TABLE reference ADD COLUMN fingerprint_signature TEXT NOT NULL DEFAULT ''"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reference (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    design TEXT NOT NULL,
    brand TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}',
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    file_size INTEGER,
    file_mtime_ns INTEGER,
    added_at TEXT NOT NULL,
    fingerprint_signature TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS reference_design ON reference (design);
CREATE INDEX IF NOT EXISTS reference_brand ON reference (brand);
CREATE INDEX IF NOT EXISTS reference_path ON reference (path);
CREATE TABLE IF NOT EXISTS hash (
    reference_id INTEGER NOT NULL REFERENCES reference (id) ON DELETE CASCADE,
    hasher TEXT NOT NULL,
    code BLOB NOT NULL,
    PRIMARY KEY (reference_id, hasher)
);
CREATE TABLE IF NOT EXISTS feature_view (
    reference_id INTEGER NOT NULL REFERENCES reference (id) ON DELETE CASCADE,
    view INTEGER NOT NULL,
    count INTEGER NOT NULL,
    keypoints BLOB NOT NULL,
    descriptors BLOB NOT NULL,
    PRIMARY KEY (reference_id, view)
);
"""


@dataclass(frozen=True)
class Reference:
    """One reference photo of a protected design, as the catalog knows it."""

    reference_id: int
    path: str
    design: str
    brand: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, str] = field(default_factory=dict)
    added_at: str = ""
    file_size: int | None = None
    file_mtime_ns: int | None = None
    # How its fingerprint was computed (`fingerprint_signature`); "" where unknown (stored by
    # an imgmatch from before signatures).
    fingerprint_signature: str = ""


@dataclass(frozen=True)
class NewReference:
    """What `Catalog.add` needs to store one reference photo.

    `fingerprint` may be None only for a file already stored (same sha256): then just its path
    and metadata are refreshed.
    """

    fingerprint: Fingerprint | None
    path: str
    sha256: str
    design: str
    brand: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    file_size: int | None = None
    file_mtime_ns: int | None = None
    # The reference this one supersedes (the file at the same path changed), removed atomically.
    replaces: int | None = None


@dataclass(frozen=True)
class AddOutcome:
    """`added` is False where the same file (by sha256) was already there; its metadata is
    refreshed from the new entry."""

    reference: Reference
    added: bool


@dataclass(frozen=True)
class HashHit:
    reference_id: int
    hasher: str
    variant: int
    distance: int


@dataclass(frozen=True)
class DescriptorNeighbours:
    """kNN of each query descriptor: (queries, k) arrays; reference_id -1 where none was found."""

    distances: NDArray[np.int32]
    reference_ids: NDArray[np.int64]
    views: NDArray[np.int64]
    keypoints: NDArray[np.int64]


@dataclass(frozen=True)
class CatalogStats:
    references: int
    designs: int
    brands: int
    descriptors: int
    descriptor_index: str
    database_bytes: int
    index_bytes: int
    generation: int


def resolve_catalog_dir(directory: Path | str | None = None) -> Path:
    """`--catalog DIR`, else `$IMGMATCH_CATALOG`, else `./imgmatch-data` (contract C1)."""
    if directory:
        return Path(directory)
    env = os.environ.get(CATALOG_ENV)
    return Path(env) if env else DEFAULT_CATALOG_DIR


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def descriptor_id(reference_id: int, view: int, keypoint: int) -> int:
    """The FAISS id of one reference descriptor."""
    return (reference_id << _REFERENCE_SHIFT) | (view << _KEYPOINT_BITS) | keypoint


def hash_entry_ids(reference_id: int, variants: int) -> NDArray[np.int64]:
    """The FAISS ids of a reference's first `variants` hash variants."""
    return (reference_id << _HASH_VARIANT_BITS) + np.arange(variants, dtype=np.int64)


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
        if not self.directory.exists():
            if not create:
                raise CatalogError(f"no catalog at {self.directory} (run `imgmatch index` first)")
            self.directory.mkdir(parents=True, exist_ok=True)
        if not self.directory.is_dir():
            raise CatalogError(f"{self.directory} is not a directory")
        # FAISS parallelises one search over OpenMP threads; concurrent searches (service
        # threads, worker processes) then oversubscribe the cores, so the count is a setting.
        faiss.omp_set_num_threads(self.config.faiss_threads)
        self._db_lock = threading.RLock()
        self._index_lock = ReadWriteLock()
        try:
            self._db = sqlite3.connect(
                self.directory / DATABASE_NAME, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{self.directory / DATABASE_NAME}: not a catalog ({exc})") from exc
        self._check_schema()
        self._hash_indexes: dict[str, Any] = {}
        self._descriptor_index: Any = None
        self._descriptor_trained_size = 0
        self._loaded_generation = -1
        # True while the in-memory indexes differ from the files on disk.
        self._dirty = False
        self._design_codes: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._design_codes_generation = -1
        self.index_source = ""
        self._ensure_indexes()

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Write the index caches and close the database."""
        self.flush()
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write every index cache whose stamp is behind the database (atomic, stamped)."""
        with self._index_lock.reading():
            if not self._dirty:
                return
            generation = self._loaded_generation
            for name, index in self._named_indexes():
                self._write_index(name, index, generation)
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
        outcomes: list[AddOutcome] = []
        new_rows: list[tuple[int, Fingerprint]] = []
        removed: list[tuple[int, list[tuple[int, int]]]] = []
        changed = False
        with self._db_lock, self._transaction():
            for entry in entries:
                # Another writer may have removed it meanwhile: the entry is then added or
                # refreshed by its sha256 like any other.
                if entry.replaces is not None:
                    with contextlib.suppress(ReferenceNotFoundError):
                        removed.append((entry.replaces, self._delete_locked(entry.replaces)))
                existing = self._db.execute(
                    "SELECT id FROM reference WHERE sha256 = ?", (entry.sha256,)
                ).fetchone()
                if existing is not None:
                    row_values = (
                        entry.path,
                        entry.design,
                        entry.brand,
                        json.dumps(entry.metadata, sort_keys=True),
                        entry.file_size,
                        entry.file_mtime_ns,
                    )
                    refreshed = self._db.execute(
                        "UPDATE reference SET path = ?, design = ?, brand = ?, metadata = ?, "
                        "file_size = ?, file_mtime_ns = ? WHERE id = ? AND (path, design, brand, "
                        "metadata, file_size, file_mtime_ns) IS NOT (?, ?, ?, ?, ?, ?)",
                        (
                            entry.path,
                            entry.design,
                            entry.brand,
                            json.dumps(entry.metadata, sort_keys=True),
                            entry.file_size,
                            entry.file_mtime_ns,
                            existing[0],
                            *row_values,
                        ),
                    )
                    changed = changed or refreshed.rowcount > 0
                    outcomes.append(AddOutcome(self._get_locked(existing[0]), added=False))
                    continue
                if entry.fingerprint is None:
                    raise CatalogError(f"{entry.path}: not in the catalog and no fingerprint given")
                reference_id = self._insert(entry, entry.fingerprint)
                new_rows.append((reference_id, entry.fingerprint))
                outcomes.append(AddOutcome(self._get_locked(reference_id), added=True))
            # Any change bumps the generation: other processes then reload, caches are re-stamped.
            changed = changed or bool(new_rows) or bool(removed)
            generation = self._bump_generation() if changed else self._generation()
        if changed:
            with self._index_lock.writing():
                if self._loaded_generation == generation - 1:
                    self._unindex(removed)
                    for reference_id, fingerprint in new_rows:
                        self._index_fingerprint(reference_id, fingerprint)
                    self._loaded_generation = generation
                    self._dirty = True
                    self._maybe_retrain()
                else:
                    self._rebuild_locked()
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
        references, removed = [], []
        with self._db_lock, self._transaction():
            for reference_id in reference_ids:
                try:
                    references.append(self._get_locked(reference_id))
                except ReferenceNotFoundError:
                    if missing_ok:
                        continue
                    raise
                removed.append((reference_id, self._delete_locked(reference_id)))
            if not removed:
                return []
            generation = self._bump_generation()
        with self._index_lock.writing():
            if self._loaded_generation == generation - 1:
                self._unindex(removed)
                self._loaded_generation = generation
                self._dirty = True
            else:
                self._rebuild_locked()
        return references

    def find_by_path(self, path: str) -> list[Reference]:
        """Every reference stored under exactly this path, newest first (a run of `index`
        stopped between two batches of moved files can leave two)."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT id FROM reference WHERE path = ? ORDER BY id DESC", (path,)
            ).fetchall()
            return [self._get_locked(row[0]) for row in rows]

    def design_codes(self) -> NDArray[np.int64]:
        """A number per design, indexed by reference id (-1: no such reference).

        Two references share a number exactly when they share a design; the numbering holds for
        one database generation (cached per generation; do not modify the array).
        """
        generation = self._generation()
        with self._db_lock:
            if self._design_codes_generation != generation:
                rows = self._db.execute("SELECT id, design FROM reference").fetchall()
                size = max((int(rid) for rid, _ in rows), default=-1) + 1
                codes = np.full(size, -1, dtype=np.int64)
                numbers: dict[str, int] = {}
                for rid, design in rows:
                    codes[int(rid)] = numbers.setdefault(str(design), len(numbers))
                self._design_codes = codes
                self._design_codes_generation = generation
            return self._design_codes

    def get(self, reference_id: int) -> Reference:
        """The reference with this id, or `ReferenceNotFoundError`."""
        with self._db_lock:
            return self._get_locked(reference_id)

    def count_fingerprinted_otherwise(self, signature: str) -> int:
        """How many references were fingerprinted with another signature (or an unknown one)."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM reference WHERE fingerprint_signature != ?", (signature,)
            ).fetchone()
            return int(row[0])

    def find_by_sha256(self, sha256: str) -> Reference | None:
        with self._db_lock:
            row = self._db.execute(
                "SELECT id FROM reference WHERE sha256 = ?", (sha256,)
            ).fetchone()
            return self._get_locked(row[0]) if row else None

    def references(
        self,
        *,
        design: str | None = None,
        brand: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Reference]:
        """References in id order, optionally filtered by exact design and/or brand."""
        where, params = _filters(design, brand)
        sql = f"SELECT * FROM reference {where} ORDER BY id LIMIT ? OFFSET ?"
        with self._db_lock:
            rows = self._db.execute(sql, (*params, -1 if limit is None else limit, offset))
            return [self._row_to_reference(row) for row in rows.fetchall()]

    def count(self, *, design: str | None = None, brand: str | None = None) -> int:
        """How many references, optionally filtered like `references`."""
        where, params = _filters(design, brand)
        with self._db_lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM reference {where}", params).fetchone()
            return int(row[0])

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        """The stored keypoints of one view of a reference (for geometric verification)."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT keypoints FROM feature_view WHERE reference_id = ? AND view = ?",
                (reference_id, view),
            ).fetchone()
        if row is None:
            raise ReferenceNotFoundError(f"reference {reference_id} has no feature view {view}")
        return np.frombuffer(row[0], dtype=np.float32).reshape(-1, KEYPOINT_FIELDS)

    def stats(self) -> CatalogStats:
        with self._db_lock:
            refs, designs, brands = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT design), COUNT(DISTINCT NULLIF(brand, '')) "
                "FROM reference"
            ).fetchone()
            generation = self._generation()
        with self._index_lock.reading():
            descriptors = int(self._descriptor_index.ntotal)
            kind = self._descriptor_kind()
        index_bytes = sum(p.stat().st_size for p in self.directory.glob("*.faiss"))
        db_bytes = sum(p.stat().st_size for p in self.directory.glob(f"{DATABASE_NAME}*"))
        return CatalogStats(
            references=int(refs),
            designs=int(designs),
            brands=int(brands),
            descriptors=descriptors,
            descriptor_index=kind,
            database_bytes=db_bytes,
            index_bytes=index_bytes,
            generation=generation,
        )

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
                    hits.append(
                        HashHit(
                            label >> _HASH_VARIANT_BITS,
                            name,
                            label & ((1 << _HASH_VARIANT_BITS) - 1),
                            distance,
                        )
                    )
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
            distances, labels = _search_in_list_order(self._descriptor_index, queries, k)
        valid = labels >= 0
        reference_ids = np.where(valid, labels >> _REFERENCE_SHIFT, -1)
        views = np.where(valid, (labels >> _KEYPOINT_BITS) & ((1 << _VIEW_BITS) - 1), -1)
        keypoints = np.where(valid, labels & ((1 << _KEYPOINT_BITS) - 1), -1)
        return DescriptorNeighbours(distances.astype(np.int32), reference_ids, views, keypoints)

    # ----------------------------------------------------------------------- maintenance

    def verify(self) -> list[str]:
        """Problems found in the database and index caches; an empty list means healthy."""
        problems: list[str] = []
        with self._db_lock:
            integrity = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                problems.append(f"database integrity check: {integrity}")
            orphans = self._db.execute(
                "SELECT COUNT(*) FROM reference r WHERE NOT EXISTS "
                "(SELECT 1 FROM feature_view f WHERE f.reference_id = r.id)"
            ).fetchone()[0]
            if orphans:
                problems.append(f"{orphans} reference(s) without stored features")
            expected = self._expected_descriptor_count()
            generation = self._generation()
        with self._index_lock.reading():
            if self._descriptor_index.ntotal != expected:
                problems.append(
                    f"descriptor index holds {self._descriptor_index.ntotal} descriptors, "
                    f"database {expected}"
                )
        for name in [*self._hash_indexes, _DESCRIPTOR_INDEX]:
            reason = self._index_file_problem(name, generation)
            if reason:
                problems.append(f"index file {name}: {reason}")
        return problems

    def rebuild(self) -> None:
        """Rebuild every FAISS index from SQLite and write the caches."""
        with self._index_lock.writing():
            self._rebuild_locked()
        self.flush()

    # ----------------------------------------------------------------------- internals

    def _check_schema(self) -> None:
        version = self._meta("schema_version")
        if version is None:
            with self._db_lock, self._transaction():
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(reference)")}
                if "fingerprint_signature" not in columns:
                    # Tables an older imgmatch created but never stamped (it was killed first).
                    self._db.execute(_ADD_SIGNATURE_COLUMN)
                self._set_meta("schema_version", str(SCHEMA_VERSION))
                if self._meta("generation") is None:
                    self._set_meta("generation", "0")
        elif int(version) in (1, 2):
            with self._db_lock, self._transaction():
                # Another process may have migrated it since the version was read.
                if self._meta("schema_version") == "1":
                    # Version 1 stored no fingerprint signature: its references are marked
                    # unknown (''), so the next `imgmatch index` fingerprints them again.
                    self._db.execute(_ADD_SIGNATURE_COLUMN)
                if self._meta("schema_version") in ("1", "2"):
                    # Older references keep their one hash variant until fingerprinted again
                    # (their signature is older too); the hash index files are rebuilt for the
                    # new ids (`_INDEX_LAYOUT`).
                    self._set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise CatalogError(
                f"{self.directory}: catalog schema {version}, this imgmatch reads {SCHEMA_VERSION}"
            )

    def get_setting(self, key: str) -> str | None:
        """A catalog-level setting (e.g. the calibrated flag threshold), or None."""
        return self._meta(f"setting.{key}")

    def set_setting(self, key: str, value: str) -> None:
        with self._db_lock, self._transaction():
            self._set_meta(f"setting.{key}", value)

    def _meta(self, key: str) -> str | None:
        with self._db_lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _generation(self) -> int:
        value = self._meta("generation")
        return int(value) if value is not None else 0

    def _bump_generation(self) -> int:
        generation = self._generation() + 1
        self._set_meta("generation", str(generation))
        return generation

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _delete_locked(self, reference_id: int) -> list[tuple[int, int]]:
        """Delete a reference's rows; return its (view, count) pairs for the index update."""
        self._get_locked(reference_id)
        views = [
            (int(row[0]), int(row[1]))
            for row in self._db.execute(
                "SELECT view, count FROM feature_view WHERE reference_id = ?", (reference_id,)
            )
        ]
        self._db.execute("DELETE FROM reference WHERE id = ?", (reference_id,))
        return views

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
            [hash_entry_ids(reference_id, 1 << _HASH_VARIANT_BITS) for reference_id, _ in removed]
        )
        for index in self._hash_indexes.values():
            index.remove_ids(ids)
        descriptor_ids = [
            descriptor_id(reference_id, view, 0) + np.arange(count, dtype=np.int64)
            for reference_id, views in removed
            for view, count in views
            if count
        ]
        if descriptor_ids:
            self._descriptor_index.remove_ids(np.concatenate(descriptor_ids))

    def _insert(self, entry: NewReference, fingerprint: Fingerprint) -> int:
        cursor = self._db.execute(
            "INSERT INTO reference (path, sha256, design, brand, metadata, width, height, "
            "file_size, file_mtime_ns, added_at, fingerprint_signature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.path,
                entry.sha256,
                entry.design,
                entry.brand,
                json.dumps(entry.metadata, sort_keys=True),
                fingerprint.width,
                fingerprint.height,
                entry.file_size,
                entry.file_mtime_ns,
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                fingerprint.signature,
            ),
        )
        reference_id = int(cursor.lastrowid or 0)
        if reference_id >= 1 << (63 - _REFERENCE_SHIFT):
            raise CatalogError("reference ids exhausted the descriptor id space")
        for name, codes in fingerprint.hashes.items():
            self._db.execute(
                "INSERT INTO hash (reference_id, hasher, code) VALUES (?, ?, ?)",
                (reference_id, name, np.ascontiguousarray(codes, dtype=np.uint8).tobytes()),
            )
        for view, features in enumerate(fingerprint.views):
            if len(features) >= 1 << _KEYPOINT_BITS:
                raise CatalogError(f"at most {(1 << _KEYPOINT_BITS) - 1} keypoints per view")
            self._db.execute(
                "INSERT INTO feature_view (reference_id, view, count, keypoints, descriptors) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    reference_id,
                    view,
                    len(features),
                    features.keypoints.astype(np.float32).tobytes(),
                    features.descriptors.astype(np.uint8).tobytes(),
                ),
            )
        return reference_id

    def _get_locked(self, reference_id: int) -> Reference:
        row = self._db.execute("SELECT * FROM reference WHERE id = ?", (reference_id,)).fetchone()
        if row is None:
            raise ReferenceNotFoundError(f"no reference with id {reference_id}")
        return self._row_to_reference(row)

    @staticmethod
    def _row_to_reference(row: Sequence[Any]) -> Reference:
        (rid, path, sha, design, brand, metadata, width, height, size, mtime, added, sig) = row
        return Reference(
            reference_id=int(rid),
            path=str(path),
            design=str(design),
            brand=str(brand),
            sha256=str(sha),
            width=int(width),
            height=int(height),
            metadata=json.loads(metadata),
            added_at=str(added),
            file_size=size,
            file_mtime_ns=mtime,
            fingerprint_signature=str(sig),
        )

    def _expected_descriptor_count(self) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(count), 0) FROM feature_view").fetchone()
        return int(row[0])

    def _named_indexes(self) -> Iterable[tuple[str, Any]]:
        yield from self._hash_indexes.items()
        yield _DESCRIPTOR_INDEX, self._descriptor_index

    def _descriptor_kind(self) -> str:
        index = self._descriptor_index
        if isinstance(index, faiss.IndexBinaryIVF):
            return f"ivf{index.nlist}"
        return "flat"

    def _index_path(self, name: str) -> Path:
        return self.directory / f"{name}.faiss"

    def _hasher_names(self) -> list[str]:
        with self._db_lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT hasher FROM hash ORDER BY 1")]

    def _ensure_indexes(self) -> None:
        """Load the index caches where their stamps match the database; rebuild otherwise."""
        with self._index_lock.writing():
            generation = self._generation()
            if self._index_file_problem(_DESCRIPTOR_INDEX, generation) is not None:
                self._rebuild_locked()
                self.index_source = "rebuilt"
                return
            descriptor_index = self._read_index(_DESCRIPTOR_INDEX)
            with self._db_lock:
                expected = self._expected_descriptor_count()
            if descriptor_index.ntotal != expected:
                self._rebuild_locked()
                self.index_source = "rebuilt"
                return
            names = self._hasher_names()
            if all(self._index_file_problem(name, generation) is None for name in names):
                self._hash_indexes = {name: self._read_index(name) for name in names}
                self.index_source = "loaded"
            else:
                # Only the small hash indexes are rebuilt (after their id layout changed, say):
                # the descriptor index, trained and far larger, stays as it was.
                read_generation, hash_rows, _ = self._read_fingerprint_rows(views=False)
                if read_generation != generation:
                    self._rebuild_locked()
                    self.index_source = "rebuilt"
                    return
                self._hash_indexes = _hash_indexes_from_rows(hash_rows)
                self._dirty = True
                self.index_source = "rebuilt hash indexes"
            self._descriptor_index = descriptor_index
            self._descriptor_trained_size = int(self._descriptor_index.ntotal)
            self._loaded_generation = generation
            self._apply_search_parameters()

    def _refresh_if_changed(self) -> None:
        """Reload when another process (or connection) changed the catalog since we loaded."""
        if self._generation() != self._loaded_generation:
            with self._index_lock.writing():
                if self._generation() != self._loaded_generation:
                    self._rebuild_locked()

    def _index_file_problem(self, name: str, generation: int) -> str | None:
        stamp_text = self._meta(f"index.{name}")
        path = self._index_path(name)
        if stamp_text is None:
            return "never written"
        stamp = json.loads(stamp_text)
        if stamp.get("generation") != generation:
            return f"stale (generation {stamp.get('generation')}, database {generation})"
        if name != _DESCRIPTOR_INDEX and stamp.get("layout", 1) != _INDEX_LAYOUT:
            return f"id layout {stamp.get('layout', 1)}, this imgmatch uses {_INDEX_LAYOUT}"
        if not path.is_file():
            return "missing"
        size = path.stat().st_size
        if size != stamp.get("bytes"):
            return f"size {size} differs from its stamp ({stamp.get('bytes')})"
        if size > self.config.max_index_file_bytes:
            return f"{size} bytes is over the {self.config.max_index_file_bytes}-byte limit"
        if sha256_file(path) != stamp.get("sha256"):
            return "checksum differs from its stamp (corrupt)"
        return None

    def _read_index(self, name: str) -> Any:
        data = np.fromfile(self._index_path(name), dtype=np.uint8)
        return faiss.deserialize_index_binary(data)

    def _write_index(self, name: str, index: Any, generation: int) -> None:
        data = faiss.serialize_index_binary(index)
        path = self._index_path(name)
        handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data.tobytes())
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        _fsync_directory(self.directory)
        stamp = {
            "generation": generation,
            "bytes": int(data.size),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            "ntotal": int(index.ntotal),
            "layout": _INDEX_LAYOUT,
        }
        with self._db_lock, self._transaction():
            self._set_meta(f"index.{name}", json.dumps(stamp, sort_keys=True))

    def _read_fingerprint_rows(self, views: bool) -> tuple[int, list[Any], list[Any]]:
        """(generation, every hash row, every feature-view row if `views`), one snapshot."""
        with self._db_lock:
            self._db.execute("BEGIN")
            try:
                generation = self._generation()
                hash_rows = self._db.execute(
                    "SELECT reference_id, hasher, code FROM hash ORDER BY reference_id"
                ).fetchall()
                view_rows = (
                    self._db.execute(
                        "SELECT reference_id, view, count, descriptors FROM feature_view "
                        "ORDER BY reference_id, view"
                    ).fetchall()
                    if views
                    else []
                )
            finally:
                self._db.execute("COMMIT")
        return generation, hash_rows, view_rows

    def _rebuild_locked(self) -> None:
        """Build every index from SQLite. Caller holds the index write lock."""
        generation, hash_rows, view_rows = self._read_fingerprint_rows(views=True)
        self._hash_indexes = _hash_indexes_from_rows(hash_rows)
        total = sum(int(row[2]) for row in view_rows)
        descriptors = np.empty((total, DESCRIPTOR_BYTES), dtype=np.uint8)
        descriptor_ids = np.empty(total, dtype=np.int64)
        at = 0
        for reference_id, view, count, blob in view_rows:
            descriptors[at : at + count] = np.frombuffer(blob, np.uint8).reshape(-1, 32)
            descriptor_ids[at : at + count] = descriptor_id(reference_id, view, 0) + np.arange(
                count
            )
            at += count
        self._descriptor_index = self._new_descriptor_index(descriptors)
        if total:
            self._descriptor_index.add_with_ids(descriptors, descriptor_ids)
        self._descriptor_trained_size = total
        self._loaded_generation = generation
        self._dirty = True
        self._apply_search_parameters()

    def _new_descriptor_index(self, training: NDArray[np.uint8]) -> Any:
        count = len(training)
        bits = DESCRIPTOR_BYTES * 8
        config = self.config
        if count <= config.exact_search_max_descriptors:
            return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))
        # Centroids are a seeded sample of the catalog's own descriptors. Binary k-means costs
        # lists x points x iterations, minutes at catalog scale, and on ORB descriptors gave no
        # better recall than sampled centroids (test_catalog measures recall against exact).
        rng = np.random.default_rng(0)
        # The index serves the catalog until it has grown ivf_retrain_growth times: lists are
        # sized for the middle of that range, not for today's count.
        expected = count * (1 + config.ivf_retrain_growth) / 2
        lists = int(np.clip(expected // config.ivf_list_size, config.ivf_min_lists, count))
        centroids = np.ascontiguousarray(training[np.sort(rng.choice(count, lists, replace=False))])
        # Assigning a descriptor to its list compares it with every centroid; with tens of
        # thousands of lists that dominates both adding and searching. The centroids are
        # themselves found through small inverted files: one over sqrt(lists) top centroids,
        # or, for the largest catalogs, two levels over lists^(1/3) and lists^(2/3).
        deep = lists >= config.ivf_deep_quantizer_lists
        sizes = (
            [round(lists ** (1 / 3)), round(lists ** (2 / 3))]
            if deep
            else [max(config.ivf_min_lists // 4, int(np.sqrt(lists)))]
        )
        level_centroids = [centroids]
        for size in reversed(sizes):
            above = level_centroids[0]
            chosen = np.sort(rng.choice(len(above), size, replace=False))
            level_centroids.insert(0, np.ascontiguousarray(above[chosen]))
        quantizer: Any = faiss.IndexBinaryFlat(bits)
        quantizer.add(level_centroids[0])
        for level, members in enumerate(level_centroids[1:]):
            cells = len(level_centroids[level])
            ivf = faiss.IndexBinaryIVF(quantizer, bits, cells)
            ivf.is_trained = True
            # Probes are fixed before adding: descriptors and queries then share the
            # quantizer's errors. The shallow quantizer compares each descriptor with at least
            # ivf_quantizer_candidates centroids; the deep one probes one cell per level.
            ivf.nprobe = (
                1
                if deep
                else max(1, math.ceil(config.ivf_quantizer_candidates * cells / len(members)))
            )
            # Each FAISS index points into the one below it; keep the Python wrapper alive.
            ivf.referenced_quantizer = quantizer  # type: ignore[attr-defined]
            ivf.add(members)
            quantizer = ivf
        index = faiss.IndexBinaryIVF(quantizer, bits, lists)
        index.is_trained = True
        index.referenced_quantizer = quantizer  # type: ignore[attr-defined]
        return index

    def _apply_search_parameters(self) -> None:
        if isinstance(self._descriptor_index, faiss.IndexBinaryIVF):
            self._descriptor_index.nprobe = self.config.ivf_probes

    def _maybe_retrain(self) -> None:
        """Switch exact -> IVF, or retrain IVF, once the catalog outgrew what it was built for."""
        total = int(self._descriptor_index.ntotal)
        is_ivf = isinstance(self._descriptor_index, faiss.IndexBinaryIVF)
        outgrew_exact = not is_ivf and total > self.config.exact_search_max_descriptors
        outgrew_training = is_ivf and total > self._descriptor_trained_size * (
            self.config.ivf_retrain_growth
        )
        if outgrew_exact or outgrew_training:
            self._rebuild_locked()

    def _index_fingerprint(self, reference_id: int, fingerprint: Fingerprint) -> None:
        for name, codes in fingerprint.hashes.items():
            index = self._hash_indexes.get(name)
            if index is None:
                index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(HASH_BITS))
                self._hash_indexes[name] = index
            index.add_with_ids(
                np.ascontiguousarray(codes, dtype=np.uint8),
                hash_entry_ids(reference_id, len(codes)),
            )
        for view, features in enumerate(fingerprint.views):
            if len(features) == 0:
                continue
            self._descriptor_index.add_with_ids(
                np.ascontiguousarray(features.descriptors, dtype=np.uint8),
                descriptor_id(reference_id, view, 0) + np.arange(len(features), dtype=np.int64),
            )


def _hash_indexes_from_rows(rows: Sequence[Any]) -> dict[str, Any]:
    """One FAISS index per hasher from stored (reference id, hasher, code) rows; a code holds
    one 8-byte hash per variant (one for references stored before schema 3, else 8)."""
    by_hasher: dict[str, tuple[list[NDArray[np.int64]], list[bytes]]] = {}
    for reference_id, hasher, code in rows:
        ids, codes = by_hasher.setdefault(hasher, ([], []))
        ids.append(hash_entry_ids(reference_id, len(code) // (HASH_BITS // 8)))
        codes.append(code)
    indexes = {}
    for hasher, (ids, codes) in by_hasher.items():
        index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(HASH_BITS))
        index.add_with_ids(
            np.frombuffer(b"".join(codes), np.uint8).reshape(-1, HASH_BITS // 8),
            np.concatenate(ids),
        )
        indexes[hasher] = index
    return indexes


def _search_in_list_order(index: Any, queries: NDArray[np.uint8], k: int) -> tuple[Any, Any]:
    """`index.search(queries, k)`, with an IVF index's queries scanned in the order of the lists
    they probe.

    The lists are scattered over an index far larger than the CPU caches, and a batch's
    descriptors crowd into the same (long) lists: taken in list order, the queries probing one
    list follow each other and find it still in cache. The results are those of
    `index.search`; only the order of work changes.
    """
    # FAISS probes min(nprobe, nlist) lists but expects an assignment nprobe wide; with more
    # probes than lists, only its own search keeps the two consistent.
    if (
        not isinstance(index, faiss.IndexBinaryIVF)
        or len(queries) < 2
        or index.nprobe > index.nlist
    ):
        return index.search(queries, k)
    coarse_distances, lists = index.quantizer.search(queries, index.nprobe)
    order = np.argsort(lists[:, 0], kind="stable")
    found_distances, found_labels = index.search_preassigned(
        queries[order], k, lists[order], coarse_distances[order]
    )
    distances = np.empty_like(found_distances)
    labels = np.empty_like(found_labels)
    distances[order] = found_distances
    labels[order] = found_labels
    return distances, labels


def _filters(design: str | None, brand: str | None) -> tuple[str, list[str]]:
    """A WHERE clause (or "") and its parameters for exact design and brand filters."""
    clauses, params = [], []
    for column, value in (("design", design), ("brand", brand)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: fsync the directory entry too (where the OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
