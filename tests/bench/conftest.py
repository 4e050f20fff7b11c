"""Fixtures of the benchmark tests: a tiny quick set (few references, one copy per attack)."""

from __future__ import annotations

import pytest

from imgmatch.bench.samples_set import SampleSet, quick_set


@pytest.fixture(scope="session")
def tiny_set() -> SampleSet:
    return quick_set(
        3,
        references_per_attack=1,
        generated_distractors=4,
        attacked_distractors=2,
        max_references=3,
    )
