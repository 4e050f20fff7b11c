"""The catalog database's tables, and bringing a database of an older imgmatch up to date."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from imgmatch.errors import CatalogError

DATABASE_NAME = "catalog.sqlite3"
SCHEMA_VERSION = 3

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


def connect(path: Path) -> sqlite3.Connection:
    """The catalog database at `path`, created if absent and brought up to date."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"{path}: not a catalog ({exc})") from exc
    _migrate(db, path.parent)
    return db


def read_meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (taken at once, so two writers never deadlock upgrading)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection, directory: Path) -> None:
    version = read_meta(db, "schema_version")
    if version is None:
        with transaction(db):
            columns = {row[1] for row in db.execute("PRAGMA table_info(reference)")}
            if "fingerprint_signature" not in columns:
                # Tables an older imgmatch created but never stamped (it was killed first).
                db.execute(_ADD_SIGNATURE_COLUMN)
            write_meta(db, "schema_version", str(SCHEMA_VERSION))
            if read_meta(db, "generation") is None:
                write_meta(db, "generation", "0")
    elif int(version) in (1, 2):
        with transaction(db):
            # Another process may have migrated it since the version was read.
            if read_meta(db, "schema_version") == "1":
                # Version 1 stored no fingerprint signature: its references are marked
                # unknown (''), so the next `imgmatch index` fingerprints them again.
                db.execute(_ADD_SIGNATURE_COLUMN)
            if read_meta(db, "schema_version") in ("1", "2"):
                # Older references keep their one hash variant until fingerprinted again
                # (their signature is older too); the hash index files are rebuilt for the
                # new ids (`INDEX_LAYOUT`).
                write_meta(db, "schema_version", str(SCHEMA_VERSION))
    elif int(version) != SCHEMA_VERSION:
        raise CatalogError(
            f"{directory}: catalog schema {version}, this imgmatch reads {SCHEMA_VERSION}"
        )
