"""A catalog with no references answers every check with no matches: a new one, and one whose
references were all removed (its indexes exist but hold nothing)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgmatch.catalog import Catalog
from imgmatch.cli import app
from imgmatch.detector import Detector

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def listings(
    tmp_path_factory: pytest.TempPathFactory,
    bundled_references: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> Path:
    """Two listings: a copy of a bundled reference and an unrelated photo."""
    folder = tmp_path_factory.mktemp("listings")
    shutil.copy2(bundled_references / "D004_0.jpg", folder / "D004_copy.jpg")
    write_image(folder / "unrelated.png", make_photo(3, (640, 480)))
    return folder


def new_catalog(directory: Path, references: Path) -> Path:
    """A catalog as the service makes it on an empty folder: created, never given a reference."""
    Catalog(directory).close()
    return directory


def emptied_catalog(directory: Path, references: Path) -> Path:
    """A catalog whose every reference was removed from the command line."""
    folder = directory.parent / "refs"
    folder.mkdir()
    for name in ("D000_0.jpg", "D004_0.jpg"):
        shutil.copy2(references / name, folder / name)
    assert run("index", folder, "--catalog", directory, "--workers", "1", "-q")[0] == 0
    with Catalog(directory, create=False) as store:
        ids = [reference.reference_id for reference in store.references()]
    assert len(ids) == 2
    for reference_id in ids:
        assert run("catalog", "remove", str(reference_id), "--catalog", directory)[0] == 0
    return directory


EMPTY_CATALOGS = {"new": new_catalog, "emptied": emptied_catalog}


def parse(output_format: str, text: str) -> list[dict[str, object]]:
    """Each listing's path, status and matched designs, from any output format."""
    if output_format == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        return [{"path": r["path"], "status": r["status"], "designs": r["matches"]} for r in rows]
    if output_format == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [
            {
                "path": r["path"],
                "status": r["status"],
                "designs": [r["design"]] if r["design"] else [],
            }
            for r in rows
        ]
    raise AssertionError(output_format)


@pytest.mark.parametrize("kind", sorted(EMPTY_CATALOGS))
@pytest.mark.parametrize("output_format", ["table", "jsonl", "csv", "html"])
def test_check_on_an_empty_catalog_finds_nothing_and_exits_0(
    tmp_path: Path, bundled_references: Path, listings: Path, kind: str, output_format: str
) -> None:
    directory = EMPTY_CATALOGS[kind](tmp_path / "cat", bundled_references)
    out = tmp_path / f"results.{output_format}"
    # The table goes to the terminal; the other formats to their file.
    to_file = ("--out", out) if output_format != "table" else ()
    code, stdout, stderr = run(
        "check", listings, "--catalog", directory, "--format", output_format, *to_file,
        "--workers", "1", "-q",
    )  # fmt: skip
    assert code == 0, stderr
    assert "2 processed, 0 flagged, 0 failed" in stderr
    text = out.read_text(encoding="utf-8") if to_file else stdout
    if output_format in ("jsonl", "csv"):
        rows = parse(output_format, text)
        assert sorted(Path(str(r["path"])).name for r in rows) == ["D004_copy.jpg", "unrelated.png"]
        assert all(r["status"] == "ok" and r["designs"] == [] for r in rows)
    elif output_format == "table":
        assert text.count("clear") == 2
        assert "FLAGGED" not in text
    else:
        assert "D004_copy.jpg" in text and "unrelated.png" in text


@pytest.mark.parametrize("kind", sorted(EMPTY_CATALOGS))
def test_detector_on_an_empty_catalog_returns_no_matches(
    tmp_path: Path, bundled_references: Path, listings: Path, kind: str
) -> None:
    directory = EMPTY_CATALOGS[kind](tmp_path / "cat", bundled_references)
    with Catalog(directory, create=False) as store:
        detector = Detector(store)
        for listing in sorted(listings.iterdir()):
            result = detector.check_source(listing, min_score=0.0)
            assert (result.status, result.flagged, result.matches) == ("ok", False, ())
