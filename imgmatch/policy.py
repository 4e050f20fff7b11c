"""The policy: from a listing's matches (the evidence) and its context to a verdict.

The detector says what a listing shows and how surely; the policy decides what to do about it.
Its first rule is the flag threshold: flagged when the best match scores at or above it (the
catalog's calibrated threshold where one is stored, else `DetectorConfig.flag_threshold`).
Further rules see the matches, the listing's context and the verdict so far, and may suppress a
flag, saying which rule did (an authorised seller, an allow-listed listing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from imgmatch.config import DetectorConfig
from imgmatch.results import Match

# The catalog setting that holds a calibrated flag threshold (`imgmatch calibrate` stores it).
THRESHOLD_SETTING = "flag_threshold"


@dataclass(frozen=True)
class ListingContext:
    """Where a listing photo comes from, as far as it is known: what rules may look at."""

    listing_id: str | None = None
    seller_id: str | None = None
    marketplace: str | None = None
    listing_url: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Verdict:
    """`flagged`: act on this listing. `suppressed_by` names the rule that lifted a flag the
    threshold had raised."""

    flagged: bool
    threshold: float
    suppressed_by: str | None = None


class Rule(Protocol):
    """A rule after the threshold: returns the verdict unchanged or a new one."""

    @property
    def name(self) -> str: ...

    def apply(
        self, matches: Sequence[Match], context: ListingContext, verdict: Verdict
    ) -> Verdict: ...


@dataclass(frozen=True)
class Policy:
    """The flag threshold, then `rules` in order."""

    threshold: float
    rules: tuple[Rule, ...] = ()

    def decide(self, matches: Sequence[Match], context: ListingContext | None = None) -> Verdict:
        """The verdict on a listing whose matches are `matches`, best first."""
        verdict = Verdict(
            flagged=bool(matches) and matches[0].score >= self.threshold,
            threshold=self.threshold,
        )
        for rule in self.rules:
            verdict = rule.apply(matches, context or ListingContext(), verdict)
        return verdict


def threshold_policy(stored_threshold: str | None, config: DetectorConfig) -> Policy:
    """The policy of today's catalogs: the stored (calibrated) threshold where there is one,
    else the configured default, and no further rule."""
    threshold = float(stored_threshold) if stored_threshold is not None else config.flag_threshold
    return Policy(threshold)
