"""Shared fixtures: seeded synthetic photos, an image writer and the bundled/shared data folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_IMAGES = REPO_ROOT / "reference_images"
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def synthetic_photo(seed: int, size: tuple[int, int] = (480, 360)) -> np.ndarray:
    """A (height, width, 3) uint8 picture: random coloured rectangles and ellipses, plus noise.

    `size` is (width, height) like PIL. The same seed always gives the same pixels.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    canvas = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(canvas)
    for _ in range(24):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x1 + 4, y1 + 4), fill=colour)
    # A little noise gives texture, so ORB finds corners and JPEG has something to compress.
    noise = rng.normal(0.0, 6.0, (height, width, 3))
    return np.clip(np.asarray(canvas, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def save_image(path: Path, array: np.ndarray, format: str | None = None, **params: object) -> Path:
    """Write `array` to `path` with PIL (`format` defaults to the suffix's); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=format, **params)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def make_photo() -> Callable[..., np.ndarray]:
    return synthetic_photo


@pytest.fixture(scope="session")
def write_image() -> Callable[..., Path]:
    return save_image


@pytest.fixture(scope="session")
def bundled_references() -> Path:
    """The 32 CC0 jewelry renders shipped with the project, with their metadata.csv."""
    if not (REFERENCE_IMAGES / "metadata.csv").is_file():
        pytest.skip(f"bundled reference images missing at {REFERENCE_IMAGES}")
    return REFERENCE_IMAGES


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The read-only datasets beside the project (../shared/datasets)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (only present in the lab)")
    return SHARED_DATASETS
