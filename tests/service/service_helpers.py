"""Images and constants shared by the service tests (a module, not conftest, so tests can
import it: pytest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
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


def multipart_head(
    path: str, content_length: int, headers: dict[str, str] | None = None, boundary: str = "b"
) -> bytes:
    """The head of a POST whose multipart body (one `image` part) will be sent separately."""
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        f"Content-Length: {content_length}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def image_part_start(boundary: str = "b") -> bytes:
    """The opening of an `image` part; a JPEG's first bytes follow, so it passes as an image."""
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff\xd8\xff"


def read_answer(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP answer: (status, lower-case headers, body so far). Status 0 when nothing
    came within `timeout_s`; the body is read up to Content-Length or until the server closes."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\r\n\r\n" not in data:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            return 0, {}, b""
        sock.settimeout(remaining_s)
        try:
            more = sock.recv(65536)
        except TimeoutError:
            return 0, {}, b""
        if not more:
            return 0, {}, b""
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    sock.settimeout(max(deadline - time.monotonic(), 0.1))
    with contextlib.suppress(OSError):
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
    return int(status_line.split(" ", 2)[1]), headers, body


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes this connection within `timeout_s` (whatever it sends first)."""
    deadline = time.monotonic() + timeout_s
    while (remaining_s := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining_s)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def open_files_under(pid: int, folder: Path) -> list[str]:
    """The files under `folder` that process `pid` holds open, unlinked ones included (an
    upload's spooled part is an unnamed temporary file, invisible to a directory listing)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(folder)):
                found.append(target)
    return found
