"""What a stored fingerprint must look like, and the checksum that tells it is still intact.

SQLite's own integrity check sees pages, not values: bytes flipped inside a fingerprint blob,
or a blob cut short, pass it. Every reference therefore stores a sha256 of its fingerprint rows
(`fingerprint_sha256`, schema 4), and every row read is checked for the sizes its count
implies, so damage is reported by `imgmatch catalog verify` and refused by a rebuild instead of
being indexed, or crashing a check.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgmatch.catalog.hash_index import hasher_bits
from imgmatch.catalog.ids import MAX_KEYPOINTS_PER_VIEW, VIEW_BITS
from imgmatch.errors import CatalogDamagedError
from imgmatch.features import DESCRIPTOR_BYTES, KEYPOINT_FIELDS

KEYPOINT_BYTES = KEYPOINT_FIELDS * 4  # float32 x, y, size, angle
MAX_HASH_VARIANTS = 8
# Damaged references are listed by id in `verify`, up to this many per kind of damage.
IDS_SHOWN_PER_PROBLEM = 10


def _remove_or_restore(database_name: str) -> str:
    """What to do about references whose rows are damaged."""
    return (
        "remove each (`imgmatch catalog remove ID`) and index its photo again, or restore "
        f"{database_name} from a backup"
    )


def blob_size(value: object) -> int | None:
    """The length of a stored blob; None where the column holds something else (a damaged
    record can turn a blob into text or a number)."""
    return len(value) if isinstance(value, bytes) else None


def view_problem(
    view: int, count: int, keypoint_bytes: int | None, descriptor_bytes: int | None
) -> str | None:
    """What is wrong with one stored feature view (None: its sizes agree)."""
    if keypoint_bytes is None or descriptor_bytes is None:
        return f"view {view} holds keypoints or descriptors that are not binary"
    if not 0 <= view < 1 << VIEW_BITS:
        return f"feature view number {view} is out of range"
    if not 0 <= count <= MAX_KEYPOINTS_PER_VIEW:
        return f"view {view} claims {count} keypoints"
    if keypoint_bytes != count * KEYPOINT_BYTES:
        return (
            f"view {view} holds {keypoint_bytes} bytes of keypoints, "
            f"{count} keypoints need {count * KEYPOINT_BYTES}"
        )
    if descriptor_bytes != count * DESCRIPTOR_BYTES:
        return (
            f"view {view} holds {descriptor_bytes} bytes of descriptors, "
            f"{count} descriptors need {count * DESCRIPTOR_BYTES}"
        )
    return None


def hash_problem(hasher: str, code_bytes: int | None) -> str | None:
    """What is wrong with one stored hash code (None: 1 to 8 whole variants of its width)."""
    if code_bytes is None:
        return f"{hasher} code is not binary"
    width = hasher_bits(hasher) // 8
    if code_bytes % width or not 1 <= code_bytes // width <= MAX_HASH_VARIANTS:
        return f"{hasher} code holds {code_bytes} bytes, not 1 to 8 hashes of {width} bytes"
    return None


def raise_if_damaged(database: Path, reference_id: int, problem: str | None) -> None:
    """Refuse a row whose sizes disagree: indexing or matching it would give wrong answers."""
    if problem is not None:
        raise CatalogDamagedError(
            f"{database}: reference {reference_id}: {problem}; the database is damaged: run "
            f"`imgmatch catalog verify` to list the damaged references, then "
            f"{_remove_or_restore(database.name)}"
        )


def fingerprint_digest(
    hashes: Iterable[tuple[str, bytes]], views: Iterable[tuple[int, int, bytes, bytes]]
) -> str:
    """The sha256 of a reference's fingerprint rows: (hasher, code) and (view, count,
    keypoints, descriptors), in any order; every length is hashed too, so bytes cannot move
    between fields unnoticed."""
    digest = hashlib.sha256()
    for hasher, code in sorted(hashes):
        digest.update(f"hash {hasher} {len(code)}\n".encode())
        digest.update(code)
    for view, count, keypoints, descriptors in sorted(views):
        digest.update(f"view {view} {count} {len(keypoints)} {len(descriptors)}\n".encode())
        digest.update(keypoints)
        digest.update(descriptors)
    return digest.hexdigest()


def metadata_problem(text: object) -> str | None:
    """Why stored metadata is unreadable (None: a JSON object)."""
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return f"is not JSON ({exc})"
    return None if isinstance(value, dict) else "is not a JSON object"


@dataclass(frozen=True)
class ReferenceRows:
    """One reference as stored: its checksum, its metadata, its (hasher, code) and (view,
    count, keypoints, descriptors) rows."""

    reference_id: int
    checksum: str
    metadata: object
    hashes: list[Any]
    views: list[Any]


def reference_problems(database: Path, references: Iterable[ReferenceRows]) -> list[str]:
    """`verify`'s lines about references: rows of the wrong size, checksums missing or
    different, unreadable metadata; one line per kind, naming the references."""
    damaged: dict[str, list[int]] = defaultdict(list)
    for rows in references:
        malformed = [hash_problem(h, blob_size(code)) for h, code in rows.hashes] + [
            view_problem(view, count, blob_size(keypoints), blob_size(descriptors))
            for view, count, keypoints, descriptors in rows.views
        ]
        if any(malformed):
            damaged["fingerprint rows of the wrong size"].append(rows.reference_id)
        elif not rows.checksum:
            damaged["no fingerprint checksum"].append(rows.reference_id)
        elif fingerprint_digest(rows.hashes, rows.views) != rows.checksum:
            damaged["fingerprint checksum differs"].append(rows.reference_id)
        if metadata_problem(rows.metadata):
            damaged["metadata is not a JSON object"].append(rows.reference_id)
    advice = _remove_or_restore(database.name)
    return [f"{database}: {_summarise(kind, ids, advice)}" for kind, ids in damaged.items()]


def _summarise(kind: str, reference_ids: list[int], advice: str) -> str:
    """One verify line for every reference with the same kind of damage."""
    shown = ", ".join(str(i) for i in reference_ids[:IDS_SHOWN_PER_PROBLEM])
    more = (
        f" and {len(reference_ids) - IDS_SHOWN_PER_PROBLEM} more"
        if (len(reference_ids) > IDS_SHOWN_PER_PROBLEM)
        else ""
    )
    return f"{kind}: {len(reference_ids)} reference(s) ({shown}{more}): {advice}"
