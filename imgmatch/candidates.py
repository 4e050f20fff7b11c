"""Which references a listing might copy: hash evidence, ORB votes, and the shortlist to verify.

- Hash evidence: the listing's perceptual hashes, range-searched among the references' hashes in
  all 8 flips/rotations. Every configured hasher must agree (same reference, same variant,
  within the radius): a reused photo.
- Votes: every listing descriptor's nearest reference descriptors; a ratio test against the
  nearest one of another design; one vote per surviving descriptor for its nearest reference
  view.
- Shortlist: hash candidates first, then the most-voted, up to `max_candidates`.

Each step returns frozen values; the order of candidates is part of the result (RANSAC's
outcome and ties between designs depend on it), so every step keeps a defined order.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog import DescriptorNeighbours, HashHit
from imgmatch.config import DetectorConfig
from imgmatch.geometry import MIN_MODEL_POINTS


@dataclass(frozen=True)
class HashEvidence:
    """The closest variant of one reference on which every hasher agreed; `distance` is the
    largest of the hashers' distances in bits."""

    reference_id: int
    distance: int
    variant: int


@dataclass(frozen=True)
class Votes:
    """The votes one reference view drew, in listing-descriptor order: for each, the listing
    descriptor (query), the reference keypoint it matched, and their distance in bits."""

    queries: NDArray[np.int64]
    keypoints: NDArray[np.int64]
    distances: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.queries)

    def closest_per_keypoint(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(reference keypoints, listing queries): one correspondence per reference keypoint,
        its closest vote (the first among equals), in the order each keypoint was first voted for.
        """
        position = np.arange(len(self.queries))
        # Grouped by keypoint, closest first, earliest first among equals.
        order = np.lexsort((position, self.distances, self.keypoints))
        sorted_keypoints = self.keypoints[order]
        leads = np.ones(len(order), dtype=bool)
        leads[1:] = sorted_keypoints[1:] != sorted_keypoints[:-1]
        chosen = order[leads]
        # np.unique lists keypoints in the same (ascending) order as `chosen`.
        _, first_vote = np.unique(self.keypoints, return_index=True)
        chosen = chosen[np.argsort(first_vote, kind="stable")]
        return self.keypoints[chosen], self.queries[chosen]


@dataclass(frozen=True)
class Candidate:
    """Everything found for one reference before verification: its hash evidence and, per
    reference view in the order of their first vote, the votes it drew."""

    reference_id: int
    hash: HashEvidence | None
    views: tuple[tuple[int, Votes], ...]

    @property
    def most_view_votes(self) -> int:
        return max((len(votes) for _, votes in self.views), default=0)


def min_view_votes(config: DetectorConfig) -> int:
    """Votes a reference view needs before it is worth verifying."""
    return max(MIN_MODEL_POINTS, config.min_inliers // 2)


def hash_evidence(hits: Sequence[HashHit], hashers: Sequence[str]) -> dict[int, HashEvidence]:
    """Per reference, in order of its first agreeing variant, its closest agreeing variant."""
    per_key: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for hit in hits:
        per_key[(hit.reference_id, hit.variant)][hit.hasher] = hit.distance
    found: dict[int, HashEvidence] = {}
    required = set(hashers)
    for (reference_id, variant), distances in per_key.items():
        if set(distances) != required:
            continue
        distance = max(distances.values())
        current = found.get(reference_id)
        if current is None or distance < current.distance:
            found[reference_id] = HashEvidence(reference_id, distance, variant)
    return found


def ratio_test(
    neighbours: DescriptorNeighbours, design_codes: NDArray[np.int64], config: DetectorConfig
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(queries whose nearest neighbour passes, every query's nearest distance).

    A query passes when its nearest reference descriptor is close and clearly closer than the
    nearest one of another design.
    """
    distances = neighbours.distances.astype(np.int64)
    reference_ids = neighbours.reference_ids
    if distances.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # A neighbour whose reference was removed since the search has no design: invalid. Only
    # known ids are looked up.
    known = (reference_ids >= 0) & (reference_ids < len(design_codes))
    codes = np.full(reference_ids.shape, -1, dtype=np.int64)
    codes[known] = design_codes[reference_ids[known]]
    valid = codes >= 0
    rows = np.arange(len(distances))
    other_design = valid & (codes != codes[:, :1])
    has_rival = other_design.any(axis=1)
    # Without a rival among the k neighbours, the k-th distance bounds the rival's.
    rival = np.where(
        has_rival,
        distances[rows, other_design.argmax(axis=1)],
        np.maximum(distances[:, -1], config.max_descriptor_distance_bits + 1),
    )
    best = distances[:, 0]
    passed = np.flatnonzero(
        valid[:, 0]
        & (best <= config.max_descriptor_distance_bits)
        & (best < config.ratio_test * rival)
    )
    return passed, best


def votes(
    neighbours: DescriptorNeighbours,
    design_codes: NDArray[np.int64],
    hashed: Mapping[int, HashEvidence],
    config: DetectorConfig,
) -> dict[int, dict[int, Votes]]:
    """Per reference and view, the votes of the descriptors passing the ratio test.

    Only what can matter is kept: the views of hashed references, and views with enough votes
    to shortlist or verify; a synthetic-heavy or large catalog scatters most votes one or two
    per reference. References come in the order of their first vote, views in the order of
    their first kept vote.
    """
    passed, best = ratio_test(neighbours, design_codes, config)
    if passed.size == 0:
        return {}
    reference_ids = neighbours.reference_ids[passed, 0]
    views = neighbours.views[passed, 0]
    # Group by (reference, view), keeping descriptor order inside a group.
    order = np.lexsort((passed, views, reference_ids))
    grouped_refs, grouped_views = reference_ids[order], views[order]
    changes = (grouped_refs[1:] != grouped_refs[:-1]) | (grouped_views[1:] != grouped_views[:-1])
    starts = np.flatnonzero(np.r_[True, changes])
    stops = np.r_[starts[1:], len(order)]
    enough = min(config.min_votes, min_view_votes(config))
    # A group's first member is its first vote (descriptor order is the last sort key).
    kept = [
        (int(order[start]), start, stop)
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True)
        if stop - start >= enough or int(grouped_refs[start]) in hashed
    ]
    unique_refs, first_of_reference = np.unique(reference_ids, return_index=True)
    first_vote = dict(zip(unique_refs.tolist(), first_of_reference.tolist(), strict=True))
    kept.sort(key=lambda group: (first_vote[int(grouped_refs[group[1]])], group[0]))
    keypoints = neighbours.keypoints[passed, 0]
    distances = best[passed]
    found: dict[int, dict[int, Votes]] = {}
    for _, start, stop in kept:
        members = order[start:stop]
        per_view = found.setdefault(int(grouped_refs[start]), {})
        per_view[int(grouped_views[start])] = Votes(
            passed[members], keypoints[members], distances[members]
        )
    return found


def shortlist(
    hashed: Mapping[int, HashEvidence],
    voted: Mapping[int, Mapping[int, Votes]],
    config: DetectorConfig,
) -> tuple[Candidate, ...]:
    """The candidates worth verifying: every hashed reference and every reference with a view
    of at least `min_votes` votes; hashed ones first, then by their best view's votes (stable:
    among equals, hashed references in hash order, then the others in order of first vote)."""
    order = [*hashed, *(reference_id for reference_id in voted if reference_id not in hashed)]
    candidates = [
        Candidate(
            reference_id,
            hashed.get(reference_id),
            tuple(voted.get(reference_id, {}).items()),
        )
        for reference_id in order
    ]
    eligible = [
        c for c in candidates if c.hash is not None or c.most_view_votes >= config.min_votes
    ]
    eligible.sort(key=lambda c: (int(c.hash is not None), c.most_view_votes), reverse=True)
    return tuple(eligible[: config.max_candidates])


def split_neighbours(
    neighbours: DescriptorNeighbours, counts: Sequence[int]
) -> list[DescriptorNeighbours]:
    """One search's rows cut back into consecutive listings of `counts` descriptors each."""
    bounds = np.cumsum([0, *counts])
    return [
        DescriptorNeighbours(
            neighbours.distances[start:stop],
            neighbours.reference_ids[start:stop],
            neighbours.views[start:stop],
            neighbours.keypoints[start:stop],
        )
        for start, stop in itertools.pairwise(bounds.tolist())
    ]
