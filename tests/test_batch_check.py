"""`imgmatch check` at scale: manifests, streamed jsonl and --resume, CSV, the HTML report,
hostile folders, and the same output from one process as from a pool."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgmatch.catalog import Catalog
from imgmatch.indexing import index_references

runner = CliRunner()
HOSTILE_ID = '<script>alert("x")</script>'


def run(*args: str | Path) -> tuple[int, str, str]:
    from imgmatch.cli import app

    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory: pytest.TempPathFactory,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> Path:
    folder = tmp_path_factory.mktemp("refs")
    for seed in range(4):
        write_image(folder / f"design_{seed}.jpg", make_photo(seed, (480, 360)), quality=92)
    directory = tmp_path_factory.mktemp("cat") / "cat"
    with Catalog(directory) as store:
        assert index_references(store, [folder]).added == 4
    return directory


@pytest.fixture(scope="module")
def listings(
    tmp_path_factory: pytest.TempPathFactory,
    catalog: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> Path:
    """Copies and mirrors of references, unrelated photos, two broken files, and a manifest."""
    with Catalog(catalog, create=False) as store:
        references = {Path(r.path).stem: Path(r.path) for r in store.references()}
    folder = tmp_path_factory.mktemp("listings")
    shutil.copy2(references["design_0"], folder / "a_copy.jpg")
    Image.open(references["design_1"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        folder / "b_mirrored.jpg", quality=90
    )
    (folder / "sub").mkdir()
    shutil.copy2(references["design_2"], folder / "sub" / "c_copy.jpg")
    for seed in range(3):
        write_image(folder / f"d_unrelated_{seed}.png", make_photo(200 + seed, (400, 300)))
    (folder / "e_empty.jpg").write_bytes(b"")
    data = references["design_3"].read_bytes()
    (folder / "f_truncated.jpg").write_bytes(data[: len(data) // 3])
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["listing_id", "path", "seller", "price"])
        writer.writerow([HOSTILE_ID, "a_copy.jpg", "<b>bold seller</b>", "12.50"])
        writer.writerow(["L-2", "b_mirrored.jpg", "shop & co", "30"])
        writer.writerow(["L-3", "d_unrelated_0.png", "honest", "5"])
        writer.writerow(["L-4", "e_empty.jpg", "ghost", ""])
    return folder


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timing_ms"} for r in records]


def test_a_pool_gives_the_same_results_in_the_same_order_as_one_process(
    catalog: Path, listings: Path
) -> None:
    args = ("check", listings, "--catalog", catalog, "--format", "jsonl", "--quiet")
    code_one, one, _ = run(*args, "--workers", "1")
    code_two, two, _ = run(*args, "--workers", "2")
    assert code_one == code_two == 1
    assert without_timing(jsonl(one)) == without_timing(jsonl(two))
    names = [Path(r["path"]).name for r in jsonl(one)]
    assert names == sorted(names, key=lambda n: (n == "c_copy.jpg", n))
    flagged = {Path(r["path"]).name for r in jsonl(one) if r["flagged"]}
    assert flagged == {"a_copy.jpg", "b_mirrored.jpg", "c_copy.jpg"}
    for record in jsonl(one):
        if record["status"] == "ok":
            assert {"decode", "features", "search", "verify"} <= set(record["timing_ms"])


def test_manifest_ids_and_extra_columns_reach_jsonl_and_csv(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    manifest = listings / "manifest.csv"
    code, stdout, _ = run(
        "check", "--manifest", manifest, "--catalog", catalog, "--format", "jsonl", "-q",
        "--workers", "1",
    )  # fmt: skip
    assert code == 1
    records = jsonl(stdout)
    assert [r["listing_id"] for r in records] == [HOSTILE_ID, "L-2", "L-3", "L-4"]
    assert records[0]["manifest"] == {"seller": "<b>bold seller</b>", "price": "12.50"}
    assert records[0]["flagged"] is True
    assert records[3]["status"] == "error"
    out = tmp_path / "results.csv"
    run(
        "check", "--manifest", manifest, "--catalog", catalog, "--format", "csv", "--out", out,
        "-q", "--workers", "1",
    )  # fmt: skip
    with out.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["listing_id"] for r in rows] == [HOSTILE_ID, "L-2", "L-3", "L-4"]
    assert [r["seller"] for r in rows] == ["<b>bold seller</b>", "shop & co", "honest", "ghost"]
    assert rows[0]["flagged"] == "1" and rows[0]["design"] == "design_0"
    assert rows[3]["status"] == "error" and rows[3]["error"]


def test_resume_after_a_crash_gives_the_same_jsonl_as_one_run(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    base = ("check", listings, "--catalog", catalog, "--format", "jsonl", "-q", "--workers", "1")
    run(*base, "--out", whole)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 8
    # A crash after three results, halfway through writing the fourth.
    resumed.write_text("".join(lines[:3]) + lines[3][:25], encoding="utf-8")
    summary = tmp_path / "summary.json"
    code, _, _ = run(*base, "--out", resumed, "--resume", "--summary-json", summary)
    assert code == 1
    assert json.loads(summary.read_text())["resumed"] == 3
    assert json.loads(summary.read_text())["processed"] == 5
    read = [json.loads(line) for line in resumed.read_text(encoding="utf-8").splitlines()]
    assert without_timing(read) == without_timing([json.loads(line) for line in lines])


def test_every_manifest_row_gets_a_result_even_when_its_file_is_missing(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "listing_id,path,seller\n"
        f"L-1,{listings / 'a_copy.jpg'},shop42\n"
        "L-2,photos/gone.jpg,shop43\n"
        f"L-3,{listings / 'd_unrelated_0.png'},shop44\n",
        encoding="utf-8",
    )
    out, summary = tmp_path / "results.csv", tmp_path / "summary.json"
    code, _, _ = run(
        "check", "--manifest", manifest, "--catalog", catalog, "--format", "csv", "--out", out,
        "--summary-json", summary, "-q", "--workers", "1",
    )  # fmt: skip
    assert code == 1
    with out.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["listing_id"], r["status"], r["seller"]) for r in rows] == [
        ("L-1", "ok", "shop42"),
        ("L-2", "error", "shop43"),
        ("L-3", "ok", "shop44"),
    ]
    assert "no such file" in rows[1]["error"]
    counts = json.loads(summary.read_text(encoding="utf-8"))
    assert (counts["processed"], counts["failed"], counts["skipped"]) == (3, 1, 0)
    assert counts["failures_by_reason"] == {
        "no such file or folder": [str(tmp_path / "photos" / "gone.jpg")]
    }


def test_resume_of_a_listing_with_several_photos_checks_the_photos_not_yet_done(
    catalog: Path, listings: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    rows = ["a_copy.jpg", "b_mirrored.jpg", "sub/c_copy.jpg", "d_unrelated_1.png"]
    manifest.write_text(
        "listing_id,path\n" + "".join(f"L-7,{listings / name}\n" for name in rows),
        encoding="utf-8",
    )
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    base = ("check", "--manifest", manifest, "--catalog", catalog, "--format", "jsonl", "-q")
    run(*base, "--workers", "1", "--out", whole)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4
    resumed.write_text("".join(lines[:2]), encoding="utf-8")
    run(*base, "--workers", "1", "--out", resumed, "--resume")
    read = [json.loads(line) for line in resumed.read_text(encoding="utf-8").splitlines()]
    assert without_timing(read) == without_timing([json.loads(line) for line in lines])


@pytest.mark.parametrize(
    ("output_format", "hint"), [("jsonl", "--resume"), ("csv", "--format jsonl --out FILE")]
)
def test_ctrl_c_says_how_to_continue(
    catalog: Path,
    listings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    output_format: str,
    hint: str,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("imgmatch.cli.run_check", interrupted)
    out = tmp_path / f"results.{output_format}"
    code, _, stderr = run(
        "check", listings, "--catalog", catalog, "--format", output_format, "--out", out, "-q"
    )
    assert code == 130
    assert "interrupted" in stderr and hint in " ".join(stderr.split())


def test_resume_needs_a_jsonl_file(catalog: Path, listings: Path) -> None:
    code, _, stderr = run("check", listings, "--catalog", catalog, "--format", "csv", "--resume")
    assert code == 2
    assert "--resume" in stderr


@pytest.mark.parametrize("output_format", ["html", "jsonl", "csv"])
def test_outputs_go_into_folders_made_for_them(
    catalog: Path, listings: Path, tmp_path: Path, output_format: str
) -> None:
    out = tmp_path / "reports" / "2026-11" / f"report.{output_format}"
    summary = tmp_path / "summaries" / "summary.json"
    code, _, _ = run(
        "check", listings / "a_copy.jpg", "--catalog", catalog, "--format", output_format,
        "--out", out, "--summary-json", summary, "-q", "--workers", "1",
    )  # fmt: skip
    assert code == 0
    assert "a_copy.jpg" in out.read_text(encoding="utf-8")
    assert json.loads(summary.read_text(encoding="utf-8"))["flagged"] == 1


@pytest.mark.parametrize("option", ["--out", "--summary-json"])
def test_an_output_that_cannot_be_written_stops_the_check_before_it_starts(
    catalog: Path, listings: Path, tmp_path: Path, option: str
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    for target in (blocker / "report.html", tmp_path):
        code, stdout, stderr = run(
            "check", listings, "--catalog", catalog, "--format", "html", option, target,
            "--workers", "1",
        )  # fmt: skip
        assert code == 2, stderr
        assert f"error: {target}" in " ".join(stderr.split())
        # Refused before any listing was checked: no progress, no summary.
        assert "processed" not in stderr and stdout == ""


def test_a_failed_html_write_leaves_the_previous_report_whole(
    catalog: Path, listings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html>yesterday's report</html>\n", encoding="utf-8")

    def disk_full(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    # The new report is written aside and moved over the old one in one step: whatever fails
    # on the way, the old report is whole and nothing half-written is left behind.
    monkeypatch.setattr("imgmatch.report.os.replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(
            "check", listings / "a_copy.jpg", "--catalog", catalog, "--format", "html",
            "--out", report, "-q", "--workers", "1",
        )  # fmt: skip
    assert report.read_text(encoding="utf-8") == "<html>yesterday's report</html>\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


class _BalancedHTML(HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "input", "link", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def html_report(
    catalog: Path, listings: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, str, Path]:
    report = tmp_path_factory.mktemp("reports") / "report.html"
    code, _, _ = run(
        "check", listings, "--manifest", listings / "manifest.csv", "--catalog", catalog,
        "--format", "html", "--out", report, "-q", "--workers", "1",
    )  # fmt: skip
    return code, report.read_text(encoding="utf-8"), report


def test_html_report_is_balanced_html_with_no_script(html_report: tuple[int, str, Path]) -> None:
    code, page, _ = html_report
    assert code == 1
    assert page.startswith("<!DOCTYPE html>")
    parser = _BalancedHTML()
    parser.feed(page)
    parser.close()
    assert parser.problems == []
    assert parser.stack == []
    assert parser.scripts == 0


def test_html_report_shows_every_flagged_listing_first_with_thumbnails(
    html_report: tuple[int, str, Path],
) -> None:
    _, page, _ = html_report
    flagged_part, rest = page.split("<h2>Clear listings", 1)
    for name in ("a_copy.jpg", "b_mirrored.jpg", "c_copy.jpg"):
        assert name in flagged_part
    assert "Flagged listings (5)" in flagged_part  # three files + two manifest rows of them
    assert flagged_part.count("data:image/jpeg;base64,") >= 10
    assert "design_0" in flagged_part and "design_1" in flagged_part
    failed_part = rest.split("<h2>Failed and skipped", 1)[1]
    assert "e_empty.jpg" in failed_part and "empty file" in failed_part
    assert "f_truncated.jpg" in failed_part and "truncated image" in failed_part


def test_html_report_escapes_ids_and_metadata(html_report: tuple[int, str, Path]) -> None:
    _, page, _ = html_report
    assert HOSTILE_ID not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<b>bold seller</b>" not in page
    assert "&lt;b&gt;bold seller&lt;/b&gt;" in page
    assert "shop &amp; co" in page


def test_html_report_embeds_no_path_outside_its_folder(
    html_report: tuple[int, str, Path], listings: Path, catalog: Path
) -> None:
    _, page, report = html_report
    for outside in (listings, catalog, catalog.parent, Path.home(), Path("/tmp")):
        assert str(outside) not in page
    assert os.sep + "tmp" not in page
    assert report.parent != listings


def test_html_report_inside_the_listing_folder_shows_relative_paths(
    catalog: Path, listings: Path
) -> None:
    report = listings / "inside.html"
    try:
        run(
            "check", listings / "sub", "--catalog", catalog, "--format", "html", "--out", report,
            "-q", "--workers", "1",
        )  # fmt: skip
        page = report.read_text(encoding="utf-8")
    finally:
        report.unlink()
    assert "sub/c_copy.jpg" in page
    assert str(listings) not in page


@pytest.fixture
def hostile(
    tmp_path: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
    listings: Path,
) -> Path:
    root = tmp_path / "hostile"
    root.mkdir()
    shutil.copy2(listings / "a_copy.jpg", root / "good.jpg")
    write_image(root / "nested" / "other.png", make_photo(300, (320, 240)))
    write_image(root / ".hidden" / "secret.jpg", make_photo(301, (320, 240)))
    os.mkfifo(root / "pipe.jpg")
    (root / "loop_a.jpg").symlink_to(root / "loop_b.jpg")
    (root / "loop_b.jpg").symlink_to(root / "loop_a.jpg")
    (root / "escape.jpg").symlink_to(listings / "b_mirrored.jpg")
    (root / "empty.jpg").write_bytes(b"")
    shutil.copy2(listings / "f_truncated.jpg", root / "truncated.jpg")
    (root / "readme.txt").write_text("not an image")
    return root


def test_check_of_a_hostile_folder_completes_and_reports_each_file(
    catalog: Path, hostile: Path, tmp_path: Path
) -> None:
    summary_path = tmp_path / "summary.json"
    code, stdout, stderr = run(
        "check", hostile, "--catalog", catalog, "--format", "jsonl", "--summary-json",
        summary_path, "--workers", "2",
    )  # fmt: skip
    assert code == 1
    records = {Path(r["path"]).name: r for r in jsonl(stdout)}
    assert set(records) == {"good.jpg", "other.png", "empty.jpg", "truncated.jpg"}
    assert records["good.jpg"]["flagged"] is True
    summary = json.loads(summary_path.read_text())
    assert (summary["processed"], summary["flagged"], summary["failed"]) == (4, 1, 2)
    assert (summary["skipped"], summary["unsupported"]) == (4, 1)
    assert set(summary["failures_by_reason"]) == {"empty file", "truncated image"}
    for name in ("pipe.jpg", "loop_a.jpg", "loop_b.jpg", "escape.jpg", "truncated.jpg"):
        assert name in stderr
    assert "secret.jpg" not in stdout + stderr


def test_fingerprinting_sets_opencv_to_the_configured_threads() -> None:
    """--workers 1 and the service fingerprint in the calling process: one OpenCV thread per
    image there too, as in the pool workers, unless configured otherwise."""
    import cv2

    from imgmatch.config import DetectorConfig
    from imgmatch.fingerprint import Fingerprinter

    try:
        Fingerprinter(DetectorConfig().with_overrides(opencv_threads=2))
        assert cv2.getNumThreads() == 2
    finally:
        Fingerprinter(DetectorConfig())
    assert cv2.getNumThreads() == 1
