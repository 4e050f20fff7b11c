"""Where input images come from: files and folders on disk, and reference metadata CSVs (C2)."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgmatch.errors import ImgmatchError, MetadataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
METADATA_FILENAME = "metadata.csv"
REQUIRED_METADATA_COLUMNS = ("path", "design", "brand")


@dataclass(frozen=True)
class SkippedPath:
    """A path that was found but not read, and why."""

    path: Path
    reason: str


@dataclass
class Discovery:
    """Image files found under the given paths, in a stable order, and what was passed over."""

    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedPath] = field(default_factory=list)
    unsupported: int = 0


@dataclass(frozen=True)
class ReferenceMetadata:
    design: str
    brand: str
    extra: dict[str, str]


def discover_images(paths: Sequence[Path]) -> Discovery:
    """Regular image files under `paths` (files, or folders walked recursively).

    Hidden entries, symlinks that leave the folder they were found in, FIFOs, devices and
    sockets are skipped with a reason; files with other extensions are counted, not opened.
    """
    found = Discovery()
    seen: set[Path] = set()
    for root in paths:
        if not root.exists() and not root.is_symlink():
            found.skipped.append(SkippedPath(root, "no such file or folder"))
        elif root.is_dir():
            _walk(root, root.resolve(), found, seen)
        else:
            _consider(root, None, found, seen, explicit=True)
    return found


def _walk(folder: Path, root: Path, found: Discovery, seen: set[Path]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        found.skipped.append(SkippedPath(folder, f"cannot list folder ({exc.strerror})"))
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):
                found.skipped.append(SkippedPath(path, "broken or looping symlink"))
                continue
            if not target.is_relative_to(root):
                found.skipped.append(SkippedPath(path, "symlink leads outside the folder"))
                continue
            if target.is_dir():
                found.skipped.append(SkippedPath(path, "symlink to a folder (not followed)"))
                continue
        if entry.is_dir(follow_symlinks=False):
            _walk(path, root, found, seen)
        else:
            _consider(path, root, found, seen, explicit=False)


def _consider(
    path: Path, root: Path | None, found: Discovery, seen: set[Path], *, explicit: bool
) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        found.skipped.append(SkippedPath(path, f"cannot stat ({exc.strerror})"))
        return
    if not stat.S_ISREG(mode):
        found.skipped.append(SkippedPath(path, "not a regular file (FIFO, device or socket)"))
        return
    if not explicit and path.suffix.lower() not in IMAGE_SUFFIXES:
        found.unsupported += 1
        return
    key = path.resolve()
    if key in seen:
        return
    seen.add(key)
    found.files.append(path)


def read_metadata(csv_path: Path) -> dict[Path, ReferenceMetadata]:
    """Reference metadata by resolved file path; `path` in the CSV is relative to its folder."""
    _, rows = _read_csv(csv_path, REQUIRED_METADATA_COLUMNS, MetadataError, "metadata")
    table: dict[Path, ReferenceMetadata] = {}
    for line, row in rows:
        if not row.get("path") or not row.get("design"):
            raise MetadataError(f"{csv_path}:{line}: 'path' and 'design' must not be empty")
        extra = {k: v for k, v in row.items() if k not in REQUIRED_METADATA_COLUMNS and v != ""}
        key = (csv_path.parent / row["path"]).resolve()
        table[key] = ReferenceMetadata(row["design"], row.get("brand", ""), extra)
    return table


def _read_csv(
    csv_path: Path, required: Sequence[str], error: type[Exception], what: str
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Column names and (line number, stripped row) pairs of a CSV that must have `required`
    columns; any problem reading it raises `error`."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise error(
                    f"{csv_path}: missing column(s) {', '.join(missing)} "
                    f"(needs at least {','.join(required)})"
                )
            rows = [
                (line, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for line, row in enumerate(reader, start=2)
            ]
            return columns, rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise error(f"{csv_path}: cannot read {what} ({exc})") from exc


def find_metadata_files(paths: Sequence[Path]) -> list[Path]:
    """`metadata.csv` files found in the given folders (contract C2)."""
    found = []
    for root in paths:
        if root.is_dir():
            found.extend(sorted(root.rglob(METADATA_FILENAME)))
    return found


def iter_metadata(paths: Sequence[Path], explicit: Path | None) -> Iterator[Path]:
    """The metadata CSVs that apply: the one given with `--metadata`, else those found."""
    if explicit is not None:
        yield explicit
    else:
        yield from find_metadata_files(paths)


REQUIRED_MANIFEST_COLUMNS = ("listing_id", "path")


class ManifestError(ImgmatchError):
    """A listing manifest CSV is malformed."""


@dataclass(frozen=True)
class ListingInput:
    """One listing photo to check: its file, and its id and extra columns from a manifest."""

    path: Path
    listing_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Why the file cannot be read (a manifest row naming a missing file, a FIFO, ...): the
    # listing is reported with this error instead of being passed over.
    unreadable: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this result in an output file (for `--resume`): a listing may have
        several photos, each one result."""
        return (self.listing_id or "", str(self.path))


@dataclass
class ListingSet:
    """Listings gathered from paths and manifests, in a stable order, and what was passed over."""

    listings: list[ListingInput] = field(default_factory=list)
    skipped: list[SkippedPath] = field(default_factory=list)
    unsupported: int = 0
    extra_columns: tuple[str, ...] = ()


def read_manifest(csv_path: Path) -> tuple[list[tuple[str, Path, dict[str, str]]], tuple[str, ...]]:
    """Rows (listing_id, path, extra columns) of a manifest and its extra column names; `path`
    is relative to the manifest's folder."""
    columns, table = _read_csv(csv_path, REQUIRED_MANIFEST_COLUMNS, ManifestError, "manifest")
    extra_columns = tuple(c for c in columns if c not in REQUIRED_MANIFEST_COLUMNS)
    rows = []
    for line, row in table:
        if not row.get("listing_id") or not row.get("path"):
            raise ManifestError(f"{csv_path}:{line}: 'listing_id' and 'path' must not be empty")
        extra = {c: row.get(c, "") for c in extra_columns}
        rows.append((row["listing_id"], csv_path.parent / row["path"], extra))
    return rows, extra_columns


def gather_listings(paths: Sequence[Path], manifests: Sequence[Path] = ()) -> ListingSet:
    """Listings from files and folders (as `discover_images`) and from manifest CSVs.

    A manifest's rows are taken as given (any extension; the decoder decides); a row whose file
    is missing or not a regular file is kept as an unreadable listing, so that every row gets a
    result.
    """
    discovery = discover_images(paths)
    found = ListingSet(
        listings=[ListingInput(p) for p in discovery.files],
        skipped=list(discovery.skipped),
        unsupported=discovery.unsupported,
    )
    extra_columns: list[str] = []
    for manifest in manifests:
        rows, columns = read_manifest(manifest)
        extra_columns += [c for c in columns if c not in extra_columns]
        for listing_id, path, extra in rows:
            row_files = discover_images([path])
            refused = [s for s in row_files.skipped if s.path == path]
            if refused:
                found.listings.append(ListingInput(path, listing_id, extra, refused[0].reason))
                continue
            found.skipped += row_files.skipped
            found.listings += [ListingInput(p, listing_id, extra) for p in row_files.files]
    found.extra_columns = tuple(extra_columns)
    return found
