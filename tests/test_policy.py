"""The policy: the flag threshold as its first rule, later rules that may lift a flag and say so,
and a detector whose verdicts come from the policy it is given while its evidence stays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from imgmatch.catalog import Catalog
from imgmatch.config import DetectorConfig
from imgmatch.detector import Detector
from imgmatch.images import load_image
from imgmatch.indexing import index_references
from imgmatch.policy import ListingContext, Policy, Verdict, threshold_policy
from imgmatch.results import Match


def match(design: str, score: float) -> Match:
    return Match(1, f"{design}.jpg", design, "Brand", score, None, 20, 0.8, "similar", None, "")


@dataclass(frozen=True)
class AuthorisedSeller:
    """Lifts a flag when the listing's seller may sell the best-matched design."""

    seller_id: str
    designs: frozenset[str]
    name: str = "authorised seller"

    def apply(self, matches: Sequence[Match], context: ListingContext, verdict: Verdict) -> Verdict:
        # A flag implies a best match; the seller may sell that design.
        if (
            verdict.flagged
            and context.seller_id == self.seller_id
            and matches[0].design in self.designs
        ):
            return replace(verdict, flagged=False, suppressed_by=self.name)
        return verdict


@pytest.mark.parametrize(
    ("scores", "flagged"),
    [((), False), ((0.49,), False), ((0.5,), True), ((0.9, 0.2), True), ((0.3, 0.9), False)],
)
def test_the_threshold_rule_flags_a_best_match_at_or_above_it(
    scores: tuple[float, ...], flagged: bool
) -> None:
    """Matches come best first: the first one decides, as the detector sorts them."""
    verdict = Policy(0.5).decide([match(f"D{i}", s) for i, s in enumerate(scores)])
    assert verdict == Verdict(flagged=flagged, threshold=0.5)


def test_a_later_rule_lifts_a_flag_and_says_which_rule_did() -> None:
    policy = Policy(0.5, (AuthorisedSeller("shop-1", frozenset({"D004"})),))
    matches = [match("D004", 0.9)]
    assert policy.decide(matches, ListingContext(seller_id="shop-1")) == Verdict(
        False, 0.5, "authorised seller"
    )
    assert policy.decide(matches, ListingContext(seller_id="shop-2")).flagged
    assert policy.decide(matches).flagged
    assert policy.decide([match("D005", 0.9)], ListingContext(seller_id="shop-1")).flagged


def test_the_stored_threshold_wins_over_the_configured_one() -> None:
    config = DetectorConfig(flag_threshold=0.5)
    assert threshold_policy(None, config) == Policy(0.5)
    assert threshold_policy("0.82", config) == Policy(0.82)


def test_a_detector_takes_its_verdict_from_its_policy_and_keeps_the_evidence(
    tmp_path: Path, bundled_references: Path
) -> None:
    references = tmp_path / "refs"
    references.mkdir()
    (references / "D004_0.jpg").write_bytes((bundled_references / "D004_0.jpg").read_bytes())
    listing = load_image(references / "D004_0.jpg")[30:, 20:]
    with Catalog(tmp_path / "catalog") as catalog:
        index_references(catalog, [references])
        default = Detector(catalog).check(listing)
        seller_rule = AuthorisedSeller("shop-1", frozenset({"D004_0"}))
        policy = Policy(default.threshold, (seller_rule,))
        lifted = Detector(catalog, policy=policy).check(
            listing, context=ListingContext(seller_id="shop-1")
        )
        strict = Detector(catalog, policy=Policy(1.01)).check(listing)
    # Without metadata, a reference's design is its file's stem.
    assert default.flagged and default.matches[0].design == "D004_0"
    assert not lifted.flagged and lifted.matches == default.matches
    assert not strict.flagged and strict.threshold == 1.01
    # The policy's threshold is also where the listed matches start by default.
    assert strict.matches == ()
