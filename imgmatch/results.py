"""What a check returns: `Match` (one design found in a listing) and `CheckResult` (one listing),
and their JSON form (contract C4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from imgmatch.errors import InvalidImageError
from imgmatch.geometry import Box


@dataclass(frozen=True)
class Match:
    """One protected design found in a listing, with the best reference photo as evidence."""

    reference_id: int
    reference_path: str
    design: str
    brand: str
    score: float
    hash_distance: int | None
    inliers: int
    inlier_ratio: float
    transform: str
    box: Box | None
    evidence: str
    # Verified correspondences (reference x, y, listing x, y), for drawing; not in C4 output.
    correspondences: tuple[tuple[float, float, float, float], ...] = field(default=(), repr=False)

    def to_dict(self, *, correspondences: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["box"] = list(self.box) if self.box is not None else None
        data["score"] = round(self.score, 4)
        data["inlier_ratio"] = round(self.inlier_ratio, 4)
        if correspondences:
            data["correspondences"] = [[round(v, 1) for v in c] for c in self.correspondences]
        else:
            del data["correspondences"]
        return data


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one listing photo (contract C4)."""

    path: str | None
    status: str
    flagged: bool
    matches: tuple[Match, ...]
    timing_ms: dict[str, float]
    threshold: float
    width: int | None = None
    height: int | None = None
    error: str | None = None
    error_type: str | None = None

    def to_dict(self, *, correspondences: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "status": self.status,
            "flagged": self.flagged,
            "matches": [m.to_dict(correspondences=correspondences) for m in self.matches],
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
        }
        if self.status == "ok":
            data["width"], data["height"] = self.width, self.height
        else:
            data["error"] = self.error
            data["error_type"] = self.error_type
        return data

    @property
    def top(self) -> Match | None:
        return self.matches[0] if self.matches else None


def error_result(path: str | None, error: InvalidImageError, decode_ms: float) -> CheckResult:
    """The `status: error` result for an input that could not be decoded."""
    return CheckResult(
        path=path,
        status="error",
        flagged=False,
        matches=(),
        timing_ms={"decode": decode_ms},
        threshold=math.nan,
        error=str(error),
        error_type=error.reason,
    )
