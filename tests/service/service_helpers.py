"""Images and constants shared by the service tests (a module, not conftest, so tests can
import it: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REFERENCES = Path(__file__).resolve().parents[2] / "reference_images"
# A handful of the bundled renders: enough designs to tell apart, quick to fingerprint.
INDEXED = ("D000_0.jpg", "D004_0.jpg", "D010_0.jpg", "D020_0.jpg", "D030_0.jpg", "D037_0.jpg")
API_KEY = "test-write-key"
READY_TIMEOUT_S = 30.0


def jpeg_bytes(pixels: np.ndarray | Image.Image, quality: int = 90) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def random_scene(rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """Random rectangles and ellipses on a plain canvas: a table top, like no reference."""
    background = tuple(int(c) for c in rng.integers(170, 240, 3))
    canvas = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(30):
        x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        x1, y1 = x0 + int(rng.integers(10, 80)), y0 + int(rng.integers(10, 80))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x1, y1), fill=colour)
    return canvas


def listing_with(reference: str, rng: np.random.Generator, scale: float = 1.0) -> Image.Image:
    """A listing photo that copies a bundled reference: pasted, resized, into a random scene."""
    photo = Image.open(REFERENCES / reference).convert("RGB")
    photo = photo.resize((round(photo.width * scale * 0.6), round(photo.height * scale * 0.6)))
    scene = random_scene(rng, (round(1000 * scale), round(750 * scale)))
    scene.paste(photo, (round(150 * scale), round(120 * scale)))
    return scene
