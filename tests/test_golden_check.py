"""A golden check result: `imgmatch check --format jsonl` over copies of bundled references.

The copies are made here from the bundled photos (crop, mirror, turn, banner, colour shift,
paste onto a photo, a collage of four designs, a second design inset in a first one, blurred
thumbnails only the hashes still match) with an unrelated photo beside them, saved losslessly,
and checked with `--min-score 0` so that every scored candidate is pinned, not only the flags.
Timings vary and are dropped; scores and inlier ratios are compared as the result rounds them
(4 decimals). A change of the detector's results, however small, fails this test; when one is
intended, run it with IMGMATCH_UPDATE_GOLDEN=1 to rewrite the snapshot and review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from typer.testing import CliRunner

from imgmatch.cli import app
from imgmatch.images import RGBImage, load_image

GOLDEN = Path(__file__).parent / "golden" / "check.jsonl"
UPDATE_ENV = "IMGMATCH_UPDATE_GOLDEN"
NOT_FLAGGED = {"unrelated.png", "D017_blurred_96px.png"}
# Blurred thumbnails: too small and soft for ORB, still close in the hashes. The first is within
# the bits where a hash match flags alone, the second beyond (it only scores).
THUMBNAIL_BLUR_PX = 3.0


def _resized(image: RGBImage, width: int) -> RGBImage:
    height = round(image.shape[0] * width / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def _banner(image: RGBImage) -> RGBImage:
    picture = Image.fromarray(image).copy()
    draw = ImageDraw.Draw(picture)
    height = picture.height
    draw.rectangle((0, int(height * 0.78), picture.width, int(height * 0.92)), fill=(200, 20, 20))
    draw.text((12, int(height * 0.8)), "BEST PRICE 50% OFF", fill=(255, 255, 255))
    return np.asarray(picture)


def _colour_shifted(image: RGBImage) -> RGBImage:
    shifted = image.astype(np.int16) + np.array([30, -20, 10], np.int16)
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _blurred_thumbnail(image: RGBImage, width: int) -> RGBImage:
    small = Image.fromarray(_resized(image, width))
    return np.asarray(small.filter(ImageFilter.GaussianBlur(THUMBNAIL_BLUR_PX)))


def _pasted(image: RGBImage, background: RGBImage) -> RGBImage:
    canvas = background.copy()
    small = _resized(image, int(canvas.shape[1] * 0.4))
    y, x = 60, 90
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def _collage(tiles: list[RGBImage]) -> RGBImage:
    canvas = np.full((640, 640, 3), 255, np.uint8)
    for cell, tile in enumerate(tiles):
        row, col = divmod(cell, 2)
        small = np.asarray(Image.fromarray(tile).resize((320, 240)))
        canvas[row * 320 + 40 : row * 320 + 280, col * 320 : col * 320 + 320] = small
    return canvas


def _inset(outer: RGBImage, inner: RGBImage) -> RGBImage:
    """`inner` shrunk to 30 % of `outer`'s width, in its lower right corner."""
    canvas = outer.copy()
    small = _resized(inner, int(outer.shape[1] * 0.3))
    height, width = small.shape[:2]
    canvas[-height - 5 : -5, -width - 5 : -5] = small
    return canvas


def listing_images(references: Path, background: RGBImage) -> dict[str, RGBImage]:
    photo = {d: load_image(references / f"{d}_0.jpg") for d in ("D000", "D004", "D006", "D013")}
    photo |= {d: load_image(references / f"{d}_0.jpg") for d in ("D017", "D019", "D038")}
    d004 = photo["D004"]
    height, width = d004.shape[:2]
    return {
        "D004_cropped.png": d004[height // 5 : height // 5 + height // 2, width // 4 :],
        "D019_mirrored.png": np.ascontiguousarray(photo["D019"][:, ::-1]),
        "D038_rotated_90.png": np.ascontiguousarray(np.rot90(photo["D038"], k=-1)),
        "D000_banner.png": _banner(photo["D000"]),
        "D013_small_colour_shift.png": _colour_shifted(_resized(photo["D013"], 300)),
        "D006_pasted.png": _pasted(photo["D006"], background),
        "collage_D000_D004_D019_D038.png": _collage(
            [photo["D000"], photo["D004"], photo["D019"], photo["D038"]]
        ),
        "D000_with_D013_inset.png": _inset(photo["D000"], photo["D013"]),
        "D013_blurred_140px.png": _blurred_thumbnail(photo["D013"], 140),
        "D017_blurred_96px.png": _blurred_thumbnail(photo["D017"], 96),
        "unrelated.png": background,
    }


def normalised(record: dict[str, Any]) -> dict[str, Any]:
    """A result without its timings (they vary), its paths as file names (they name folders of
    this machine)."""
    record = {k: v for k, v in record.items() if k != "timing_ms"}
    record["path"] = Path(record["path"]).name
    record["matches"] = [
        {**match, "reference_path": Path(match["reference_path"]).name}
        for match in record["matches"]
    ]
    return record


def run(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_check_results_match_the_golden_snapshot(
    tmp_path: Path,
    bundled_references: Path,
    make_photo: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
) -> None:
    listings = tmp_path / "listings"
    for name, image in listing_images(bundled_references, make_photo(4242, (800, 600))).items():
        write_image(listings / name, image)
    catalog = tmp_path / "catalog"
    run("index", bundled_references, "--catalog", catalog, "--workers", "1", "--quiet")
    stdout = run(
        "check", listings, "--catalog", catalog, "--format", "jsonl", "--min-score", "0",
        "--workers", "1", "--quiet",
    )  # fmt: skip
    records = [normalised(json.loads(line)) for line in stdout.splitlines()]
    if os.environ.get(UPDATE_ENV):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        pytest.skip(f"{GOLDEN} rewritten ({UPDATE_ENV} is set): review its diff")
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert [r["path"] for r in records] == [g["path"] for g in golden]
    for record, expected in zip(records, golden, strict=True):
        assert record == expected, record["path"]


def test_the_snapshot_flags_the_copies_and_not_the_unrelated_photo() -> None:
    """What the snapshot says, in words: every copy flagged with its design on top, except the
    unrelated photo and the thumbnail the hashes match only loosely, and the collage with all
    four of its designs."""
    golden = {g["path"]: g for g in map(json.loads, GOLDEN.read_text().splitlines())}
    for name, record in golden.items():
        assert record["flagged"] == (name not in NOT_FLAGGED), name
        if name not in NOT_FLAGGED and not name.startswith("collage"):
            assert record["matches"][0]["design"] == name[:4], name
    collage = golden["collage_D000_D004_D019_D038.png"]
    flagged = {m["design"] for m in collage["matches"] if m["score"] >= 0.5}
    assert flagged >= {"D000", "D004", "D019", "D038"}
