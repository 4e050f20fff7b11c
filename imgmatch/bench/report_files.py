"""The benchmark report as Markdown tables and PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Small PNGs: the README embeds them.
PLOT_SIZE_IN = (6.0, 4.0)
PLOT_DPI = 80
LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1)))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _iou(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    facts = report["conditions"]
    lines = [
        "# imgmatch benchmark",
        "",
        f"Seed {facts['seed']}; commit {facts.get('git_commit', '?')}; "
        f"{facts['cpu_model']}, {facts['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
        + f"; peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB; methods on sample sets took "
        f"{report.get('wall_s', float('nan')):.0f} s wall, "
        f"{report.get('cpu_s', float('nan')):.0f} s CPU.",
        f"Operating threshold per method: the score reaching precision "
        f"{report['operating_precision']} on the run.",
        "",
    ]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for result in report["results"]:
        by_set.setdefault(result["sample_set"], []).append(result)
    for name, results in by_set.items():
        info = report["sample_sets"][name]
        lines += [
            f"## {name}: {info['references']} references, {info['listings']} copies, "
            f"{info['distractors']} distractors",
            "",
            "| method | uAP | R@P0.99 | R@P0.999 | precision | recall | false-flag rate | box IoU "
            "| p50 / p95 / p99 ms | checks/s | build s | catalog KiB |",
            "|" + "---|" * 12,
        ]
        for r in results:
            op, total = r["operating"], r["latency_ms"]["total"]
            lines.append(
                f"| {r['method']} | {r['uap']:.3f} | {_pct(r['recall_at_precision']['0.99'])} "
                f"| {_pct(r['recall_at_precision']['0.999'])} | {_pct(op['precision'])} "
                f"| {_pct(op['recall'])} | {_pct(op['false_flag_rate'])} "
                f"| {_iou(r['mean_box_iou'])} "
                f"| {total['p50']:.0f} / {total['p95']:.0f} / {total['p99']:.0f} "
                f"| {r['throughput_per_s']:.1f} | {r['build_s']:.1f} "
                f"| {r['catalog_bytes'] / 1024:.0f} |"
            )
        attacks = sorted({a for r in results for a in r["recall_per_attack"]})
        if len(attacks) > 1:
            lines += [
                "",
                f"Recall (%) per attack at precision {report['operating_precision']}:",
                "",
            ]
            lines.append("| attack | " + " | ".join(r["method"] for r in results) + " |")
            lines.append("|" + "---|" * (len(results) + 1))
            for attack in attacks:
                cells = [_pct(r["recall_per_attack"].get(attack)) for r in results]
                lines.append(f"| {attack} | " + " | ".join(cells) + " |")
        shipped = [r for r in results if r.get("operating_shipped")]
        if shipped:
            lines += [
                "",
                "At the shipped threshold (DetectorConfig.flag_threshold), uncalibrated:",
                "",
                "| method | threshold | precision | recall | false-flag rate | false flags |",
                "|---|---|---|---|---|---|",
            ]
            for r in shipped:
                op = r["operating_shipped"]
                lines.append(
                    f"| {r['method']} | {op['threshold']:g} | {_pct(op['precision'])} "
                    f"| {_pct(op['recall'])} | {_pct(op['false_flag_rate'])} "
                    f"| {op['false_positives']} |"
                )
        lines += ["", "Median stage latency (ms):", ""]
        lines.append("| method | decode | features | search | verify |")
        lines.append("|---|---|---|---|---|")
        for r in results:
            cells = [r["latency_ms"][s]["p50"] for s in ("decode", "features", "search", "verify")]
            lines.append(
                f"| {r['method']} | "
                + " | ".join("-" if c != c else f"{c:.1f}" for c in cells)
                + " |"
            )
        lines.append("")
    scale = report.get("scale")
    if scale:
        lines += render_scale(scale)
    return "\n".join(lines)


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """PR curves per method, recall per attack per method, latency vs catalog size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []
    by_set: dict[str, list[dict[str, Any]]] = {}
    for result in report["results"]:
        by_set.setdefault(result["sample_set"], []).append(result)
    for name, results in by_set.items():
        fig, ax = plt.subplots(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
        for number, r in enumerate(results):
            # Methods often coincide (e.g. at precision 1.0): vary style so each stays visible.
            ax.plot(
                r["curve"]["recall"],
                r["curve"]["precision"],
                label=r["method"],
                linestyle=LINE_STYLES[number % len(LINE_STYLES)],
                linewidth=2.5 - 0.4 * number,
            )
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title=f"{name}: precision-recall",
            xlim=(0, 1.02),
            ylim=(0, 1.05),
        )
        ax.legend(fontsize=7)
        path = out / f"pr_{name}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
        attacks = sorted({a for r in results for a in r["recall_per_attack"]})
        if len(attacks) > 1:
            fig, ax = plt.subplots(figsize=(9.0, 4.0), dpi=PLOT_DPI)
            width = 0.8 / len(results)
            for i, r in enumerate(results):
                xs = [j + i * width for j in range(len(attacks))]
                ax.bar(
                    xs,
                    [r["recall_per_attack"].get(a, 0) for a in attacks],
                    width,
                    label=r["method"],
                )
            centre = width * (len(results) - 1) / 2
            ax.set_xticks(
                [j + centre for j in range(len(attacks))],
                attacks,
                rotation=70,
                fontsize=6,
                ha="right",
            )
            ax.set(ylabel="recall at P0.99", title=f"{name}: recall per attack", ylim=(0, 1.25))
            ax.legend(fontsize=6, ncol=len(results), loc="upper center")
            path = out / f"recall_per_attack_{name}.png"
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    scale = report.get("scale")
    if scale:
        written.append(plot_scale(scale, out, plt))
    return written


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def render_scale(scale: list[dict[str, Any]]) -> list[str]:
    """The catalog-growth table: latency, memory, disk, exact vs approximate, brute force."""
    lines = [
        "## Catalog growth (real + synthetic references; synthetic = perturbed real fingerprints)",
        "",
        f"Approximate = shipped SearchConfig, {scale[0]['checks']} listings per size. Exact = "
        "flat index, timed on the first few listings only (count per row: n). Descriptor "
        "recall@1: share of listing descriptors whose exact nearest distance the approximate "
        "index also finds (all / only those within the vote radius).",
        "",
        "| references (real + synthetic) | index | descriptors | build s | catalog MiB "
        "| RSS MiB | decode | features | search p50 / p95 | verify | (search+verify)/"
        "(decode+features) | exact search p50 (n) | descriptor recall@1 vs exact "
        "| flagged-match recall vs exact | brute-force ORB ms (n) | speed-up vs brute force |",
        "|" + "---|" * 16,
    ]
    for row in scale:
        m = row["latency_ms"]
        fixed = m["decode"]["p50"] + m["features"]["p50"]
        growing = m["search"]["p50"] + m["verify"]["p50"]
        real = row["references"] - row["synthetic_references"]
        lines.append(
            f"| {row['references']:,} ({real} + {row['synthetic_references']:,}) "
            f"| {row['descriptor_index']} | {row['descriptors']:,} | {row['build_s']:.0f} "
            f"| {_mib(row['catalog_bytes'])} | {_mib(row['rss_bytes'])} "
            f"| {m['decode']['p50']:.1f} | {m['features']['p50']:.1f} "
            f"| {m['search']['p50']:.0f} / {m['search']['p95']:.0f} | {m['verify']['p50']:.1f} "
            f"| {growing / fixed:.2f} "
            f"| {row['exact_search_ms']['p50']:,.0f} ({row['exact_listings']}) "
            f"| {_pct(row['descriptor_recall_at_1'])} / "
            f"{_pct(row['voting_descriptor_recall_at_1'])} % "
            f"| {_pct(row['match_recall_vs_exact'])} % ({row['exact_flagged_matches']} flagged) "
            f"| {row['bruteforce_ms']['total']:,.0f} ({row['bruteforce_ms']['listings']}) "
            f"| {row['speedup_vs_bruteforce']:.0f}x |"
        )
    lines.append("")
    return lines


def plot_scale(scale: list[dict[str, Any]], out: Path, plt: Any) -> Path:
    """Median latency per check against catalog size, log-log, with exact and brute force."""
    fig, ax = plt.subplots(figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    sizes = [row["references"] for row in scale]
    for stage in ("features", "search", "verify", "total"):
        ax.plot(
            sizes,
            [row["latency_ms"][stage]["p50"] for row in scale],
            marker="o",
            label=f"imgmatch {stage} (approx.)",
        )
    ax.plot(
        sizes,
        [row["exact_search_ms"]["p50"] for row in scale],
        marker="s",
        linestyle="--",
        label="imgmatch search (exact)",
    )
    ax.plot(
        sizes,
        [row["bruteforce_ms"]["total"] for row in scale],
        marker="^",
        linestyle=":",
        label="brute-force ORB total",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="references in catalog",
        ylabel="median ms per listing",
        title="check latency vs catalog size",
    )
    ax.legend(fontsize=7)
    path = out / "latency_vs_catalog.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
