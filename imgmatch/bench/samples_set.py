"""Sample sets: reference photos, listings with ground truth, and distractors.

A manifest (`manifest.csv`) describes any folder: columns `path,design,role` where `role` is
`reference`, `listing` (shows `design`) or `distractor` (must not be flagged); an optional
`part` column names a subset for per-part recall. The shared datasets' own manifests are read
directly (`read_shared_dataset`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgmatch.bench import attacks as A
from imgmatch.bench.generated import generated_photo
from imgmatch.bench.quick import REFERENCE_DIR, bundled_references
from imgmatch.images import RGBImage, load_image

Box = tuple[int, int, int, int]
ROLES = ("reference", "listing", "distractor")
LISTING_JPEG_QUALITY = 90


@dataclass(frozen=True)
class ReferenceItem:
    name: str
    design: str
    image: RGBImage


@dataclass(frozen=True)
class ListingItem:
    """A listing photo (JPEG bytes, as a marketplace serves it) and its ground truth.

    `design` is None for a distractor; `box` is where the reference lies, where known.
    """

    name: str
    data: bytes
    design: str | None
    attack: str
    part: str
    box: Box | None = None


@dataclass(frozen=True)
class SampleSet:
    name: str
    references: tuple[ReferenceItem, ...]
    listings: tuple[ListingItem, ...]


def encode_jpeg(image: RGBImage, quality: int = LISTING_JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _attack_table(
    others: Sequence[RGBImage], backgrounds: Sequence[RGBImage]
) -> dict[str, A.Attack]:
    """Every named attack of the quick set (one way a counterfeit listing reuses a photo)."""
    return {
        "crop-0.7": A.crop(0.7),
        "crop-0.5": A.crop(0.5),
        "crop-0.3": A.crop(0.3),
        "pad-border": A.pad(0.15),
        "rotate-8": A.rotate(8),
        "rotate-90": A.rotate90,
        "mirror": A.mirror,
        "downscale-jpeg": A.compose(A.resize(0.35), A.jpeg(25)),
        "color-shift": A.color_shift(),
        "grayscale": A.grayscale,
        "blur": A.blur(2.5),
        "noise": A.noise(12.0),
        "text": A.text_overlay(),
        "sticker": A.sticker(),
        "collage-2x2": A.collage(others, 2),
        "collage-3x3": A.collage(others, 3),
        "paste-0.5": A.paste_onto(backgrounds[0], 0.5),
        "paste-0.35": A.paste_onto(backgrounds[1], 0.35),
        "perspective": A.perspective(0.12),
        "screenshot": A.screenshot_frame(),
        "aspect": A.aspect(1.5),
        "combo-mirror-crop-text": A.compose(A.mirror, A.crop(0.6), A.text_overlay()),
        "combo-color-paste": A.compose(A.color_shift(-30, 0.7), A.paste_onto(backgrounds[2], 0.6)),
        "combo-rotate-jpeg-sticker": A.compose(A.rotate(5), A.sticker(), A.jpeg(40)),
    }


def quick_set(
    seed: int = 0,
    *,
    references_per_attack: int = 5,
    generated_distractors: int = 24,
    attacked_distractors: int = 16,
    reference_dir: Path = REFERENCE_DIR,
    max_references: int | None = None,
) -> SampleSet:
    """The default set: bundled references, attacked copies, distractors (no external data).

    Each attack is applied to `references_per_attack` references (rotating through all of
    them), so every reference and every attack appear without the set growing to
    references x attacks.
    """
    rng = np.random.default_rng(seed)
    bundled = bundled_references(reference_dir, max_references)
    references = tuple(ReferenceItem(b.path.name, b.design, b.image) for b in bundled)
    backgrounds = [generated_photo(rng) for _ in range(3)]
    fillers = [generated_photo(rng, 480, 480) for _ in range(8)]
    table = _attack_table(fillers, backgrounds)
    listings: list[ListingItem] = []
    position = 0
    for number, (name, attack) in enumerate(table.items()):
        for _ in range(min(references_per_attack, len(references))):
            ref = references[position % len(references)]
            position += 1
            item = A.apply(attack, ref.image, seed * 100_003 + len(listings))
            listings.append(
                ListingItem(
                    f"{ref.name}_{name}_{number}",
                    encode_jpeg(item.image),
                    ref.design,
                    name,
                    "quick-copies",
                    item.box,
                )
            )
    for number in range(generated_distractors):
        listings.append(
            ListingItem(
                f"generated_{number}",
                encode_jpeg(generated_photo(rng)),
                None,
                "generated",
                "quick-distractors",
            )
        )
    distractor_attacks = list(table.items())
    for number in range(attacked_distractors):
        name, attack = distractor_attacks[number % len(distractor_attacks)]
        image = A.apply(attack, generated_photo(rng), seed + 7919 * (number + 1)).image
        listings.append(
            ListingItem(
                f"generated_attacked_{number}_{name}",
                encode_jpeg(image),
                None,
                f"distractor-{name}",
                "quick-distractors",
            )
        )
    return SampleSet("quick", references, tuple(listings))


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def read_manifest(directory: Path, name: str | None = None) -> SampleSet:
    """A folder with `manifest.csv` (`path,design,role[,part]`), in the documented format."""
    rows = _read_rows(directory / "manifest.csv")
    refs, listings = [], []
    for row in rows:
        role = row["role"].strip()
        if role not in ROLES:
            raise ValueError(f"{directory}/manifest.csv: role {role!r} is not one of {ROLES}")
        path = directory / row["path"]
        part = row.get("part") or (name or directory.name)
        if role == "reference":
            refs.append(ReferenceItem(row["path"], row["design"], load_image(path)))
        else:
            design = row["design"] if role == "listing" else None
            attack = "listing" if role == "listing" else "distractor"
            listings.append(ListingItem(row["path"], _file_bytes(path), design, attack, part))
    return SampleSet(name or directory.name, tuple(refs), tuple(listings))


def _jewelry_renders(directory: Path) -> SampleSet:
    refs, listings = [], []
    for row in _read_rows(directory / "manifest.csv"):
        path = directory / row["file"]
        if row["role"] == "reference":
            refs.append(ReferenceItem(row["file"], row["design_id"], load_image(path)))
        elif row["role"] == "copy":
            listings.append(
                ListingItem(
                    row["file"], _file_bytes(path), row["design_id"], "new-photo", "renders-copies"
                )
            )
        else:
            listings.append(
                ListingItem(
                    row["file"], _file_bytes(path), None, "hard-negative", "renders-hard-negatives"
                )
            )
    return SampleSet("jewelry-renders", tuple(refs), tuple(listings))


def _marketplace(directory: Path) -> SampleSet:
    """First colour variant's main photo is the reference; other variants' main photos are
    recoloured copies; every other photo is a distractor."""
    rows = _read_rows(directory / "manifest.csv")
    mains: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row["view"] == "main":
            mains.setdefault(row["design"], []).append(row)
    protected = {d: sorted(r["item"] for r in rs) for d, rs in mains.items() if len(rs) >= 2}
    refs, listings = [], []
    for row in rows:
        path = directory / row["path"]
        variants = protected.get(row["design"])
        if variants and row["view"] == "main" and row["item"] == variants[0]:
            refs.append(ReferenceItem(row["path"], row["design"], load_image(path)))
        elif variants and row["view"] == "main":
            listings.append(
                ListingItem(
                    row["path"],
                    _file_bytes(path),
                    row["design"],
                    "colour-variant",
                    "marketplace-variants",
                )
            )
        else:
            listings.append(
                ListingItem(
                    row["path"], _file_bytes(path), None, "other-product", "marketplace-distractors"
                )
            )
    return SampleSet("marketplace", tuple(refs), tuple(listings))


def _photos(directory: Path) -> SampleSet:
    """Real photos only as distractors, checked against the bundled references."""
    bundled = bundled_references()
    refs = tuple(ReferenceItem(b.path.name, b.design, b.image) for b in bundled)
    listings = tuple(
        ListingItem(
            row["path"],
            _file_bytes(directory / row["path"]),
            None,
            "real-photo",
            "photos-distractors",
        )
        for row in _read_rows(directory / "manifest.csv")
    )
    return SampleSet("photos", refs, listings)


SHARED_READERS: dict[str, Callable[[Path], SampleSet]] = {
    "jewelry-renders": _jewelry_renders,
    "marketplace": _marketplace,
    "photos": _photos,
}


def read_dataset(directory: Path) -> SampleSet:
    """A shared dataset by its folder name, else a folder in the documented manifest format."""
    reader = SHARED_READERS.get(directory.name)
    if reader is not None:
        return reader(directory)
    return read_manifest(directory)
