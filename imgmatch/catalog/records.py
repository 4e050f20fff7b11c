"""What the catalog stores and answers, as values; where a catalog lives (contract C1)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from imgmatch.fingerprint import Fingerprint

CATALOG_ENV = "IMGMATCH_CATALOG"
DEFAULT_CATALOG_DIR = Path("imgmatch-data")


@dataclass(frozen=True)
class Reference:
    """One reference photo of a protected design, as the catalog knows it."""

    reference_id: int
    path: str
    design: str
    brand: str
    sha256: str
    width: int
    height: int
    metadata: dict[str, str] = field(default_factory=dict)
    added_at: str = ""
    file_size: int | None = None
    file_mtime_ns: int | None = None
    # How its fingerprint was computed (`fingerprint_signature`); "" where unknown (stored by
    # an imgmatch from before signatures).
    fingerprint_signature: str = ""


@dataclass(frozen=True)
class NewReference:
    """What `Catalog.add` needs to store one reference photo.

    `fingerprint` may be None only for a file already stored (same sha256): then just its path
    and metadata are refreshed.
    """

    fingerprint: Fingerprint | None
    path: str
    sha256: str
    design: str
    brand: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    file_size: int | None = None
    file_mtime_ns: int | None = None
    # The reference this one supersedes (the file at the same path changed), removed atomically.
    replaces: int | None = None


@dataclass(frozen=True)
class AddOutcome:
    """`added` is False where the same file (by sha256) was already there; its metadata is
    refreshed from the new entry."""

    reference: Reference
    added: bool


@dataclass(frozen=True)
class HashHit:
    reference_id: int
    hasher: str
    variant: int
    distance: int


@dataclass(frozen=True)
class DescriptorNeighbours:
    """kNN of each query descriptor: (queries, k) arrays; reference_id -1 where none was found."""

    distances: NDArray[np.int32]
    reference_ids: NDArray[np.int64]
    views: NDArray[np.int64]
    keypoints: NDArray[np.int64]


@dataclass(frozen=True)
class CatalogStats:
    references: int
    designs: int
    brands: int
    descriptors: int
    descriptor_index: str
    database_bytes: int
    index_bytes: int
    generation: int


def resolve_catalog_dir(directory: Path | str | None = None) -> Path:
    """`--catalog DIR`, else `$IMGMATCH_CATALOG`, else `./imgmatch-data` (contract C1)."""
    if directory:
        return Path(directory)
    env = os.environ.get(CATALOG_ENV)
    return Path(env) if env else DEFAULT_CATALOG_DIR


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
