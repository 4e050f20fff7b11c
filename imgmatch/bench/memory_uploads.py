"""Worst-case valid uploads for the memory benchmark: one per allowed format and wide mode.

Each is as many pixels as `ImageLimits.max_image_pixels` allows (by default) in the mode that
costs its decoder the most, drawn as flat shapes so that the file stays far below the body
limit: the cheapest way to make the service hold a large decoded image.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Builder = Callable[[Image.Image], tuple[Image.Image, dict[str, object]]]
"""From an RGB picture to the image to save and Pillow's save parameters (with `format`)."""


def _rgba(picture: Image.Image) -> Image.Image:
    # Alpha that varies across the picture, so compositing onto white has work to do.
    alpha = Image.linear_gradient("L").resize(picture.size, Image.Resampling.NEAREST)
    rgba = picture.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def _sixteen_bit(picture: Image.Image) -> Image.Image:
    gray = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(gray)


def _float(picture: Image.Image) -> Image.Image:
    gray = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    return Image.fromarray(gray)


def _palette(picture: Image.Image) -> Image.Image:
    # Without dithering the flat shapes stay flat, and the file small.
    return picture.convert("P", palette=Image.Palette.ADAPTIVE, dither=Image.Dither.NONE)


UPLOADS: dict[str, Builder] = {
    "jpeg": lambda p: (p, {"format": "JPEG", "quality": 90}),
    "jpeg-progressive": lambda p: (p, {"format": "JPEG", "quality": 90, "progressive": True}),
    "png-rgba": lambda p: (_rgba(p), {"format": "PNG", "compress_level": 1}),
    "png-16bit-gray": lambda p: (_sixteen_bit(p), {"format": "PNG", "compress_level": 1}),
    "png-palette": lambda p: (_palette(p), {"format": "PNG", "compress_level": 1}),
    "tiff-float": lambda p: (_float(p), {"format": "TIFF", "compression": "tiff_deflate"}),
    "tiff-rgba": lambda p: (_rgba(p), {"format": "TIFF", "compression": "tiff_deflate"}),
    "webp-rgba": lambda p: (_rgba(p), {"format": "WEBP", "lossless": True, "method": 0}),
    "gif": lambda p: (_palette(p), {"format": "GIF"}),
    "bmp-1bit": lambda p: (p.convert("1", dither=Image.Dither.NONE), {"format": "BMP"}),
}


def upload_size(pixels: int) -> tuple[int, int]:
    """A 4:3 (width, height) of at most `pixels` pixels."""
    width = math.isqrt(pixels * 4 // 3)
    return width, pixels // width


def flat_picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Seeded flat-coloured rectangles and ellipses: content to compare, and cheap to store."""
    rng = np.random.default_rng(seed)
    width, height = size
    picture = Image.new("RGB", size, (235, 232, 225))
    draw = ImageDraw.Draw(picture)
    for _ in range(40):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x1 + 8, y1 + 8), fill=colour)
    return picture


def build_upload(name: str, pixels: int, seed: int) -> bytes:
    """The file bytes of upload `name` (a key of UPLOADS) with at most `pixels` pixels."""
    image, params = UPLOADS[name](flat_picture(upload_size(pixels), seed))
    buffer = io.BytesIO()
    image.save(buffer, **params)  # type: ignore[arg-type]
    return buffer.getvalue()
