"""Writing a file so that a crash or a full disk never leaves it half-written.

One helper for the whole project (reports, summaries, index caches, thumbnails), at one
durability level: the data goes to a temporary file in the same folder (a rename is atomic only
within one file system), is fsynced, renamed over the target, and the folder is fsynced so that
the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` in one step: afterwards `path` is either the old
    file, whole, or the new one, whatever fails on the way. `OSError`s reach the caller, which
    knows what to tell the user."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    # Created by open(), not mkstemp: the file gets the user's umask, not mode 0600.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in `directory` durable (where the OS allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
