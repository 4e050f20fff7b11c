"""`python -m imgmatch.bench.quick`: how check latency splits into stages as the catalog grows.

For each catalog size it prints the median decode / features / search / verify time of
`Detector.check_source` over about twenty listing photos (attacked bundled references and
unrelated generated photos), and the ratio of search + verify (what grows with the catalog) to
decode + features (what does not). Target: below 0.5 at 10,000 references.

The catalog holds the 32 bundled references' real fingerprints plus synthetic ones made by
perturbing them (see `imgmatch.bench.synthetic`); the output says how many of each.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgmatch.bench import attacks as A
from imgmatch.bench.conditions import conditions
from imgmatch.bench.generated import generated_photo
from imgmatch.bench.synthetic import SyntheticFactory, SyntheticSpec, grow_catalog
from imgmatch.catalog import Catalog, NewReference, sha256_file
from imgmatch.config import DetectorConfig, SearchConfig
from imgmatch.detector import Detector
from imgmatch.fingerprint import Fingerprint, Fingerprinter
from imgmatch.images import RGBImage, load_image
from imgmatch.sources import read_metadata

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "reference_images"
STAGES = ("decode", "features", "search", "verify")
FIXED_STAGES = ("decode", "features")
GROWING_STAGES = ("search", "verify")
TARGET_RATIO = 0.5
# Listings are stored as JPEG at this quality, as marketplaces serve them.
LISTING_JPEG_QUALITY = 90


@dataclass(frozen=True)
class BundledReference:
    path: Path
    design: str
    brand: str
    image: RGBImage


@dataclass(frozen=True)
class Detections:
    """What the timed checks found: attacked listings flagged as their own design, and
    unrelated photos flagged as anything."""

    detected: int
    attacked: int
    false_flags: int
    unrelated: int


@dataclass(frozen=True)
class StageLatency:
    """Median milliseconds per stage over every timed check, and the growing/fixed ratio."""

    references: int
    synthetic_references: int
    descriptors: int
    descriptor_index: str
    build_s: float
    checks: int
    median_ms: dict[str, float]
    median_fixed_ms: float
    median_growing_ms: float
    detections: Detections

    @property
    def ratio(self) -> float:
        return self.median_growing_ms / self.median_fixed_ms if self.median_fixed_ms else 0.0


def bundled_references(
    directory: Path = REFERENCE_DIR, limit: int | None = None
) -> list[BundledReference]:
    """The bundled reference photos with their metadata (design defaults to the file stem);
    the first `limit` only, where given (decoding all 32 dominates tiny test runs)."""
    metadata = read_metadata(directory / "metadata.csv")
    out = []
    for path in sorted(directory.glob("*.jpg"))[:limit]:
        meta = metadata.get(path.resolve())
        design, brand = (meta.design, meta.brand) if meta else (path.stem, "")
        out.append(BundledReference(path, design, brand, load_image(path)))
    return out


def add_real_references(
    catalog: Catalog, references: Sequence[BundledReference], config: DetectorConfig
) -> list[Fingerprint]:
    """Fingerprint and store the bundled references; returns their fingerprints."""
    fingerprinter = Fingerprinter(config)
    prints = [fingerprinter.reference(ref.image) for ref in references]
    catalog.add_many(
        [
            NewReference(
                fingerprint=fp,
                path=str(ref.path.name),
                sha256=sha256_file(ref.path),
                design=ref.design,
                brand=ref.brand,
            )
            for ref, fp in zip(references, prints, strict=True)
        ]
    )
    return prints


def encode_jpeg(image: RGBImage, quality: int = LISTING_JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def latency_listings(references: Sequence[BundledReference], seed: int) -> list[bytes]:
    """Fourteen attacked references and six unrelated generated photos, as JPEG bytes."""
    return [listing for listing, _ in labelled_listings(references, seed)]


def labelled_listings(
    references: Sequence[BundledReference], seed: int
) -> list[tuple[bytes, str | None]]:
    """The latency listings, each with the design it copies (None: an unrelated photo)."""
    rng = np.random.default_rng(seed)
    backgrounds = [generated_photo(rng) for _ in range(2)]
    others = [ref.image for ref in references[:8]]
    attacks: list[A.Attack] = [
        A.compose(A.resize(0.6), A.jpeg(50)),
        A.crop(0.5),
        A.mirror,
        A.rotate90,
        A.rotate(10),
        A.paste_onto(backgrounds[0], 0.5),
        A.collage(others, 2),
        A.collage(others, 3),
        A.text_overlay(),
        A.sticker(),
        A.color_shift(),
        A.compose(A.crop(0.7), A.jpeg(60)),
        A.compose(A.mirror, A.paste_onto(backgrounds[1], 0.4)),
        A.compose(A.color_shift(-30, 0.6), A.crop(0.6)),
    ]
    listings: list[tuple[bytes, str | None]] = []
    for number, attack in enumerate(attacks):
        reference = references[(number * 7) % len(references)]
        image = A.apply(attack, reference.image, seed + number).image
        listings.append((encode_jpeg(image), reference.design))
    listings += [(encode_jpeg(generated_photo(rng)), None) for _ in range(6)]
    return listings


def time_checks(
    detector: Detector, listings: Sequence[tuple[bytes, str | None]], repeats: int
) -> tuple[list[dict[str, float]], Detections]:
    """Per-check stage timings; one untimed warm-up pass first (first-touch allocations)."""
    detector.check_source(listings[0][0], min_score=0)
    timings = []
    detected = false_flags = 0
    for _ in range(repeats):
        for listing, design in listings:
            result = detector.check_source(listing, min_score=0)
            timings.append({stage: result.timing_ms.get(stage, 0.0) for stage in STAGES})
            flagged = {m.design for m in result.matches if m.score >= result.threshold}
            detected += design in flagged
            false_flags += design is None and bool(flagged)
    attacked = sum(design is not None for _, design in listings)
    return timings, Detections(
        detected=detected // repeats,
        attacked=attacked,
        false_flags=false_flags // repeats,
        unrelated=len(listings) - attacked,
    )


def summarise(
    catalog: Catalog,
    timings: Sequence[dict[str, float]],
    detections: Detections,
    synthetic: int,
    build_s: float,
) -> StageLatency:
    stats = catalog.stats()
    return StageLatency(
        references=stats.references,
        synthetic_references=synthetic,
        descriptors=stats.descriptors,
        descriptor_index=stats.descriptor_index,
        build_s=build_s,
        checks=len(timings),
        median_ms={s: float(np.median([t[s] for t in timings])) for s in STAGES},
        median_fixed_ms=float(np.median([sum(t[s] for s in FIXED_STAGES) for t in timings])),
        median_growing_ms=float(np.median([sum(t[s] for s in GROWING_STAGES) for t in timings])),
        detections=detections,
    )


def run(
    sizes: Sequence[int],
    *,
    seed: int,
    repeats: int,
    search: SearchConfig,
    spec: SyntheticSpec,
    batch_size: int,
    log: io.TextIOBase | None = None,
) -> list[StageLatency]:
    """Grow one catalog through `sizes` and time the same listings at each size."""
    config = DetectorConfig()
    references = bundled_references()
    listings = labelled_listings(references, seed)
    rows: list[StageLatency] = []
    with tempfile.TemporaryDirectory(prefix="imgmatch-quick-") as directory:
        catalog = Catalog(Path(directory), config=search)
        real = add_real_references(catalog, references, config)
        factory = SyntheticFactory(real, seed, spec)
        detector = Detector(catalog, config)
        synthetic = 0
        for size in sorted(sizes):
            start = time.perf_counter()
            synthetic += grow_catalog(catalog, factory, size, batch_size)
            build_s = time.perf_counter() - start
            if log is not None:
                print(f"  built {catalog.count()} references in {build_s:.1f} s", file=log)
            timings, detections = time_checks(detector, listings, repeats)
            rows.append(summarise(catalog, timings, detections, synthetic, build_s))
    return rows


def format_rows(rows: Sequence[StageLatency]) -> str:
    header = (
        "| references (real + synthetic) | index | decode | features | search | verify "
        "| (search+verify)/(decode+features) | target < 0.5 | copies flagged | unrelated flagged |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        m, d = row.median_ms, row.detections
        lines.append(
            f"| {row.references:,} ({row.references - row.synthetic_references} + "
            f"{row.synthetic_references:,}) | {row.descriptor_index}, {row.descriptors:,} desc "
            f"| {m['decode']:.1f} | {m['features']:.1f} | {m['search']:.1f} | {m['verify']:.1f} "
            f"| {row.ratio:.2f} | {'met' if row.ratio < TARGET_RATIO else 'missed'} "
            f"| {d.detected}/{d.attacked} | {d.false_flags}/{d.unrelated} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgmatch.bench.quick", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="catalog sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the listings")
    parser.add_argument("--batch-size", type=int, default=2000, help="references per add_many")
    parser.add_argument("--flip-bits", type=int, default=SyntheticSpec().descriptor_flip_bits)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    search = SearchConfig()
    spec = SyntheticSpec(descriptor_flip_bits=args.flip_bits)
    facts = conditions(args.seed, detector=DetectorConfig(), search=search, synthetic=spec)
    print("imgmatch quick latency benchmark")
    print(f"  seed {facts['seed']}; {facts['cpu_model']}; {facts['cores']} cores usable")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print(f"  search config: {facts['config']['search']}")
    print(f"  synthetic references: {facts['config']['synthetic']}")
    print("  detector config: DetectorConfig() defaults", flush=True)
    rows = run(
        sizes,
        seed=args.seed,
        repeats=args.repeats,
        search=search,
        spec=spec,
        batch_size=args.batch_size,
        log=sys.stderr,  # type: ignore[arg-type]
    )
    print(f"\nmedian ms per check over {rows[0].checks} checks (20 listings x {args.repeats})")
    print(format_rows(rows))
    for row in rows:
        print(f"  {row.references:,} references: catalog built in {row.build_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
