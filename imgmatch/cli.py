"""The `imgmatch` command line (contract C3): parse, call the library, format."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from imgmatch.bench.command import bench, calibrate
from imgmatch.catalog import Catalog
from imgmatch.checking import DEFAULT_DECODE_TIMEOUT_S, CheckOptions, completed_keys, run_check
from imgmatch.detector import Detector
from imgmatch.errors import CatalogError, ImgmatchError, MetadataError, OutputError
from imgmatch.files import write_atomically
from imgmatch.indexing import DEFAULT_BATCH_SIZE, IndexOptions, index_references
from imgmatch.parallel import default_workers
from imgmatch.progress import make_progress
from imgmatch.report import format_summary, open_sink, prepare_output

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
# The shell's code for a command stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

# Soft wrap: long paths stay on one line, so logs can be grepped.
err = Console(stderr=True, soft_wrap=True)


class _Commands(TyperGroup):
    """Every command's catalog error (missing, damaged, busy) ends it with one line and exit
    2, wherever in the command it is met: its message already says what to do."""

    # `ctx` is Typer's own (vendored) click Context, which it does not export.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CatalogError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from exc


app = typer.Typer(
    cls=_Commands,
    help="Find listing photos that copy protected designs.",
    no_args_is_help=True,
    add_completion=False,
)
catalog_app = typer.Typer(help="Inspect and maintain the reference catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog", help="Catalog folder (default: $IMGMATCH_CATALOG, else ./imgmatch-data)."
    ),
]


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"
    html = "html"


WorkersOption = Annotated[
    int | None,
    typer.Option(min=1, help="Processes decoding and fingerprinting (default: all cores)."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
SummaryOption = Annotated[
    Path | None, typer.Option("--summary-json", help="Also write the run's summary to this file.")
]
DecodeTimeoutOption = Annotated[
    float, typer.Option("--decode-timeout", min=0, help="Seconds one file may take to decode.")
]


def _prepare_outputs(*paths: Path | None) -> None:
    """Refuse a run whose output files cannot be written, before it starts."""
    try:
        for path in paths:
            if path is not None:
                prepare_output(path)
    except OutputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from exc


def _open_catalog(directory: Path | None, *, create: bool) -> Catalog:
    """The catalog; a `CatalogError` ends the command with exit 2 (`_Commands`)."""
    return Catalog(directory, create=create)


def _finish(summary: dict[str, Any], summary_json: Path | None) -> None:
    """Print the summary, write it for automation, exit 1 if any input was not processed."""
    for skipped in summary["skipped_paths"]:
        err.print(
            f"[yellow]skipped:[/yellow] {skipped['path']}: {skipped['reason']}", highlight=False
        )
    for line in format_summary(summary):
        err.print(line, highlight=False)
    if summary_json is not None:
        write_atomically(summary_json, json.dumps(summary, indent=2) + "\n")
    incomplete = summary["failed"] or summary["skipped"]
    raise typer.Exit(EXIT_SOME_FAILED if incomplete else EXIT_OK)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Reference photos or folders (recursive).")],
    catalog: CatalogOption = None,
    metadata: Annotated[
        Path | None, typer.Option(help="CSV with columns path,design,brand (+ any).")
    ] = None,
    workers: WorkersOption = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove references under PATH whose files are gone.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="References committed per transaction.")
    ] = DEFAULT_BATCH_SIZE,
    decode_timeout: DecodeTimeoutOption = DEFAULT_DECODE_TIMEOUT_S,
    quiet: QuietOption = False,
    summary_json: SummaryOption = None,
) -> None:
    """Add reference photos (or refresh them) in the catalog; unchanged files are skipped."""
    _prepare_outputs(summary_json)
    options = IndexOptions(workers or default_workers(), batch_size, prune, decode_timeout)
    with _open_catalog(catalog, create=True) as store:
        # Refused before any file is read, not at the first commit.
        store.require_searchable()
        try:
            report = index_references(
                store,
                paths,
                metadata_csv=metadata,
                options=options,
                progress=make_progress("index", quiet=quiet),
            )
        except MetadataError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
        except KeyboardInterrupt as exc:
            err.print(
                "[yellow]interrupted:[/yellow] every committed batch is kept; run the same "
                "command again to continue"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from exc
    for path, reason in report.failed:
        err.print(f"[yellow]failed:[/yellow] {path}: {reason}", highlight=False)
    _finish(report.to_dict(), summary_json)


@app.command()
def check(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Listing photos or folders (recursive).")
    ] = None,
    catalog: CatalogOption = None,
    manifest: Annotated[
        list[Path] | None,
        typer.Option(help="CSV with columns listing_id,path (+ any, carried into the output)."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.table,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    min_score: Annotated[
        float | None,
        typer.Option(help="Report candidates from this score (default: the flag threshold)."),
    ] = None,
    workers: WorkersOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip listings already in --out (jsonl), append.")
    ] = False,
    decode_timeout: DecodeTimeoutOption = DEFAULT_DECODE_TIMEOUT_S,
    quiet: QuietOption = False,
    summary_json: SummaryOption = None,
) -> None:
    """Check listing photos (files, folders, manifests) against the catalog."""
    if not paths and not manifest:
        err.print("[red]error:[/red] give listing PATHs or --manifest")
        raise typer.Exit(EXIT_USAGE)
    if resume and (output_format is not OutputFormat.jsonl or out is None):
        err.print("[red]error:[/red] --resume needs --format jsonl and --out FILE")
        raise typer.Exit(EXIT_USAGE)
    # A path that is not there is a typo in the command, not a listing that failed.
    missing = [str(p) for p in [*(paths or []), *(manifest or [])] if not os.path.lexists(p)]
    if missing:
        err.print(
            f"[red]error:[/red] no such file or folder: {', '.join(missing)}", highlight=False
        )
        raise typer.Exit(EXIT_USAGE)
    _prepare_outputs(out, summary_json)
    options = CheckOptions(workers or default_workers(), min_score, decode_timeout_s=decode_timeout)
    with _open_catalog(catalog, create=False) as store:
        store.require_searchable()
        detector = Detector(store)
        if stale := detector.stale_references():
            were = "reference was" if stale == 1 else "references were"
            err.print(
                f"[yellow]warning:[/yellow] {stale} {were} fingerprinted by another imgmatch "
                "version or with other settings; run `imgmatch index` on their folders (and "
                "upload again those added through the service)"
            )
        try:
            summary = run_check(
                detector,
                paths or [],
                open_sink(
                    output_format.value,
                    out,
                    append=resume,
                    # A manifest's paths are relative to its folder, as its author wrote them.
                    roots=[*(paths or []), *(m.parent for m in manifest or [])],
                ),
                manifests=manifest or [],
                done=completed_keys(out) if resume and out else (),
                options=options,
                progress=make_progress("check", quiet=quiet, stage="fingerprinted"),
            )
        except ImgmatchError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
        except KeyboardInterrupt as exc:
            kept = (
                f"the results so far are in {out}; add --resume to the same command to continue"
                if output_format is OutputFormat.jsonl and out is not None
                else "use --format jsonl --out FILE to keep results across an interruption"
            )
            err.print(f"[yellow]interrupted:[/yellow] {kept}", highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from exc
    _finish(summary.to_dict(), summary_json)


@catalog_app.command("list")
def catalog_list(
    catalog: CatalogOption = None,
    design: Annotated[str | None, typer.Option(help="Only this design.")] = None,
    brand: Annotated[str | None, typer.Option(help="Only this brand.")] = None,
) -> None:
    """List references: id, design, brand, path."""
    with _open_catalog(catalog, create=False) as store:
        for ref in store.references(design=design, brand=brand):
            typer.echo(f"{ref.reference_id}\t{ref.design}\t{ref.brand}\t{ref.path}")


@catalog_app.command("show")
def catalog_show(reference_id: int, catalog: CatalogOption = None) -> None:
    """Show one reference as JSON."""
    with _open_catalog(catalog, create=False) as store:
        try:
            ref = store.get(reference_id)
        except ImgmatchError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
        typer.echo(json.dumps(ref.__dict__, indent=2, sort_keys=True))


@catalog_app.command("remove")
def catalog_remove(reference_id: int, catalog: CatalogOption = None) -> None:
    """Remove one reference (other ids never change)."""
    with _open_catalog(catalog, create=False) as store:
        try:
            ref = store.remove(reference_id)
        except ImgmatchError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_USAGE) from exc
    err.print(f"removed reference {ref.reference_id} ({ref.design}, {ref.path})")


@catalog_app.command("stats")
def catalog_stats(catalog: CatalogOption = None) -> None:
    """Counts and sizes."""
    with _open_catalog(catalog, create=False) as store:
        stats = store.stats()
    for key, value in stats.__dict__.items():
        typer.echo(f"{key}: {value}")


@catalog_app.command("verify")
def catalog_verify(catalog: CatalogOption = None) -> None:
    """Check the database and the index caches; exit 1 if anything is wrong."""
    with _open_catalog(catalog, create=False) as store:
        problems = store.verify()
    for problem in problems:
        typer.echo(f"problem: {problem}")
    typer.echo("ok" if not problems else f"{len(problems)} problem(s)")
    raise typer.Exit(EXIT_SOME_FAILED if problems else EXIT_OK)


@catalog_app.command("rebuild")
def catalog_rebuild(catalog: CatalogOption = None) -> None:
    """Rebuild the FAISS indexes from the database."""
    with _open_catalog(catalog, create=False) as store:
        store.rebuild()
        err.print(f"rebuilt indexes of {store.count()} references in {store.directory}")


@app.command()
def serve(
    catalog: CatalogOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP service: check API, reference management, review page (IMGMATCH_* settings)."""
    # Imported here so the other commands start without loading the web stack.
    from service.app import configure_logging, create_app
    from service.server import serve as run_server
    from service.settings import ServiceSettings

    settings = ServiceSettings() if catalog is None else ServiceSettings(catalog=catalog)
    configure_logging(settings)
    err.print(f"imgmatch serving {settings.catalog_dir()} on http://{host}:{port}")
    run_server(create_app(settings), settings, host, port)


# The benchmark's commands live with the benchmark (imgmatch/bench/command.py).
app.command()(bench)
app.command()(calibrate)
