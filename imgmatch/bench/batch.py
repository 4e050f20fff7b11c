"""`python -m imgmatch.bench.batch`: throughput of `imgmatch check` and `imgmatch index` in bulk.

    python -m imgmatch.bench.batch [--listings 1000] [--references 10000] [--seed 7]

In one process and one run it measures:
- the floor: decode + ORB features of every listing, serially, with nothing else: what no
  batch tool can go below (the perceptual hashes are timed apart, as cost above it);
- `run_check` over the same listings with 1 worker and with every core: images per second, the
  scaling ratio, and the cost per image with 1 worker relative to the floor.
  A shared machine's speed drifts by tens of percent within minutes, so the floor and the
  1-worker check alternate chunk by chunk, and each of `--rounds` rounds ends with an
  all-workers run: a ratio then compares runs made at the same time;
- `index_references` over the listing photos as references into a fresh catalog, then again
  with nothing changed: the no-change re-index speed-up.
Listings are seeded: half attacked bundled references (crops, mirrors, collages, stickers...),
half generated unrelated photos, all JPEG. The catalog holds the 32 bundled references plus
synthetic fingerprints perturbed from them (`imgmatch.bench.synthetic`).
Targets: scaling >= 1.7 on 2 cores; cost <= 1.3x the floor at 10,000 references; re-index
>= 20x faster than the first index.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgmatch.bench import attacks as A
from imgmatch.bench.conditions import conditions
from imgmatch.bench.quick import add_real_references, bundled_references, encode_jpeg
from imgmatch.bench.samples import generated_photo
from imgmatch.bench.synthetic import SyntheticFactory, SyntheticSpec, grow_catalog
from imgmatch.catalog import Catalog
from imgmatch.checking import (
    DEFAULT_SEARCH_BATCH_LISTINGS,
    CheckOptions,
    CheckSummary,
    ListingResult,
    run_check,
)
from imgmatch.config import DetectorConfig, ImageLimits, SearchConfig
from imgmatch.detector import Detector
from imgmatch.features import FeatureExtractor
from imgmatch.hashing import compute_hashes
from imgmatch.images import decode_image, to_gray
from imgmatch.indexing import IndexOptions, index_references
from imgmatch.parallel import default_workers

TARGET_SCALING = 1.7
TARGET_COST_OVER_FLOOR = 1.3
TARGET_REINDEX_SPEEDUP = 20.0
# The floor and the 1-worker check alternate over chunks of this many listings: whole search
# batches, so the 1-worker run searches batches as full as an uninterrupted run would.
FLOOR_CHUNK_LISTINGS = 2 * DEFAULT_SEARCH_BATCH_LISTINGS


@dataclass(frozen=True)
class CheckRun:
    workers: int
    elapsed_s: float
    listings: int
    flagged: int
    failed: int
    stage_ms: dict[str, float]

    @property
    def images_per_s(self) -> float:
        return self.listings / self.elapsed_s


class _TimingSink:
    """Keeps nothing but the per-stage totals: the benchmark measures the pipeline, not I/O."""

    def __init__(self) -> None:
        self.stage_ms: dict[str, float] = {}

    def start(self, extra_columns: tuple[str, ...]) -> None:
        return None

    def write(self, item: ListingResult) -> None:
        for stage, ms in item.result.timing_ms.items():
            self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms

    def close(self, summary: CheckSummary) -> None:
        return None


def merge_runs(runs: Sequence[CheckRun]) -> CheckRun:
    """One run adding up `runs` (of the same worker count): totals of time, listings, stages."""
    stage_ms: dict[str, float] = {}
    for run in runs:
        for stage, ms in run.stage_ms.items():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
    return CheckRun(
        runs[0].workers,
        sum(r.elapsed_s for r in runs),
        sum(r.listings for r in runs),
        sum(r.flagged for r in runs),
        sum(r.failed for r in runs),
        stage_ms,
    )


def write_listings(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` seeded listing JPEGs: even numbers attack a bundled reference, odd are unrelated."""
    rng = np.random.default_rng(seed)
    references = bundled_references()
    images = [ref.image for ref in references]
    backgrounds = [generated_photo(rng) for _ in range(4)]
    plans: list[A.Attack] = [
        A.compose(A.resize(0.6), A.jpeg(50)),
        A.crop(0.5),
        A.mirror,
        A.rotate(10),
        A.paste_onto(backgrounds[0], 0.5),
        A.collage(images[:8], 2),
        A.sticker(),
        A.text_overlay(),
        A.compose(A.mirror, A.paste_onto(backgrounds[1], 0.4)),
        A.color_shift(),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        if number % 2 == 0:
            source = images[(number // 2) % len(images)]
            attack = plans[(number // 2) % len(plans)]
            image = A.apply(attack, source, seed + number).image
        else:
            image = generated_photo(rng)
        path = folder / f"listing_{number:05d}.jpg"
        path.write_bytes(encode_jpeg(image))
        paths.append(path)
    return paths


def measure_floor(paths: Sequence[Path], config: DetectorConfig) -> tuple[float, float]:
    """(seconds to decode and extract ORB features of every listing serially, nothing else;
    seconds to hash them too).

    The floor is decode + ORB features alone; the perceptual hashes a check also computes are
    timed apart and count as cost above the floor.
    """
    extractor = FeatureExtractor(config, listing=True)
    limits = ImageLimits()
    floor = hashing = 0.0
    for path in paths:
        start = time.perf_counter()
        gray = to_gray(decode_image(path, limits).pixels)
        extractor.extract_gray(gray)
        hashed = time.perf_counter()
        # A listing's hashes start from the gray image its features were made from.
        compute_hashes(gray, config.hashers)
        floor += hashed - start
        hashing += time.perf_counter() - hashed
    return floor, hashing


def measure_check(detector: Detector, paths: Sequence[Path], workers: int) -> CheckRun:
    sink = _TimingSink()
    start = time.perf_counter()
    summary = run_check(detector, paths, sink, options=CheckOptions(workers=workers))
    elapsed = time.perf_counter() - start
    return CheckRun(
        workers, elapsed, summary.processed, summary.flagged, summary.failed, sink.stage_ms
    )


def measure_reindex(folder: Path, workers: int) -> tuple[float, float, int]:
    """(first index s, no-change re-index s, references) for `folder` into a fresh catalog."""
    with tempfile.TemporaryDirectory(prefix="imgmatch-reindex-") as directory:
        with Catalog(Path(directory)) as catalog:
            start = time.perf_counter()
            report = index_references(catalog, [folder], options=IndexOptions(workers=workers))
            first_s = time.perf_counter() - start
        with Catalog(Path(directory)) as catalog:
            start = time.perf_counter()
            again = index_references(catalog, [folder], options=IndexOptions(workers=workers))
            second_s = time.perf_counter() - start
        if again.fingerprinted:
            raise RuntimeError(f"a no-change re-index fingerprinted {again.fingerprinted} files")
        return first_s, second_s, report.added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgmatch.bench.batch", description=__doc__)
    parser.add_argument("--listings", type=int, default=1000)
    parser.add_argument("--references", type=int, default=10_000, help="catalog size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=default_workers(), help="'all' workers")
    parser.add_argument("--rounds", type=int, default=2, help="floor/1-worker/all-workers rounds")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.listings < 1:
        parser.error("--rounds and --listings must be at least 1")
    config, search, spec = DetectorConfig(), SearchConfig(), SyntheticSpec()
    facts = conditions(args.seed, detector=config, search=search, synthetic=spec)
    print("imgmatch batch throughput benchmark")
    print(f"  seed {facts['seed']}; {facts['cpu_model']}; {facts['cores']} cores usable")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print("  detector config: DetectorConfig() defaults; search config: SearchConfig() defaults")
    with tempfile.TemporaryDirectory(prefix="imgmatch-batch-") as workspace:
        root = Path(workspace)
        start = time.perf_counter()
        paths = write_listings(root / "listings", args.listings, args.seed)
        print(f"  wrote {len(paths)} listing JPEGs in {time.perf_counter() - start:.1f} s")
        with Catalog(root / "catalog", config=search) as catalog:
            start = time.perf_counter()
            real = add_real_references(catalog, bundled_references(), config)
            grow_catalog(catalog, SyntheticFactory(real, args.seed, spec), args.references)
            stats = catalog.stats()
            print(
                f"  catalog: {stats.references:,} references ({len(real)} real), "
                f"{stats.descriptors:,} descriptors, {stats.descriptor_index} index, "
                f"built in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
        with Catalog(root / "catalog", config=search, create=False) as catalog:
            detector = Detector(catalog, config)
            # Warm-up: first touches of the index pages are not throughput.
            measure_check(detector, paths[:8], 1)
            floor_s = hashing_s = 0.0
            one: list[CheckRun] = []
            many: list[CheckRun] = []
            for _ in range(args.rounds):
                for start in range(0, len(paths), FLOOR_CHUNK_LISTINGS):
                    chunk = paths[start : start + FLOOR_CHUNK_LISTINGS]
                    chunk_floor_s, chunk_hashing_s = measure_floor(chunk, config)
                    floor_s, hashing_s = floor_s + chunk_floor_s, hashing_s + chunk_hashing_s
                    one.append(measure_check(detector, chunk, 1))
                many.append(measure_check(detector, paths, args.workers))
            runs = [merge_runs(one), merge_runs(many)]
        first_s, second_s, indexed = measure_reindex(root / "listings", args.workers)
    report(args, (floor_s, hashing_s), runs, (first_s, second_s, indexed))
    return 0


def report(
    args: argparse.Namespace,
    floor: tuple[float, float],
    runs: Sequence[CheckRun],
    reindex: tuple[float, float, int],
) -> None:
    one, many = runs
    floor_s, hashing_s = floor
    measured = args.listings * args.rounds
    floor_ms = floor_s * 1000 / measured
    cost_ms = one.elapsed_s * 1000 / one.listings
    scaling = many.images_per_s / one.images_per_s
    first_s, second_s, indexed = reindex
    speedup = first_s / second_s if second_s > 0 else float("inf")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        f"\n{args.listings} listings ({one.flagged // args.rounds} flagged, "
        f"{one.failed // args.rounds} failed), {args.rounds} rounds"
    )
    print(f"  floor (decode + ORB features, serial): {floor_ms:.1f} ms/image")
    print(f"  perceptual hashes (above the floor): {hashing_s * 1000 / measured:.1f} ms/image")
    for run in runs:
        stages = ", ".join(f"{k} {v / run.listings:.1f}" for k, v in sorted(run.stage_ms.items()))
        print(
            f"  check --workers {run.workers}: {run.images_per_s:.1f} images/s "
            f"({run.elapsed_s:.1f} s; mean ms/image by stage: {stages})"
        )
    print(
        f"  scaling ratio ({many.workers} vs 1 workers): {scaling:.2f} "
        f"(target >= {TARGET_SCALING} on 2 cores: {verdict(scaling >= TARGET_SCALING)})"
    )
    print(
        f"  cost per image, 1 worker: {cost_ms:.1f} ms = {cost_ms / floor_ms:.2f}x the floor "
        f"at {args.references:,} references (target <= {TARGET_COST_OVER_FLOOR}x: "
        f"{verdict(cost_ms / floor_ms <= TARGET_COST_OVER_FLOOR)})"
    )
    print(
        f"  index of {indexed} references: first {first_s:.1f} s, no-change re-index "
        f"{second_s:.2f} s = {speedup:.0f}x faster (target >= {TARGET_REINDEX_SPEEDUP:.0f}x: "
        f"{verdict(speedup >= TARGET_REINDEX_SPEEDUP)})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
