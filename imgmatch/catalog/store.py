"""The catalog's SQLite database: the source of truth for references and their fingerprints.

Every read and write of the database goes through `Store`; one connection, shared by the
threads of a process under one (reentrant) lock.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imgmatch.catalog.ids import MAX_KEYPOINTS_PER_VIEW, MAX_REFERENCE_ID
from imgmatch.catalog.records import NewReference, Reference
from imgmatch.catalog.schema import DATABASE_NAME, connect, read_meta, transaction, write_meta
from imgmatch.errors import CatalogError, ReferenceNotFoundError
from imgmatch.features import KEYPOINT_FIELDS, Keypoints
from imgmatch.fingerprint import Fingerprint

# Rows of the fingerprint tables as `read_fingerprint_rows` returns them.
HashRow = tuple[int, str, bytes]
ViewRow = tuple[int, int, int, bytes]


class Store:
    """References, their metadata and fingerprints, and the catalog's settings, in SQLite."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DATABASE_NAME
        # Reentrant: a transaction's holder calls the other methods inside it.
        self.lock = threading.RLock()
        self._db = connect(self.path)

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock, transaction(self._db):
            yield

    # ----------------------------------------------------------------------- meta

    def meta(self, key: str) -> str | None:
        with self.lock:
            return read_meta(self._db, key)

    def set_meta(self, key: str, value: str) -> None:
        """Within a `transaction`."""
        write_meta(self._db, key, value)

    def generation(self) -> int:
        value = self.meta("generation")
        return int(value) if value is not None else 0

    def bump_generation(self) -> int:
        """Within a `transaction`: every change of references makes a new generation."""
        generation = self.generation() + 1
        self.set_meta("generation", str(generation))
        return generation

    # ----------------------------------------------------------------------- references

    def get(self, reference_id: int) -> Reference:
        with self.lock:
            row = self._db.execute(
                "SELECT * FROM reference WHERE id = ?", (reference_id,)
            ).fetchone()
        if row is None:
            raise ReferenceNotFoundError(f"no reference with id {reference_id}")
        return _row_to_reference(row)

    def id_of_sha256(self, sha256: str) -> int | None:
        with self.lock:
            row = self._db.execute(
                "SELECT id FROM reference WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else int(row[0])

    def ids_at_path(self, path: str) -> list[int]:
        """Ids of the references stored under exactly this path, newest first."""
        with self.lock:
            rows = self._db.execute(
                "SELECT id FROM reference WHERE path = ? ORDER BY id DESC", (path,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def references(
        self, design: str | None, brand: str | None, offset: int, limit: int | None
    ) -> list[Reference]:
        where, params = _filters(design, brand)
        sql = f"SELECT * FROM reference {where} ORDER BY id LIMIT ? OFFSET ?"
        with self.lock:
            rows = self._db.execute(sql, (*params, -1 if limit is None else limit, offset))
            return [_row_to_reference(row) for row in rows.fetchall()]

    def count(self, design: str | None = None, brand: str | None = None) -> int:
        where, params = _filters(design, brand)
        with self.lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM reference {where}", params).fetchone()
        return int(row[0])

    def count_signed_otherwise(self, signature: str) -> int:
        with self.lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM reference WHERE fingerprint_signature != ?", (signature,)
            ).fetchone()
        return int(row[0])

    def designs_by_id(self) -> list[tuple[int, str]]:
        with self.lock:
            rows = self._db.execute("SELECT id, design FROM reference").fetchall()
        return [(int(rid), str(design)) for rid, design in rows]

    def counts(self) -> tuple[int, int, int]:
        """(references, designs, brands)."""
        with self.lock:
            refs, designs, brands = self._db.execute(
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
        refreshed = self._db.execute(
            "UPDATE reference SET path = ?, design = ?, brand = ?, metadata = ?, "
            "file_size = ?, file_mtime_ns = ? WHERE id = ? AND (path, design, brand, "
            "metadata, file_size, file_mtime_ns) IS NOT (?, ?, ?, ?, ?, ?)",
            (*values, reference_id, *values),
        )
        return refreshed.rowcount > 0

    def insert(self, entry: NewReference, fingerprint: Fingerprint) -> int:
        """Within a `transaction`: store a new reference and its fingerprint; its id."""
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
        if reference_id > MAX_REFERENCE_ID:
            raise CatalogError("reference ids exhausted the descriptor id space")
        for name, codes in fingerprint.hashes.items():
            self._db.execute(
                "INSERT INTO hash (reference_id, hasher, code) VALUES (?, ?, ?)",
                (reference_id, name, np.ascontiguousarray(codes, dtype=np.uint8).tobytes()),
            )
        for view, features in enumerate(fingerprint.views):
            if len(features) > MAX_KEYPOINTS_PER_VIEW:
                raise CatalogError(f"at most {MAX_KEYPOINTS_PER_VIEW} keypoints per view")
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

    def delete(self, reference_id: int) -> list[tuple[int, int]]:
        """Within a `transaction`: delete a reference's rows; its (view, count) pairs."""
        self.get(reference_id)
        views = [
            (int(row[0]), int(row[1]))
            for row in self._db.execute(
                "SELECT view, count FROM feature_view WHERE reference_id = ?", (reference_id,)
            )
        ]
        self._db.execute("DELETE FROM reference WHERE id = ?", (reference_id,))
        return views

    # ----------------------------------------------------------------------- fingerprints

    def keypoints(self, reference_id: int, view: int) -> Keypoints:
        with self.lock:
            row = self._db.execute(
                "SELECT keypoints FROM feature_view WHERE reference_id = ? AND view = ?",
                (reference_id, view),
            ).fetchone()
        if row is None:
            raise ReferenceNotFoundError(f"reference {reference_id} has no feature view {view}")
        return np.frombuffer(row[0], dtype=np.float32).reshape(-1, KEYPOINT_FIELDS)

    def descriptor_count(self) -> int:
        """How many descriptors the feature views hold: what the descriptor index must hold."""
        with self.lock:
            row = self._db.execute("SELECT COALESCE(SUM(count), 0) FROM feature_view").fetchone()
        return int(row[0])

    def hasher_names(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT hasher FROM hash ORDER BY 1")]

    def read_fingerprint_rows(self, views: bool) -> tuple[int, list[HashRow], list[ViewRow]]:
        """(generation, every hash row, every feature-view row if `views`), one snapshot."""
        with self.lock:
            self._db.execute("BEGIN")
            try:
                generation = self.generation()
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

    # ----------------------------------------------------------------------- maintenance

    def integrity_problems(self) -> list[str]:
        """What SQLite's own integrity check and the references without features say."""
        problems = []
        with self.lock:
            integrity = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                problems.append(f"database integrity check: {integrity}")
            orphans = self._db.execute(
                "SELECT COUNT(*) FROM reference r WHERE NOT EXISTS "
                "(SELECT 1 FROM feature_view f WHERE f.reference_id = r.id)"
            ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} reference(s) without stored features")
        return problems

    def file_bytes(self) -> int:
        """The database's size on disk, with its write-ahead log."""
        return sum(p.stat().st_size for p in self.path.parent.glob(f"{DATABASE_NAME}*"))


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


def _filters(design: str | None, brand: str | None) -> tuple[str, list[str]]:
    """A WHERE clause (or "") and its parameters for exact design and brand filters."""
    clauses, params = [], []
    for column, value in (("design", design), ("brand", brand)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
