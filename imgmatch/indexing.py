"""Adding reference photos to a catalog: discovery, metadata, fingerprints, batched commits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgmatch.catalog import Catalog, NewReference, sha256_file
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.errors import InvalidImageError
from imgmatch.fingerprint import Fingerprinter
from imgmatch.images import load_image
from imgmatch.sources import (
    ReferenceMetadata,
    SkippedPath,
    discover_images,
    iter_metadata,
    read_metadata,
)


@dataclass
class IndexReport:
    """What one `index_references` run did."""

    added: int = 0
    refreshed: int = 0
    unchanged: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[SkippedPath] = field(default_factory=list)
    unsupported: int = 0

    @property
    def seen(self) -> int:
        return self.added + self.refreshed + self.unchanged + len(self.failed)


def index_references(
    catalog: Catalog,
    paths: Sequence[Path],
    *,
    metadata_csv: Path | None = None,
    config: DetectorConfig | None = None,
    limits: ImageLimits | None = None,
    batch_size: int = 64,
    progress: Callable[[Path], None] | None = None,
) -> IndexReport:
    """Fingerprint and store every image under `paths`; unchanged files are not read again.

    Metadata (C2) comes from `metadata_csv` or the `metadata.csv` files in the folders; without
    it a reference's design is its file's stem. Work is committed every `batch_size` photos.
    """
    config = config or DetectorConfig()
    metadata: dict[Path, ReferenceMetadata] = {}
    for csv_path in iter_metadata(paths, metadata_csv):
        metadata.update(read_metadata(csv_path))
    discovery = discover_images(paths)
    report = IndexReport(skipped=discovery.skipped, unsupported=discovery.unsupported)
    fingerprinter = Fingerprinter(config)
    pending: list[NewReference] = []
    for path in discovery.files:
        if progress is not None:
            progress(path)
        try:
            entry = _prepare(catalog, fingerprinter, path, metadata, limits, report)
        except InvalidImageError as exc:
            report.failed.append((path, str(exc)))
            continue
        except OSError as exc:
            report.failed.append((path, f"cannot read: {exc}"))
            continue
        if entry is not None:
            pending.append(entry)
        if len(pending) >= batch_size:
            _commit(catalog, pending, report)
    _commit(catalog, pending, report)
    return report


def _prepare(
    catalog: Catalog,
    fingerprinter: Fingerprinter,
    path: Path,
    metadata: dict[Path, ReferenceMetadata],
    limits: ImageLimits | None,
    report: IndexReport,
) -> NewReference | None:
    info = path.stat()
    meta = metadata.get(path.resolve()) or ReferenceMetadata(path.stem, "", {})
    known = catalog.find_by_path(str(path))
    if (
        known is not None
        and known.file_size == info.st_size
        and known.file_mtime_ns == info.st_mtime_ns
        and (known.design, known.brand, known.metadata) == (meta.design, meta.brand, meta.extra)
    ):
        report.unchanged += 1
        return None
    sha256 = sha256_file(path)
    # Same bytes as a stored reference: refresh its path and metadata, keep its fingerprint.
    stored = catalog.find_by_sha256(sha256)
    fingerprint = None if stored is not None else fingerprinter.reference(load_image(path, limits))
    replaces = known.reference_id if known is not None and known.sha256 != sha256 else None
    return NewReference(
        fingerprint=fingerprint,
        path=str(path),
        sha256=sha256,
        design=meta.design,
        brand=meta.brand,
        metadata=meta.extra,
        file_size=info.st_size,
        file_mtime_ns=info.st_mtime_ns,
        replaces=replaces,
    )


def _commit(catalog: Catalog, pending: list[NewReference], report: IndexReport) -> None:
    if not pending:
        return
    for outcome in catalog.add_many(pending):
        if outcome.added:
            report.added += 1
        else:
            report.refreshed += 1
    pending.clear()
