"""What the routes share: the catalog, the detector, and the rules for using them at once.

Routes stay thin by calling one method here; this module owns the concurrency rules:
- at most `workers` CPU-heavy jobs (checks, reference fingerprints) run at once, so a burst of
  uploads queues instead of starving the event loop thread of the GIL;
- at most `max_decodes` of those decode an image at once, whatever the CPU count: a large
  upload briefly holds its full decoded size, and a many-core machine must not hold dozens;
- when no job is left waiting or running, the memory the burst freed is returned to the system;
- a check and a reference removal never interleave (`_gate`): the detector looks references up
  again after its index search, and a check must never report a reference already deleted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from imgmatch.catalog import Catalog, NewReference, Reference
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.detector import CheckResult, Detector
from imgmatch.errors import CatalogError, InvalidImageError
from imgmatch.files import write_atomically
from imgmatch.images import DecodedImage, RGBImage, decode_image
from imgmatch.locking import ReadWriteLock
from imgmatch.results import error_result
from service.memory import BurstTracker, limit_arenas
from service.metrics import Metrics
from service.settings import ServiceSettings

log = logging.getLogger("imgmatch.service")

THUMBNAIL_DIR = "thumbnails"
UPLOAD_PATH_PREFIX = "upload:"
# The review page draws a listing about 400 px high, and a reviewer zooms in on the evidence.
LISTING_PREVIEW_SIDE_PX = 1024


class CatalogUnavailableError(Exception):
    """The catalog is still loading, or failed to load (then the message says why)."""


class DuplicateReferenceError(Exception):
    def __init__(self, existing: Reference) -> None:
        super().__init__(
            f"the same image is already reference {existing.reference_id} ({existing.design})"
        )
        self.existing = existing


class NoImageError(Exception):
    """The reference has no readable image to make a thumbnail from."""


@dataclass(frozen=True)
class NewUpload:
    """A reference photo uploaded over HTTP: its bytes and what the client said about it."""

    data: bytes
    design: str
    brand: str
    # JSON values as the client sent them (objects, lists and numbers stay what they are).
    metadata: dict[str, Any]


class ServiceState:
    """The catalog (opened in the background so /healthz answers at once) and the detector."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.limits = ImageLimits()
        self._catalog: Catalog | None = None
        self._detector: Detector | None = None
        self._load_error: str | None = None
        self._loaded = threading.Event()
        self._jobs = threading.BoundedSemaphore(settings.workers)
        self._decodes = threading.BoundedSemaphore(settings.max_decodes)
        # Counts jobs waiting or running; when the last ends, freed memory goes back to the system.
        self._burst = BurstTracker()
        self._gate = ReadWriteLock()
        metrics.catalog_size = self._catalog_size

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        _register_image_formats()
        # As many malloc arenas as jobs run at once: more would only keep freed memory apart,
        # where no other thread reuses it.
        limit_arenas(self.settings.workers)
        threading.Thread(target=self._load, name="catalog-loader", daemon=True).start()

    def _load(self) -> None:
        directory = self.settings.catalog_dir()
        try:
            catalog = Catalog(directory, create=True)
            config = DetectorConfig()
            if self.settings.flag_threshold is not None:
                config = config.with_overrides(flag_threshold=self.settings.flag_threshold)
            self._detector = Detector(catalog, config, self.limits)
            self._catalog = catalog
            (directory / THUMBNAIL_DIR).mkdir(exist_ok=True)
            log.info("catalog %s loaded: %d references", directory, catalog.count())
        except CatalogError as exc:
            # Its message names the file and what to do: a traceback adds nothing.
            self._load_error = f"cannot open the catalog at {directory}: {exc}"
            log.error("catalog load failed: %s", exc)
        except Exception as exc:
            self._load_error = f"cannot open the catalog at {directory}: {exc}"
            log.exception("catalog load failed")
        finally:
            self._loaded.set()

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()

    @property
    def ready(self) -> bool:
        """Loaded, and no damage met since: a damaged catalog stays unready until the service
        is restarted on a repaired one."""
        return self._catalog is not None and self._catalog.damage is None

    @property
    def status(self) -> str:
        if self._catalog is not None:
            damage = self._catalog.damage
            return "ready" if damage is None else f"the catalog is damaged: {damage}"
        return self._load_error or "loading the catalog"

    def _catalog_size(self) -> int | None:
        """For the metrics: unknown while the catalog is not loaded or cannot be read."""
        if self._catalog is None:
            return None
        try:
            return self._catalog.count()
        except CatalogError:
            return None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise CatalogUnavailableError(self.status)
        return self._catalog

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            raise CatalogUnavailableError(self.status)
        return self._detector

    # ----------------------------------------------------------------------- checks

    def check(self, data: bytes, name: str, min_score: float | None) -> CheckResult:
        """Check one uploaded listing; an undecodable one gives a `status: error` result."""
        detector = self.detector
        floor = min_score if min_score is not None else self.settings.min_score
        with self._burst.job(), self._jobs:
            try:
                with self._decodes:
                    start = time.perf_counter()
                    decoded = decode_image(data, self.limits)
                decode_ms = (time.perf_counter() - start) * 1000
            except InvalidImageError as exc:
                result = error_result(name, exc, (time.perf_counter() - start) * 1000)
            else:
                with self._gate.reading():
                    checked = detector.check(
                        decoded.pixels, path=name, scale=decoded.scale, min_score=floor
                    )
                width, height = decoded.original_size
                timing_ms = {"decode": decode_ms, **checked.timing_ms}
                result = replace(checked, timing_ms=timing_ms, width=width, height=height)
        if result.status == "ok":
            self.metrics.stages(result.timing_ms)
        else:
            self.metrics.error(result.error_type or "invalid image")
        return result

    def preview(self, data: bytes) -> str:
        """An uploaded listing as the checks see it, as a `data:` URI of a JPEG whose long side
        is at most LISTING_PREVIEW_SIDE_PX: browsers cannot show every format the decoder reads
        (TIFF), and a preview from the same decoder shows the orientation the boxes refer to."""
        with self._burst.job(), self._jobs:
            jpeg = encode_thumbnail(self._decode(data).pixels, LISTING_PREVIEW_SIDE_PX)
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")

    # ----------------------------------------------------------------------- references

    def add_reference(self, upload: NewUpload) -> Reference:
        """Fingerprint and store an uploaded reference photo; raise `InvalidImageError` for a
        photo that cannot be used and `DuplicateReferenceError` for one already stored."""
        detector, catalog = self.detector, self.catalog
        sha256 = hashlib.sha256(upload.data).hexdigest()
        with self._burst.job(), self._jobs:
            pixels = self._decode(upload.data).pixels
            fingerprint = detector.fingerprinter.reference(pixels)
            thumbnail = encode_thumbnail(pixels, self.settings.thumbnail_side_px)
        entry = NewReference(
            fingerprint=fingerprint,
            # A neutral name: the client's file name never becomes a path anywhere.
            path=f"{UPLOAD_PATH_PREFIX}{sha256[:16]}",
            sha256=sha256,
            design=upload.design,
            brand=upload.brand,
            metadata=upload.metadata,
            file_size=len(upload.data),
        )
        with self._gate.writing():
            # Re-adding stored bytes would rewrite that reference's path and metadata.
            existing = catalog.find_by_sha256(sha256)
            if existing is not None:
                raise DuplicateReferenceError(existing)
            reference = catalog.add(entry).reference
            write_atomically(self._thumbnail_path(reference.reference_id), thumbnail)
        return reference

    def remove_reference(self, reference_id: int) -> Reference:
        with self._gate.writing():
            reference = self.catalog.remove(reference_id)
            self._thumbnail_path(reference_id).unlink(missing_ok=True)
        return reference

    def thumbnail(self, reference: Reference) -> bytes:
        """A re-encoded JPEG of the reference photo (cached by id), never the stored bytes."""
        cached = self._thumbnail_path(reference.reference_id)
        with contextlib.suppress(FileNotFoundError):
            return cached.read_bytes()
        if reference.path.startswith(UPLOAD_PATH_PREFIX):
            raise NoImageError(f"reference {reference.reference_id} has no stored thumbnail")
        source = Path(reference.path)
        if not source.is_file():
            raise NoImageError(
                f"the photo of reference {reference.reference_id} is not readable from the "
                "service's working directory"
            )
        with self._burst.job(), self._jobs:
            data = encode_thumbnail(self._decode(source).pixels, self.settings.thumbnail_side_px)
        with self._gate.reading():
            # Skip the cache for a reference removed meanwhile: no orphan thumbnail files.
            if self.catalog.find_by_sha256(reference.sha256) is not None:
                write_atomically(cached, data)
        return data

    def _decode(self, source: bytes | Path) -> DecodedImage:
        """Decode in one of the `max_decodes` slots."""
        with self._decodes:
            return decode_image(source, self.limits)

    def _thumbnail_path(self, reference_id: int) -> Path:
        return self.catalog.directory / THUMBNAIL_DIR / f"{int(reference_id)}.jpg"


def _register_image_formats() -> None:
    """Make every format `decode_image` names in `Image.open(formats=...)` known to Pillow.

    Pillow 13 no longer registers an opener for "MPO" (its JPEG opener returns MPO files), so
    that call raises KeyError for any input that is not a JPEG, and a PNG or a corrupt upload
    became a 500. Registering the JPEG opener under "MPO" restores the decoder's behaviour
    until `imgmatch.images` stops naming MPO there.
    """
    Image.init()
    if "MPO" not in Image.OPEN and "JPEG" in Image.OPEN:
        Image.register_open("MPO", *Image.OPEN["JPEG"])


def encode_thumbnail(pixels: RGBImage, side_px: int) -> bytes:
    image = Image.fromarray(pixels)
    image.thumbnail((side_px, side_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()
