"""The catalog database: which folder may hold a new one, its tables, bringing an older one up to
date, and SQLite's errors as `CatalogError`s that say what to do.

Only an absent or empty folder gets a new catalog. A folder that holds anything else but no
database (index files, thumbnails, a database cut to 0 bytes) is refused: re-creating the
database there would silently empty a catalog whose database was lost or damaged.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from imgmatch.catalog.integrity import blob_size, fingerprint_digest, hash_problem, view_problem
from imgmatch.errors import CatalogDamagedError, CatalogError
from imgmatch.files import fsync_directory

DATABASE_NAME = "catalog.sqlite3"
SCHEMA_VERSION = 4
TABLES = ("meta", "reference", "hash", "feature_view")
# A new database is made under a hidden temporary name and linked into place once complete; a
# run killed meanwhile leaves only such a file, which does not make the folder a catalog.
_CREATING_PREFIX = f".{DATABASE_NAME}."
_CREATING_MARK = ".new"
# Folder entries named in a refusal, at most.
_ENTRIES_NAMED = 4

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
    fingerprint_signature TEXT NOT NULL DEFAULT '',
    fingerprint_sha256 TEXT NOT NULL DEFAULT ''
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

_RESTORE = "restore {name} from a backup"
# What to do about an SQLite error, by its primary result code; True where the database itself
# is damaged.
_SQLITE_ADVICE: dict[str, tuple[str, bool]] = {
    "SQLITE_CORRUPT": (
        "the database is damaged: run `imgmatch catalog verify` to see what, then " + _RESTORE,
        True,
    ),
    "SQLITE_NOTADB": ("this is not an imgmatch catalog database: " + _RESTORE, True),
    "SQLITE_BUSY": ("another process holds the catalog: try again once it is done", False),
    "SQLITE_LOCKED": ("another process holds the catalog: try again once it is done", False),
    "SQLITE_FULL": ("the disk is full: free space, then try again", False),
    "SQLITE_READONLY": ("the catalog cannot be written: check the folder's permissions", False),
    "SQLITE_CANTOPEN": ("the database cannot be opened: check the folder's permissions", False),
    "SQLITE_IOERR": ("the disk failed: check it, then run `imgmatch catalog verify`", False),
}
_ANY_OTHER = ("run `imgmatch catalog verify`; if it reports damage, " + _RESTORE, False)


def database_error(path: Path, error: sqlite3.DatabaseError) -> CatalogError:
    """The `CatalogError` for an SQLite error on the database at `path`."""
    # Extended codes (SQLITE_IOERR_SHORT_READ) share their primary code's advice.
    code = "_".join(getattr(error, "sqlite_errorname", "").split("_")[:2])
    advice, damaged = _SQLITE_ADVICE.get(code, _ANY_OTHER)
    kind = CatalogDamagedError if damaged else CatalogError
    return kind(f"{path}: {error}: {advice.format(name=path.name)}")


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    """SQLite's errors on `path` as `CatalogError`s; a misuse of the API stays a bug."""
    try:
        yield
    except sqlite3.ProgrammingError:
        raise
    except sqlite3.DatabaseError as exc:
        raise database_error(path, exc) from exc


def open_database(directory: Path, *, create: bool) -> sqlite3.Connection:
    """The catalog database in `directory`, made there only if the folder is absent or empty
    (and `create`), and brought up to this imgmatch's schema."""
    path = directory / DATABASE_NAME
    try:
        _prepare_folder(directory, path, create=create)
    except OSError as exc:
        raise CatalogError(
            f"{directory}: {exc.strerror or exc}: check the catalog path and its permissions"
        ) from exc
    with translated(path):
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            _bring_up_to_date(db, path)
        except BaseException:
            db.close()
            raise
    return db


def _prepare_folder(directory: Path, path: Path, *, create: bool) -> None:
    """Make a new database where the folder allows one; refuse where a database was lost."""
    if not directory.exists():
        if not create:
            raise CatalogError(f"no catalog at {directory} (run `imgmatch index` first)")
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir():
        raise CatalogError(f"{directory} is not a directory")
    if path.exists() and not path.is_file():
        raise CatalogDamagedError(f"{path} is not a file: {_RESTORE.format(name=DATABASE_NAME)}")
    if _holds_data(path):
        return
    others = _other_entries(directory)
    # Looked at again after the folder: another process may have made the catalog meanwhile
    # (and its index files with it); a database never disappears in normal use.
    if _holds_data(path):
        return
    if others or path.exists():
        _refuse_lost_database(directory, path, others)
    if not create:
        raise CatalogError(f"no catalog at {directory} (run `imgmatch index` first)")
    _create(directory, path)


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
        # SQLite has already rolled back after some errors (a full disk, a damaged page).
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _other_entries(directory: Path) -> list[str]:
    """What the folder holds besides the database and unfinished new databases."""
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if entry.name != DATABASE_NAME
        and not (entry.name.startswith(_CREATING_PREFIX) and _CREATING_MARK in entry.name)
    )


def _holds_data(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _refuse_lost_database(directory: Path, path: Path, held: list[str]) -> None:
    state = "is empty (0 bytes)" if path.exists() else "is missing"
    names = ", ".join(held[:_ENTRIES_NAMED]) + (", ..." if len(held) > _ENTRIES_NAMED else "")
    besides = f" but the folder holds {names}" if held else ""
    raise CatalogDamagedError(
        f"{path} {state}{besides}: if this folder held a catalog, "
        f"{_RESTORE.format(name=DATABASE_NAME)}; for a new catalog, give a new or empty folder"
    )


def _create(directory: Path, path: Path) -> None:
    """Make a complete new database, then link it into place: no one ever opens a half-made
    one. Of two processes creating at once, the first to link wins; both then open it."""
    handle, temp_name = tempfile.mkstemp(
        prefix=_CREATING_PREFIX, suffix=_CREATING_MARK, dir=directory
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        with translated(path):
            db = sqlite3.connect(temp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                with transaction(db):
                    write_meta(db, "schema_version", str(SCHEMA_VERSION))
                    write_meta(db, "generation", "0")
            finally:
                db.close()
        with open(temp, "rb") as stream:
            os.fsync(stream.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: a plain rename, unless another process won.
            if not path.exists():
                os.replace(temp, path)
        fsync_directory(directory)
    finally:
        for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
            leftover.unlink(missing_ok=True)


def _bring_up_to_date(db: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    version = read_meta(db, "schema_version") if "meta" in tables else None
    if version is None:
        # A database that an older imgmatch created but never stamped (it was killed first);
        # an empty one in an otherwise empty folder is the same. Neither holds references.
        if not tables and _other_entries(path.parent):
            raise CatalogDamagedError(
                f"{path} holds no catalog tables: {_RESTORE.format(name=path.name)}"
            )
        # executescript commits first: the tables are made before the upgrade's transaction.
        db.executescript(_SCHEMA)
        with transaction(db):
            if read_meta(db, "schema_version") is None:
                _upgrade(db, _OLDEST_VERSION)
        return
    missing = [table for table in TABLES if table not in tables]
    if missing:
        raise CatalogDamagedError(
            f"{path} lacks the {', '.join(missing)} table(s): it is damaged or not an imgmatch "
            f"catalog: {_RESTORE.format(name=path.name)}"
        )
    if not version.isdigit():
        raise CatalogDamagedError(
            f"{path}: the schema version {version!r} is not a number: the database is damaged: "
            f"{_RESTORE.format(name=path.name)}"
        )
    if int(version) > SCHEMA_VERSION:
        raise CatalogError(
            f"{path.parent}: catalog schema {version}, this imgmatch reads {SCHEMA_VERSION} "
            "(a newer imgmatch wrote it)"
        )
    if int(version) < SCHEMA_VERSION:
        with transaction(db):
            # Another process may have upgraded it since the version was read.
            if read_meta(db, "schema_version") == version:
                _upgrade(db, int(version))


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Within a transaction: apply the migrations from `version` on, one step at a time, each
    stamping the version it reaches."""
    for step in range(max(version, _OLDEST_VERSION), SCHEMA_VERSION):
        MIGRATIONS[step](db)
        write_meta(db, "schema_version", str(step + 1))
    if read_meta(db, "generation") is None:
        write_meta(db, "generation", "0")


def _reference_columns(db: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in db.execute("PRAGMA table_info(reference)")}


def _add_signature_column(db: sqlite3.Connection) -> None:
    """1 -> 2: no fingerprint signature was stored: those references are marked unknown (''),
    so the next `imgmatch index` fingerprints them again."""
    # Each step looks before it adds: a database never stamped is upgraded from 1 (below) and
    # may already have the columns of `_SCHEMA`.
    if "fingerprint_signature" not in _reference_columns(db):
        db.execute(
            "ALTER TABLE reference ADD COLUMN fingerprint_signature TEXT NOT NULL DEFAULT ''"
        )


def _hash_codes_hold_variants(db: sqlite3.Connection) -> None:
    """2 -> 3 changes no table: a hash code may now hold the 8 variants of a reference (64
    bytes), not one (8 bytes), which an imgmatch reading schema 2 would misread. References
    with one variant keep it until fingerprinted again; their hash index files are rebuilt for
    the new ids (`index_files.INDEX_LAYOUT`)."""


def _add_fingerprint_checksums(db: sqlite3.Connection) -> None:
    """3 -> 4: each reference keeps a sha256 of its fingerprint rows (`integrity`), computed
    from the rows as they are when upgraded."""
    if "fingerprint_sha256" not in _reference_columns(db):
        db.execute("ALTER TABLE reference ADD COLUMN fingerprint_sha256 TEXT NOT NULL DEFAULT ''")
        _fill_checksums(db)


# The migration from each schema version to the next, by the version it starts from.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _add_signature_column,
    2: _hash_codes_hold_variants,
    3: _add_fingerprint_checksums,
}
# The oldest schema: a database that an imgmatch never stamped (it was killed first), or
# stamped below it, is upgraded from here.
_OLDEST_VERSION = 1


def _fill_checksums(db: sqlite3.Connection) -> None:
    """Checksum the fingerprints stored before checksums existed, as they are now. A reference
    whose rows are already malformed keeps none ('') and is reported by `verify`."""
    for (reference_id,) in db.execute("SELECT id FROM reference").fetchall():
        hashes = db.execute(
            "SELECT hasher, code FROM hash WHERE reference_id = ?", (reference_id,)
        ).fetchall()
        views = db.execute(
            "SELECT view, count, keypoints, descriptors FROM feature_view WHERE reference_id = ?",
            (reference_id,),
        ).fetchall()
        malformed = any(hash_problem(hasher, blob_size(code)) for hasher, code in hashes) or any(
            view_problem(view, count, blob_size(keypoints), blob_size(descriptors))
            for view, count, keypoints, descriptors in views
        )
        if not malformed:
            db.execute(
                "UPDATE reference SET fingerprint_sha256 = ? WHERE id = ?",
                (fingerprint_digest(hashes, views), reference_id),
            )
