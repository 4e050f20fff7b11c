"""`imgmatch bench`: every method on the same sample sets in one run, metrics, report, plots."""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgmatch.bench.conditions import conditions
from imgmatch.bench.methods import ALL_METHODS, Method, make_methods
from imgmatch.bench.metrics import (
    Prediction,
    box_iou,
    micro_average_precision,
    operating_point,
    percentiles,
    precision_recall,
    recall_at_precision,
    recall_by_group,
)
from imgmatch.bench.samples_set import SampleSet, quick_set, read_dataset
from imgmatch.config import DetectorConfig, SearchConfig
from imgmatch.progress import ProgressReporter, SilentProgress

PRECISION_TARGETS = (0.99, 0.999)
# The operating threshold of every method: the score that reaches this precision on the run.
OPERATING_PRECISION = 0.99
SHARED_DATASETS = ("jewelry-renders", "marketplace", "photos")
STAGES = ("decode", "features", "search", "verify")


@dataclass(frozen=True)
class MethodResult:
    """Every figure of one method on one sample set, computed from its predictions."""

    method: str
    description: str
    sample_set: str
    listings: int
    positives: int
    uap: float
    recall_at_precision: dict[str, float]
    thresholds_at_precision: dict[str, float | None]
    operating: dict[str, float]
    # At the method's shipped threshold (imgmatch's flag_threshold), where it has one.
    operating_shipped: dict[str, float] | None
    recall_per_attack: dict[str, float]
    recall_per_part: dict[str, float]
    mean_box_iou: float | None
    latency_ms: dict[str, dict[str, float]]
    throughput_per_s: float
    build_s: float
    catalog_bytes: int
    curve: dict[str, list[float]] = field(repr=False)


def evaluate(
    method: Method,
    samples: SampleSet,
    predictions: Sequence[Prediction],
    timings: Sequence[dict[str, float]],
    build_s: float,
    wall_s: float,
    catalog_bytes: int,
) -> MethodResult:
    """Compute every metric of one method from its predictions and timings."""
    truth = {(item.name, item.design) for item in samples.listings if item.design is not None}
    negatives = {item.name for item in samples.listings if item.design is None}
    attack_of = {item.name: item.attack for item in samples.listings}
    part_of = {item.name: item.part for item in samples.listings}
    boxes = {item.name: item.box for item in samples.listings}
    curve = precision_recall(predictions, truth)
    at_precision = {str(p): recall_at_precision(curve, p) for p in PRECISION_TARGETS}
    threshold = at_precision[str(OPERATING_PRECISION)][1]
    op = operating_point(
        predictions, truth, threshold if threshold is not None else float("inf"), negatives
    )
    ious = [
        box_iou(p.box, truth_box)
        for p in predictions
        if threshold is not None
        and p.score >= threshold
        and (p.listing, p.design) in truth
        and p.box is not None
        and (truth_box := boxes.get(p.listing)) is not None
    ]
    latency = {stage: percentiles([t[stage] for t in timings if stage in t]) for stage in STAGES}
    latency["total"] = percentiles([sum(t.values()) for t in timings])
    return MethodResult(
        method=method.name,
        description=method.description,
        sample_set=samples.name,
        listings=len(samples.listings),
        positives=len(truth),
        uap=micro_average_precision(predictions, truth),
        recall_at_precision={k: v[0] for k, v in at_precision.items()},
        thresholds_at_precision={k: v[1] for k, v in at_precision.items()},
        operating=asdict(op),
        operating_shipped=None
        if method.shipped_threshold is None
        else asdict(operating_point(predictions, truth, method.shipped_threshold, negatives)),
        recall_per_attack=recall_by_group(predictions, truth, attack_of, threshold),
        recall_per_part=recall_by_group(predictions, truth, part_of, threshold),
        mean_box_iou=sum(ious) / len(ious) if ious else None,
        latency_ms=latency,
        throughput_per_s=len(timings) / wall_s if wall_s else 0.0,
        build_s=build_s,
        catalog_bytes=catalog_bytes,
        curve={"precision": list(curve.precision), "recall": list(curve.recall)},
    )


def run_method(
    method: Method, samples: SampleSet, workdir: Path, tick: Callable[[], None]
) -> MethodResult:
    start = time.perf_counter()
    method.build(samples.references, workdir)
    build_s = time.perf_counter() - start
    predictions: list[Prediction] = []
    timings: list[dict[str, float]] = []
    start = time.perf_counter()
    try:
        for listing in samples.listings:
            run = method.check(listing)
            predictions.extend(run.predictions)
            timings.append(run.timing_ms)
            tick()
        wall_s = time.perf_counter() - start
        catalog_bytes = method.catalog_bytes()
    finally:
        method.close()
    return evaluate(method, samples, predictions, timings, build_s, wall_s, catalog_bytes)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_sample_sets(
    quick: bool, datasets: Sequence[Path], log: Callable[[str], None], seed: int, **quick_kw: Any
) -> list[SampleSet]:
    sets = []
    if quick:
        log(f"making the quick set (seed {seed})")
        sets.append(quick_set(seed, **quick_kw))
    for directory in datasets:
        if not (directory / "manifest.csv").is_file():
            log(f"skipped dataset {directory}: no manifest.csv there")
            continue
        sets.append(read_dataset(directory))
    return sets


def run_bench(
    sample_sets: Sequence[SampleSet],
    method_names: Sequence[str] = ALL_METHODS,
    *,
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Run every method on every sample set; returns the report as a JSON-ready dict.

    `progress` counts the listings checked, over every method and set, and is told as each
    method starts on a set (building its index comes first)."""
    progress = progress or SilentProgress()
    results: list[MethodResult] = []
    # Taken first: the commit and versions are those the run started with.
    facts = conditions(seed, detector=DetectorConfig(), search=SearchConfig())
    began_wall, began_cpu = time.perf_counter(), _cpu_s()
    progress.start(sum(len(s.listings) for s in sample_sets) * len(make_methods(method_names)))
    try:
        with tempfile.TemporaryDirectory(prefix="imgmatch-bench-") as workdir:
            for samples in sample_sets:
                for method in make_methods(method_names):
                    progress.note(
                        f"{samples.name}: {method.name}: {len(samples.references)} references, "
                        f"{len(samples.listings)} listings"
                    )
                    results.append(run_method(method, samples, Path(workdir), progress.advance))
    finally:
        progress.finish()
    return {
        "conditions": facts,
        "operating_precision": OPERATING_PRECISION,
        "peak_rss_bytes": peak_rss_bytes(),
        # On a shared machine wall time includes waiting for the CPU; CPU time does not.
        "wall_s": time.perf_counter() - began_wall,
        "cpu_s": _cpu_s() - began_cpu,
        "sample_sets": {
            s.name: {
                "references": len(s.references),
                "listings": sum(1 for item in s.listings if item.design is not None),
                "distractors": sum(1 for item in s.listings if item.design is None),
            }
            for s in sample_sets
        },
        "results": [asdict(r) for r in results],
    }


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write report.json, report.md and the plots into `out`; returns the files written."""
    from imgmatch.bench.report_files import render_markdown, write_plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return [out / "report.json", out / "report.md", *write_plots(report, out)]


def calibrate_threshold(
    sample_sets: Sequence[SampleSet], target_precision: float
) -> tuple[float | None, float]:
    """imgmatch full's lowest score reaching `target_precision` over all sets ranked together,
    and the recall there."""
    predictions: list[Prediction] = []
    truth: set[tuple[str, str]] = set()
    for samples in sample_sets:
        method = make_methods(["imgmatch-full"])[0]
        with tempfile.TemporaryDirectory(prefix="imgmatch-calibrate-") as workdir:
            method.build(samples.references, Path(workdir))
            try:
                for item in samples.listings:
                    # Names are prefixed with the set: the same file name may be in two sets.
                    predictions += [
                        Prediction(f"{samples.name}/{p.listing}", p.design, p.score)
                        for p in method.check(item).predictions
                    ]
                    if item.design is not None:
                        truth.add((f"{samples.name}/{item.name}", item.design))
            finally:
                method.close()
    recall, threshold = recall_at_precision(precision_recall(predictions, truth), target_precision)
    return threshold, recall
