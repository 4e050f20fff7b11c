"""The `imgmatch bench` and `imgmatch calibrate` commands (thin: parse, call, print)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from imgmatch.bench.methods import ALL_METHODS
from imgmatch.bench.runner import (
    SHARED_DATASETS,
    calibrate_threshold,
    load_sample_sets,
    run_bench,
    write_report,
)
from imgmatch.bench.scale import scale_rows
from imgmatch.catalog import Catalog
from imgmatch.detector import THRESHOLD_SETTING
from imgmatch.progress import make_progress

err = Console(stderr=True)
DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def bench(
    out: Annotated[Path, typer.Option(help="Folder for report.json, report.md and plots.")] = Path(
        "bench-report"
    ),
    dataset: Annotated[
        list[Path] | None,
        typer.Option(help="Extra dataset folder(s) with a manifest.csv (repeatable)."),
    ] = None,
    shared: Annotated[
        bool, typer.Option(help="Also run every shared dataset found under --shared-dir.")
    ] = False,
    shared_dir: Annotated[
        Path, typer.Option(help="Where the shared datasets are.")
    ] = DEFAULT_SHARED,
    quick: Annotated[bool, typer.Option(help="Run the built-in quick set.")] = True,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = ",".join(ALL_METHODS),
    scale: Annotated[
        str, typer.Option(help="Catalog sizes for the growth run, e.g. 1000,10000 ('' skips).")
    ] = "",
    exact_listings: Annotated[
        int, typer.Option(help="Scale run: listings timed with exact search (slow).")
    ] = 3,
    bruteforce_listings: Annotated[
        int, typer.Option(help="Scale run: listings timed with brute-force ORB (slow).")
    ] = 2,
    scale_budget_s: Annotated[
        float, typer.Option(help="Scale run: seconds for exact / brute-force listings per size.")
    ] = 120.0,
    seed: int = 0,
    references_per_attack: Annotated[int, typer.Option(help="Quick set: copies per attack.")] = 5,
    max_references: Annotated[int | None, typer.Option(help="Quick set: use only N.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Benchmark imgmatch against pHash and brute-force ORB on the same data."""
    folders = list(dataset or [])
    if shared:
        for name in SHARED_DATASETS:
            if (shared_dir / name).is_dir():
                folders.append(shared_dir / name)
            else:
                err.print(f"skipped shared dataset {name}: not found in {shared_dir}")
    sets = load_sample_sets(
        quick,
        folders,
        err.print,
        seed,
        references_per_attack=references_per_attack,
        max_references=max_references,
    )
    names = [m.strip() for m in methods.split(",") if m.strip()]
    report = run_bench(sets, names, seed=seed, progress=make_progress("bench", quiet=quiet))
    sizes = [int(s) for s in scale.split(",") if s.strip()]
    if sizes:
        err.print(f"catalog growth run: {sizes}")
        with tempfile.TemporaryDirectory(prefix="imgmatch-scale-") as workdir:
            report["scale"] = scale_rows(
                sizes,
                seed=seed,
                workdir=Path(workdir),
                exact_listings=exact_listings,
                bruteforce_listings=bruteforce_listings,
                budget_s=scale_budget_s,
                log=err.print,
            )
    for path in write_report(report, out):
        err.print(f"wrote {path}")


def calibrate(
    dataset: Annotated[
        list[Path] | None, typer.Option(help="Labelled dataset folder(s); default: quick set.")
    ] = None,
    target_precision: Annotated[float, typer.Option(help="Precision to reach.")] = 0.99,
    catalog: Annotated[Path | None, typer.Option(help="Catalog to store the threshold in.")] = None,
    seed: int = 0,
) -> None:
    """Pick the flag threshold reaching the target precision and store it in the catalog."""
    sets = load_sample_sets(not dataset, list(dataset or []), err.print, seed)
    threshold, recall = calibrate_threshold(sets, target_precision)
    if threshold is None:
        err.print(f"[red]no threshold reaches precision {target_precision}[/red]")
        raise typer.Exit(1)
    store = Catalog(catalog)
    try:
        store.set_setting(THRESHOLD_SETTING, f"{threshold:.6g}")
    finally:
        store.close()
    err.print(
        f"flag threshold {threshold:.4g} (recall {recall:.3f} at precision >= "
        f"{target_precision}) stored in {store.directory}"
    )
