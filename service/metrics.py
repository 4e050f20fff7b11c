"""Prometheus metrics in the text exposition format (version 0.0.4), kept in process.

A few counters and one histogram need no client library: a lock and dictionaries suffice.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

# Check stages take milliseconds to seconds on a laptop CPU.
STAGE_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """Requests, check latency by stage, errors by type; the catalog size is read when scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._errors: dict[str, int] = defaultdict(int)
        self._stage_buckets: dict[str, list[int]] = {}
        self._stage_sum: dict[str, float] = defaultdict(float)
        self._stage_count: dict[str, int] = defaultdict(int)
        self.catalog_size: Callable[[], int | None] = lambda: None

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] += 1

    def stages(self, timing_ms: dict[str, float]) -> None:
        """Record one check's stage timings (milliseconds, as in C4) and their total."""
        seconds = {name: ms / 1000 for name, ms in timing_ms.items()}
        seconds["total"] = sum(seconds.values())
        with self._lock:
            for stage, value in seconds.items():
                buckets = self._stage_buckets.setdefault(stage, [0] * len(STAGE_BUCKETS_S))
                # Cumulative buckets: every bound at or above the value counts it.
                for i in range(bisect.bisect_left(STAGE_BUCKETS_S, value), len(buckets)):
                    buckets[i] += 1
                self._stage_sum[stage] += value
                self._stage_count[stage] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP imgmatch_http_requests_total HTTP requests by method, route and status.",
                "# TYPE imgmatch_http_requests_total counter",
            ]
            for (method, route, status), value in sorted(self._requests.items()):
                labels = _labels(method=method, route=route, status=status)
                lines.append(f"imgmatch_http_requests_total{labels} {value}")
            lines += [
                "# HELP imgmatch_errors_total Errors by type (refused requests, bad images, 5xx).",
                "# TYPE imgmatch_errors_total counter",
            ]
            for kind, value in sorted(self._errors.items()):
                lines.append(f"imgmatch_errors_total{_labels(type=kind)} {value}")
            lines += [
                "# HELP imgmatch_check_stage_seconds Time per listing photo in each check stage.",
                "# TYPE imgmatch_check_stage_seconds histogram",
            ]
            for stage, buckets in sorted(self._stage_buckets.items()):
                for bound, value in zip(STAGE_BUCKETS_S, buckets, strict=True):
                    labels = _labels(stage=stage, le=repr(bound))
                    lines.append(f"imgmatch_check_stage_seconds_bucket{labels} {value}")
                count = self._stage_count[stage]
                lines.append(
                    f"imgmatch_check_stage_seconds_bucket{_labels(stage=stage, le='+Inf')} {count}"
                )
                lines.append(
                    f"imgmatch_check_stage_seconds_sum{_labels(stage=stage)} "
                    f"{self._stage_sum[stage]:.6f}"
                )
                lines.append(f"imgmatch_check_stage_seconds_count{_labels(stage=stage)} {count}")
        size = self.catalog_size()
        lines += [
            "# HELP imgmatch_catalog_references Reference photos in the catalog.",
            "# TYPE imgmatch_catalog_references gauge",
        ]
        if size is not None:
            lines.append(f"imgmatch_catalog_references {size}")
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"
