"""The one door for pixels: every image imgmatch reads is decoded here, and only here.

`decode_image` enforces a format allow-list, a file-size, a pixel and a decoded-bytes limit (checked
from the header, before any pixel is decoded), applies EXIF orientation, composites transparency
onto white and converts every mode to 8-bit RGB. A large image is reduced to the working size
as early as its decoder allows: JPEGs while libjpeg decodes them, every other format right after
decoding, a band of rows at a time, so that no full-size converted copy is ever made.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, UnidentifiedImageError

from imgmatch.config import ImageLimits
from imgmatch.errors import (
    BlankImageError,
    CorruptImageError,
    DecodedTooLargeError,
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
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
# Bytes a decoded pixel takes in Pillow's memory, by mode; every other mode takes 4 (Pillow
# keeps RGB and YCbCr pixels in 4 bytes too).
_BYTES_PER_PIXEL: dict[str, int] = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16L": 2,
    "I;16B": 2,
    "I;16N": 2,
}
_WIDEST_PIXEL_BYTES = 4
# Gray levels of 16-bit values 0..65,536: value * 255 / 65,535, truncated.
_SIXTEEN_BIT_TABLE = np.clip(np.arange(65_537) * (255.0 / 65535.0), 0, 255).astype(np.uint8)
BAND_PIXELS = 1 << 20
"""Rows are converted to RGB about this many pixels at a time (4 MiB of RGB in Pillow)."""
# EXIF orientation -> the turn that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATION_TURNS: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
    }
)


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus what the caller needs to map coordinates back to the file's own size."""

    pixels: RGBImage
    original_size: tuple[int, int]
    format: str

    @property
    def scale(self) -> float:
        """Original width divided by decoded width (1.0 unless the image was reduced)."""
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
    _check_decoded_bytes(name, image, limits)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or "premature end" in message.lower():
            raise TruncatedImageError(f"{name}: the file is truncated ({message})") from exc
        raise CorruptImageError(f"{name}: the pixel data is corrupt ({message})") from exc
    turn = _exif_turn(image)
    try:
        working = _working_rgb(image, _reduction(image.size, limits))
    except (ValueError, OSError) as exc:
        raise UnsupportedFormatError(
            f"{name}: pixels of mode {image.mode} cannot be converted to RGB ({exc})"
        ) from exc
    if turn is not None:
        working = working.transpose(turn)
    pixels = np.asarray(working, dtype=np.uint8).copy()
    original_size = (width, height)
    if turn in _SWAPS_AXES:
        original_size = (height, width)
    _check_content(name, pixels, limits)
    return DecodedImage(pixels=pixels, original_size=original_size, format=fmt)


def _check_decoded_bytes(name: str, image: Image.Image, limits: ImageLimits) -> None:
    width, height = image.size
    decoded = width * height * _BYTES_PER_PIXEL.get(image.mode, _WIDEST_PIXEL_BYTES)
    if decoded > limits.max_decoded_bytes:
        raise DecodedTooLargeError(
            f"{name}: {width}x{height} pixels of mode {image.mode} take {decoded:,} bytes once "
            f"decoded, over the {limits.max_decoded_bytes:,}-byte limit (save it smaller "
            "or as a JPEG)"
        )


def _exif_turn(image: Image.Image) -> Image.Transpose | None:
    """The turn that shows the picture upright, as `ImageOps.exif_transpose` reads it."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        # A broken EXIF block must not lose the picture; keep the stored orientation.
        return None
    return _ORIENTATION_TURNS.get(orientation) if isinstance(orientation, int) else None


def _reduction(size: tuple[int, int], limits: ImageLimits) -> int:
    """The whole factor that takes an image over twice the working size down to between it and
    twice it, as JPEG's decode-time scaling does; 1 for every other image."""
    long_side = max(size)
    if long_side <= 2 * limits.decode_side_px:
        return 1
    return long_side // limits.decode_side_px


def _working_rgb(image: Image.Image, factor: int) -> Image.Image:
    """The decoded `image` as 8-bit RGB, reduced by `factor` (box averages), band by band.

    Only one band of rows at a time is converted: a full-size converted copy of a 40-megapixel
    image (RGBA composited onto white, 16-bit or float rescaled) would cost more memory than
    the decoded image itself. Conversions are per pixel and bands hold whole blocks of
    `factor` rows, so the result equals converting and reducing the whole image at once.
    """
    convert = _band_converter(image)
    width, height = image.size
    if factor == 1 and width * height <= BAND_PIXELS:
        return convert(image)
    rows = factor * max(1, BAND_PIXELS // (width * factor))
    working = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = convert(image.crop((0, top, width, min(top + rows, height))))
        working.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return working


BandConverter = Callable[[Image.Image], Image.Image]


def _band_converter(image: Image.Image) -> BandConverter:
    """How a band of `image`'s rows becomes 8-bit RGB."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb
    if mode == "F":
        bottom, top = _float_range(image)
        return lambda band: _float_to_rgb(band, bottom, top)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white
    return lambda band: band.convert("RGB")


def _sixteen_bit_to_rgb(band: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255; rescale the range instead. Every value
    # above 65,535 maps to 255 and every negative one to 0, as the table's ends do.
    values = np.clip(np.asarray(band), 0, _SIXTEEN_BIT_TABLE.size - 1)
    return Image.fromarray(_SIXTEEN_BIT_TABLE[values]).convert("RGB")


def _float_range(image: Image.Image) -> tuple[float, float]:
    """The lowest and highest value of a float image (NaN if it holds one), band by band."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // width)
    lows, highs = [], []
    for top in range(0, height, rows):
        values = np.asarray(image.crop((0, top, width, min(top + rows, height))))
        lows.append(values.min())
        highs.append(values.max())
    return float(np.min(lows)), max(float(np.max(highs)), 1e-12)


def _float_to_rgb(band: Image.Image, bottom: float, top: float) -> Image.Image:
    values = np.asarray(band, dtype=np.float64)
    gray = np.clip((values - bottom) * (255.0 / max(top - bottom, 1e-12)), 0, 255)
    return Image.fromarray(gray.astype(np.uint8)).convert("RGB")


def _composite_on_white(band: Image.Image) -> Image.Image:
    rgba = band.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return white.convert("RGB")


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
