"""Sample listing photos made from the bundled references, for a first look at `imgmatch check`.

    python -m imgmatch.bench.samples --out DIR [--references reference_images] [--seed 7]

Writes a handful of counterfeit-style listings (reused official photos: cropped, mirrored,
stickered, collaged, pasted onto another photo) and two clean ones (generated images).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from imgmatch.bench import attacks
from imgmatch.images import RGBImage, load_image

DEFAULT_REFERENCES = Path("reference_images")


def generated_photo(rng: np.random.Generator, size: tuple[int, int] = (800, 600)) -> RGBImage:
    """An unrelated 'photo': smooth coloured noise with a few shapes (no protected design)."""
    width, height = size
    coarse = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(10, 120)), int(rng.integers(10, 120)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    return np.asarray(image, dtype=np.uint8)


def make_samples(references: Sequence[Path], out: Path, seed: int = 7) -> list[Path]:
    """Write sample listings to `out`; returns their paths."""
    rng = np.random.default_rng(seed)
    photos = [load_image(p) for p in references]
    background = generated_photo(rng)
    plans = [
        ("cropped", attacks.crop(0.5)),
        ("mirrored", attacks.mirror),
        ("sticker", attacks.compose(attacks.sticker(), attacks.jpeg(60))),
        ("collage", attacks.collage(photos[-3:], 2)),
        ("pasted", attacks.paste_onto(background, 0.45)),
        ("rotated", attacks.compose(attacks.rotate(12), attacks.resize(0.5))),
    ]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (name, attack) in enumerate(plans):
        source = references[number % len(references)]
        attacked = attacks.apply(attack, photos[number % len(photos)], seed + number)
        path = out / f"listing_{number:02d}_{source.stem}_{name}.jpg"
        Image.fromarray(attacked.image).save(path, quality=90)
        written.append(path)
    for number in range(2):
        path = out / f"listing_clean_{number:02d}.jpg"
        Image.fromarray(generated_photo(rng)).save(path, quality=90)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--references", type=Path, default=DEFAULT_REFERENCES)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    references = sorted(args.references.glob("*.jpg"))[:6]
    for path in make_samples(references, args.out, args.seed):
        print(path)


if __name__ == "__main__":
    main()
