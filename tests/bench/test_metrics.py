"""Metric functions against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

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

TRUTH = {("a", "x"), ("b", "y")}


def test_uap_of_a_perfect_ranking_is_one() -> None:
    preds = [Prediction("a", "x", 0.9), Prediction("b", "y", 0.8), Prediction("c", "x", 0.1)]
    assert micro_average_precision(preds, TRUTH) == pytest.approx(1.0)


def test_uap_hand_worked_true_false_true() -> None:
    # Ranked T, F, T over 2 positives: (1/1 + 2/3) / 2.
    preds = [Prediction("a", "x", 0.9), Prediction("c", "x", 0.8), Prediction("b", "y", 0.7)]
    assert micro_average_precision(preds, TRUTH) == pytest.approx((1 + 2 / 3) / 2)


def test_uap_counts_unpredicted_positives_against_recall() -> None:
    assert micro_average_precision([Prediction("a", "x", 0.9)], TRUTH) == pytest.approx(0.5)


def test_uap_keeps_the_best_score_of_duplicate_predictions() -> None:
    preds = [Prediction("a", "x", 0.1), Prediction("a", "x", 0.9), Prediction("c", "x", 0.5)]
    assert micro_average_precision(preds, {("a", "x")}) == pytest.approx(1.0)


def test_uap_ties_rank_false_positives_first() -> None:
    preds = [Prediction("a", "x", 0.5), Prediction("c", "x", 0.5)]
    assert micro_average_precision(preds, {("a", "x")}) == pytest.approx(0.5)


def test_uap_of_a_random_ranking_is_near_the_positive_rate() -> None:
    rng = np.random.default_rng(0)
    truth = {(f"l{i}", "d") for i in range(100)}
    preds = [Prediction(f"l{i}", "d", float(rng.random())) for i in range(1000)]
    assert micro_average_precision(preds, truth) == pytest.approx(0.1, abs=0.05)


def test_recall_at_precision_hand_worked() -> None:
    preds = [
        Prediction("a", "x", 0.9),
        Prediction("c", "x", 0.8),
        Prediction("b", "y", 0.7),
    ]
    curve = precision_recall(preds, TRUTH)
    assert curve.precision == pytest.approx((1.0, 0.5, 2 / 3))
    assert curve.recall == pytest.approx((0.5, 0.5, 1.0))
    assert recall_at_precision(curve, 0.99) == (0.5, 0.9)
    assert recall_at_precision(curve, 0.6) == (1.0, 0.7)
    assert recall_at_precision(precision_recall([Prediction("c", "x", 1.0)], TRUTH), 0.5) == (
        0.0,
        None,
    )


def test_operating_point_and_false_flag_rate() -> None:
    preds = [Prediction("a", "x", 0.9), Prediction("n1", "x", 0.6), Prediction("b", "y", 0.4)]
    op = operating_point(preds, TRUTH, 0.5, negatives={"n1", "n2"})
    assert (op.true_positives, op.false_positives) == (1, 1)
    assert op.precision == 0.5 and op.recall == 0.5 and op.false_flag_rate == 0.5


def test_recall_by_group() -> None:
    preds = [Prediction("a", "x", 0.9), Prediction("b", "y", 0.2)]
    groups = {"a": "crop", "b": "paste"}
    assert recall_by_group(preds, TRUTH, groups, 0.5) == {"crop": 1.0, "paste": 0.0}
    assert recall_by_group(preds, TRUTH, groups, None) == {"crop": 0.0, "paste": 0.0}


def test_box_iou_hand_worked() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_percentiles() -> None:
    assert percentiles([1.0, 2.0, 3.0])["p50"] == 2.0
    assert math.isnan(percentiles([])["p99"])
