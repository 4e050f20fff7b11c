"""The catalog's SQLite database: the source of truth for references and their fingerprints.

Every read and write of the database goes through `Store`; one connection, shared by the
threads of a process under one (reentrant) lock. SQLite's errors leave it as `CatalogError`s,
and a row whose values cannot be what imgmatch stored is refused as `CatalogDamagedError`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from imgmatch.catalog.ids import MAX_KEYPOINTS_PER_VIEW, MAX_REFERENCE_ID, MAX_VIEW
from imgmatch.catalog.integrity import (
    ReferenceRows,
    blob_size,
    fingerprint_digest,
    hash_problem,
    raise_if_damaged,
    reference_problems,
    view_problem,
)
from imgmatch.catalog.read_connections import ReadConnections
from imgmatch.catalog.records import NewReference, Reference
from imgmatch.catalog.rows import (
    REFERENCE_COLUMNS,
    read_designs,
    read_generation,
    read_keypoints,
    read_reference,
    reference_from_row,
)
from imgmatch.catalog.schema import (
    DATABASE_NAME,
    open_database,
    read_meta,
    transaction,
    translated,
    write_meta,
)
from imgmatch.errors import CatalogDamagedError, CatalogError
from imgmatch.features import Keypoints
from imgmatch.fingerprint import Fingerprint

# Rows of the fingerprint tables as `read_fingerprint_rows` returns them.
HashRow = tuple[int, str, bytes]
ViewRow = tuple[int, int, int, bytes]

# SQLite's integrity check stops after this many findings.
_INTEGRITY_FINDINGS = 5


class Store:
    """References, their metadata and fingerprints, and the catalog's settings, in SQLite."""

    def __init__(self, directory: Path, *, create: bool) -> None:
        self.path = directory / DATABASE_NAME
        # Reentrant: a transaction's holder calls the other methods inside it.
        self.lock = threading.RLock()
        # The first damage met (a damaged page, a malformed row): the catalog is not healthy
        # while this process runs, whatever a later request happens to read.
        self.damage: CatalogDamagedError | None = None
        # Connections for snapshots, each in its own read transaction while borrowed.
        self.readers = ReadConnections(self.path, self.recording)
        self._db = open_database(directory, create=create)
        try:
            # Every search compares generations: a damaged one refuses the catalog at once.
            self.generation()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self.lock:
            self._db.close()
        self.readers.close()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """SQLite's errors as `CatalogError`s; the damage met is kept in `damage`."""
        try:
            with translated(self.path):
                yield
        except CatalogDamagedError as exc:
            self.damage = exc
            raise

    @contextlib.contextmanager
    def _access(self) -> Iterator[sqlite3.Connection]:
        with self.lock, self.recording():
            yield self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._access() as db, transaction(db):
            yield

    # ----------------------------------------------------------------------- meta

    def meta(self, key: str) -> str | None:
        with self._access() as db:
            return read_meta(db, key)

    def set_meta(self, key: str, value: str) -> None:
        """Within a `transaction`."""
        with self._access() as db:
            write_meta(db, key, value)

    def generation(self) -> int:
        with self._access() as db:
            return read_generation(db, self.path)

    def bump_generation(self) -> int:
        """Within a `transaction`: every change of references makes a new generation."""
        generation = self.generation() + 1
        self.set_meta("generation", str(generation))
        return generation

    # ----------------------------------------------------------------------- references

    def get(self, reference_id: int, *, lenient: bool = False) -> Reference:
        """The reference with this id; `lenient` reads unreadable metadata as empty (for
        removing a damaged reference, which needs none of it)."""
        with self._access() as db:
            return read_reference(db, self.path, reference_id, lenient=lenient)

    def id_of_sha256(self, sha256: str) -> int | None:
        with self._access() as db:
            row = db.execute("SELECT id FROM reference WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else int(row[0])

    def ids_at_path(self, path: str) -> list[int]:
        """Ids of the references stored under exactly this path, newest first."""
        with self._access() as db:
            rows = db.execute(
                "SELECT id FROM reference WHERE path = ? ORDER BY id DESC", (path,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def references(
        self, design: str | None, brand: str | None, offset: int, limit: int | None
    ) -> list[Reference]:
        where, params = _filters(design, brand)
        sql = f"SELECT {REFERENCE_COLUMNS} FROM reference {where} ORDER BY id LIMIT ? OFFSET ?"
        with self._access() as db:
            rows = db.execute(sql, (*params, -1 if limit is None else limit, offset)).fetchall()
            return [reference_from_row(self.path, row) for row in rows]

    def count(self, design: str | None = None, brand: str | None = None) -> int:
        where, params = _filters(design, brand)
        with self._access() as db:
            row = db.execute(f"SELECT COUNT(*) FROM reference {where}", params).fetchone()
        return int(row[0])

    def count_signed_otherwise(self, signature: str) -> int:
        with self._access() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM reference WHERE fingerprint_signature != ?", (signature,)
            ).fetchone()
        return int(row[0])

    def designs_by_id(self) -> list[tuple[int, str]]:
        with self._access() as db:
            return read_designs(db)

    def counts(self) -> tuple[int, int, int]:
        """(references, designs, brands)."""
        with self._access() as db:
            refs, designs, brands = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT design), COUNT(DISTINCT NULLIF(brand, '')) "
                "FROM reference"
            ).fetchone()
        return int(refs), int(designs), int(brands)

    def refresh(self, reference_id: int, entry: NewReference) -> bool:
        """Within a `transaction`: give a stored reference the entry's path and metadata;
        whether anything changed."""
        values = (
            entry.path,
            entry.design,
            entry.brand,
            json.dumps(entry.metadata, sort_keys=True),
            entry.file_size,
            entry.file_mtime_ns,
        )
        with self._access() as db:
            refreshed = db.execute(
                "UPDATE reference SET path = ?, design = ?, brand = ?, metadata = ?, "
                "file_size = ?, file_mtime_ns = ? WHERE id = ? AND (path, design, brand, "
                "metadata, file_size, file_mtime_ns) IS NOT (?, ?, ?, ?, ?, ?)",
                (*values, reference_id, *values),
            )
        return refreshed.rowcount > 0

    def insert(self, entry: NewReference, fingerprint: Fingerprint) -> int:
        """Within a `transaction`: store a new reference and its fingerprint, with the
        fingerprint's checksum; its id."""
        hash_rows = [
            (name, np.ascontiguousarray(codes, dtype=np.uint8).tobytes())
            for name, codes in fingerprint.hashes.items()
        ]
        if len(fingerprint.views) > MAX_VIEW + 1:
            raise CatalogError(f"at most {MAX_VIEW + 1} feature views per reference")
        view_rows = []
        for view, features in enumerate(fingerprint.views):
            if len(features) > MAX_KEYPOINTS_PER_VIEW:
                raise CatalogError(f"at most {MAX_KEYPOINTS_PER_VIEW} keypoints per view")
            keypoints = features.keypoints.astype(np.float32).tobytes()
            descriptors = features.descriptors.astype(np.uint8).tobytes()
            view_rows.append((view, len(features), keypoints, descriptors))
        with self._access() as db:
            cursor = db.execute(
                "INSERT INTO reference (path, sha256, design, brand, metadata, width, height, "
                "file_size, file_mtime_ns, added_at, fingerprint_signature, fingerprint_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    fingerprint_digest(hash_rows, view_rows),
                ),
            )
            reference_id = int(cursor.lastrowid or 0)
            if reference_id > MAX_REFERENCE_ID:
                raise CatalogError("reference ids exhausted the descriptor id space")
            db.executemany(
                "INSERT INTO hash (reference_id, hasher, code) VALUES (?, ?, ?)",
                [(reference_id, *row) for row in hash_rows],
            )
            db.executemany(
                "INSERT INTO feature_view (reference_id, view, count, keypoints, descriptors) "
                "VALUES (?, ?, ?, ?, ?)",
                [(reference_id, *row) for row in view_rows],
            )
        return reference_id

    def delete(self, reference_id: int) -> list[tuple[int, int]]:
        """Within a `transaction`: delete a reference's rows; its (view, count) pairs."""
        self.get(reference_id, lenient=True)
        with self._access() as db:
            views = [
                (int(row[0]), int(row[1]))
                for row in db.execute(
                    "SELECT view, count FROM feature_view WHERE reference_id = ?", (reference_id,)
                )
            ]
            db.execute("DELETE FROM reference WHERE id = ?", (reference_id,))
        return views

    # ----------------------------------------------------------------------- fingerprints

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        with self._access() as db:
            return read_keypoints(db, self.path, reference_id, view)

    def descriptor_count(self) -> int:
        """How many descriptors the feature views hold: what the descriptor index must hold."""
        with self._access() as db:
            row = db.execute("SELECT COALESCE(SUM(count), 0) FROM feature_view").fetchone()
        return int(row[0])

    def hasher_names(self) -> list[str]:
        with self._access() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT hasher FROM hash ORDER BY 1")]

    def read_fingerprint_rows(self, views: bool) -> tuple[int, list[HashRow], list[ViewRow]]:
        """(generation, every hash row, every feature-view row if `views`), one snapshot;
        `CatalogDamagedError` for a row whose sizes disagree, before anything is indexed."""
        with self._access() as db:
            db.execute("BEGIN")
            try:
                generation = self.generation()
                hash_rows = db.execute(
                    "SELECT reference_id, hasher, code FROM hash ORDER BY reference_id"
                ).fetchall()
                for reference_id, hasher, code in hash_rows:
                    raise_if_damaged(self.path, reference_id, hash_problem(hasher, blob_size(code)))
                view_rows = []
                if views:
                    for rid, view, count, keypoint_bytes, descriptors in db.execute(
                        "SELECT reference_id, view, count, CASE typeof(keypoints) WHEN 'blob' "
                        "THEN length(keypoints) END, descriptors FROM feature_view "
                        "ORDER BY reference_id, view"
                    ):
                        problem = view_problem(view, count, keypoint_bytes, blob_size(descriptors))
                        raise_if_damaged(self.path, rid, problem)
                        view_rows.append((rid, view, count, descriptors))
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        return generation, hash_rows, view_rows

    # ----------------------------------------------------------------------- maintenance

    def problems(self) -> list[str]:
        """Everything wrong with the database: SQLite's integrity check, references without
        features, malformed rows, fingerprints whose checksum differs, unreadable metadata."""
        problems: list[str] = []
        for check in (self._integrity_problems, self._reference_problems):
            try:
                problems += check()
            except CatalogError as exc:
                problems.append(str(exc))
        return problems

    def _integrity_problems(self) -> list[str]:
        with self._access() as db:
            # A finding may span lines; a problem is one line.
            findings = [
                "; ".join(str(row[0]).splitlines())
                for row in db.execute(f"PRAGMA integrity_check({_INTEGRITY_FINDINGS})")
            ]
            orphans = db.execute(
                "SELECT COUNT(*) FROM reference r WHERE NOT EXISTS "
                "(SELECT 1 FROM feature_view f WHERE f.reference_id = r.id)"
            ).fetchone()[0]
        problems = []
        if findings != ["ok"]:
            problems.append(
                f"{self.path}: database integrity check: {'; '.join(findings)}: "
                f"restore {DATABASE_NAME} from a backup"
            )
        if orphans:
            problems.append(f"{orphans} reference(s) without stored features")
        return problems

    def _reference_problems(self) -> list[str]:
        return reference_problems(self.path, self._each_reference_rows())

    def _each_reference_rows(self) -> Iterator[ReferenceRows]:
        """Every reference's checksum, metadata and whole fingerprint rows, one at a time."""
        with self._access() as db:
            references = db.execute(
                "SELECT id, fingerprint_sha256, metadata FROM reference ORDER BY id"
            ).fetchall()
        for reference_id, checksum, metadata in references:
            with self._access() as db:
                hashes = db.execute(
                    "SELECT hasher, code FROM hash WHERE reference_id = ?", (reference_id,)
                ).fetchall()
                views = db.execute(
                    "SELECT view, count, keypoints, descriptors FROM feature_view "
                    "WHERE reference_id = ?",
                    (reference_id,),
                ).fetchall()
            yield ReferenceRows(reference_id, checksum, metadata, hashes, views)

    def file_bytes(self) -> int:
        """The database's size on disk, with its write-ahead log."""
        return sum(p.stat().st_size for p in self.path.parent.glob(f"{DATABASE_NAME}*"))


def _filters(design: str | None, brand: str | None) -> tuple[str, list[str]]:
    """A WHERE clause (or "") and its parameters for exact design and brand filters."""
    clauses, params = [], []
    for column, value in (("design", design), ("brand", brand)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
