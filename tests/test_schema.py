"""Schema migrations: one step per version, chosen by the version a database is at."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from imgmatch.catalog import DATABASE_NAME, SCHEMA_VERSION, Catalog
from imgmatch.catalog import schema as schema_module
from imgmatch.catalog.schema import MIGRATIONS

# What each older schema lacked of today's reference table.
COLUMNS_ADDED_AFTER = {
    1: ["fingerprint_signature", "fingerprint_sha256"],
    2: ["fingerprint_sha256"],
    3: ["fingerprint_sha256"],
}


def test_every_version_before_this_one_has_a_step_to_the_next() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def _database_at(directory: Path, version: int) -> None:
    """A new catalog turned into what `version` wrote: today's tables less the later columns."""
    Catalog(directory).close()
    db = sqlite3.connect(directory / DATABASE_NAME)
    with db:
        for column in COLUMNS_ADDED_AFTER[version]:
            db.execute(f"ALTER TABLE reference DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.close()


@pytest.mark.parametrize("version", sorted(COLUMNS_ADDED_AFTER))
def test_a_database_runs_the_steps_from_its_version_on_in_order(
    version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _database_at(tmp_path / "cat", version)
    ran: list[int] = []

    def recorded(step: int, migrate: Callable[[sqlite3.Connection], None]) -> Callable[..., None]:
        def run(db: sqlite3.Connection) -> None:
            # Each step sees the version before it stamped: steps run one at a time.
            stamped = db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            assert stamped.fetchone() == (str(step),)
            ran.append(step)
            migrate(db)

        return run

    steps = {step: recorded(step, migrate) for step, migrate in MIGRATIONS.items()}
    monkeypatch.setattr(schema_module, "MIGRATIONS", steps)
    Catalog(tmp_path / "cat", create=False).close()
    assert ran == list(range(version, SCHEMA_VERSION))
    db = sqlite3.connect(tmp_path / "cat" / DATABASE_NAME)
    columns = {row[1] for row in db.execute("PRAGMA table_info(reference)")}
    stamped = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    db.close()
    assert set(COLUMNS_ADDED_AFTER[1]) <= columns
    assert stamped == (str(SCHEMA_VERSION),)


def test_a_current_database_runs_no_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Catalog(tmp_path / "cat").close()

    def refuse(db: sqlite3.Connection) -> None:
        raise AssertionError("a migration ran on a current database")

    monkeypatch.setattr(schema_module, "MIGRATIONS", dict.fromkeys(MIGRATIONS, refuse))
    Catalog(tmp_path / "cat", create=False).close()
