"""The HTML report of a check run: one self-contained page a reviewer opens in a browser.

Flagged listings come first, each with its thumbnail (the matched regions boxed), the matched
reference's thumbnail, design, brand, score and evidence; then the clear listings, then the
files that failed or were skipped, with reasons. Thumbnails are small JPEGs re-encoded from
decoded pixels and embedded as data: URIs, never the input bytes. Paths are shown relative to
the report's folder when inside it, otherwise as a bare file name, so the page leaks nothing of
the machine's layout. Everything else from the input is escaped by the template engine.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment
from PIL import Image, ImageDraw

from imgmatch.checking import CheckSummary, ListingResult
from imgmatch.detector import Match
from imgmatch.errors import InvalidImageError
from imgmatch.images import load_image

THUMBNAIL_SIDE_PX = 360
THUMBNAIL_JPEG_QUALITY = 80
BOX_LINE_PX = 3
BOX_COLOURS = ("#e4002b", "#ff8c00", "#1e90ff", "#2e8b57")

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>imgmatch check report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
header { border-bottom: 2px solid #ccc; margin-bottom: 1rem; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.summary dt { font-weight: bold; }
section.listing { border: 1px solid #ddd; border-radius: 6px; padding: 0.8rem; margin: 1rem 0; }
section.flagged { border-left: 6px solid #e4002b; }
.pair { display: flex; gap: 1rem; flex-wrap: wrap; }
figure { margin: 0; }
figure img { max-width: 360px; border: 1px solid #ccc; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
.missing { color: #888; font-style: italic; }
</style>
</head>
<body>
<header>
<h1>imgmatch check report</h1>
<dl class="summary">
<dt>Listings checked</dt><dd>{{ summary.processed }}</dd>
<dt>Flagged</dt><dd>{{ summary.flagged }}</dd>
<dt>Failed</dt><dd>{{ summary.failed }}</dd>
<dt>Skipped</dt><dd>{{ skipped|length }}</dd>
<dt>Unsupported files (not opened)</dt><dd>{{ summary.unsupported }}</dd>
<dt>Flag threshold</dt><dd>{{ threshold }}</dd>
<dt>Catalog</dt><dd>{{ catalog }}</dd>
<dt>Generated</dt><dd>{{ generated }} (run took {{ elapsed }} s)</dd>
</dl>
</header>
<main>
<h2>Flagged listings ({{ flagged|length }})</h2>
{% for card in flagged %}
<section class="listing flagged">
<h3>{% if card.listing_id %}{{ card.listing_id }} &mdash; {% endif %}{{ card.path }}</h3>
<div class="pair">
<figure>
{% if card.thumbnail %}<img alt="listing" src="{{ card.thumbnail }}">
{% else %}<span class="missing">no thumbnail</span>{% endif %}
<figcaption>listing</figcaption></figure>
<figure>
{% if card.reference_thumbnail %}<img alt="reference" src="{{ card.reference_thumbnail }}">
{% else %}<span class="missing">reference image not available</span>{% endif %}
<figcaption>reference {{ card.reference_path }}</figcaption></figure>
</div>
<table>
<tr><th>design</th><th>brand</th><th>score</th><th>transform</th><th>box</th><th>evidence</th></tr>
{% for match in card.matches %}
<tr><td>{{ match.design }}</td><td>{{ match.brand }}</td><td>{{ "%.3f"|format(match.score) }}</td>
<td>{{ match.transform }}</td><td>{{ match.box|join(", ") if match.box else "-" }}</td>
<td>{{ match.evidence }}</td></tr>
{% endfor %}
</table>
{% if card.extra %}<dl>
{% for key, value in card.extra.items() %}<dt>{{ key }}</dt><dd>{{ value }}</dd>{% endfor %}
</dl>{% endif %}
</section>
{% endfor %}
<h2>Clear listings ({{ clear|length }})</h2>
<table>
<tr><th>listing</th><th>path</th><th>best design (score)</th></tr>
{% for card in clear %}
<tr><td>{{ card.listing_id or "" }}</td><td>{{ card.path }}</td>
<td>{% if card.matches %}{{ card.matches[0].design }}
({{ "%.3f"|format(card.matches[0].score) }}){% else %}-{% endif %}</td></tr>
{% endfor %}
</table>
<h2>Failed and skipped files ({{ failed|length + skipped|length }})</h2>
<table>
<tr><th>listing</th><th>path</th><th>reason</th><th>detail</th></tr>
{% for card in failed %}
<tr><td>{{ card.listing_id or "" }}</td><td>{{ card.path }}</td>
<td>{{ card.reason }}</td><td>{{ card.detail }}</td></tr>
{% endfor %}
{% for item in skipped %}
<tr><td></td><td>{{ item.path }}</td><td>skipped</td><td>{{ item.reason }}</td></tr>
{% endfor %}
</table>
</main>
</body>
</html>
"""

_environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class _Card:
    listing_id: str | None
    path: str
    matches: tuple[Match, ...]
    extra: dict[str, str]
    thumbnail: str | None = None
    reference_thumbnail: str | None = None
    reference_path: str = ""
    reason: str = ""
    detail: str = ""


def display_path(path: str | Path, base: Path) -> str:
    """`path` relative to `base` when inside it, else only its file name."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(base):
        return resolved.relative_to(base).as_posix()
    return Path(path).name


def render_html(items: Sequence[ListingResult], summary: CheckSummary, base: Path) -> str:
    """The report page for `items`, with paths shown relative to `base` (the report's folder)."""
    base = base.resolve()
    reference_thumbnails: dict[int, str | None] = {}
    flagged, clear, failed = [], [], []
    for item in items:
        result = item.result
        path = display_path(item.listing.path, base)
        card = _Card(item.listing.listing_id, path, result.matches, item.listing.extra)
        if result.status == "error":
            # Decoder messages start with the path as given: show the report's form of it.
            detail = (result.error or "").replace(str(item.listing.path), path)
            failed.append(replace(card, reason=result.error_type or "error", detail=detail))
        elif result.flagged and result.top is not None:
            top = result.top
            if top.reference_id not in reference_thumbnails:
                reference_thumbnails[top.reference_id] = _thumbnail(Path(top.reference_path), ())
            boxes = tuple(m.box for m in result.matches if m.box is not None)
            flagged.append(
                replace(
                    card,
                    thumbnail=_thumbnail(item.listing.path, boxes, result.width),
                    reference_thumbnail=reference_thumbnails[top.reference_id],
                    reference_path=display_path(top.reference_path, base),
                )
            )
        else:
            clear.append(card)
    flagged.sort(key=lambda card: -card.matches[0].score)
    threshold = summary.threshold
    return _environment.from_string(_TEMPLATE).render(
        summary=summary,
        threshold="-" if math.isnan(threshold) else f"{threshold:.2f}",
        catalog=display_path(summary.catalog, base),
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        elapsed=f"{summary.elapsed_s:.1f}",
        flagged=flagged,
        clear=clear,
        failed=failed,
        skipped=[{"path": display_path(s.path, base), "reason": s.reason} for s in summary.skipped],
    )


def _thumbnail(
    path: Path, boxes: Sequence[tuple[int, int, int, int]], original_width: int | None = None
) -> str | None:
    """A small JPEG data: URI of the image at `path` with `boxes` (in the file's pixels) drawn;
    None when the file cannot be decoded any more."""
    try:
        pixels = load_image(path)
    except (InvalidImageError, OSError):
        return None
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX))
    factor = image.width / (original_width or pixels.shape[1])
    draw = ImageDraw.Draw(image)
    for number, box in enumerate(boxes):
        draw.rectangle(
            [round(v * factor) for v in box],
            outline=BOX_COLOURS[number % len(BOX_COLOURS)],
            width=BOX_LINE_PX,
        )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
