"""Scores on their own: the hash score's knees, the ORB score's discounts, the noisy-or, and the
names a verified geometry gets."""

from __future__ import annotations

import numpy as np
import pytest

from imgmatch.config import DetectorConfig
from imgmatch.fingerprint import VIEW_MIRRORED, VIEW_ORIGINAL
from imgmatch.geometry import Verification
from imgmatch.scoring import describe_geometry, hash_score, noisy_or, orb_score

CONFIG = DetectorConfig()


def test_a_hash_match_flags_alone_only_within_the_flag_distance() -> None:
    scores = [hash_score(d, CONFIG) for d in range(CONFIG.max_hamming_distance + 2)]
    assert scores[0] == 1.0
    assert scores[CONFIG.hash_only_flag_distance] == pytest.approx(0.6)
    assert all(s >= CONFIG.flag_threshold for s in scores[: CONFIG.hash_only_flag_distance + 1])
    assert all(
        0 < s < CONFIG.flag_threshold for s in scores[CONFIG.hash_only_flag_distance + 1 : -1]
    )
    assert scores[CONFIG.max_hamming_distance] == pytest.approx(0.5 / 7)
    assert scores[-1] == 0.0
    assert scores == sorted(scores, reverse=True)


def test_the_orb_score_reaches_one_half_at_score_half_inliers_and_discounts_weak_evidence() -> None:
    half = CONFIG.score_half_inliers
    assert orb_score(half, 1.0, 1.0, CONFIG) == pytest.approx(0.5)
    assert orb_score(half, CONFIG.min_inlier_ratio / 2, 1.0, CONFIG) == pytest.approx(1 / 3)
    assert orb_score(half, 1.0, CONFIG.min_box_area_ratio / 2, CONFIG) == pytest.approx(1 / 3)
    assert orb_score(2 * half, 1.0, 1.0, CONFIG) > orb_score(half, 1.0, 1.0, CONFIG)


@pytest.mark.parametrize(("first", "second"), [(0.0, 0.0), (0.6, 0.0), (0.6, 0.5), (1.0, 0.3)])
def test_noisy_or_never_lowers_either_score(first: float, second: float) -> None:
    combined = noisy_or(first, second)
    assert max(first, second) <= combined <= 1.0
    assert combined == pytest.approx(noisy_or(second, first))


def _verification(degrees: float, quad: list[list[float]]) -> Verification:
    angle = np.radians(degrees)
    transform = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]]
    )
    return Verification(20, 1.0, transform, np.array(quad, np.float64), np.ones(20, bool))


FULL = [[0, 0], [640, 0], [640, 480], [0, 480]]


@pytest.mark.parametrize(
    ("view", "degrees", "quad", "name"),
    [
        (VIEW_ORIGINAL, 0.0, FULL, "similar"),
        (VIEW_MIRRORED, 0.0, FULL, "mirrored"),
        (VIEW_ORIGINAL, 4.9, FULL, "similar"),
        (VIEW_ORIGINAL, -30.0, FULL, "rotated-30"),
        (VIEW_ORIGINAL, 0.0, [[-100, 0], [640, 0], [640, 480], [-100, 480]], "cropped"),
        (VIEW_ORIGINAL, 0.0, [[10, 10], [300, 10], [300, 200], [10, 200]], "embedded"),
    ],
)
def test_a_verified_geometry_is_named_by_what_it_shows(
    view: int, degrees: float, quad: list[list[float]], name: str
) -> None:
    assert describe_geometry(view, _verification(degrees, quad), 640, 480, CONFIG) == name
