"""A reference must be distinctive: plain images (gradients, ramps, lines, checkerboards) are
refused, since their hashes match any listing as plain as they are; real photos never are."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgmatch.config import DetectorConfig
from imgmatch.errors import IndistinctImageError
from imgmatch.features import FeatureExtractor, distinct_features
from imgmatch.fingerprint import Fingerprinter
from imgmatch.images import load_image, to_gray

runner = CliRunner()
WIDTH, HEIGHT = 640, 480
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _gray(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(values, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def plain_image(kind: str) -> np.ndarray:
    """A 640x480 RGB image with little or no distinctive detail."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    if kind == "gradient":
        return _gray(xs / WIDTH * 255)
    if kind == "diagonal_gradient":
        return _gray((xs + ys) / (WIDTH + HEIGHT) * 255)
    if kind == "colour_gradient":
        return (np.stack([xs / WIDTH, ys / HEIGHT, 1 - xs / WIDTH], axis=2) * 255).astype(np.uint8)
    if kind == "ramp_16_levels":
        return _gray(np.floor(xs / WIDTH * 16) * 17)
    if kind.startswith("checkerboard_"):
        square = int(kind.rsplit("_", 1)[1])
        return _gray((xs // square + ys // square) % 2 * 255)
    if kind == "one_line":
        values = np.full((HEIGHT, WIDTH), 255.0)
        values[HEIGHT // 2 - 1 : HEIGHT // 2 + 2, :] = 0
        return _gray(values)
    if kind == "one_vertical_line":
        values = np.full((HEIGHT, WIDTH), 255.0)
        values[:, WIDTH // 3 : WIDTH // 3 + 2] = 0
        return _gray(values)
    raise ValueError(kind)


PLAIN_KINDS = (
    "gradient",
    "diagonal_gradient",
    "colour_gradient",
    "ramp_16_levels",
    "checkerboard_8",
    "checkerboard_40",
    "one_line",
    "one_vertical_line",
)


@pytest.mark.parametrize("kind", PLAIN_KINDS)
def test_a_plain_image_is_refused_as_a_reference(kind: str) -> None:
    with pytest.raises(IndistinctImageError, match="too little detail") as raised:
        Fingerprinter(DetectorConfig()).reference(plain_image(kind))
    assert raised.value.reason == "too little detail"


def test_a_rotated_and_recompressed_checkerboard_is_refused_too(tmp_path: Path) -> None:
    board = Image.fromarray(plain_image("checkerboard_40")).rotate(
        30, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)
    )
    board.save(tmp_path / "board.jpg", quality=75)
    with pytest.raises(IndistinctImageError):
        Fingerprinter(DetectorConfig()).reference(load_image(tmp_path / "board.jpg"))


def test_a_plain_image_may_still_be_checked_as_a_listing() -> None:
    fingerprint = Fingerprinter(DetectorConfig()).listing(plain_image("ramp_16_levels"))
    assert fingerprint.width == WIDTH


def _run(*args: str | Path) -> tuple[int, str, str]:
    from imgmatch.cli import app

    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_index_refuses_plain_references_per_file_and_no_plain_listing_is_flagged(
    tmp_path: Path, make_photo: Callable[..., np.ndarray], write_image: Callable[..., Path]
) -> None:
    references, listings = tmp_path / "refs", tmp_path / "listings"
    write_image(references / "gradient.png", plain_image("gradient"))
    write_image(references / "checkerboard.png", plain_image("checkerboard_40"))
    for seed in range(2):
        write_image(references / f"photo_{seed}.jpg", make_photo(seed), quality=92)
    write_image(listings / "ramp.png", plain_image("ramp_16_levels"))
    write_image(listings / "one_line.png", plain_image("one_line"))
    shutil.copy2(references / "photo_1.jpg", listings / "photo_1_copy.jpg")
    catalog, summary = tmp_path / "cat", tmp_path / "summary.json"
    code, _, _ = _run(
        "index", references, "--catalog", catalog, "--workers", "1", "-q",
        "--summary-json", summary,
    )  # fmt: skip
    report = json.loads(summary.read_text())
    assert code == 1
    assert report["added"] == 2
    plain = sorted(str(references / name) for name in ("checkerboard.png", "gradient.png"))
    assert report["failures_by_reason"] == {"too little detail": plain}
    code, stdout, _ = _run(
        "check", listings, "--catalog", catalog, "--format", "jsonl", "--workers", "1", "-q"
    )
    assert code == 0
    flagged = {Path(r["path"]).name for r in map(json.loads, stdout.splitlines()) if r["flagged"]}
    assert flagged == {"photo_1_copy.jpg"}


def _photos(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        yield from sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _fewest_distinct_features(paths: list[Path]) -> tuple[int, Path]:
    """The fewest distinct features any of `paths` has as a reference (fully counted), and
    which photo has them."""
    config = DetectorConfig()
    extractor = FeatureExtractor(config)
    counts = []
    for path in paths:
        features = extractor.extract_gray(to_gray(load_image(path)))
        count = distinct_features(features, config.distinct_feature_bits, up_to=len(features))
        counts.append((count, path))
    return min(counts)


def test_no_bundled_reference_is_refused(bundled_references: Path) -> None:
    paths = list(_photos(bundled_references))
    assert len(paths) >= 32
    fewest, path = _fewest_distinct_features(paths)
    needed = DetectorConfig().min_distinct_reference_features
    print(f"bundled references: fewest distinct features {fewest} ({path.name}), need {needed}")
    assert fewest >= needed


@pytest.mark.dataset
@pytest.mark.slow
def test_no_photo_of_the_shared_datasets_is_refused(shared_datasets: Path) -> None:
    folders = [shared_datasets / name for name in ("jewelry-renders", "marketplace", "photos")]
    paths = list(_photos(*folders))
    listed = 0
    for folder in folders:
        with (folder / "manifest.csv").open(newline="", encoding="utf-8") as stream:
            listed += sum(1 for _ in csv.DictReader(stream))
    assert len(paths) == listed
    fewest, path = _fewest_distinct_features(paths)
    needed = DetectorConfig().min_distinct_reference_features
    print(f"{len(paths)} photos: fewest distinct features {fewest} ({path}), need {needed}")
    assert fewest >= needed
