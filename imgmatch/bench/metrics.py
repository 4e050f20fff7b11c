"""Detection metrics computed from predictions only: (listing, design, score) triples.

Micro average precision (uAP) follows the 2021 Image Similarity Challenge: every prediction of
every listing is ranked globally by score; AP is the sum over the ranking of precision times the
recall gained at each step, where recall counts against ALL ground-truth (listing, design) pairs,
predicted or not. A listing predicted twice for one design keeps its best score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Prediction:
    """A method's claim that `listing` shows `design`, with a score (higher: surer)."""

    listing: str
    design: str
    score: float
    box: Box | None = None


@dataclass(frozen=True)
class PrecisionRecall:
    """The global ranking as a curve: after the i-th prediction, precision[i] and recall[i]."""

    scores: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    positives: int


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    true_positives: int
    false_positives: int
    false_flag_rate: float


def best_per_pair(predictions: Iterable[Prediction]) -> list[Prediction]:
    """One prediction per (listing, design): the highest-scoring one."""
    best: dict[tuple[str, str], Prediction] = {}
    for p in predictions:
        key = (p.listing, p.design)
        if key not in best or p.score > best[key].score:
            best[key] = p
    return list(best.values())


def _ranked_hits(
    predictions: Iterable[Prediction], truth: set[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    unique = best_per_pair(predictions)
    # Sort by score, best first; ties broken with false positives first (the pessimistic order),
    # so a method cannot gain from a constant score.
    hits = np.array([(p.listing, p.design) in truth for p in unique], dtype=bool)
    scores = np.array([p.score for p in unique], dtype=np.float64)
    order = np.lexsort((hits, -scores))
    return scores[order], hits[order]


def precision_recall(
    predictions: Iterable[Prediction], truth: set[tuple[str, str]]
) -> PrecisionRecall:
    """The precision/recall curve of the global ranking (recall over all of `truth`)."""
    scores, hits = _ranked_hits(predictions, truth)
    tp = np.cumsum(hits)
    ranks = np.arange(1, len(hits) + 1)
    positives = len(truth)
    precision = tp / ranks if len(ranks) else np.zeros(0)
    recall = tp / positives if positives else np.zeros(len(ranks))
    return PrecisionRecall(
        tuple(float(s) for s in scores),
        tuple(float(p) for p in precision),
        tuple(float(r) for r in recall),
        positives,
    )


def micro_average_precision(
    predictions: Iterable[Prediction], truth: set[tuple[str, str]]
) -> float:
    """uAP: sum of precision x recall gained, over the globally ranked predictions."""
    if not truth:
        return 0.0
    _, hits = _ranked_hits(predictions, truth)
    if not len(hits):
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    return float(np.sum(precision[hits]) / len(truth))


def recall_at_precision(curve: PrecisionRecall, target: float) -> tuple[float, float | None]:
    """The highest recall at a cut where precision is at least `target`, and that cut's score.

    Cuts fall only between distinct scores (a threshold cannot split a tie). Returns
    (0.0, None) where no cut reaches the precision.
    """
    best_recall, best_threshold = 0.0, None
    scores = curve.scores
    for i, (p, r) in enumerate(zip(curve.precision, curve.recall, strict=True)):
        if i + 1 < len(scores) and scores[i + 1] == scores[i]:
            continue
        if p >= target and r >= best_recall and r > 0:
            best_recall, best_threshold = r, scores[i]
    return best_recall, best_threshold


def operating_point(
    predictions: Sequence[Prediction],
    truth: set[tuple[str, str]],
    threshold: float,
    negatives: set[str],
) -> OperatingPoint:
    """Precision, recall and false-flag rate when everything scoring >= threshold is flagged.

    The false-flag rate is the share of `negatives` (listings showing no protected design) with
    at least one flagged prediction.
    """
    flagged = [p for p in best_per_pair(predictions) if p.score >= threshold]
    tp = sum((p.listing, p.design) in truth for p in flagged)
    fp = len(flagged) - tp
    flagged_negatives = {p.listing for p in flagged} & negatives
    return OperatingPoint(
        threshold=threshold,
        precision=tp / len(flagged) if flagged else 1.0,
        recall=tp / len(truth) if truth else 0.0,
        true_positives=tp,
        false_positives=fp,
        false_flag_rate=len(flagged_negatives) / len(negatives) if negatives else 0.0,
    )


def recall_by_group(
    predictions: Sequence[Prediction],
    truth: set[tuple[str, str]],
    groups: dict[str, str],
    threshold: float | None,
) -> dict[str, float]:
    """Recall at `threshold` per group of listings (e.g. per attack); `groups`: listing -> group.

    A None threshold (no cut reached the precision) gives recall 0 for every group.
    """
    found = {
        (p.listing, p.design) for p in predictions if threshold is not None and p.score >= threshold
    }
    totals: dict[str, int] = {}
    hits: dict[str, int] = {}
    for pair in truth:
        group = groups.get(pair[0], "other")
        totals[group] = totals.get(group, 0) + 1
        hits[group] = hits.get(group, 0) + int(pair in found)
    return {g: hits[g] / totals[g] for g in sorted(totals)}


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """p50/p95/p99 (by default) of `values`; NaN where there are none."""
    if not values:
        return {f"p{q}": float("nan") for q in points}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(array, q)) for q in points}
