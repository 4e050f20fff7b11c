"""The `imgmatch` command line (C3) end to end: index a few references, check a mixed folder."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgmatch.cli import app

SUBSET = ("D000_0.jpg", "D004_0.jpg", "D006_0.jpg", "D008_0.jpg", "D011_0.jpg", "D013_0.jpg")
C4_MATCH_FIELDS = {
    "reference_id",
    "reference_path",
    "design",
    "brand",
    "score",
    "hash_distance",
    "inliers",
    "transform",
    "box",
}

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, bundled_references: Path) -> Path:
    """Six bundled references and their metadata rows, copied so indexing stays quick."""
    folder = tmp_path_factory.mktemp("refs")
    with (bundled_references / "metadata.csv").open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = [row for row in reader if row["path"] in SUBSET]
        fields = reader.fieldnames
    assert fields is not None
    assert len(rows) == len(SUBSET)
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for name in SUBSET:
        shutil.copy2(bundled_references / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, references: Path) -> Path:
    directory = tmp_path_factory.mktemp("cat") / "cat"
    code, _, stderr = run("index", references, "--catalog", directory)
    assert code == 0, stderr
    assert f"indexed {len(SUBSET)} new" in stderr
    return directory


@pytest.fixture(scope="module")
def listings(
    tmp_path_factory: pytest.TempPathFactory,
    references: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> Path:
    """Two copies of references, one unrelated photo, and three files that are not images."""
    folder = tmp_path_factory.mktemp("listings")
    shutil.copy2(references / "D004_0.jpg", folder / "D004_copy.jpg")
    original = Image.open(references / "D008_0.jpg")
    original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        folder / "D008_mirrored.jpg", quality=92
    )
    write_image(folder / "unrelated.png", make_photo(5, (640, 480)))
    (folder / "empty.jpg").write_bytes(b"")
    data = (references / "D000_0.jpg").read_bytes()
    (folder / "D000_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "x.jpg").write_text("this is a text file with an image's name\n")
    return folder


@pytest.fixture(scope="module")
def checked(catalog: Path, listings: Path) -> tuple[int, dict[str, dict]]:
    code, stdout, _ = run("check", listings, "--catalog", catalog, "--format", "jsonl")
    lines = stdout.splitlines()
    results = [json.loads(line) for line in lines]
    by_name = {Path(r["path"]).name: r for r in results}
    assert len(by_name) == len(lines)
    return code, by_name


def test_index_again_reports_everything_unchanged(catalog: Path, references: Path) -> None:
    code, _, stderr = run("index", references, "--catalog", catalog)
    assert code == 0
    assert f"indexed 0 new, 0 refreshed, {len(SUBSET)} unchanged, 0 failed" in stderr


def test_index_prints_its_summary_once(catalog: Path, references: Path) -> None:
    _, _, stderr = run("index", references, "--catalog", catalog, "--quiet")
    summaries = [line for line in stderr.splitlines() if "unchanged" in line]
    assert len(summaries) == 1, stderr
    assert f"into {catalog}" in summaries[0]


def test_catalog_list_shows_designs_from_metadata(catalog: Path) -> None:
    code, stdout, _ = run("catalog", "list", "--catalog", catalog)
    assert code == 0
    rows = [line.split("\t") for line in stdout.splitlines()]
    assert sorted(row[1] for row in rows) == sorted(name.split("_")[0] for name in SUBSET)
    assert {row[2] for row in rows} == {"Atelier Exemple"}
    code, stdout, _ = run("catalog", "list", "--catalog", catalog, "--design", "D004")
    assert [line.split("\t")[1] for line in stdout.splitlines()] == ["D004"]


def test_catalog_show_prints_one_reference_as_json(catalog: Path) -> None:
    _, listing, _ = run("catalog", "list", "--catalog", catalog, "--design", "D006")
    reference_id = listing.split("\t")[0]
    code, stdout, _ = run("catalog", "show", reference_id, "--catalog", catalog)
    assert code == 0
    shown = json.loads(stdout)
    assert shown["reference_id"] == int(reference_id)
    assert shown["design"] == "D006"
    assert shown["path"].endswith("D006_0.jpg")
    assert shown["metadata"]["family"]


def test_catalog_show_unknown_id_is_a_usage_error(catalog: Path) -> None:
    code, _, stderr = run("catalog", "show", "999999", "--catalog", catalog)
    assert code == 2
    assert "error" in stderr


def test_catalog_stats_and_verify(catalog: Path) -> None:
    code, stdout, _ = run("catalog", "stats", "--catalog", catalog)
    assert code == 0
    stats = dict(line.split(": ", 1) for line in stdout.splitlines())
    assert int(stats["references"]) == len(SUBSET)
    assert int(stats["designs"]) == len(SUBSET)
    assert int(stats["brands"]) == 1
    assert int(stats["descriptors"]) > 0
    code, stdout, _ = run("catalog", "verify", "--catalog", catalog)
    assert (code, stdout.strip()) == (0, "ok")


def test_catalog_remove_keeps_other_ids(tmp_path: Path, references: Path) -> None:
    # Its own catalog: removing from the shared one would change what the check tests see.
    directory = tmp_path / "cat"
    single = tmp_path / "refs"
    single.mkdir()
    for name in SUBSET[:2]:
        shutil.copy2(references / name, single / name)
    assert run("index", single, "--catalog", directory)[0] == 0
    _, before, _ = run("catalog", "list", "--catalog", directory)
    first, second = (line.split("\t")[0] for line in before.splitlines())
    code, _, stderr = run("catalog", "remove", first, "--catalog", directory)
    assert code == 0
    assert f"removed reference {first}" in stderr
    _, after, _ = run("catalog", "list", "--catalog", directory)
    assert [line.split("\t")[0] for line in after.splitlines()] == [second]
    assert run("catalog", "remove", first, "--catalog", directory)[0] == 2
    assert run("catalog", "verify", "--catalog", directory)[0] == 0


def test_check_mixed_folder_exits_1_and_reports_every_file(
    checked: tuple[int, dict[str, dict]],
) -> None:
    code, by_name = checked
    assert code == 1
    assert set(by_name) == {
        "D004_copy.jpg",
        "D008_mirrored.jpg",
        "unrelated.png",
        "empty.jpg",
        "D000_truncated.jpg",
        "x.jpg",
    }


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("empty.jpg", "empty file"),
        ("D000_truncated.jpg", "truncated image"),
        ("x.jpg", "unsupported format"),
    ],
)
def test_check_bad_files_are_errors_with_a_message(
    checked: tuple[int, dict[str, dict]], name: str, error_type: str
) -> None:
    result = checked[1][name]
    assert result["status"] == "error"
    assert result["flagged"] is False
    assert result["matches"] == []
    assert result["error"]
    assert result["error_type"] == error_type


@pytest.mark.parametrize(
    ("name", "design", "transform"),
    [("D004_copy.jpg", "D004", "identical"), ("D008_mirrored.jpg", "D008", "mirrored")],
)
def test_check_flags_copies_with_the_right_design(
    checked: tuple[int, dict[str, dict]], name: str, design: str, transform: str
) -> None:
    result = checked[1][name]
    assert result["status"] == "ok"
    assert result["flagged"] is True
    top = result["matches"][0]
    assert top["design"] == design
    assert top["brand"] == "Atelier Exemple"
    assert top["reference_path"].endswith(f"{design}_0.jpg")
    assert top["transform"] == transform
    assert top["hash_distance"] is not None
    assert top["hash_distance"] <= 10


def test_check_does_not_flag_an_unrelated_photo(checked: tuple[int, dict[str, dict]]) -> None:
    result = checked[1]["unrelated.png"]
    assert result["status"] == "ok"
    assert result["flagged"] is False


def test_check_json_follows_contract_c4(checked: tuple[int, dict[str, dict]]) -> None:
    for result in checked[1].values():
        assert {"path", "status", "flagged", "matches", "timing_ms"} <= set(result)
        assert result["status"] in ("ok", "error")
        assert isinstance(result["flagged"], bool)
        if result["status"] == "ok":
            assert {"decode", "features", "search", "verify"} <= set(result["timing_ms"])
        scores = [m["score"] for m in result["matches"]]
        assert scores == sorted(scores, reverse=True)
        assert len({m["design"] for m in result["matches"]}) == len(result["matches"])
        for match in result["matches"]:
            assert set(match) >= C4_MATCH_FIELDS
            assert 0.0 <= match["score"] <= 1.0
            assert isinstance(match["reference_id"], int)
            if match["box"] is not None:
                x0, y0, x1, y1 = match["box"]
                assert x0 < x1
                assert y0 < y1


def test_check_only_good_files_exits_0(catalog: Path, listings: Path, tmp_path: Path) -> None:
    shutil.copy2(listings / "D004_copy.jpg", tmp_path / "D004_copy.jpg")
    code, stdout, _ = run("check", tmp_path, "--catalog", catalog, "--format", "jsonl")
    assert code == 0
    assert [json.loads(line)["flagged"] for line in stdout.splitlines()] == [True]


def test_check_of_a_path_that_does_not_exist_is_a_one_line_usage_error(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder"
    out = tmp_path / "results.jsonl"
    code, stdout, stderr = run(
        "check", listings, missing, "--catalog", catalog, "--format", "jsonl", "--out", out
    )
    assert code == 2
    assert stderr.strip().splitlines() == [f"error: no such file or folder: {missing}"]
    assert stdout == ""
    assert not out.exists()


def test_check_against_a_missing_catalog_is_a_usage_error(tmp_path: Path, listings: Path) -> None:
    code, _, stderr = run("check", listings / "D004_copy.jpg", "--catalog", tmp_path / "none")
    assert code == 2
    assert "no catalog" in stderr
    assert not (tmp_path / "none").exists()


def test_min_score_zero_reports_at_least_as_many_matches(
    catalog: Path, listings: Path, checked: tuple[int, dict[str, dict]]
) -> None:
    args = ("check", listings, "--catalog", catalog, "--format", "jsonl", "--min-score", "0")
    code, stdout, _ = run(*args)
    assert code == 1
    loose = {Path(r["path"]).name: r for r in map(json.loads, stdout.splitlines())}
    assert set(loose) == set(checked[1])
    for name, result in checked[1].items():
        assert len(loose[name]["matches"]) >= len(result["matches"])
        assert loose[name]["flagged"] == result["flagged"]


def test_table_format_prints_a_table(catalog: Path, listings: Path) -> None:
    code, stdout, _ = run("check", listings / "D004_copy.jpg", "--catalog", catalog)
    assert code == 0
    assert "imgmatch check" in stdout
    assert "FLAGGED" in stdout
    assert "D004" in stdout


def test_table_shows_paths_relative_to_the_folder_given_one_line_each(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    deep = tmp_path / "marketplace-exports" / "2024-06-30" / "seller-with-a-long-name" / "photos"
    shutil.copytree(listings, deep)
    long_name = "listing_photo_of_a_bracelet_from_a_seller_that_names_files_at_length.jpg"
    (deep / "nested").mkdir()
    shutil.copy2(listings / "D004_copy.jpg", deep / "nested" / long_name)
    # The width of a default terminal (CliRunner's output is no terminal: 80 columns).
    code, stdout, _ = run("check", deep, "--catalog", catalog, "--format", "table")
    assert code == 1
    assert str(tmp_path) not in stdout
    rows = [line for line in stdout.splitlines() if "FLAGGED" in line or "clear" in line]
    assert any(line.split("│")[1].strip() == "D004_copy.jpg" for line in rows), stdout
    assert any("D008_mirrored.jpg" in line for line in rows), stdout
    # Too long for its column: shortened in the middle, its end (the name) kept, on one line.
    shortened = [line for line in rows if "…" in line and "at_length.jpg" in line]
    assert len(shortened) == 1 and shortened[0].split("│")[1].strip().startswith("nest")


def test_csv_output_to_a_file(catalog: Path, listings: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    code, stdout, _ = run("check", listings, "--catalog", catalog, "--format", "csv", "--out", out)
    assert code == 1
    assert stdout == ""
    with out.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6
    flagged = {Path(r["path"]).name: r["design"] for r in rows if r["flagged"] == "1"}
    assert flagged == {"D004_copy.jpg": "D004", "D008_mirrored.jpg": "D008"}


def test_index_with_a_broken_metadata_csv_is_a_usage_error(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> None:
    write_image(tmp_path / "refs" / "base.jpg", make_photo(3))
    (tmp_path / "refs" / "metadata.csv").write_text("path,brand\nbase.jpg,B\n", encoding="utf-8")
    code, _, stderr = run("index", tmp_path / "refs", "--catalog", tmp_path / "cat")
    assert code == 2
    assert "missing column" in stderr
