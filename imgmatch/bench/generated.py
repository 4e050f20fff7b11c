"""Seeded generated photos: unrelated images that must never be flagged, and backgrounds."""

from __future__ import annotations

import cv2
import numpy as np

from imgmatch.images import RGBImage


def generated_photo(rng: np.random.Generator, width: int = 800, height: int = 600) -> RGBImage:
    """A busy synthetic scene: a colour gradient, random shapes and lines, sensor-like noise.

    Busy on purpose: plenty of ORB corners, so an unrelated image gives the detector real work
    and real chances to produce a false match.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    mix = (xs / width * 0.6 + ys / height * 0.4)[..., None]
    canvas = np.ascontiguousarray((start * (1 - mix) + end * mix).astype(np.uint8))
    for _ in range(int(rng.integers(12, 30))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(3))
        if kind == 0:
            center = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(10, width // 4)), int(rng.integers(10, height // 4)))
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(canvas, center, axes, angle, 0, 360, color, -1)
        elif kind == 1:
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.rectangle(canvas, p0, p1, color, -1)
        else:
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(canvas, p0, p1, color, int(rng.integers(1, 8)))
    noise = rng.normal(0, 6, canvas.shape)
    return np.clip(canvas.astype(np.float32) + noise, 0, 255).astype(np.uint8)
