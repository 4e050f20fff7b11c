"""Catalog growth: check latency, memory and disk as the catalog grows, exact vs approximate.

One catalog grows through the requested sizes: the 32 bundled references' real fingerprints plus
synthetic ones (perturbed real fingerprints, path `synthetic:N`, see `imgmatch.bench.synthetic`).
At each size:

- approximate (the shipped `SearchConfig`, IVF above 20k descriptors): every latency listing is
  checked, stage medians and p95 are recorded;
- exact (a flat index, forced with a huge `exact_search_max_descriptors`): the same catalog is
  reopened, its descriptor index rebuilt flat, and only `exact_listings` listings are checked,
  because exact search at 10k references takes seconds per listing (and no more listings once
  `budget_s` is spent);
- the approximate index's recall against exact, on those listings: the share of listing
  descriptors whose nearest neighbour distance it finds (descriptor recall@1), and the share of
  the designs exact search flags that approximate search flags too (match recall);
- brute-force ORB (the baseline) on `bruteforce_listings` listings against as many references
  (real ones plus the same kind of perturbed copies), for the speed ratio.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgmatch.bench.methods import BruteForceOrb
from imgmatch.bench.quick import STAGES, add_real_references, bundled_references, latency_listings
from imgmatch.bench.runner import peak_rss_bytes
from imgmatch.bench.samples_set import ListingItem, ReferenceItem
from imgmatch.bench.synthetic import SyntheticFactory, SyntheticSpec, grow_catalog
from imgmatch.catalog import Catalog
from imgmatch.config import DetectorConfig, SearchConfig
from imgmatch.detector import Detector
from imgmatch.images import decode_image

# Large enough that no catalog here ever switches to IVF: exact flat search.
EXACT = SearchConfig(exact_search_max_descriptors=10**12)


def _current_rss_bytes() -> int:
    """Resident memory now (Linux /proc; 0 elsewhere)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _stage_summary(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for stage in (*STAGES, "total"):
        values = [sum(t.values()) if stage == "total" else t.get(stage, 0.0) for t in timings]
        out[stage] = {
            "p50": float(np.median(values)),
            "p95": float(np.percentile(values, 95)),
        }
    return out


def _flagged(detector: Detector, result_matches: Sequence[Any]) -> set[str]:
    return {m.design for m in result_matches if m.score >= detector.threshold}


def _exact_and_recall(
    directory: Path,
    approx: Catalog,
    config: DetectorConfig,
    listings: Sequence[bytes],
    budget_s: float,
) -> dict[str, Any]:
    """Reopen the catalog with a flat index; time exact checks and compare with approximate.

    Stops after the listing that exhausts `budget_s` (at least one listing is always timed).
    """
    start = time.perf_counter()
    exact = Catalog(directory, config=EXACT)
    exact.rebuild()
    rebuild_s = time.perf_counter() - start
    try:
        exact_detector = Detector(exact, config)
        approx_detector = Detector(approx, config)
        timings: list[dict[str, float]] = []
        descriptor_hits, descriptor_total = 0, 0
        voting_hits, voting_total = 0, 0
        exact_flags, shared_flags = 0, 0
        began = time.perf_counter()
        for data in listings:
            if timings and time.perf_counter() - began > budget_s:
                break
            decoded = decode_image(data)
            fingerprint = exact_detector.fingerprinter.listing(decoded.pixels)
            queries = fingerprint.features.descriptors
            start = time.perf_counter()
            exact_nb = exact.search_descriptors(queries, config.knn_neighbours)
            exact_faiss_ms = (time.perf_counter() - start) * 1000
            approx_nb = approx.search_descriptors(queries, config.knn_neighbours)
            # Ties make labels ambiguous; the nearest distance is what the ratio test sees.
            descriptor_hits += int(np.sum(approx_nb.distances[:, 0] == exact_nb.distances[:, 0]))
            descriptor_total += len(queries)
            # Only neighbours within the vote radius matter to the detector.
            voting = exact_nb.distances[:, 0] <= config.max_descriptor_distance_bits
            voting_hits += int(
                np.sum(approx_nb.distances[voting, 0] == exact_nb.distances[voting, 0])
            )
            voting_total += int(np.sum(voting))
            exact_result = exact_detector.check_fingerprint(
                fingerprint, min_score=0, neighbours=exact_nb
            )
            approx_result = approx_detector.check_fingerprint(
                fingerprint, min_score=0, neighbours=approx_nb
            )
            timing = dict(exact_result.timing_ms)
            timing["search"] = timing.get("search", 0.0) + exact_faiss_ms
            timings.append(timing)
            found = _flagged(exact_detector, exact_result.matches)
            exact_flags += len(found)
            shared_flags += len(found & _flagged(approx_detector, approx_result.matches))
        stats = exact.stats()
        return {
            "exact_listings": len(timings),
            "exact_rebuild_s": rebuild_s,
            "exact_search_ms": _stage_summary(timings)["search"],
            "exact_index_bytes": stats.index_bytes,
            "descriptor_recall_at_1": descriptor_hits / descriptor_total
            if descriptor_total
            else None,
            "voting_descriptor_recall_at_1": voting_hits / voting_total if voting_total else None,
            "match_recall_vs_exact": shared_flags / exact_flags if exact_flags else None,
            "exact_flagged_matches": exact_flags,
        }
    finally:
        exact.close()


def _bruteforce_ms(
    bruteforce: BruteForceOrb,
    references: int,
    listings: Sequence[bytes],
    seed: int,
    budget_s: float,
    spec: SyntheticSpec,
) -> dict[str, float]:
    """Median ms per listing of brute-force ORB against `references` references (stops after
    the listing that exhausts `budget_s`)."""
    bruteforce.grow_synthetic(references, seed, spec)
    totals: list[float] = []
    searches: list[float] = []
    began = time.perf_counter()
    for number, data in enumerate(listings):
        if totals and time.perf_counter() - began > budget_s:
            break
        run = bruteforce.check(ListingItem(f"scale_{number}", data, None, "scale", "scale"))
        totals.append(sum(run.timing_ms.values()))
        searches.append(run.timing_ms["search"] + run.timing_ms["verify"])
    return {
        "listings": len(totals),
        "total": float(np.median(totals)),
        "search_verify": float(np.median(searches)),
    }


def scale_rows(
    sizes: Sequence[int],
    *,
    seed: int,
    workdir: Path,
    exact_listings: int = 3,
    bruteforce_listings: int = 2,
    budget_s: float = 120.0,
    real_references: int | None = None,
    timed_listings: int | None = None,
    spec: SyntheticSpec | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Grow one catalog through `sizes`; one report row per size (see the module docstring)."""
    config = DetectorConfig()
    spec = spec or SyntheticSpec()
    bundled = bundled_references(limit=real_references)
    listings = latency_listings(bundled, seed)[:timed_listings]
    # The first listings are attacked references (copies), so exact search has matches to find.
    few_exact = listings[:exact_listings]
    few_bruteforce = listings[:bruteforce_listings]
    directory = workdir / "scale-catalog"
    catalog = Catalog(directory, config=SearchConfig())
    bruteforce = BruteForceOrb()
    bruteforce.build(
        [ReferenceItem(b.path.name, b.design, b.image) for b in bundled], directory.parent
    )
    rows: list[dict[str, Any]] = []
    try:
        real = add_real_references(catalog, bundled, config)
        factory = SyntheticFactory(real, seed, spec)
        detector = Detector(catalog, config)
        synthetic = 0
        for size in sorted(sizes):
            start = time.perf_counter()
            synthetic += grow_catalog(catalog, factory, size)
            catalog.flush()
            build_s = time.perf_counter() - start
            log(f"scale: {catalog.count():,} references built in {build_s:.0f} s")
            detector.check_source(listings[0], min_score=0)
            timings = []
            for data in listings:
                result = detector.check_source(data, min_score=0)
                timings.append({s: result.timing_ms.get(s, 0.0) for s in STAGES})
            stats = catalog.stats()
            row: dict[str, Any] = {
                "references": stats.references,
                "synthetic_references": synthetic,
                "descriptors": stats.descriptors,
                "descriptor_index": stats.descriptor_index,
                "build_s": build_s,
                "checks": len(timings),
                "latency_ms": _stage_summary(timings),
                "catalog_bytes": stats.database_bytes + stats.index_bytes,
                "rss_bytes": _current_rss_bytes(),
            }
            log(f"scale: approximate timed, {row['latency_ms']['search']['p50']:.0f} ms search")
            row.update(_exact_and_recall(directory, catalog, config, few_exact, budget_s))
            log(f"scale: exact timed, {row['exact_search_ms']['p50']:.0f} ms search")
            row["bruteforce_ms"] = _bruteforce_ms(
                bruteforce, stats.references, few_bruteforce, seed, budget_s, spec
            )
            row["speedup_vs_bruteforce"] = (
                row["bruteforce_ms"]["total"] / row["latency_ms"]["total"]["p50"]
            )
            log(f"scale: brute force timed, {row['bruteforce_ms']['total']:.0f} ms per listing")
            row["peak_rss_bytes"] = peak_rss_bytes()
            rows.append(row)
            gc.collect()
    finally:
        bruteforce.close()
        catalog.close()
    return rows
