"""A damaged catalog is refused with a `CatalogError` that names the damaged file and what to
do, or mended from SQLite where only a cache is damaged: never a traceback, never a catalog
silently emptied, never a `verify` that says ok."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgmatch.bench.samples import generated_photo
from imgmatch.catalog import DATABASE_NAME, Catalog, NewReference
from imgmatch.cli import app
from imgmatch.config import DetectorConfig
from imgmatch.detector import CheckResult, Detector
from imgmatch.errors import CatalogDamagedError, CatalogError
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.images import RGBImage

REFERENCES = 4
ADVICE = ("imgmatch catalog verify", "imgmatch catalog rebuild", "from a backup")


def textured(seed: int) -> RGBImage:
    return generated_photo(np.random.default_rng(seed), (480, 360))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog of 4 references with its index files written, never to be modified."""
    directory = tmp_path_factory.mktemp("pristine") / "cat"
    fingerprinter = Fingerprinter(DetectorConfig())
    with Catalog(directory) as catalog:
        catalog.add_many(
            [
                NewReference(
                    fingerprint=fingerprinter.reference(textured(seed)),
                    path=f"refs/d{seed}.jpg",
                    sha256=hashlib.sha256(f"d{seed}".encode()).hexdigest(),
                    design=f"d{seed}",
                    metadata={"family": "test"},
                )
                for seed in range(REFERENCES)
            ]
        )
    return directory


@pytest.fixture(scope="module")
def listing() -> Fingerprint:
    """A listing that is reference d1 itself: checking it reads d1's rows."""
    return Fingerprinter(DetectorConfig()).listing(textured(1))


def _summary(result: CheckResult) -> list[tuple[str, float]]:
    return [(match.design, round(match.score, 6)) for match in result.matches]


@pytest.fixture(scope="module")
def expected(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, listing: Fingerprint
) -> list[tuple[str, float]]:
    copy = tmp_path_factory.mktemp("expected") / "cat"
    shutil.copytree(pristine, copy)
    with Catalog(copy, create=False) as catalog:
        found = _summary(Detector(catalog).check_fingerprint(listing))
    assert found and found[0][0] == "d1"
    return found


# ----------------------------------------------------------------------- damage


def _sql(directory: Path, *statements: str) -> None:
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        for statement in statements:
            db.execute(statement)
    db.close()


def _zero_root_page(table: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        path = directory / DATABASE_NAME
        with sqlite3.connect(path) as db:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            (root,) = db.execute(
                "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
            ).fetchone()
        db.close()
        with path.open("r+b") as stream:
            stream.seek((root - 1) * page_size)
            stream.write(bytes(page_size))

    return damage


def _flip_descriptor_bytes(directory: Path) -> None:
    """64 bytes inverted inside one stored descriptor blob, its length unchanged."""
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        (blob,) = db.execute(
            "SELECT descriptors FROM feature_view WHERE reference_id = 2 AND view = 0"
        ).fetchone()
        flipped = bytearray(blob)
        middle = len(flipped) // 2
        flipped[middle : middle + 64] = bytes(255 - b for b in flipped[middle : middle + 64])
        db.execute(
            "UPDATE feature_view SET descriptors = ? WHERE reference_id = 2 AND view = 0",
            (bytes(flipped),),
        )
    db.close()


def _garble(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        path = directory / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


def _folder_instead_of(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        (directory / name).unlink()
        (directory / name).mkdir()

    return damage


def _then_delete(damage: Callable[[Path], None], name: str) -> Callable[[Path], None]:
    """`damage`, and the index file that would have hidden it: the catalog must rebuild."""

    def both(directory: Path) -> None:
        damage(directory)
        (directory / name).unlink()

    return both


@dataclass(frozen=True)
class Damage:
    apply: Callable[[Path], None]
    # "refused": a CatalogError naming `file` (verify lists it too); "rebuilt": mended from
    # SQLite with the same answers; "reported": answers as before, and verify lists it.
    outcome: str
    file: str = DATABASE_NAME


DAMAGES = {
    "database 0 bytes": Damage(lambda d: (d / DATABASE_NAME).write_bytes(b""), "refused"),
    "database missing": Damage(lambda d: (d / DATABASE_NAME).unlink(), "refused"),
    "page of references zeroed": Damage(_zero_root_page("reference"), "refused"),
    "page of feature views zeroed": Damage(_zero_root_page("feature_view"), "refused"),
    "descriptors.faiss is a folder": Damage(
        _folder_instead_of("descriptors.faiss"), "refused", "descriptors.faiss"
    ),
    "schema version not a number": Damage(
        lambda d: _sql(d, "UPDATE meta SET value = 'three' WHERE key = 'schema_version'"),
        "refused",
    ),
    "generation not a number": Damage(
        lambda d: _sql(d, "UPDATE meta SET value = '7x' WHERE key = 'generation'"), "refused"
    ),
    "descriptor blob shorter than its count": Damage(
        _then_delete(
            lambda d: _sql(
                d,
                "UPDATE feature_view SET descriptors = substr(descriptors, 1, "
                "length(descriptors) - 32) WHERE reference_id = 3 AND view = 0",
            ),
            "descriptors.faiss",
        ),
        "refused",
    ),
    "keypoint blob of odd length": Damage(
        lambda d: _sql(
            d,
            "UPDATE feature_view SET keypoints = substr(keypoints, 1, length(keypoints) - 1) "
            "WHERE reference_id = 2",
        ),
        "refused",
    ),
    "hash code cut short": Damage(
        _then_delete(
            lambda d: _sql(d, "UPDATE hash SET code = substr(code, 1, 60) WHERE hasher = 'phash'"),
            "phash.faiss",
        ),
        "refused",
    ),
    "metadata not JSON": Damage(
        lambda d: _sql(d, "UPDATE reference SET metadata = '{\"family\": ' WHERE id = 2"),
        "refused",
    ),
    "fingerprint bytes flipped": Damage(_flip_descriptor_bytes, "reported"),
    "index stamp not JSON": Damage(
        lambda d: _sql(d, "UPDATE meta SET value = 'not json' WHERE key = 'index.descriptors'"),
        "rebuilt",
    ),
    "descriptors.faiss garbled": Damage(_garble("descriptors.faiss"), "rebuilt"),
}


def _attempt(step: Callable[[], object]) -> object:
    """What a step returned, or the `CatalogError` it raised (anything else fails the test)."""
    try:
        return step()
    except CatalogError as exc:
        return exc


def _check(directory: Path, listing: Fingerprint) -> object:
    with Catalog(directory) as catalog:
        return _summary(Detector(catalog).check_fingerprint(listing))


def _verify(directory: Path) -> object:
    with Catalog(directory, create=False) as catalog:
        return catalog.verify()


def _rebuild(directory: Path) -> object:
    with Catalog(directory, create=False) as catalog:
        catalog.rebuild()
    return None


@pytest.mark.parametrize("case", list(DAMAGES))
def test_damaged_catalog_is_refused_with_a_named_file_or_mended(
    case: str,
    pristine: Path,
    tmp_path: Path,
    listing: Fingerprint,
    expected: list[tuple[str, float]],
) -> None:
    damage = DAMAGES[case]
    directory = tmp_path / "cat"
    shutil.copytree(pristine, directory)
    damage.apply(directory)
    database = directory / DATABASE_NAME
    before = database.stat() if database.exists() else None

    # As the commands do: `index` and the service open with create, the others without.
    checked = _attempt(lambda: _check(directory, listing))
    verified = _attempt(lambda: _verify(directory))
    rebuilt = _attempt(lambda: _rebuild(directory))

    errors = [r for r in (checked, verified, rebuilt) if isinstance(r, CatalogError)]
    for error in errors:
        message = str(error)
        assert damage.file in message, message
        assert any(advice in message for advice in ADVICE), message
        assert "\n" not in message
    listed = verified if isinstance(verified, list) else [str(verified)]
    if damage.outcome == "rebuilt":
        assert errors == []
        assert checked == expected
        assert verified == []
    else:
        # verify never says ok about damage: it lists it, naming the file, or refuses.
        assert any(damage.file in problem for problem in listed), listed
    if damage.outcome == "refused":
        assert isinstance(checked, CatalogDamagedError), checked
    if damage.outcome == "reported":
        assert not isinstance(checked, CatalogError)
        assert any("checksum differs" in problem for problem in listed), listed
    # Never silently emptied: a lost database stays lost, a damaged one is not replaced.
    if before is None or before.st_size == 0:
        assert not database.exists() or database.stat().st_size == 0
    else:
        assert (database.stat().st_ino, database.stat().st_size >= before.st_size) == (
            before.st_ino,
            True,
        )


# ----------------------------------------------------------------------- opening rules


def test_only_an_absent_or_empty_folder_becomes_a_new_catalog(tmp_path: Path) -> None:
    with Catalog(tmp_path / "absent") as catalog:
        assert catalog.count() == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(empty, create=False)
    with Catalog(empty) as catalog:
        assert catalog.count() == 0
    # Made under a temporary name and linked into place: nothing else is left behind.
    assert sorted(p.name for p in empty.iterdir() if not p.name.endswith(".faiss")) == [
        DATABASE_NAME
    ]
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("not a catalog")
    with pytest.raises(CatalogDamagedError, match=r"notes\.txt"):
        Catalog(occupied)
    assert not (occupied / DATABASE_NAME).exists()


def test_openers_racing_to_create_a_catalog_all_get_the_same_one(tmp_path: Path) -> None:
    """The first to link its new database wins; the others open that one, none is refused
    for seeing the winner's index files."""
    directory = tmp_path / "cat"
    barrier = threading.Barrier(6)
    outcomes: list[object] = []

    def open_catalog() -> None:
        barrier.wait()
        try:
            with Catalog(directory) as catalog:
                outcomes.append(catalog.count())
        except CatalogError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=open_catalog) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == [0] * 6
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


def test_an_upgraded_catalog_checksums_its_fingerprints_as_they_are(
    pristine: Path, tmp_path: Path
) -> None:
    """A catalog from before checksums (schema 3) gets them when first opened: verify is then
    clean, and later damage inside a fingerprint is found."""
    directory = tmp_path / "cat"
    shutil.copytree(pristine, directory)
    _sql(
        directory,
        "ALTER TABLE reference DROP COLUMN fingerprint_sha256",
        "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
    )
    with Catalog(directory, create=False) as catalog:
        assert catalog.verify() == []
        assert catalog.count() == REFERENCES
    with sqlite3.connect(directory / DATABASE_NAME) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        sums = db.execute("SELECT COUNT(*) FROM reference WHERE fingerprint_sha256 != ''")
        assert (version[0], sums.fetchone()[0]) == ("4", REFERENCES)
    db.close()
    _flip_descriptor_bytes(directory)
    with Catalog(directory, create=False) as catalog:
        (problem,) = catalog.verify()
    assert "fingerprint checksum differs: 1 reference(s) (2)" in problem


def test_removing_the_damaged_reference_mends_the_catalog(
    pristine: Path, tmp_path: Path, listing: Fingerprint
) -> None:
    """What the error message advises: verify names the reference, remove takes it out,
    and the catalog searches again."""
    directory = tmp_path / "cat"
    shutil.copytree(pristine, directory)
    DAMAGES["descriptor blob shorter than its count"].apply(directory)
    with Catalog(directory, create=False) as catalog:
        assert catalog.damage is not None
        with pytest.raises(CatalogDamagedError, match="reference 3"):
            Detector(catalog).check_fingerprint(listing)
        assert any("(3)" in problem for problem in catalog.verify())
        catalog.remove(3)
        assert _summary(Detector(catalog).check_fingerprint(listing))[0][0] == "d1"
    with Catalog(directory, create=False) as catalog:
        assert catalog.verify() == []
        assert catalog.count() == REFERENCES - 1


# ----------------------------------------------------------------------- the command line

runner = CliRunner()


@pytest.mark.parametrize(
    ("case", "command"),
    [
        ("database 0 bytes", ["check", "LISTING"]),
        ("database 0 bytes", ["index", "LISTING"]),
        ("descriptors.faiss is a folder", ["catalog", "list"]),
        ("metadata not JSON", ["catalog", "list"]),
        ("page of feature views zeroed", ["check", "LISTING"]),
        ("generation not a number", ["catalog", "stats"]),
    ],
)
def test_commands_end_with_one_line_and_exit_2_on_a_damaged_catalog(
    case: str, command: list[str], pristine: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "cat"
    shutil.copytree(pristine, directory)
    DAMAGES[case].apply(directory)
    photo = tmp_path / "listing.png"
    from PIL import Image

    Image.fromarray(textured(1)).save(photo)
    args = [str(photo) if a == "LISTING" else a for a in command]
    result = runner.invoke(app, [*args, "--catalog", str(directory)])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and DAMAGES[case].file in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    if case == "database 0 bytes":
        assert (directory / DATABASE_NAME).stat().st_size == 0


def test_verify_lists_flipped_fingerprint_bytes_and_exits_1(pristine: Path, tmp_path: Path) -> None:
    directory = tmp_path / "cat"
    shutil.copytree(pristine, directory)
    assert runner.invoke(app, ["catalog", "verify", "--catalog", str(directory)]).exit_code == 0
    _flip_descriptor_bytes(directory)
    result = runner.invoke(app, ["catalog", "verify", "--catalog", str(directory)])
    assert result.exit_code == 1
    assert "fingerprint checksum differs: 1 reference(s) (2)" in result.stdout
