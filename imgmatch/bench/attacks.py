"""How counterfeit listings reuse an official photo, as named, seeded, composable functions.

Each attack takes an `Attacked` image (pixels plus the box where the reference now lies) and a
seeded generator, and returns a new `Attacked`, so ground truth follows every transformation.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from imgmatch.images import RGBImage

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Attacked:
    """An attacked image and the box (x0, y0, x1, y1) of the reference content inside it."""

    image: RGBImage
    box: Box
    steps: tuple[str, ...] = ()

    @staticmethod
    def original(image: RGBImage) -> Attacked:
        return Attacked(image, (0, 0, int(image.shape[1]), int(image.shape[0])))


Attack = Callable[[Attacked, np.random.Generator], Attacked]


def _size(image: RGBImage) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


def _map_box(box: Box, matrix: NDArray[Any], width: int, height: int) -> Box:
    """Axis-aligned box of `box`'s corners under a 2x3 or 3x3 transform, clipped to the image."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], np.float64)
    full = matrix if matrix.shape == (3, 3) else np.vstack([matrix, [0, 0, 1]])
    mapped = corners @ full.T
    mapped = mapped[:, :2] / mapped[:, 2:3]
    return (
        max(0, int(mapped[:, 0].min())),
        max(0, int(mapped[:, 1].min())),
        min(width, int(np.ceil(mapped[:, 0].max()))),
        min(height, int(np.ceil(mapped[:, 1].max()))),
    )


def _step(item: Attacked, image: NDArray[Any], box: Box, name: str) -> Attacked:
    return Attacked(np.ascontiguousarray(image, dtype=np.uint8), box, (*item.steps, name))


def resize(factor: float) -> Attack:
    """Scale the whole image by `factor`."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        size = (max(8, round(width * factor)), max(8, round(height * factor)))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        scaled = cv2.resize(item.image, size, interpolation=interpolation)
        matrix = np.array([[size[0] / width, 0, 0], [0, size[1] / height, 0]])
        return _step(item, scaled, _map_box(item.box, matrix, *size), f"resize-{factor:g}")

    return attack


def jpeg(quality: int) -> Attack:
    """Re-encode as JPEG at `quality`."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        buffer = io.BytesIO()
        Image.fromarray(item.image).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer).convert("RGB"))
        return _step(item, decoded, item.box, f"jpeg-{quality}")

    return attack


def mirror(item: Attacked, rng: np.random.Generator) -> Attacked:
    """Flip left-right."""
    width = int(item.image.shape[1])
    x0, y0, x1, y1 = item.box
    return _step(item, item.image[:, ::-1], (width - x1, y0, width - x0, y1), "mirror")


def rotate90(item: Attacked, rng: np.random.Generator) -> Attacked:
    """Turn 90 degrees clockwise."""
    height = int(item.image.shape[0])
    x0, y0, x1, y1 = item.box
    turned = np.rot90(item.image, k=-1)
    return _step(item, turned, (height - y1, x0, height - y0, x1), "rotate-90")


def rotate(degrees: float, fill: int = 255) -> Attack:
    """Rotate by `degrees` counter-clockwise about the centre, keeping the whole picture."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        out_w, out_h = int(height * sin + width * cos), int(height * cos + width * sin)
        matrix[0, 2] += out_w / 2 - width / 2
        matrix[1, 2] += out_h / 2 - height / 2
        turned = cv2.warpAffine(item.image, matrix, (out_w, out_h), borderValue=(fill,) * 3)
        box = _map_box(item.box, matrix, out_w, out_h)
        return _step(item, turned, box, f"rotate-{degrees:g}")

    return attack


def crop(area: float) -> Attack:
    """Keep a random window holding `area` of the pixels (same aspect ratio)."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        side = float(np.sqrt(area))
        w, h = max(16, int(width * side)), max(16, int(height * side))
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        x0, y0, x1, y1 = item.box
        box = (max(0, x0 - x), max(0, y0 - y), min(w, x1 - x), min(h, y1 - y))
        return _step(item, item.image[y : y + h, x : x + w], box, f"crop-{area:g}")

    return attack


def paste_onto(background: RGBImage, fraction: float) -> Attack:
    """Shrink to `fraction` of the background's width and paste at a random place on it."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        canvas = background.copy()
        bw, bh = _size(canvas)
        width, height = _size(item.image)
        scale = fraction * bw / width
        w, h = max(8, int(width * scale)), max(8, int(height * scale))
        if h > bh:
            scale = bh / height
            w, h = max(8, int(width * scale)), bh
        small = cv2.resize(item.image, (w, h), interpolation=cv2.INTER_AREA)
        x = int(rng.integers(0, bw - w + 1))
        y = int(rng.integers(0, bh - h + 1))
        canvas[y : y + h, x : x + w] = small
        x0, y0, x1, y1 = item.box
        box = (
            x + int(x0 * w / width),
            y + int(y0 * h / height),
            x + int(np.ceil(x1 * w / width)),
            y + int(np.ceil(y1 * h / height)),
        )
        return _step(item, canvas, box, f"paste-{fraction:g}")

    return attack


def collage(others: Sequence[RGBImage], grid: int, tile_px: int = 320) -> Attack:
    """A grid x grid collage: the item in a random cell, `others` (cycled) in the rest."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        canvas = np.full((grid * tile_px, grid * tile_px, 3), 255, np.uint8)
        slot = int(rng.integers(0, grid * grid))
        box: Box = (0, 0, 0, 0)
        fillers = iter(list(others) * (grid * grid))
        for cell in range(grid * grid):
            row, col = divmod(cell, grid)
            source = item.image if cell == slot else next(fillers)
            height, width = source.shape[:2]
            scale = tile_px / max(width, height)
            w, h = max(1, int(width * scale)), max(1, int(height * scale))
            tile = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
            ox, oy = col * tile_px + (tile_px - w) // 2, row * tile_px + (tile_px - h) // 2
            canvas[oy : oy + h, ox : ox + w] = tile
            if cell == slot:
                x0, y0, x1, y1 = item.box
                box = (
                    ox + int(x0 * scale),
                    oy + int(y0 * scale),
                    ox + int(np.ceil(x1 * scale)),
                    oy + int(np.ceil(y1 * scale)),
                )
        return _step(item, canvas, box, f"collage-{grid}x{grid}")

    return attack


def text_overlay(text: str = "BEST PRICE 50% OFF") -> Attack:
    """Draw a sales banner across the lower part of the image."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        picture = Image.fromarray(item.image).copy()
        draw = ImageDraw.Draw(picture)
        width, height = picture.size
        y = int(height * rng.uniform(0.7, 0.85))
        draw.rectangle((0, y, width, y + height // 10), fill=(200, 20, 20))
        font_size = max(10, height // 14)
        draw.text((width // 20, y + 2), text, fill=(255, 255, 255), font_size=font_size)
        return _step(item, np.asarray(picture), item.box, "text")

    return attack


def sticker(fraction: float = 0.18) -> Attack:
    """Cover a corner region with a round coloured sticker of `fraction` of the width."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        picture = Image.fromarray(item.image).copy()
        draw = ImageDraw.Draw(picture)
        width, height = picture.size
        radius = int(fraction * width / 2)
        cx = int(rng.choice([radius + 4, width - radius - 4]))
        cy = int(rng.choice([radius + 4, height - radius - 4]))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
        draw.text((cx - radius // 2, cy - 6), "HOT", fill=(255, 255, 255))
        return _step(item, np.asarray(picture), item.box, "sticker")

    return attack


def color_shift(hue_degrees: float = 40, saturation: float = 1.4) -> Attack:
    """Rotate hue and scale saturation (a recoloured copy)."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        hsv = cv2.cvtColor(item.image, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + hue_degrees / 2) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        shifted = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
        return _step(item, shifted, item.box, f"color-{hue_degrees:g}")

    return attack


def pad(fraction: float, fill: int = 255) -> Attack:
    """Add a plain border of `fraction` of each side's length on every side."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        dx, dy = max(1, int(width * fraction)), max(1, int(height * fraction))
        padded = cv2.copyMakeBorder(
            item.image, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(fill, fill, fill)
        )
        x0, y0, x1, y1 = item.box
        return _step(item, padded, (x0 + dx, y0 + dy, x1 + dx, y1 + dy), f"pad-{fraction:g}")

    return attack


def grayscale(item: Attacked, rng: np.random.Generator) -> Attacked:
    """Drop colour (kept as three equal channels)."""
    gray = cv2.cvtColor(item.image, cv2.COLOR_RGB2GRAY)
    return _step(item, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), item.box, "grayscale")


def blur(sigma_px: float) -> Attack:
    """Gaussian blur with standard deviation `sigma_px`."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        blurred = cv2.GaussianBlur(item.image, (0, 0), sigma_px)
        return _step(item, blurred, item.box, f"blur-{sigma_px:g}")

    return attack


def noise(sigma_levels: float) -> Attack:
    """Additive Gaussian noise of `sigma_levels` grey levels (of 255)."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        noisy = item.image.astype(np.float32) + rng.normal(0, sigma_levels, item.image.shape)
        return _step(item, np.clip(noisy, 0, 255).astype(np.uint8), item.box, "noise")

    return attack


def perspective(strength: float, fill: int = 255) -> Attack:
    """Move each corner inwards by up to `strength` of the side (a photo of a screen/print)."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        src = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        shifts = rng.uniform(0, strength, (4, 2)) * np.array([width, height], np.float32)
        signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
        dst = (src + signs * shifts).astype(np.float32)
        matrix = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(
            item.image, matrix, (width, height), borderValue=(fill, fill, fill)
        )
        box = _map_box(item.box, matrix.astype(np.float64), width, height)
        return _step(item, warped, box, f"perspective-{strength:g}")

    return attack


def screenshot_frame(bar_fraction: float = 0.12) -> Attack:
    """Frame the image like a phone screenshot: dark status bar, white app bars, margins."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        bar = max(8, int(height * bar_fraction))
        margin = max(4, width // 20)
        canvas = np.full((height + 3 * bar, width + 2 * margin, 3), 250, np.uint8)
        canvas[: bar // 2] = (30, 30, 30)
        canvas[bar // 2 : bar + bar // 2] = (235, 235, 240)
        top = bar + bar // 2
        canvas[top : top + height, margin : margin + width] = item.image
        picture = Image.fromarray(canvas)
        ImageDraw.Draw(picture).text(
            (margin, top + height + bar // 3), "$ 29.99  Add to cart", fill=(20, 20, 20)
        )
        x0, y0, x1, y1 = item.box
        box = (x0 + margin, y0 + top, x1 + margin, y1 + top)
        return _step(item, np.asarray(picture), box, "screenshot")

    return attack


def aspect(stretch: float) -> Attack:
    """Stretch the width by `stretch` (and keep the height): a changed aspect ratio."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        width, height = _size(item.image)
        size = (max(8, round(width * stretch)), height)
        stretched = cv2.resize(item.image, size, interpolation=cv2.INTER_LINEAR)
        matrix = np.array([[size[0] / width, 0, 0], [0, 1, 0]], np.float64)
        return _step(item, stretched, _map_box(item.box, matrix, *size), f"aspect-{stretch:g}")

    return attack


def compose(*attacks: Attack) -> Attack:
    """Apply attacks left to right."""

    def attack(item: Attacked, rng: np.random.Generator) -> Attacked:
        for step in attacks:
            item = step(item, rng)
        return item

    return attack


def apply(attack: Attack, image: RGBImage, seed: int) -> Attacked:
    """Run `attack` on a reference image with its own seeded generator."""
    return attack(Attacked.original(image), np.random.default_rng(seed))
