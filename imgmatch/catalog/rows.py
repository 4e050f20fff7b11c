"""Reading the catalog's rows on any connection: the catalog's own, or a snapshot's.

Columns are read by name: a reference row is selected with `REFERENCE_COLUMNS` and read back
through the same names, so adding a column never shifts another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imgmatch.catalog.integrity import blob_size, metadata_problem, raise_if_damaged, view_problem
from imgmatch.catalog.records import Reference
from imgmatch.catalog.schema import DATABASE_NAME, read_meta
from imgmatch.errors import CatalogDamagedError, ReferenceNotFoundError
from imgmatch.features import KEYPOINT_FIELDS, Keypoints

REFERENCE_FIELDS = (
    "id",
    "path",
    "sha256",
    "design",
    "brand",
    "metadata",
    "width",
    "height",
    "file_size",
    "file_mtime_ns",
    "added_at",
    "fingerprint_signature",
)
REFERENCE_COLUMNS = ", ".join(REFERENCE_FIELDS)


def read_generation(db: sqlite3.Connection, database: Path) -> int:
    """The database generation: every change of references makes a new one."""
    value = read_meta(db, "generation")
    if value is None:
        return 0
    if not value.isdigit():
        raise CatalogDamagedError(
            f"{database}: the catalog generation {value!r} is not a number: the "
            f"database is damaged: restore {DATABASE_NAME} from a backup"
        )
    return int(value)


def read_reference(
    db: sqlite3.Connection, database: Path, reference_id: int, *, lenient: bool = False
) -> Reference:
    """The reference with this id, or `ReferenceNotFoundError`; see `reference_from_row`."""
    row = db.execute(
        f"SELECT {REFERENCE_COLUMNS} FROM reference WHERE id = ?", (reference_id,)
    ).fetchone()
    if row is None:
        raise ReferenceNotFoundError(f"no reference with id {reference_id}")
    return reference_from_row(database, row, lenient=lenient)


def reference_from_row(
    database: Path, row: Sequence[object], *, lenient: bool = False
) -> Reference:
    """A row selected with `REFERENCE_COLUMNS` as a `Reference`; `lenient` reads unreadable
    metadata as empty (for removing a damaged reference, which needs none of it)."""
    values = dict(zip(REFERENCE_FIELDS, row, strict=True))
    reference_id = int(values["id"])  # type: ignore[call-overload]
    problem = metadata_problem(values["metadata"])
    if problem and not lenient:
        raise_if_damaged(database, reference_id, f"its metadata {problem}")
    return Reference(
        reference_id=reference_id,
        path=str(values["path"]),
        design=str(values["design"]),
        brand=str(values["brand"]),
        sha256=str(values["sha256"]),
        width=int(values["width"]),  # type: ignore[call-overload]
        height=int(values["height"]),  # type: ignore[call-overload]
        metadata={} if problem else json.loads(str(values["metadata"])),
        added_at=str(values["added_at"]),
        file_size=values["file_size"],  # type: ignore[arg-type]
        file_mtime_ns=values["file_mtime_ns"],  # type: ignore[arg-type]
        fingerprint_signature=str(values["fingerprint_signature"]),
    )


def read_keypoints(
    db: sqlite3.Connection, database: Path, reference_id: int, view: int
) -> Keypoints:
    """The stored keypoints of one feature view; `ReferenceNotFoundError` where there is none."""
    row = db.execute(
        "SELECT count, keypoints, length(descriptors) AS descriptor_bytes FROM feature_view "
        "WHERE reference_id = ? AND view = ?",
        (reference_id, view),
    ).fetchone()
    if row is None:
        raise ReferenceNotFoundError(f"reference {reference_id} has no feature view {view}")
    count, keypoints, descriptor_bytes = row
    problem = view_problem(view, count, blob_size(keypoints), descriptor_bytes)
    raise_if_damaged(database, reference_id, problem)
    return np.frombuffer(keypoints, dtype=np.float32).reshape(-1, KEYPOINT_FIELDS)


def read_designs(db: sqlite3.Connection) -> list[tuple[int, str]]:
    """(reference id, design) of every reference."""
    rows = db.execute("SELECT id, design FROM reference").fetchall()
    return [(int(reference_id), str(design)) for reference_id, design in rows]
