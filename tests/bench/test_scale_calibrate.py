"""Catalog growth on a tiny catalog, and calibration storing its threshold in the catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from imgmatch.bench import attacks as A
from imgmatch.bench.command import calibrate
from imgmatch.bench.generated import generated_photo
from imgmatch.bench.report_files import render_scale, write_plots
from imgmatch.bench.scale import scale_rows
from imgmatch.bench.synthetic import SyntheticSpec
from imgmatch.catalog import Catalog
from imgmatch.detector import THRESHOLD_SETTING, Detector


def test_tiny_scale_run_measures_exact_approximate_and_brute_force(tmp_path: Path) -> None:
    rows = scale_rows(
        [5],
        seed=0,
        workdir=tmp_path,
        real_references=3,
        timed_listings=2,
        exact_listings=1,
        bruteforce_listings=1,
        budget_s=0.0,
        spec=SyntheticSpec(mask_pool_size=256),
        log=lambda _: None,
    )
    (row,) = rows
    assert (row["references"], row["synthetic_references"]) == (5, 2)
    assert row["checks"] == 2 and row["exact_listings"] == 1
    assert row["bruteforce_ms"]["listings"] == 1
    for key in ("descriptor_recall_at_1", "voting_descriptor_recall_at_1"):
        assert row[key] is None or 0.0 <= row[key] <= 1.0
    assert row["speedup_vs_bruteforce"] == pytest.approx(
        row["bruteforce_ms"]["total"] / row["latency_ms"]["total"]["p50"]
    )
    assert row["catalog_bytes"] > 0 and row["rss_bytes"] > 0
    assert "| 5 (3 + 2) |" in "\n".join(render_scale(rows))
    (plot,) = write_plots({"results": [], "scale": rows}, tmp_path)
    assert plot.name == "latency_vs_catalog.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny_dataset(directory: Path) -> None:
    """Three references, a cropped copy of each, two unrelated photos."""
    rng = np.random.default_rng(11)
    lines = ["path,design,role"]
    for number in range(3):
        image = generated_photo(rng, 480, 360)
        Image.fromarray(image).save(directory / f"ref{number}.png")
        copy = A.apply(A.crop(0.7), image, number).image
        Image.fromarray(copy).save(directory / f"ref{number}_crop.png")
        lines += [f"ref{number}.png,D{number},reference", f"ref{number}_crop.png,D{number},listing"]
    for number in range(2):
        Image.fromarray(generated_photo(rng, 400, 300)).save(directory / f"other{number}.png")
        lines.append(f"other{number}.png,,distractor")
    (directory / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_calibrate_stores_the_threshold_the_detector_reads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _tiny_dataset(data)
    app = typer.Typer()
    app.command()(calibrate)
    catalog_dir = tmp_path / "catalog"
    result = CliRunner().invoke(
        app, ["--dataset", str(data), "--target-precision", "0.99", "--catalog", str(catalog_dir)]
    )
    assert result.exit_code == 0, result.output
    with Catalog(catalog_dir) as catalog:
        stored = catalog.get_setting(THRESHOLD_SETTING)
        assert stored is not None
        assert Detector(catalog).threshold == pytest.approx(float(stored))
        assert 0.0 < float(stored) <= 1.0
