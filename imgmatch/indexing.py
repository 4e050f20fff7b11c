"""Adding reference photos to a catalog: incremental, parallel, committed in batches.

A run first plans every file in this process: a file whose path, size, mtime and metadata match
the catalog is unchanged and never opened; otherwise its sha256 decides whether the bytes are
already known (only path and metadata are refreshed) or must be fingerprinted. Fingerprints are
made in a process pool and committed here, `batch_size` at a time, each batch in one SQLite
transaction: a run killed at any point loses at most the batch in flight, and the next run
picks up exactly what is missing.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgmatch.catalog import Catalog, NewReference, Reference, sha256_file
from imgmatch.config import DetectorConfig, ImageLimits
from imgmatch.fingerprint import fingerprint_signature
from imgmatch.parallel import fingerprint_files
from imgmatch.progress import ProgressReporter, SilentProgress
from imgmatch.sources import (
    ReferenceMetadata,
    SkippedPath,
    discover_images,
    iter_metadata,
    read_metadata,
)

DEFAULT_BATCH_SIZE = 64
DEFAULT_DECODE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IndexOptions:
    """How an index run works (not what it indexes)."""

    # One process unless asked: a library caller (the service) must not get a pool by surprise.
    workers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    prune: bool = False
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S


@dataclass
class IndexReport:
    """What one `index_references` run did."""

    added: int = 0
    refreshed: int = 0
    unchanged: int = 0
    pruned: int = 0
    # References under a path of the run whose bytes no file of the run holds any more and
    # that no new reference replaced: left by a run stopped between batches, by a file changed
    # to bytes another file has, or by one changed to bytes that cannot be fingerprinted.
    removed: int = 0
    fingerprinted: int = 0
    # Of those fingerprinted, files already stored but fingerprinted by another imgmatch version
    # or with other settings (see `fingerprint_signature`).
    refingerprinted: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    failure_types: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    skipped: list[SkippedPath] = field(default_factory=list)
    unsupported: int = 0
    elapsed_s: float = 0.0
    catalog: str = ""

    @property
    def seen(self) -> int:
        return self.added + self.refreshed + self.unchanged + len(self.failed)

    @property
    def files_per_s(self) -> float:
        return self.seen / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary for automation (`--summary-json`)."""
        return {
            "command": "index",
            "catalog": self.catalog,
            "processed": self.seen,
            "added": self.added,
            "refreshed": self.refreshed,
            "unchanged": self.unchanged,
            "fingerprinted": self.fingerprinted,
            "refingerprinted": self.refingerprinted,
            "pruned": self.pruned,
            "removed": self.removed,
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "unsupported": self.unsupported,
            "elapsed_s": round(self.elapsed_s, 3),
            "files_per_s": round(self.files_per_s, 2),
            "failures_by_reason": {k: sorted(v) for k, v in sorted(self.failure_types.items())},
            "skipped_paths": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


@dataclass(frozen=True)
class _Planned:
    """A file that needs a catalog write: its entry, and whether it must be fingerprinted."""

    entry: NewReference
    needs_fingerprint: bool
    # Already stored, but fingerprinted with another signature.
    stale: bool = False


def index_references(
    catalog: Catalog,
    paths: Sequence[Path],
    *,
    metadata_csv: Path | None = None,
    config: DetectorConfig | None = None,
    limits: ImageLimits | None = None,
    options: IndexOptions | None = None,
    progress: ProgressReporter | None = None,
) -> IndexReport:
    """Fingerprint and store every image under `paths`; unchanged files are not read again.

    Metadata (C2) comes from `metadata_csv` or the `metadata.csv` files in the folders; without
    it a reference's design is its file's stem. With `options.prune`, references stored under
    `paths` whose files are gone are removed.
    """
    started = time.perf_counter()
    config = config or DetectorConfig()
    limits = limits or ImageLimits()
    options = options or IndexOptions()
    progress = progress or SilentProgress()
    metadata: dict[Path, ReferenceMetadata] = {}
    for csv_path in iter_metadata(paths, metadata_csv):
        metadata.update(read_metadata(csv_path))
    discovery = discover_images(paths)
    report = IndexReport(
        skipped=discovery.skipped, unsupported=discovery.unsupported, catalog=str(catalog.directory)
    )
    progress.start(len(discovery.files))
    signature = fingerprint_signature(config)
    found: list[_Found] = []
    for path in discovery.files:
        try:
            found.append(_inspect(catalog, path, metadata, signature))
        except OSError as exc:
            _fail(report, path, f"{path}: cannot read ({exc.strerror or exc})", "unreadable file")
            progress.advance(failed=True)
    # Every plan sees the bytes every file of the run holds now: files renumbered or swapped
    # take each other's references, which a file-by-file plan would get wrong.
    holders = {str(f.path): f.sha256 for f in found}
    held = set(holders.values())
    planned: list[_Planned] = []
    for file in found:
        plan = None if file.unchanged else _plan(catalog, file, holders, held, signature)
        if plan is None:
            report.unchanged += 1
            progress.advance()
        else:
            planned.append(plan)
    for _ in range(_dedupe_within_run(planned)):
        report.unchanged += 1
        progress.advance()
    report.removed = _remove_leftovers(catalog, found, held, planned)
    known = [p.entry for p in planned if not p.needs_fingerprint]
    for start in range(0, len(known), options.batch_size):
        batch = known[start : start + options.batch_size]
        # Counted before the commit, which empties the list it is given.
        committed = len(batch)
        _commit(catalog, batch, report)
        for _ in range(committed):
            progress.advance()
    entries = {p.entry.path: p.entry for p in planned if p.needs_fingerprint}
    stale_paths = {p.entry.path for p in planned if p.needs_fingerprint and p.stale}
    outcomes = fingerprint_files(
        [Path(path) for path in entries],
        "reference",
        workers=options.workers,
        config=config,
        limits=limits,
        decode_timeout_s=options.decode_timeout_s,
    )
    pending: list[NewReference] = []
    # Old references of files whose new bytes could not be fingerprinted: their bytes are
    # gone all the same (a stale entry's are not: it is the same bytes, kept until they are).
    orphaned: list[int] = []
    for outcome in outcomes:
        if outcome.fingerprint is None:
            _fail(report, outcome.path, outcome.error or "", outcome.error_type or "invalid image")
            progress.advance(failed=True)
            replaces = entries[str(outcome.path)].replaces
            if replaces is not None and str(outcome.path) not in stale_paths:
                orphaned.append(replaces)
            continue
        report.fingerprinted += 1
        report.refingerprinted += int(str(outcome.path) in stale_paths)
        pending.append(replace(entries[str(outcome.path)], fingerprint=outcome.fingerprint))
        progress.advance()
        if len(pending) >= options.batch_size:
            _commit(catalog, pending, report)
    _commit(catalog, pending, report)
    report.removed += len(catalog.remove_many(orphaned))
    progress.finish()
    if options.prune:
        report.pruned = len(prune_references(catalog, paths))
    catalog.flush()
    report.elapsed_s = time.perf_counter() - started
    return report


def prune_references(catalog: Catalog, paths: Sequence[Path]) -> list[Reference]:
    """Remove the references stored under `paths` (a folder, or the file itself) whose files
    no longer exist; references stored elsewhere are never touched. Returns those removed."""
    roots = [os.path.abspath(p) for p in paths]
    vanished = []
    for reference in catalog.references():
        stored = os.path.abspath(reference.path)
        inside = any(
            stored == root or stored.startswith(root.rstrip(os.sep) + os.sep) for root in roots
        )
        if inside and not os.path.isfile(stored):
            vanished.append(reference.reference_id)
    return catalog.remove_many(vanished)


@dataclass(frozen=True)
class _Found:
    """A file of the run as it is on disk, and the reference its path had (`known`)."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str
    meta: ReferenceMetadata
    # The references stored under this path, newest first; `known` is the newest.
    stored_here: tuple[Reference, ...]
    # Same size, mtime, metadata and fingerprint signature as `known`: nothing to do.
    unchanged: bool

    @property
    def known(self) -> Reference | None:
        return self.stored_here[0] if self.stored_here else None


def _inspect(
    catalog: Catalog, path: Path, metadata: dict[Path, ReferenceMetadata], signature: str
) -> _Found:
    info = path.stat()
    meta = metadata.get(path.resolve()) or ReferenceMetadata(path.stem, "", {})
    stored_here = tuple(catalog.find_by_path(str(path)))
    known = stored_here[0] if stored_here else None
    stat = (info.st_size, info.st_mtime_ns)
    if known is not None and (known.file_size, known.file_mtime_ns) == stat:
        described = (known.design, known.brand, known.metadata)
        unchanged = described == (meta.design, meta.brand, meta.extra) and (
            known.fingerprint_signature == signature
        )
        # The bytes are trusted unchanged, not read again, even where the metadata or the
        # fingerprint signature differ (a version change would otherwise hash every file of
        # the catalog here, one at a time).
        sha256 = known.sha256
    else:
        sha256, unchanged = sha256_file(path), False
    return _Found(path, info.st_size, info.st_mtime_ns, sha256, meta, stored_here, unchanged)


def _plan(
    catalog: Catalog, file: _Found, holders: dict[str, str], held: set[str], signature: str
) -> _Planned | None:
    """What `file` needs written, given the bytes each file of the run holds (`holders`,
    path -> sha256; `held`, its values); None if nothing."""
    path, known, sha256 = str(file.path), file.known, file.sha256
    # The path's old reference goes when its bytes changed and no file of the run holds the
    # old bytes any more; where one does, that file's plan takes the reference over.
    replaces = (
        known.reference_id
        if known is not None and known.sha256 != sha256 and known.sha256 not in held
        else None
    )
    stored = catalog.find_by_sha256(sha256)
    if stored is not None and stored.path != path and holders.get(stored.path) == sha256:
        # The same bytes under another path of this run, which still holds them: that path
        # keeps the reference, or the two would take it from each other on every run. (This
        # path's old reference, if its bytes are gone, is one of `_remove_leftovers`'.)
        return None
    # The same bytes, fingerprinted another way: fingerprint them again in place of the old
    # entry. (Where this path also held other bytes, that entry goes first and the stale one
    # is refreshed; the next run, finding it under this path, fingerprints it again.)
    stale = replaces is None and stored is not None and stored.fingerprint_signature != signature
    if stale and stored is not None:
        replaces = stored.reference_id
    entry = NewReference(
        fingerprint=None,
        path=path,
        sha256=sha256,
        design=file.meta.design,
        brand=file.meta.brand,
        metadata=file.meta.extra,
        file_size=file.size,
        file_mtime_ns=file.mtime_ns,
        replaces=replaces,
    )
    return _Planned(entry, needs_fingerprint=stored is None or stale, stale=stale)


def _remove_leftovers(
    catalog: Catalog, found: list[_Found], held: set[str], planned: list[_Planned]
) -> int:
    """Remove the references stored under a path of the run whose bytes no file of the run
    holds any more, other than those a planned entry replaces; returns how many.

    A changed file's old reference normally goes with its replacement, in one transaction.
    These are the rest: a file whose new bytes another file of the run already has (it gets no
    entry of its own), and an older reference under a path that a run stopped between two
    batches of moves left behind, which no plan sees (plans look at the newest).
    """
    replaced = {p.entry.replaces for p in planned}
    leftovers = {
        reference.reference_id
        for file in found
        for reference in file.stored_here
        if reference.sha256 not in held and reference.reference_id not in replaced
    }
    return len(catalog.remove_many(sorted(leftovers)))


def _dedupe_within_run(planned: list[_Planned]) -> int:
    """Files of one run with the same bytes: the first keeps (or gets) the one reference, as a
    fresh index would have it; the rest are dropped (each would re-point it to itself, the last
    winning). Returns how many were dropped."""
    seen: set[str] = set()
    kept = []
    for plan in planned:
        if plan.entry.sha256 in seen:
            continue
        seen.add(plan.entry.sha256)
        kept.append(plan)
    dropped = len(planned) - len(kept)
    planned[:] = kept
    return dropped


def _fail(report: IndexReport, path: Path, message: str, reason: str) -> None:
    report.failed.append((path, message))
    report.failure_types[reason].append(str(path))


def _commit(catalog: Catalog, pending: list[NewReference], report: IndexReport) -> None:
    if not pending:
        return
    for outcome in catalog.add_many(pending):
        if outcome.added:
            report.added += 1
        else:
            report.refreshed += 1
    pending.clear()
