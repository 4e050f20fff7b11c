"""Formatting check results as they arrive: a terminal table, JSON lines (C4), CSV and HTML;
and the end-of-run summary."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imgmatch.checking import CheckSummary, ListingResult
from imgmatch.detector import CheckResult
from imgmatch.errors import OutputError
from imgmatch.files import write_atomically
from imgmatch.html_report import render_html

# The terminal summary names this many failed files per reason; --summary-json has them all.
FAILED_PATHS_SHOWN_PER_REASON = 5
# The table's listing column takes this share of the terminal's width, and at least this many
# characters; a longer path loses its middle.
PATH_SHARE_OF_WIDTH = 1 / 3
MIN_PATH_CHARS = 20

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP: "CSV Injection").
# Designs, brands, listing ids, manifest columns and file names come from brands and sellers, so
# a text cell starting with one (after any spaces) gets a leading single quote, which
# spreadsheets read as "this is text". Numbers imgmatch writes (score, ids, box) are left alone.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = (
    "listing_id",
    "path",
    "status",
    "flagged",
    "design",
    "brand",
    "score",
    "reference_id",
    "transform",
    "box",
    "error",
)


def render_table(
    results: Iterable[tuple[CheckResult, str]], console: Console, *, threshold: float
) -> None:
    """One row per listing (a result and the path to show for it): verdict, best design, score
    and the evidence behind it."""
    table = Table(title=f"imgmatch check (flag threshold {threshold:.2f})")
    # One line per listing: a path folded over five lines hides the table around it.
    path_chars = max(MIN_PATH_CHARS, int(console.width * PATH_SHARE_OF_WIDTH))
    table.add_column("listing", no_wrap=True)
    for column in ("verdict", "designs (score)", "evidence (best)", "box (best)"):
        table.add_column(column, overflow="fold")
    for result, shown in results:
        top = result.top
        if result.status == "error":
            verdict = "[red]error[/red]"
        else:
            verdict = "[bold red]FLAGGED[/bold red]" if result.flagged else "[green]clear[/green]"
        table.add_row(
            escape(shorten_middle(shown, path_chars)) or "-",
            verdict,
            "\n".join(f"{m.design} ({m.score:.2f})" for m in result.matches) or "-",
            (top.evidence if top else (result.error or "")),
            str(list(top.box)) if top and top.box else "-",
        )
    console.print(table)


def shown_path(path: Path, roots: Sequence[Path]) -> str:
    """`path` as the table shows it: relative to the first of `roots` (the folders and files
    the command was given) that holds it; a file given itself shows its name."""
    for root in roots:
        if path == root:
            return path.name
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return str(path)


def shorten_middle(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` in the middle, keeping more of its end (a file's name)."""
    if len(text) <= max_chars:
        return text
    head = (max_chars - 1) // 3
    return text[:head] + "\u2026" + text[len(text) - (max_chars - 1 - head) :]


class TableSink:
    """The terminal table: printed once every result is in, paths shown relative to `roots`."""

    def __init__(self, console: Console, roots: Sequence[Path] = ()) -> None:
        self.console = console
        self.roots = tuple(roots)
        self.rows: list[tuple[CheckResult, str]] = []

    def start(self, extra_columns: tuple[str, ...]) -> None:
        return None

    def write(self, item: ListingResult) -> None:
        self.rows.append((item.result, shown_path(item.listing.path, self.roots)))

    def close(self, summary: CheckSummary) -> None:
        render_table(self.rows, self.console, threshold=summary.threshold)


class _StreamSink:
    """A sink writing to a file it opened (and closes) or to a stream it was given."""

    def __init__(self, out: Path | None, *, append: bool) -> None:
        self.appending = append and out is not None and out.exists() and out.stat().st_size > 0
        self._owned = out is not None
        self.stream: TextIO = (
            out.open("a" if append else "w", encoding="utf-8", newline="")
            if out is not None
            else sys.stdout
        )

    def close(self, summary: CheckSummary) -> None:
        self.stream.flush()
        if self._owned:
            self.stream.close()


class JsonlSink(_StreamSink):
    """One C4 object a line, flushed as each arrives: a crash keeps every finished listing."""

    def start(self, extra_columns: tuple[str, ...]) -> None:
        return None

    def write(self, item: ListingResult) -> None:
        self.stream.write(json.dumps(item.to_dict()) + "\n")
        self.stream.flush()


class CsvSink(_StreamSink):
    """One row a listing: the top design and its evidence, then the manifests' extra columns."""

    def start(self, extra_columns: tuple[str, ...]) -> None:
        self.extra_columns = extra_columns
        self.writer = csv.writer(self.stream)
        if not self.appending:
            # A manifest's column names are its author's text too.
            self.writer.writerow((*CSV_COLUMNS, *map(as_text_cell, extra_columns)))

    def write(self, item: ListingResult) -> None:
        result, top = item.result, item.result.top
        self.writer.writerow(
            [
                as_text_cell(item.listing.listing_id or ""),
                as_text_cell(result.path or ""),
                as_text_cell(result.status),
                int(result.flagged),
                as_text_cell(top.design if top else ""),
                as_text_cell(top.brand if top else ""),
                f"{top.score:.4f}" if top else "",
                top.reference_id if top else "",
                as_text_cell(top.transform if top else ""),
                " ".join(map(str, top.box)) if top and top.box else "",
                as_text_cell(result.error or ""),
                *(as_text_cell(item.listing.extra.get(c, "")) for c in self.extra_columns),
            ]
        )
        self.stream.flush()


def as_text_cell(text: str) -> str:
    """`text` as a CSV cell that a spreadsheet shows as text and never runs as a formula: a
    leading single quote where it would start with `FORMULA_TRIGGERS`; nothing else changes, so
    removing that one quote gives the text back."""
    return "'" + text if text.lstrip(" ").startswith(FORMULA_TRIGGERS) else text


class HtmlSink:
    """The reviewer's report: written once every result is in, next to `out`."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.items: list[ListingResult] = []

    def start(self, extra_columns: tuple[str, ...]) -> None:
        return None

    def write(self, item: ListingResult) -> None:
        # Held until the run ends, and the page shows no correspondences: 400 bench listings
        # (200 flagged) held 14.1 MB with them, 2.8 MB without (tracemalloc).
        matches = tuple(replace(match, correspondences=()) for match in item.result.matches)
        self.items.append(replace(item, result=replace(item.result, matches=matches)))

    def close(self, summary: CheckSummary) -> None:
        base = self.out.resolve().parent if self.out is not None else Path.cwd()
        page = render_html(self.items, summary, base)
        if self.out is None:
            sys.stdout.write(page)
        else:
            write_atomically(self.out, page)


SINKS: dict[str, Callable[[Path | None, bool, Console, Sequence[Path]], Any]] = {
    "table": lambda out, append, console, roots: TableSink(console, roots),
    "jsonl": lambda out, append, console, roots: JsonlSink(out, append=append),
    "csv": lambda out, append, console, roots: CsvSink(out, append=append),
    "html": lambda out, append, console, roots: HtmlSink(out),
}


def prepare_output(path: Path) -> None:
    """Make sure `path` can be written before a run starts, creating its folder if missing:
    a run of hours must not end without its report. Raises `OutputError` saying why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot make its folder ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise OutputError(f"{path}: not writable")


def open_sink(
    fmt: str, out: Path | None, *, append: bool = False, roots: Sequence[Path] = ()
) -> Any:
    """The sink for `fmt` (table, jsonl, csv, html) writing to `out` (default stdout); the
    table shows paths relative to `roots`, the paths the command was given."""
    return SINKS[fmt](out, append, Console(), roots)


def format_summary(data: dict[str, Any]) -> list[str]:
    """The end-of-run summary (`CheckSummary.to_dict` or `IndexReport.to_dict`) as lines."""
    rate = data.get("images_per_s", data.get("files_per_s", 0.0))
    lines = [
        (_check_counts(data) if data["command"] == "check" else _index_counts(data))
        + f" in {data['elapsed_s']:.1f} s ({rate:.1f}/s)"
    ]
    for reason, paths in data["failures_by_reason"].items():
        lines.append(f"  {len(paths)} failed: {reason}")
        lines += [f"    {path}" for path in paths[:FAILED_PATHS_SHOWN_PER_REASON]]
        if len(paths) > FAILED_PATHS_SHOWN_PER_REASON:
            lines.append(f"    ... and {len(paths) - FAILED_PATHS_SHOWN_PER_REASON} more")
    reasons: dict[str, int] = {}
    for skipped in data["skipped_paths"]:
        reasons[skipped["reason"]] = reasons.get(skipped["reason"], 0) + 1
    for reason, count in sorted(reasons.items()):
        lines.append(f"  {count} skipped: {reason}")
    return lines


def _check_counts(data: dict[str, Any]) -> str:
    counts = ("processed", "flagged", "failed", "skipped", "unsupported", "resumed")
    return ", ".join(f"{data[key]} {key}" for key in counts)


def _index_counts(data: dict[str, Any]) -> str:
    again = f" ({data['refingerprinted']} fingerprinted again)" if data["refingerprinted"] else ""
    return (
        f"indexed {data['added']} new{again}, {data['refreshed']} refreshed, "
        f"{data['unchanged']} unchanged, {data['failed']} failed, {data['pruned']} pruned, "
        f"{data['removed']} removed, {data['skipped']} skipped into {data['catalog']}"
    )
