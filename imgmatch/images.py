"""The one door for pixels: every image imgmatch reads is decoded here, and only here.

`decode_image` enforces a format allow-list, a file-size and a pixel limit (checked from the header,
before any pixel is decoded), applies EXIF orientation, composites transparency onto white,
converts every mode to 8-bit RGB, and lets libjpeg decode large JPEGs at reduced size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from imgmatch.config import ImageLimits
from imgmatch.errors import (
    BlankImageError,
    CorruptImageError,
    EmptyImageError,
    FileTooLargeError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    TruncatedImageError,
    UnsupportedFormatError,
)

RGBImage = NDArray[np.uint8]
"""An (height, width, 3) uint8 array in RGB order."""
GrayImage = NDArray[np.uint8]
"""An (height, width) uint8 array of gray levels."""

# Pillow format names; MPO is the multi-picture JPEG that many phone cameras write.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus what the caller needs to map coordinates back to the file's own size."""

    pixels: RGBImage
    original_size: tuple[int, int]
    format: str

    @property
    def scale(self) -> float:
        """Original width divided by decoded width (1.0 unless libjpeg reduced the image)."""
        return self.original_size[0] / self.pixels.shape[1]


def load_image(source: bytes | Path, limits: ImageLimits | None = None) -> RGBImage:
    """Decode `source` (file bytes or a path) to an RGB uint8 array, or raise InvalidImageError."""
    return decode_image(source, limits).pixels


def decode_image(source: bytes | Path, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode `source` like `load_image`, also returning its original size and format."""
    limits = limits or ImageLimits()
    name = str(source) if isinstance(source, Path) else "upload"
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise CorruptImageError(f"{name}: cannot read file ({exc.strerror})") from exc
        _check_file_size(name, size, limits)
        try:
            with source.open("rb") as stream:
                return _decode_stream(name, stream, limits)
        except OSError as exc:
            if isinstance(exc, InvalidImageError):
                raise
            raise CorruptImageError(f"{name}: cannot read file ({exc})") from exc
    _check_file_size(name, len(source), limits)
    return _decode_stream(name, io.BytesIO(source), limits)


def _registered_formats() -> list[str]:
    """The allowed formats this Pillow can open (Pillow 13 opens MPO files as JPEG and no
    longer registers MPO itself; naming an unknown format is an error)."""
    Image.init()
    return [name for name in ALLOWED_FORMATS if name in Image.OPEN]


def _check_file_size(name: str, size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise FileTooLargeError(
            f"{name}: {size:,} bytes is over the {limits.max_file_bytes:,}-byte limit"
        )


def _decode_stream(name: str, stream: BinaryIO, limits: ImageLimits) -> DecodedImage:
    with warnings.catch_warnings():
        # Pillow only warns between its own limit and twice it; imgmatch refuses outright.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=_registered_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(
                f"{name}: too many pixels to decode safely (limit "
                f"{limits.max_image_pixels:,} pixels)"
            ) from exc
        except UnidentifiedImageError as exc:
            raise UnsupportedFormatError(
                f"{name}: not an image in a supported format "
                f"({', '.join(f for f in ALLOWED_FORMATS if f != 'MPO')})"
            ) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise CorruptImageError(f"{name}: unreadable image header ({exc})") from exc
        with image:
            return _decode_opened(name, image, limits)


def _decode_opened(name: str, image: Image.Image, limits: ImageLimits) -> DecodedImage:
    fmt = image.format or "unknown"
    width, height = image.size
    # The header alone gives the size: refuse before a single pixel is decoded.
    if width * height > limits.max_image_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the "
            f"{limits.max_image_pixels:,}-pixel limit"
        )
    if min(width, height) < limits.min_side_px:
        raise ImageTooSmallError(
            f"{name}: {width}x{height} is too small to compare (the shorter side needs at least "
            f"{limits.min_side_px} px)"
        )
    if fmt in _JPEG_FORMATS and max(width, height) > 2 * limits.decode_side_px:
        # libjpeg scales by 1/2, 1/4 or 1/8 while decoding: far cheaper than decoding in full.
        scale = limits.decode_side_px / max(width, height)
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or "premature end" in message.lower():
            raise TruncatedImageError(f"{name}: the file is truncated ({message})") from exc
        raise CorruptImageError(f"{name}: the pixel data is corrupt ({message})") from exc
    try:
        oriented = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        # A broken EXIF block must not lose the picture; keep the stored orientation.
        oriented = image
    if oriented is None:
        oriented = image
    pixels = _to_rgb(oriented)
    original_size = (width, height)
    if oriented.size != image.size and oriented.size == (height, width):
        original_size = (height, width)
    _check_content(name, pixels, limits)
    return DecodedImage(pixels=pixels, original_size=original_size, format=fmt)


def _to_rgb(image: Image.Image) -> RGBImage:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        # Pillow's convert("L") clips 16-bit values at 255; rescale the range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode != "F" else max(float(values.max()), 1e-12)
        bottom = 0.0 if mode != "F" else float(values.min())
        gray = np.clip((values - bottom) * (255.0 / max(top - bottom, 1e-12)), 0, 255)
        return np.ascontiguousarray(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return np.asarray(white.convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _check_content(name: str, pixels: RGBImage, limits: ImageLimits) -> None:
    step = max(1, max(pixels.shape[:2]) // 256)
    sample = pixels[::step, ::step].astype(np.float32)
    gray = sample @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if float(gray.std()) < limits.min_gray_stddev:
        raise BlankImageError(
            f"{name}: the image is blank or a single colour; there is nothing to compare"
        )


def to_gray(image: RGBImage) -> GrayImage:
    """The gray image that perceptual hashes and ORB features both start from."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
