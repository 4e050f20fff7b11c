"""`imgmatch index` at scale: incremental re-runs, pruning, kill-and-resume, hostile folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from imgmatch import indexing
from imgmatch.catalog import DATABASE_NAME, SCHEMA_VERSION, Catalog
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.parallel import DecodeTimeoutError, FileFingerprinter

runner = CliRunner()


def run(*args: str | Path) -> tuple[int, str, str]:
    from imgmatch.cli import app

    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def summary_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def references_of(catalog: Path) -> set[tuple[str, str, str]]:
    with Catalog(catalog, create=False) as store:
        return {(r.path, r.sha256, r.design) for r in store.references()}


@pytest.fixture
def photos(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> Path:
    folder = tmp_path / "refs"
    for seed in range(5):
        write_image(folder / f"ref_{seed}.jpg", make_photo(seed, (320, 240)), quality=90)
    return folder


def test_second_run_over_an_unchanged_folder_fingerprints_nothing(
    photos: Path, tmp_path: Path
) -> None:
    catalog, first, second = tmp_path / "cat", tmp_path / "first.json", tmp_path / "second.json"
    assert (
        run("index", photos, "--catalog", catalog, "--workers", "1", "--summary-json", first)[0]
        == 0
    )
    assert summary_of(first)["fingerprinted"] == 5
    code, _, stderr = run(
        "index", photos, "--catalog", catalog, "--workers", "1", "--summary-json", second
    )
    assert code == 0
    again = summary_of(second)
    assert (again["fingerprinted"], again["unchanged"], again["added"]) == (0, 5, 0)
    assert "indexed 0 new, 0 refreshed, 5 unchanged, 0 failed" in stderr


def test_changed_and_new_files_are_picked_up_and_touched_ones_only_refreshed(
    photos: Path,
    tmp_path: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:
    catalog, summary = tmp_path / "cat", tmp_path / "summary.json"
    run("index", photos, "--catalog", catalog, "--workers", "1")
    write_image(photos / "ref_0.jpg", make_photo(100, (320, 240)), quality=90)
    write_image(photos / "ref_new.jpg", make_photo(101, (320, 240)), quality=90)
    # Same bytes, new mtime: confirmed unchanged by sha256, so no new fingerprint.
    os.utime(photos / "ref_1.jpg", ns=(1, 1))
    code, _, _ = run(
        "index", photos, "--catalog", catalog, "--workers", "1", "--summary-json", summary
    )
    assert code == 0
    result = summary_of(summary)
    assert result["fingerprinted"] == 2
    assert (result["added"], result["refreshed"], result["unchanged"]) == (2, 1, 3)
    assert len(references_of(catalog)) == 6


def test_prune_removes_exactly_the_vanished_files(
    photos: Path,
    tmp_path: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:
    catalog, summary = tmp_path / "cat", tmp_path / "summary.json"
    elsewhere = write_image(tmp_path / "other" / "kept.jpg", make_photo(50, (320, 240)))
    run("index", photos, "--catalog", catalog, "--workers", "1")
    run("index", elsewhere, "--catalog", catalog, "--workers", "1")
    (photos / "ref_1.jpg").unlink()
    (photos / "ref_3.jpg").unlink()
    code, _, _ = run(
        "index",
        photos,
        "--catalog",
        catalog,
        "--prune",
        "--workers",
        "1",
        "--summary-json",
        summary,
    )
    assert code == 0
    assert summary_of(summary)["pruned"] == 2
    paths = {Path(p).name for p, _, _ in references_of(catalog)}
    assert paths == {"ref_0.jpg", "ref_2.jpg", "ref_4.jpg", "kept.jpg"}
    assert run("catalog", "verify", "--catalog", catalog)[0] == 0


class CountingProgress:
    """Records what a run's progress display is told."""

    def __init__(self) -> None:
        self.total = self.done = self.failed = 0

    def start(self, total: int) -> None:
        self.total = total

    def prepared(self) -> None:
        return None

    def advance(self, *, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)

    def finish(self) -> None:
        return None


def test_progress_counts_every_file_the_summary_counts(photos: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "cat"
    with Catalog(catalog) as store:
        indexing.index_references(store, [photos])
    # A moved file and a touched one are refreshed (their bytes are known), one file is gone.
    (photos / "ref_0.jpg").rename(photos / "ref_moved.jpg")
    os.utime(photos / "ref_1.jpg", (1, 1))
    (photos / "ref_2.jpg").unlink()
    progress = CountingProgress()
    with Catalog(catalog) as store:
        report = indexing.index_references(
            store, [photos], options=indexing.IndexOptions(prune=True), progress=progress
        )
    assert (report.refreshed, report.unchanged, report.pruned) == (2, 2, 1)
    assert progress.done == progress.total == report.seen == 4


def index_summary(folder: Path, catalog: Path, *extra: str) -> dict:
    summary = catalog.parent / "summary.json"
    code, _, _ = run(
        "index", folder, "--catalog", catalog, "--workers", "1", "--summary-json", summary, *extra
    )
    assert code == 0
    return summary_of(summary)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_renumbered_after_a_deletion_take_their_references_along(
    photos: Path, tmp_path: Path
) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    deleted = sha256_of(photos / "ref_0.jpg")
    (photos / "ref_0.jpg").unlink()
    for number in range(1, 5):
        (photos / f"ref_{number}.jpg").rename(photos / f"ref_{number - 1}.jpg")
    result = index_summary(photos, catalog, "--prune")
    # Every file holds bytes the catalog knows: nothing to fingerprint, four references moved.
    assert (result["fingerprinted"], result["refreshed"]) == (0, 4)
    assert references_of(catalog) == references_of(_fresh_index(photos, tmp_path))
    assert deleted not in {sha for _, sha, _ in references_of(catalog)}
    assert index_summary(photos, catalog)["unchanged"] == 4


def test_two_files_that_swap_bytes_swap_references(photos: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    swap(photos / "ref_0.jpg", photos / "ref_1.jpg")
    result = index_summary(photos, catalog)
    assert (result["fingerprinted"], result["refreshed"], result["unchanged"]) == (0, 2, 3)
    assert_like_a_fresh_index(photos, catalog, tmp_path, 5)


def test_a_file_overwritten_with_another_files_bytes_drops_its_old_reference(
    photos: Path, tmp_path: Path
) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    overwritten = sha256_of(photos / "ref_1.jpg")
    shutil.copyfile(photos / "ref_0.jpg", photos / "ref_1.jpg")
    result = index_summary(photos, catalog)
    assert (result["fingerprinted"], result["removed"]) == (0, 1)
    stored = references_of(catalog)
    assert overwritten not in {sha for _, sha, _ in stored}
    # The two files share one reference, where it was: under ref_0, as a fresh index has it.
    assert stored == references_of(_fresh_index(photos, tmp_path))
    assert index_summary(photos, catalog)["unchanged"] == 5
    assert references_of(catalog) == stored


def test_two_files_overwritten_with_the_same_new_bytes_leave_no_old_reference(
    photos: Path, tmp_path: Path, make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:  # fmt: skip
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    new = write_image(tmp_path / "new.jpg", make_photo(77, (320, 240)), quality=90)
    for name in ("ref_1.jpg", "ref_2.jpg"):
        shutil.copyfile(new, photos / name)
    result = index_summary(photos, catalog)
    assert (result["fingerprinted"], result["removed"]) == (1, 1)
    assert_like_a_fresh_index(photos, catalog, tmp_path, 5)


def test_a_run_killed_between_batches_of_moves_leaves_no_reference_behind(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    swap(photos / "ref_0.jpg", photos / "ref_1.jpg")
    commit = indexing._commit
    commits = 0

    def killed_after_one_batch(*args: Any) -> None:
        nonlocal commits
        if commits == 1:
            raise KeyboardInterrupt
        commits += 1
        commit(*args)

    monkeypatch.setattr(indexing, "_commit", killed_after_one_batch)
    assert run("index", photos, "--catalog", catalog, "--batch-size", "1")[0] == 130
    monkeypatch.undo()
    # ref_0 now holds both references; before the next run, ref_1's photo is deleted.
    (photos / "ref_1.jpg").unlink()
    result = index_summary(photos, catalog, "--prune")
    assert result["fingerprinted"] == 0
    assert_like_a_fresh_index(photos, catalog, tmp_path, 4)


def test_copies_of_a_moved_file_leave_its_reference_with_the_first_of_them(
    photos: Path, tmp_path: Path
) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    for name in ("ref_2_copy_a.jpg", "ref_2_copy_b.jpg"):
        shutil.copy2(photos / "ref_2.jpg", photos / name)
    (photos / "ref_2.jpg").unlink()
    index_summary(photos, catalog)
    assert_like_a_fresh_index(photos, catalog, tmp_path, 6)


def test_a_photo_overwritten_with_an_unreadable_file_loses_its_reference(
    photos: Path, tmp_path: Path
) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    overwritten = sha256_of(photos / "ref_1.jpg")
    (photos / "ref_1.jpg").write_bytes(b"not a jpeg")
    summary = tmp_path / "summary.json"
    code, _, _ = run("index", photos, "--catalog", catalog, "--summary-json", summary)
    assert code == 1
    result = summary_of(summary)
    assert (result["failed"], result["removed"]) == (1, 1)
    assert overwritten not in {sha for _, sha, _ in references_of(catalog)}
    fresh = tmp_path / "fresh"
    assert run("index", photos, "--catalog", fresh)[0] == 1
    assert references_of(catalog) == references_of(fresh)


def test_a_copy_of_a_file_in_the_same_folder_adds_nothing(photos: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "cat"
    index_summary(photos, catalog)
    shutil.copy2(photos / "ref_2.jpg", photos / "ref_2_copy.jpg")
    for _ in range(2):
        result = index_summary(photos, catalog)
        assert (result["fingerprinted"], result["refreshed"], result["unchanged"]) == (0, 0, 6)
    assert {Path(p).name for p, _, _ in references_of(catalog)} == {
        f"ref_{n}.jpg" for n in range(5)
    }


def swap(a: Path, b: Path) -> None:
    """Exchange two files' bytes by renaming, as a user would (mtimes travel with the bytes)."""
    parked = a.with_name("swap.jpg")
    a.rename(parked)
    b.rename(a)
    parked.rename(b)


def assert_like_a_fresh_index(folder: Path, catalog: Path, tmp_path: Path, files: int) -> None:
    """The catalog equals a fresh index of the folder, and a further run changes nothing."""
    assert references_of(catalog) == references_of(_fresh_index(folder, tmp_path))
    assert index_summary(folder, catalog)["unchanged"] == files


def _fresh_index(folder: Path, tmp_path: Path) -> Path:
    """The folder indexed into a new catalog: what an incremental run must end up equal to."""
    fresh = tmp_path / "fresh"
    index_summary(folder, fresh)
    return fresh


def test_index_makes_the_folder_of_its_summary(photos: Path, tmp_path: Path) -> None:
    summary = tmp_path / "logs" / "2026-11-30" / "index.json"
    code, _, _ = run(
        "index", photos, "--catalog", tmp_path / "cat", "--workers", "1", "--summary-json", summary
    )
    assert code == 0
    assert summary_of(summary)["added"] == 5


def test_ctrl_c_during_index_says_the_next_run_continues(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("imgmatch.cli.index_references", interrupted)
    code, _, stderr = run("index", photos, "--catalog", tmp_path / "cat")
    assert code == 130
    assert "run the same command again to continue" in " ".join(stderr.split())


def test_without_prune_vanished_files_stay(photos: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "cat"
    run("index", photos, "--catalog", catalog, "--workers", "1")
    (photos / "ref_1.jpg").unlink()
    assert run("index", photos, "--catalog", catalog, "--workers", "1")[0] == 0
    assert len(references_of(catalog)) == 5


@pytest.mark.slow
def test_resuming_after_kill_9_mid_index_gives_the_same_catalog(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> None:
    folder = tmp_path / "refs"
    for seed in range(40):
        write_image(folder / f"ref_{seed:02d}.jpg", make_photo(seed, (480, 360)), quality=90)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    command = [
        sys.executable,
        "-c",
        "from imgmatch.cli import app; app()",
        "index",
        str(folder),
        "--catalog",
        str(killed),
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
        committed = _committed(killed)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= _committed(killed) < 40, "the kill must land mid-run"
    assert run("index", folder, "--catalog", killed, "--workers", "1")[0] == 0
    assert run("index", folder, "--catalog", whole, "--workers", "1")[0] == 0
    assert references_of(killed) == references_of(whole)
    assert run("catalog", "verify", "--catalog", killed)[0] == 0
    listing = folder / "ref_07.jpg"
    results = [
        json.loads(run("check", listing, "--catalog", c, "--format", "jsonl", "--workers", "1")[1])
        for c in (killed, whole)
    ]
    for result in results:
        del result["timing_ms"]
    assert results[0] == results[1]
    assert results[0]["flagged"] is True


def _committed(catalog: Path) -> int:
    database = catalog / DATABASE_NAME
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM reference").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.fixture
def hostile(
    tmp_path: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
    bundled_references: Path,
) -> Path:
    """Good photos among a FIFO, a symlink loop, a symlink out of the root, an empty file and
    a truncated JPEG."""
    root = tmp_path / "hostile"
    for seed in range(3):
        write_image(root / f"good_{seed}.jpg", make_photo(seed, (320, 240)))
    os.mkfifo(root / "pipe.jpg")
    (root / "loop_a.jpg").symlink_to(root / "loop_b.jpg")
    (root / "loop_b.jpg").symlink_to(root / "loop_a.jpg")
    outside = write_image(tmp_path / "outside.jpg", make_photo(9, (320, 240)))
    (root / "escape.jpg").symlink_to(outside)
    (root / "empty.jpg").write_bytes(b"")
    data = (bundled_references / "D000_0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image")
    return root


def test_index_of_a_hostile_folder_completes_and_reports_each_file(
    hostile: Path, tmp_path: Path
) -> None:
    summary_path = tmp_path / "summary.json"
    code, _, stderr = run(
        "index", hostile, "--catalog", tmp_path / "cat", "--summary-json", summary_path
    )
    assert code == 1
    summary = summary_of(summary_path)
    assert summary["added"] == 3
    assert summary["failures_by_reason"] == {
        "empty file": [str(hostile / "empty.jpg")],
        "truncated image": [str(hostile / "truncated.jpg")],
    }
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped_paths"]}
    assert set(skipped) == {"pipe.jpg", "loop_a.jpg", "loop_b.jpg", "escape.jpg"}
    assert "outside" in skipped["escape.jpg"]
    assert "FIFO" in skipped["pipe.jpg"]
    assert summary["unsupported"] == 1
    for name in ("pipe.jpg", "loop_a.jpg", "escape.jpg", "empty.jpg", "truncated.jpg"):
        assert name in stderr


def test_a_decode_over_the_time_limit_is_a_per_file_error(photos: Path) -> None:
    fingerprinter = FileFingerprinter("reference", DetectorConfig(), ImageLimits(), 1e-6)
    outcome = fingerprinter(photos / "ref_0.jpg")
    assert outcome.fingerprint is None
    assert outcome.error_type == DecodeTimeoutError.reason


def test_files_fingerprinted_otherwise_are_fingerprinted_again_once(
    photos: Path, tmp_path: Path
) -> None:
    """A change of fingerprint settings (or of how imgmatch computes fingerprints) makes the
    stored fingerprints incomparable: the next index run fingerprints unchanged files again,
    in place of the old entries, and only that once."""
    from imgmatch.detector import Detector
    from imgmatch.indexing import index_references

    other = DetectorConfig().with_overrides(orb_features=300)
    with Catalog(tmp_path / "cat") as store:
        first = index_references(store, [photos], config=other)
        assert (first.fingerprinted, first.refingerprinted) == (5, 0)
        few_descriptors = store.stats().descriptors
        assert few_descriptors <= 5 * 2 * 300
        assert Detector(store).stale_references() == 5
        again = index_references(store, [photos])
        assert (again.fingerprinted, again.refingerprinted, again.unchanged) == (5, 5, 0)
        assert len(store.references()) == 5
        assert store.stats().descriptors > few_descriptors
        assert Detector(store).stale_references() == 0
        third = index_references(store, [photos])
        assert (third.fingerprinted, third.unchanged) == (0, 5)


def test_a_schema_1_catalog_is_migrated_warned_about_and_refreshed(
    photos: Path, tmp_path: Path
) -> None:
    """Catalogs written before fingerprint signatures open as they are; `check` warns that their
    references are of unknown make until `index` has fingerprinted them again."""
    catalog, summary = tmp_path / "cat", tmp_path / "summary.json"
    assert run("index", photos, "--catalog", catalog, "--workers", "1", "--quiet")[0] == 0
    # Turn it into what schema 1 wrote: no signature column.
    db = sqlite3.connect(catalog / DATABASE_NAME)
    with db:
        db.execute("ALTER TABLE reference DROP COLUMN fingerprint_signature")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    listing = photos / "ref_0.jpg"
    _, _, stderr = run("check", listing, "--catalog", catalog, "--quiet")
    assert "5 references were fingerprinted by another imgmatch version" in stderr
    code, _, stderr = run(
        "index", photos, "--catalog", catalog, "--quiet", "--summary-json", summary
    )
    assert code == 0
    assert "indexed 5 new (5 fingerprinted again), 0 refreshed, 0 unchanged" in stderr
    assert summary_of(summary)["refingerprinted"] == 5
    _, stdout, stderr = run("check", listing, "--catalog", catalog, "--quiet", "--format", "jsonl")
    assert "fingerprinted by another" not in stderr
    result = json.loads(stdout.splitlines()[0])
    assert result["flagged"] and result["matches"][0]["design"] == "ref_0"


def test_a_schema_2_catalog_keeps_its_one_hash_until_indexed_again(
    photos: Path, tmp_path: Path
) -> None:
    """Schema 2 stored one hash per reference, and its index files gave hash entries the bare
    reference id. Opened now, the files are rebuilt with variant ids, the old hashes still
    meet an identical reuse, and the next index run stores all 8 variants, so that a mirrored
    reuse meets one too."""
    from imgmatch.fingerprint import Fingerprinter
    from imgmatch.images import load_image
    from imgmatch.indexing import index_references

    catalog = tmp_path / "cat"
    with Catalog(catalog) as store:
        index_references(store, [photos])
    db = sqlite3.connect(catalog / DATABASE_NAME)
    with db:
        db.execute("UPDATE hash SET code = substr(code, 1, 8)")
        db.execute("UPDATE reference SET fingerprint_signature = 'v4-older'")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        db.execute("ALTER TABLE reference DROP COLUMN fingerprint_sha256")
        for key, stamp in db.execute("SELECT key, value FROM meta WHERE key LIKE 'index.%'"):
            older = {k: v for k, v in json.loads(stamp).items() if k != "layout"}
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(older), key))
    db.close()
    fingerprinter = Fingerprinter(DetectorConfig())
    photo = load_image(photos / "ref_0.jpg")
    identical = fingerprinter.listing(photo).hashes
    mirrored = fingerprinter.listing(np.ascontiguousarray(photo[:, ::-1])).hashes

    def hits(store: Catalog, hashes: dict) -> set[tuple[str, int]]:
        names = {r.reference_id: r.path for r in store.references()}
        found = store.search_hashes(hashes, max_distance=4)
        return {(Path(names[h.reference_id]).name, h.variant) for h in found}

    with Catalog(catalog) as store:
        # The descriptor ids did not change: its (trained) index is loaded as it was.
        assert store.index_source == "rebuilt hash indexes"
        assert hits(store, identical) == {("ref_0.jpg", 0)}
        assert hits(store, mirrored) == set()
        assert index_references(store, [photos]).refingerprinted == 5
        assert hits(store, identical) == {("ref_0.jpg", 0)}
        assert hits(store, mirrored) == {("ref_0.jpg", 1)}
    db = sqlite3.connect(catalog / DATABASE_NAME)
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    assert {length for (length,) in db.execute("SELECT length(code) FROM hash")} == {64}
    db.close()
