"""How the engine fares on the hardest case: a seller's own new photo of a design.

    python -m imgmatch.bench.renders [--datasets ../shared/datasets]

Indexes the reference photos of the shared jewelry renders (role=reference), checks every other
render (new photos of the same designs, and look-alike designs) and the marketplace product
photos, and prints what is flagged at the default threshold, by role.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from imgmatch.catalog import Catalog
from imgmatch.detector import Detector
from imgmatch.indexing import index_references

DEFAULT_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as stream:
        return list(csv.DictReader(stream))


def measure(datasets: Path) -> list[tuple[str, int, int, int]]:
    """(group, listings, flagged, flagged as the right design) for each group of listings."""
    renders = datasets / "jewelry-renders"
    rows = _rows(renders / "manifest.csv")
    with tempfile.TemporaryDirectory(prefix="imgmatch-renders-") as folder:
        work = Path(folder)
        (work / "references").mkdir()
        with (work / "references" / "metadata.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "design", "brand"])
            for row in rows:
                if row["role"] == "reference":
                    source = renders / row["file"]
                    shutil.copyfile(source, work / "references" / source.name)
                    writer.writerow([source.name, row["design_id"], ""])
        with Catalog(work / "catalog") as catalog:
            index_references(catalog, [work / "references"])
            detector = Detector(catalog)
            flagged: Counter[str] = Counter()
            right: Counter[str] = Counter()
            total: Counter[str] = Counter()
            for row in rows:
                group = row["role"]
                if group == "hard_negative":
                    group += " (same pose)" if row["file"].endswith("_0.jpg") else " (other pose)"
                result = detector.check_source(renders / row["file"])
                total[group] += 1
                flagged[group] += int(result.flagged)
                top = result.top
                right[group] += int(
                    result.flagged and top is not None and top.design == row["design_id"]
                )
            market = datasets / "marketplace"
            if market.is_dir():
                for row in _rows(market / "manifest.csv"):
                    result = detector.check_source(market / row["path"])
                    total["marketplace"] += 1
                    flagged["marketplace"] += int(result.flagged)
    return [(group, total[group], flagged[group], right[group]) for group in total]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    args = parser.parse_args(argv)
    if not (args.datasets / "jewelry-renders" / "manifest.csv").is_file():
        raise SystemExit(f"no jewelry renders under {args.datasets}; pass --datasets DIR")
    print("| listings | count | flagged | flagged as the right design |")
    print("| --- | --- | --- | --- |")
    for group, count, flagged, right in measure(args.datasets):
        print(f"| {group} | {count} | {flagged} | {right} |")


if __name__ == "__main__":
    main()
