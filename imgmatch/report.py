"""Formatting check results: a terminal table, JSON lines (C4) and CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from imgmatch.detector import CheckResult

CSV_COLUMNS = (
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


def render_table(results: Iterable[CheckResult], console: Console, *, threshold: float) -> None:
    """One row per listing: verdict, best design, score and the evidence behind it."""
    table = Table(title=f"imgmatch check (flag threshold {threshold:.2f})")
    for column in ("listing", "verdict", "designs (score)", "evidence (best)", "box (best)"):
        table.add_column(column, overflow="fold")
    for result in results:
        top = result.top
        if result.status == "error":
            verdict = "[red]error[/red]"
        else:
            verdict = "[bold red]FLAGGED[/bold red]" if result.flagged else "[green]clear[/green]"
        table.add_row(
            result.path or "-",
            verdict,
            "\n".join(f"{m.design} ({m.score:.2f})" for m in result.matches) or "-",
            (top.evidence if top else (result.error or "")),
            str(list(top.box)) if top and top.box else "-",
        )
    console.print(table)


def write_results(results: Iterable[CheckResult], fmt: str, out: Path | TextIO) -> None:
    """Write results as `jsonl` (one C4 object a line) or `csv` (one row a listing)."""
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as stream:
            write_results(results, fmt, stream)
        return
    if fmt == "jsonl":
        for result in results:
            out.write(json.dumps(result.to_dict(), sort_keys=False) + "\n")
            out.flush()
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            top = result.top
            writer.writerow(
                [
                    result.path,
                    result.status,
                    int(result.flagged),
                    top.design if top else "",
                    top.brand if top else "",
                    f"{top.score:.4f}" if top else "",
                    top.reference_id if top else "",
                    top.transform if top else "",
                    " ".join(map(str, top.box)) if top and top.box else "",
                    result.error or "",
                ]
            )
    else:
        raise ValueError(f"unknown result format {fmt!r} (jsonl or csv)")
