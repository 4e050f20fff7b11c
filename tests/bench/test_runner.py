"""The benchmark end to end on a tiny configuration: report structure and derived figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imgmatch.bench import attacks as A
from imgmatch.bench.generated import generated_photo
from imgmatch.bench.metrics import micro_average_precision
from imgmatch.bench.runner import run_bench, write_report
from imgmatch.bench.samples_set import SampleSet, read_dataset


def test_tiny_bench_writes_a_complete_report(tiny_set: SampleSet, tmp_path: Path) -> None:
    report = run_bench([tiny_set], ["phash-scan", "imgmatch-full"], seed=3)
    files = write_report(report, tmp_path)
    assert {p.name for p in files} >= {"report.json", "report.md"}
    data = json.loads((tmp_path / "report.json").read_text())
    assert {"seed", "cpu_model", "cores", "versions", "config"} <= set(data["conditions"])
    assert [r["method"] for r in data["results"]] == ["phash-scan", "imgmatch-full"]
    for result in data["results"]:
        assert 0.0 <= result["uap"] <= 1.0
        assert set(result["latency_ms"]["total"]) == {"p50", "p95", "p99"}
        assert result["positives"] == sum(1 for i in tiny_set.listings if i.design)
        # The curve's last recall is what the ranking reaches at all.
        curve = result["curve"]
        assert len(curve["precision"]) == len(curve["recall"])
    full = data["results"][1]
    assert data["results"][0]["operating_shipped"] is None
    assert full["operating_shipped"]["threshold"] == 0.5
    assert "At the shipped threshold" in (tmp_path / "report.md").read_text()
    assert full["uap"] >= data["results"][0]["uap"]
    assert "| imgmatch-full |" in (tmp_path / "report.md").read_text()


def test_uap_in_report_is_recomputable_from_predictions(tiny_set: SampleSet) -> None:
    report = run_bench([tiny_set], ["phash-scan"], seed=3)
    result = report["results"][0]
    precision, recall = result["curve"]["precision"], result["curve"]["recall"]
    gained = np.diff([0.0, *recall])
    assert result["uap"] == pytest.approx(float(np.sum(np.array(precision) * gained)))
    assert micro_average_precision([], {("a", "b")}) == 0.0


def test_attacks_keep_the_box_inside_the_image() -> None:
    rng = np.random.default_rng(5)
    image = generated_photo(rng, 200, 150)
    for attack in (A.pad(0.1), A.perspective(0.1), A.screenshot_frame(), A.aspect(1.5)):
        item = A.apply(attack, image, 1)
        x0, y0, x1, y1 = item.box
        assert 0 <= x0 < x1 <= item.image.shape[1] and 0 <= y0 < y1 <= item.image.shape[0]


def test_manifest_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    from PIL import Image

    for name in ("ref.png", "copy.png", "other.png"):
        Image.fromarray(generated_photo(rng, 120, 90)).save(tmp_path / name)
    (tmp_path / "manifest.csv").write_text(
        "path,design,role\nref.png,D1,reference\ncopy.png,D1,listing\nother.png,,distractor\n"
    )
    samples = read_dataset(tmp_path)
    assert [r.design for r in samples.references] == ["D1"]
    assert [i.design for i in samples.listings] == ["D1", None]


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.mark.dataset
@pytest.mark.skipif(not (SHARED / "jewelry-renders").is_dir(), reason="../shared/datasets absent")
def test_shared_jewelry_renders_reads() -> None:
    samples = read_dataset(SHARED / "jewelry-renders")
    assert len(samples.references) == 32
    assert sum(1 for i in samples.listings if i.design is None) == 36


def test_the_bench_command_reports_its_progress_where_stderr_is_a_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imgmatch.cli import app

    args = ["bench", "--out", str(tmp_path), "--methods", "phash-scan", "--max-references", "3"]
    args += ["--references-per-attack", "1"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0
    listings = json.loads((tmp_path / "report.json").read_text())["results"][0]["listings"]
    # Without a terminal: what it is doing, then plain progress lines (the last at the end).
    assert "making the quick set (seed 0)" in result.stderr
    assert "quick: phash-scan: 3 references" in result.stderr
    assert f"bench: {listings}/{listings} (" in result.stderr


def test_run_bench_counts_every_listing_of_every_method(tiny_set: SampleSet) -> None:
    class Events:
        def __init__(self) -> None:
            self.total = self.done = 0
            self.notes: list[str] = []

        def start(self, total: int) -> None:
            self.total = total

        def prepared(self) -> None:
            return None

        def advance(self, *, failed: bool = False) -> None:
            self.done += 1

        def note(self, text: str) -> None:
            self.notes.append(text)

        def finish(self) -> None:
            return None

    events = Events()
    run_bench([tiny_set], ["phash-scan", "imgmatch-hash"], seed=3, progress=events)
    assert events.total == events.done == 2 * len(tiny_set.listings)
    assert [note.split(":")[1].strip() for note in events.notes] == ["phash-scan", "imgmatch-hash"]
