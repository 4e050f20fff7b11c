"""The one door for pixels: every bad input names its error, every good one becomes RGB uint8."""

from __future__ import annotations

import hashlib
import io
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgmatch.bench.memory_uploads import build_upload
from imgmatch.config import ImageLimits
from imgmatch.errors import (
    BlankImageError,
    CorruptImageError,
    DecodedTooLargeError,
    EmptyImageError,
    FileTooLargeError,
    ImageTooLargeError,
    ImageTooSmallError,
    TruncatedImageError,
    UnsupportedFormatError,
)
from imgmatch.images import BAND_PIXELS, decode_image, load_image


def encode(array: np.ndarray, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base(make_photo: Callable[..., np.ndarray]) -> np.ndarray:
    return make_photo(7)


@pytest.fixture(scope="module")
def base_jpeg(base: np.ndarray) -> bytes:
    return encode(base, "JPEG", quality=90)


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30000x30000 (900 Mpx) 1-bit PNG: about 100 KB on disk, gigabytes once decoded."""
    path = tmp_path_factory.mktemp("bomb") / "base_bomb.png"
    Image.new("1", (30_000, 30_000)).save(path, format="PNG")
    return path


# --- bad inputs: each names its error -----------------------------------------------------------


def test_empty_bytes_raise_empty_image_error() -> None:
    with pytest.raises(EmptyImageError):
        load_image(b"")


def test_empty_file_raises_empty_image_error(tmp_path: Path) -> None:
    path = tmp_path / "base_empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(EmptyImageError):
        load_image(path)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(3).bytes(4096), id="random-bytes"),
        pytest.param(b"a listing description, not a picture\n" * 20, id="text"),
        pytest.param(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n", id="pdf-header"),
    ],
)
def test_non_images_raise_unsupported_format_error(data: bytes) -> None:
    with pytest.raises(UnsupportedFormatError):
        load_image(data)


def test_jpeg_cut_in_half_raises_truncated_image_error(base_jpeg: bytes) -> None:
    with pytest.raises(TruncatedImageError, match="truncated"):
        load_image(base_jpeg[: len(base_jpeg) // 2])


def test_jpeg_with_scrambled_body_raises_corrupt_image_error(base_jpeg: bytes) -> None:
    body = bytearray(base_jpeg)
    # Sprinkle markers (0xFF, 0xD9) through the entropy-coded data: the decoder gives up.
    for i in range(len(body) // 2, len(body) - 2, 7):
        body[i] = 0xFF if i % 2 else 0xD9
    with pytest.raises(CorruptImageError) as caught:
        load_image(bytes(body))
    assert not isinstance(caught.value, TruncatedImageError)


def test_decompression_bomb_is_refused_from_the_header(bomb_png: Path) -> None:
    assert bomb_png.stat().st_size < 1_000_000
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        load_image(bomb_png)
    # Decoding 900 Mpx would take seconds and gigabytes; refusing from the header takes ms.
    assert time.perf_counter() - started < 2.0


def test_image_over_a_low_pixel_limit_raises_image_too_large(base: np.ndarray) -> None:
    with pytest.raises(ImageTooLargeError, match="10,000-pixel limit"):
        load_image(encode(base, "PNG"), ImageLimits(max_image_pixels=10_000))


def test_jpeg_over_a_low_pixel_limit_raises_image_too_large(base_jpeg: bytes) -> None:
    with pytest.raises(ImageTooLargeError):
        load_image(base_jpeg, ImageLimits(max_image_pixels=480 * 360 - 1))


def test_file_over_max_file_bytes_raises_file_too_large(tmp_path: Path, base_jpeg: bytes) -> None:
    path = tmp_path / "base_q90.jpg"
    path.write_bytes(base_jpeg)
    limits = ImageLimits(max_file_bytes=len(base_jpeg) - 1)
    with pytest.raises(FileTooLargeError):
        load_image(path, limits)
    with pytest.raises(FileTooLargeError):
        load_image(base_jpeg, limits)
    assert load_image(path, ImageLimits(max_file_bytes=len(base_jpeg))).shape == (360, 480, 3)


def test_ten_pixel_jpeg_raises_image_too_small(base: np.ndarray) -> None:
    with pytest.raises(ImageTooSmallError):
        load_image(encode(base[:10, :10], "JPEG"))


def test_ten_pixel_png_raises_image_too_small(base: np.ndarray) -> None:
    with pytest.raises(ImageTooSmallError):
        load_image(encode(base[:10, :10], "PNG"))


@pytest.mark.parametrize("colour", [(255, 255, 255), (200, 30, 90)], ids=["white", "magenta"])
def test_single_colour_jpeg_raises_blank_image_error(colour: tuple[int, int, int]) -> None:
    with pytest.raises(BlankImageError):
        load_image(encode(np.full((360, 480, 3), colour, np.uint8), "JPEG"))


def test_single_colour_png_raises_blank_image_error() -> None:
    with pytest.raises(BlankImageError):
        load_image(encode(np.full((360, 480, 3), 255, np.uint8), "PNG"))


# --- good inputs: every format and mode becomes (h, w, 3) uint8 RGB -----------------------------


def test_jpeg_decodes_to_rgb_uint8(base: np.ndarray, base_jpeg: bytes) -> None:
    decoded = decode_image(base_jpeg)
    assert decoded.pixels.shape == (360, 480, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.format == "JPEG"
    assert decoded.original_size == (480, 360)
    assert decoded.scale == 1.0
    # Quality 90 stays close to the source on average.
    assert np.abs(decoded.pixels.astype(int) - base.astype(int)).mean() < 8


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats_decode_to_rgb_uint8(base: np.ndarray, fmt: str) -> None:
    decoded = decode_image(encode(base, fmt))
    assert decoded.pixels.shape == (360, 480, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.format == fmt
    if fmt in ("PNG", "BMP", "TIFF"):
        assert np.array_equal(decoded.pixels, base)


def test_gif_gives_its_first_frame(base: np.ndarray, make_photo: Callable[..., np.ndarray]) -> None:
    first, second = Image.fromarray(base), Image.fromarray(make_photo(8))
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    pixels = load_image(buffer.getvalue())
    expected = np.asarray(first.quantize().convert("RGB"))
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 1


def test_transparent_areas_composite_onto_white(base: np.ndarray) -> None:
    alpha = np.full(base.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0
    rgba = np.dstack([base, alpha])
    pixels = load_image(encode(rgba, "PNG"))
    assert pixels.shape == (360, 480, 3)
    assert (pixels[:, :100] == 255).all()
    assert np.array_equal(pixels[:, 100:], base[:, 100:])


@pytest.mark.parametrize("mode", ["P", "L"])
def test_palette_and_gray_pngs_become_rgb(base: np.ndarray, mode: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(base).convert(mode).save(buffer, format="PNG")
    pixels = load_image(buffer.getvalue())
    assert pixels.shape == (360, 480, 3)
    assert pixels.dtype == np.uint8
    if mode == "L":
        assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_cmyk_jpeg_becomes_rgb(base: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(base).convert("CMYK").save(buffer, format="JPEG", quality=95)
    pixels = load_image(buffer.getvalue())
    assert pixels.shape == (360, 480, 3)
    assert np.abs(pixels.astype(int) - base.astype(int)).mean() < 12


def test_sixteen_bit_gray_is_rescaled_not_clipped() -> None:
    values = np.full((360, 480), 32768, np.uint16)
    values[:, :240] = 8192
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "I;16"
    pixels = load_image(buffer.getvalue())
    # convert("L") would clip both halves to 255; rescaling keeps mid-gray mid-gray.
    assert abs(int(pixels[0, 400, 0]) - 128) <= 1
    assert abs(int(pixels[0, 0, 0]) - 32) <= 1


def test_exif_orientation_6_turns_the_image(base: np.ndarray) -> None:
    image = Image.fromarray(base)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.pixels.shape == (480, 360, 3)
    assert decoded.original_size == (decoded.pixels.shape[1], decoded.pixels.shape[0])
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).mean() < 8


def test_large_jpeg_is_decoded_at_reduced_size(make_photo: Callable[..., np.ndarray]) -> None:
    # 10x blocks of a small photo: a 3000x2000 JPEG that compresses well and builds fast.
    large = np.kron(make_photo(9, (300, 200)), np.ones((10, 10, 1), np.uint8))
    limits = ImageLimits()
    decoded = decode_image(encode(large, "JPEG", quality=85), limits)
    long_side = max(decoded.pixels.shape[:2])
    assert limits.decode_side_px <= long_side < 3000
    assert decoded.original_size == (3000, 2000)
    assert decoded.scale == pytest.approx(3000 / decoded.pixels.shape[1])
    assert decoded.scale > 1.0


def test_bytes_and_path_give_identical_arrays(tmp_path: Path, base_jpeg: bytes) -> None:
    path = tmp_path / "base_q90.jpg"
    path.write_bytes(base_jpeg)
    assert np.array_equal(load_image(path), load_image(base_jpeg))


def test_png_bytes_and_path_give_identical_arrays(tmp_path: Path, base: np.ndarray) -> None:
    path = tmp_path / "base.png"
    path.write_bytes(encode(base, "PNG"))
    assert np.array_equal(load_image(path), load_image(path.read_bytes()))


def test_bytes_and_path_of_a_large_png_give_identical_arrays(
    tmp_path: Path, make_photo: Callable[..., np.ndarray]
) -> None:
    large = np.kron(make_photo(12, (300, 250)), np.ones((10, 10, 1), np.uint8))
    path = tmp_path / "base_large.png"
    path.write_bytes(encode(large, "PNG"))
    assert np.array_equal(load_image(path), load_image(path.read_bytes()))


# --- memory: every format is reduced to the working size, the decoded bytes are limited ---------


def test_decoded_bytes_limit_counts_the_bytes_of_each_pixel(base: np.ndarray) -> None:
    gray = np.asarray(Image.fromarray(base).convert("L"))
    sixteen_bit = gray.astype(np.uint16) * 257
    pixels = gray.size
    # 16-bit gray takes 2 bytes a pixel once decoded, 8-bit gray 1: same pixels, other memory.
    limits = ImageLimits(max_decoded_bytes=2 * pixels - 1)
    with pytest.raises(DecodedTooLargeError, match=f"{2 * pixels:,} bytes once decoded"):
        load_image(encode(sixteen_bit, "PNG"), limits)
    assert load_image(encode(gray, "PNG"), limits).shape == (360, 480, 3)
    at_limit = ImageLimits(max_decoded_bytes=2 * pixels)
    assert load_image(encode(sixteen_bit, "PNG"), at_limit).shape == (360, 480, 3)


def test_decoded_bytes_of_a_large_jpeg_count_at_the_size_libjpeg_decodes(
    make_photo: Callable[..., np.ndarray],
) -> None:
    large = np.kron(make_photo(9, (300, 200)), np.ones((10, 10, 1), np.uint8))
    # A quarter of its full size in memory: libjpeg decodes it at half its width and height.
    limits = ImageLimits(max_decoded_bytes=3000 * 2000)
    decoded = decode_image(encode(large, "JPEG", quality=85), limits)
    assert decoded.original_size == (3000, 2000)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "GIF", "WEBP"])
def test_large_images_of_every_format_are_reduced_to_the_working_size(
    make_photo: Callable[..., np.ndarray], fmt: str
) -> None:
    large = np.kron(make_photo(10, (500, 300)), np.ones((10, 10, 1), np.uint8))
    limits = ImageLimits()
    data = encode(large, fmt)
    decoded = decode_image(data, limits)
    # A whole factor takes the long side to between the working size and twice it.
    factor = 5000 // limits.decode_side_px
    assert decoded.pixels.shape == (3000 // factor, 5000 // factor, 3)
    assert decoded.original_size == (5000, 3000)
    assert decoded.scale == factor
    # Reduced from the decoded pixels by box averages, as if the whole image were converted.
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").reduce(factor))
    assert np.array_equal(decoded.pixels, expected)


def test_large_png_is_reduced_and_turned_upright(make_photo: Callable[..., np.ndarray]) -> None:
    large = Image.fromarray(np.kron(make_photo(11, (500, 300)), np.ones((10, 10, 1), np.uint8)))
    exif = large.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    large.save(buffer, format="PNG", exif=exif)
    decoded = decode_image(buffer.getvalue())
    assert decoded.original_size == (3000, 5000)
    expected = np.asarray(large.reduce(4).transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(decoded.pixels, expected)


@pytest.mark.parametrize("upload", ["png-16bit-gray", "tiff-float", "png-rgba"])
def test_wide_modes_decode_without_full_size_copies(upload: str) -> None:
    data = build_upload(upload, 24_000_000, seed=5)
    limits = ImageLimits()
    tracemalloc.start()
    try:
        decoded = decode_image(data, limits)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    width, height = decoded.original_size
    largest_working_rgb = 3 * (2 * limits.decode_side_px) ** 2
    # A few working-size RGB arrays, and the float arithmetic of one band of rows at a time.
    bound = 3 * largest_working_rgb + 32 * BAND_PIXELS
    assert bound < 8 * width * height, "a float64 copy of the whole image must not fit"
    assert peak_bytes < bound
    assert max(decoded.pixels.shape) <= 2 * limits.decode_side_px


def test_a_mode_that_cannot_become_rgb_raises_unsupported_format(
    base: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(image: Image.Image, mode: str | None = None, *args: object, **kw: object) -> None:
        raise ValueError(f"conversion from {image.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)
    with pytest.raises(UnsupportedFormatError, match="cannot be converted to RGB"):
        load_image(encode(base, "PNG"))


# --- results do not change for images within the working size -----------------------------------


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _within_working_size(photo: Callable[..., np.ndarray]) -> dict[str, bytes]:
    rng = np.random.default_rng(20240617)
    small = photo(21, (640, 480))
    alpha = rng.integers(0, 256, small.shape[:2], dtype=np.uint8)
    noise = rng.integers(0, 257, small.shape[:2], dtype=np.uint16)
    large = photo(22, (2048, 1536))
    turned = Image.new("RGB", (1, 1)).getexif()
    turned[0x0112] = 6
    return {
        "png-rgb": _save(Image.fromarray(small), "PNG"),
        "png-rgba": _save(Image.fromarray(np.dstack([small, alpha])), "PNG"),
        "png-16bit-gray": _save(
            Image.fromarray(small[..., 0].astype(np.uint16) * 257 + noise), "PNG"
        ),
        "tiff-float": _save(Image.fromarray(small[..., 1].astype(np.float32) * 3.5 - 90), "TIFF"),
        "tiff-int32": _save(Image.fromarray(small[..., 2].astype(np.int32) * 300 - 2000), "TIFF"),
        "png-palette-transparent": _save(
            Image.fromarray(small).convert("P"), "PNG", transparency=3
        ),
        "png-rgba-2048-turned": _save(
            Image.fromarray(np.dstack([large, np.full(large.shape[:2], 200, np.uint8)])),
            "PNG",
            exif=turned,
        ),
    }


# sha256 (first 16 hex digits) of the decoded pixels, as the decoder gave them before large
# images were reduced: an image within the working size must decode to exactly these.
GOLDEN_PIXELS = {
    "png-rgb": "f91469db1d72cae5",
    "png-rgba": "8fa3d5b13fdc4365",
    "png-16bit-gray": "e4811e519d091974",
    "tiff-float": "b6498b1e5770151e",
    "tiff-int32": "1f7692628fe51a6a",
    "png-palette-transparent": "c6f2709bda14872c",
    "png-rgba-2048-turned": "1305a2f1c63f5075",
}


def test_images_within_the_working_size_decode_to_their_golden_pixels(
    make_photo: Callable[..., np.ndarray],
) -> None:
    decoded = {
        name: hashlib.sha256(load_image(data).tobytes()).hexdigest()[:16]
        for name, data in _within_working_size(make_photo).items()
    }
    assert decoded == GOLDEN_PIXELS
