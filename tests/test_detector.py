"""The detector end to end: every way a listing reuses a reference is flagged, with the right
design and a box on the truth; unrelated, blank and look-alike listings are not."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgmatch.bench import attacks
from imgmatch.bench.metrics import box_iou
from imgmatch.bench.samples import generated_photo
from imgmatch.catalog import Catalog
from imgmatch.detector import CheckResult, Detector
from imgmatch.images import RGBImage, load_image
from imgmatch.indexing import index_references

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "reference_images"
SHARED = REPO.parent / "shared" / "datasets"
# Four bundled references of different families: bangle, pendant, ring, chain.
DESIGNS = ("D000", "D004", "D019", "D038")
MIN_BOX_IOU = 0.5


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    catalog = Catalog(tmp_path_factory.mktemp("catalog"))
    report = index_references(catalog, [REFERENCES])
    assert report.added == len(list(REFERENCES.glob("*.jpg"))) and not report.failed
    return catalog


@pytest.fixture(scope="module")
def detector(catalog: Catalog) -> Detector:
    return Detector(catalog)


@pytest.fixture(scope="module")
def photos() -> dict[str, RGBImage]:
    return {design: load_image(REFERENCES / f"{design}_0.jpg") for design in DESIGNS}


@pytest.fixture(scope="module")
def background() -> RGBImage:
    return generated_photo(np.random.default_rng(11), (1000, 750))


def attack_table(
    photos: dict[str, RGBImage], background: RGBImage, design: str
) -> dict[str, attacks.Attack]:
    others = [photo for name, photo in photos.items() if name != design]
    return {
        "exact": attacks.compose(),
        "resized_30": attacks.resize(0.3),
        "jpeg_20": attacks.jpeg(20),
        "mirrored": attacks.mirror,
        "rotated_90": attacks.rotate90,
        "rotated_15": attacks.rotate(15),
        "cropped_50": attacks.crop(0.5),
        "pasted_40": attacks.paste_onto(background, 0.4),
        "text": attacks.text_overlay(),
        "sticker": attacks.sticker(),
        "color_shift": attacks.color_shift(),
        "collage_tile": attacks.collage(others, 2),
    }


ATTACKS = (
    "exact",
    "resized_30",
    "jpeg_20",
    "mirrored",
    "rotated_90",
    "rotated_15",
    "cropped_50",
    "pasted_40",
    "text",
    "sticker",
    "color_shift",
    "collage_tile",
)


def assert_flagged(result: CheckResult, design: str, truth: attacks.Box) -> None:
    assert result.status == "ok"
    assert result.flagged, f"not flagged: {[m.to_dict() for m in result.matches]}"
    found = {m.design: m for m in result.matches}
    assert design in found, f"{design} not among {list(found)}"
    match = found[design]
    assert match.score >= result.threshold
    assert 0.0 <= match.score <= 1.0
    if match.box is not None:
        assert box_iou(match.box, truth) >= MIN_BOX_IOU, (match.box, truth)
    else:
        # Only a hash matched: then it must have been the whole picture.
        assert match.hash_distance is not None


@pytest.mark.parametrize("attack_name", ATTACKS)
@pytest.mark.parametrize("design", DESIGNS)
def test_reused_reference_is_flagged_with_its_box(
    detector: Detector,
    photos: dict[str, RGBImage],
    background: RGBImage,
    design: str,
    attack_name: str,
) -> None:
    attack = attack_table(photos, background, design)[attack_name]
    seed = DESIGNS.index(design) * 100 + ATTACKS.index(attack_name)
    listing = attacks.apply(attack, photos[design], seed)
    assert_flagged(detector.check(listing.image), design, listing.box)


def test_every_design_of_a_collage_is_reported_with_its_own_box(
    detector: Detector, photos: dict[str, RGBImage]
) -> None:
    tiles = [photos[d] for d in DESIGNS]
    canvas = np.full((640, 640, 3), 255, np.uint8)
    boxes = {}
    for cell, (design, tile) in enumerate(zip(DESIGNS, tiles, strict=True)):
        row, col = divmod(cell, 2)
        small = np.asarray(Image.fromarray(tile).resize((320, 240)))
        canvas[row * 320 + 40 : row * 320 + 280, col * 320 : col * 320 + 320] = small
        boxes[design] = (col * 320, row * 320 + 40, col * 320 + 320, row * 320 + 280)
    result = detector.check(canvas)
    for design in DESIGNS:
        assert_flagged(result, design, boxes[design])
    assert len({m.box for m in result.matches if m.design in DESIGNS}) == len(DESIGNS)


def test_matches_are_grouped_by_design_and_sorted(
    detector: Detector, photos: dict[str, RGBImage]
) -> None:
    result = detector.check(photos["D004"], min_score=0.0)
    designs = [m.design for m in result.matches]
    assert len(designs) == len(set(designs))
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    top = result.matches[0]
    assert (top.design, top.transform, top.hash_distance) == ("D004", "identical", 0)
    assert set(result.timing_ms) == {"features", "search", "verify"}


def test_hash_path_names_the_transform(detector: Detector, photos: dict[str, RGBImage]) -> None:
    mirrored = detector.check(np.ascontiguousarray(photos["D019"][:, ::-1]))
    assert mirrored.matches[0].transform == "mirrored"
    # The distance is a whole number of bits, in the result and in the evidence text.
    distance = mirrored.matches[0].hash_distance
    assert type(distance) is int
    assert f"within {distance} of 64 bits (mirrored)" in mirrored.matches[0].evidence
    turned = detector.check(np.ascontiguousarray(np.rot90(photos["D019"], k=-1)))
    assert turned.matches[0].transform == "rotated-90"


def test_boxes_are_in_the_listing_files_pixels(detector: Detector, photos: dict[str, RGBImage]):
    """A large JPEG is decoded reduced; its box must still be in the file's own coordinates."""
    big = np.asarray(Image.fromarray(photos["D000"]).resize((2560, 1920)))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="JPEG", quality=92)
    result = detector.check_source(buffer.getvalue(), path="big.jpg")
    assert (result.width, result.height) == (2560, 1920)
    box = result.matches[0].box
    assert box is not None
    assert box_iou(box, (0, 0, 2560, 1920)) > 0.9


@pytest.mark.parametrize("seed", range(6))
def test_unrelated_photos_are_not_flagged(detector: Detector, seed: int) -> None:
    photo = generated_photo(np.random.default_rng(1000 + seed), (900, 700))
    result = detector.check(photo)
    assert not result.flagged, [m.to_dict() for m in result.matches]


def test_unrelated_photo_with_many_scored_candidates_stays_below_threshold(
    detector: Detector,
) -> None:
    photo = generated_photo(np.random.default_rng(77), (900, 700))
    result = detector.check(photo, min_score=0.0)
    assert all(m.score < result.threshold for m in result.matches)


@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), (200, 30, 30)])
def test_blank_listings_are_refused_not_matched(detector: Detector, color: tuple[int, ...]):
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), color).save(buffer, format="PNG")
    result = detector.check_source(buffer.getvalue(), path="blank.png")
    assert result.status == "error" and result.error_type == "blank image"
    assert not result.flagged and result.matches == ()


def test_catalog_designs_of_one_family_are_told_apart(detector: Detector) -> None:
    """Every bundled reference matches itself first, never another design of its family."""
    families = {}
    with (REFERENCES / "metadata.csv").open() as stream:
        for row in csv.DictReader(stream):
            families[row["design"]] = row["family"]
    for design in families:
        result = detector.check(load_image(REFERENCES / f"{design}_0.jpg"))
        assert result.matches[0].design == design
        for match in result.matches[1:]:
            assert match.score < result.matches[0].score


def shared_images(folder: str, role: str | None = None, limit: int = 10**6) -> list[Path]:
    root = SHARED / folder
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared datasets are not beside this checkout")
    with (root / "manifest.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    paths = [root / (row.get("path") or row["file"]) for row in rows]
    if role is not None:
        paths = [p for p, row in zip(paths, rows, strict=True) if row.get("role") == role]
    return paths[:limit]


@pytest.mark.dataset
def test_studio_product_photos_on_white_are_not_flagged(detector: Detector) -> None:
    listings = shared_images("marketplace", limit=60)
    flagged = [
        (p.name, r.matches[0].design, r.matches[0].score)
        for p in listings
        if (r := detector.check_source(p)).flagged
    ]
    assert flagged == []


@pytest.mark.dataset
def test_re_posed_look_alike_designs_are_not_flagged(detector: Detector) -> None:
    """Hard negatives shot in another pose or light than the reference (photos _1, _2)."""
    listings = [p for p in shared_images("jewelry-renders", "hard_negative") if p.stem[-1] != "0"]
    flagged = [p.name for p in listings if detector.check_source(p).flagged]
    assert flagged == []


def test_closest_vote_per_keypoint_follows_its_definition() -> None:
    """One correspondence per reference keypoint: its closest vote, the first among equals, in
    the order keypoints were first voted for (RANSAC's result depends on that order)."""
    from imgmatch.candidates import Votes as _Votes

    rng = np.random.default_rng(5)
    for _ in range(50):
        count = int(rng.integers(1, 60))
        # Few keypoints and distances: many repeated keypoints and many ties.
        votes = _Votes(
            np.sort(rng.choice(500, count, replace=False)),
            rng.integers(0, 12, count),
            rng.integers(0, 6, count),
        )
        expected: dict[int, tuple[int, int]] = {}
        for query, keypoint, distance in zip(
            votes.queries.tolist(), votes.keypoints.tolist(), votes.distances.tolist(), strict=True
        ):
            if keypoint not in expected or distance < expected[keypoint][1]:
                expected[keypoint] = (query, distance)
        keypoints, queries = votes.closest_per_keypoint()
        assert keypoints.tolist() == list(expected)
        assert queries.tolist() == [query for query, _ in expected.values()]
