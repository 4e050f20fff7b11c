"""The FAISS index files: caches of the database, written atomically and stamped.

A stamp (kept in the database) records the generation an index file reflects, its size, sha256
and id layout; a file whose stamp does not match is never loaded, it is rebuilt from SQLite.
Nothing is unpickled: FAISS reads its own serialisation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from imgmatch.catalog.records import sha256_file
from imgmatch.errors import CatalogError
from imgmatch.files import write_atomically

DESCRIPTOR_INDEX = "descriptors"
# What the ids in the hash index files mean; a hash index file stamped with another layout is
# rebuilt. 2: hash ids carry the variant (schema 3). Descriptor ids did not change.
INDEX_LAYOUT = 2


def index_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.faiss"


def index_file_problem(
    path: Path, name: str, stamp_text: str | None, generation: int, max_bytes: int
) -> str | None:
    """Why the index file at `path` cannot be loaded as it is (None: it can)."""
    if stamp_text is None:
        return "never written"
    try:
        stamp = json.loads(stamp_text)
    except ValueError:
        stamp = None
    if not isinstance(stamp, dict):
        # The stamp is only the cache's label: the file is rebuilt and stamped anew.
        return "its stamp in the database is not readable"
    if stamp.get("generation") != generation:
        return f"stale (generation {stamp.get('generation')}, database {generation})"
    if name != DESCRIPTOR_INDEX and stamp.get("layout", 1) != INDEX_LAYOUT:
        return f"id layout {stamp.get('layout', 1)}, this imgmatch uses {INDEX_LAYOUT}"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != stamp.get("bytes"):
        return f"size {size} differs from its stamp ({stamp.get('bytes')})"
    if size > max_bytes:
        return f"{size} bytes is over the {max_bytes}-byte limit"
    if sha256_file(path) != stamp.get("sha256"):
        return "checksum differs from its stamp (corrupt)"
    return None


def read_index(path: Path) -> Any:
    return faiss.deserialize_index_binary(np.fromfile(path, dtype=np.uint8))


def write_index(path: Path, index: Any, generation: int) -> str:
    """Write `index` to `path` atomically; return its stamp."""
    data = faiss.serialize_index_binary(index)
    try:
        write_atomically(path, data.tobytes())
    except OSError as exc:
        raise CatalogError(
            f"{path}: cannot write the index file ({exc.strerror or exc}); the database is "
            "unchanged and the index is rebuilt from it at the next run: free space or fix "
            "the folder's permissions, then run `imgmatch catalog rebuild`"
        ) from exc
    stamp = {
        "generation": generation,
        "bytes": int(data.size),
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "ntotal": int(index.ntotal),
        "layout": INDEX_LAYOUT,
    }
    return json.dumps(stamp, sort_keys=True)
