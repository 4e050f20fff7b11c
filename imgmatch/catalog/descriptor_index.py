"""The index of the reference descriptors: kNN over 256-bit ORB descriptors.

Exact (flat) while that is fast, IVF beyond. FAISS holds the descriptors under
`ids.descriptor_id`s; this wrapper takes references' views and returns neighbours as
(reference id, view, keypoint).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.ids import descriptor_ids, split_descriptor_labels
from imgmatch.catalog.records import DescriptorNeighbours
from imgmatch.config import SearchConfig
from imgmatch.features import DESCRIPTOR_BYTES

# A removed reference: its id and its feature views' (view, descriptor count) pairs.
Removed = tuple[int, list[tuple[int, int]]]


class DescriptorIndex:
    """The reference descriptors, keyed by (reference id, view, keypoint)."""

    def __init__(self, index: Any, config: SearchConfig, trained_size: int) -> None:
        self.faiss: Any = index
        # How many descriptors it was built for: an IVF index is retrained once outgrown.
        self.trained_size = trained_size
        # Probes are not stored in an index file: set them on every index built or read.
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = config.ivf_probes

    @classmethod
    def build(
        cls, config: SearchConfig, descriptors: NDArray[np.uint8], ids: NDArray[np.int64]
    ) -> DescriptorIndex:
        """An index of `descriptors` under their FAISS `ids`, sized for their count."""
        index = cls(_new_faiss_index(config, descriptors), config, len(descriptors))
        if len(descriptors):
            index.faiss.add_with_ids(descriptors, ids)
        return index

    @property
    def size(self) -> int:
        """How many descriptors it holds."""
        return int(self.faiss.ntotal)

    @property
    def is_ivf(self) -> bool:
        return isinstance(self.faiss, faiss.IndexBinaryIVF)

    @property
    def kind(self) -> str:
        """ "flat", or "ivf<lists>"."""
        return f"ivf{self.faiss.nlist}" if self.is_ivf else "flat"

    def add(self, reference_id: int, view: int, descriptors: NDArray[np.uint8]) -> None:
        """Index one view's descriptors, in keypoint order."""
        if len(descriptors):
            self.faiss.add_with_ids(
                np.ascontiguousarray(descriptors, dtype=np.uint8),
                descriptor_ids(reference_id, view, len(descriptors)),
            )

    def remove(self, removed: Sequence[Removed]) -> None:
        """Take removed references' descriptors out: one scan of the index for all of them
        (each `remove_ids` scans it whole)."""
        ids = [
            descriptor_ids(reference_id, view, count)
            for reference_id, views in removed
            for view, count in views
            if count
        ]
        if ids:
            self.faiss.remove_ids(np.concatenate(ids))

    def nearest(self, descriptors: NDArray[np.uint8], k: int) -> DescriptorNeighbours:
        """The k nearest stored descriptors of every query descriptor, nearest first."""
        queries = np.ascontiguousarray(descriptors, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
        if self.size == 0 or len(queries) == 0:
            empty = np.full((len(queries), k), -1, dtype=np.int64)
            return DescriptorNeighbours(
                np.zeros((len(queries), k), np.int32), empty, empty.copy(), empty.copy()
            )
        distances, labels = search_in_list_order(self.faiss, queries, k)
        reference_ids, views, keypoints = split_descriptor_labels(labels)
        return DescriptorNeighbours(distances.astype(np.int32), reference_ids, views, keypoints)


def _new_faiss_index(config: SearchConfig, training: NDArray[np.uint8]) -> Any:
    """An empty descriptor index for a catalog of `training`'s size: exact (flat) while that is
    fast, else IVF with centroids sampled from `training`."""
    count = len(training)
    bits = DESCRIPTOR_BYTES * 8
    if count <= config.exact_search_max_descriptors:
        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(bits))
    # Centroids are a seeded sample of the catalog's own descriptors. Binary k-means costs
    # lists x points x iterations, minutes at catalog scale, and on ORB descriptors gave no
    # better recall than sampled centroids (test_catalog measures recall against exact).
    rng = np.random.default_rng(0)
    # The index serves the catalog until it has grown ivf_retrain_growth times: lists are
    # sized for the middle of that range, not for today's count.
    expected = count * (1 + config.ivf_retrain_growth) / 2
    lists = int(np.clip(expected // config.ivf_list_size, config.ivf_min_lists, count))
    centroids = np.ascontiguousarray(training[np.sort(rng.choice(count, lists, replace=False))])
    # Assigning a descriptor to its list compares it with every centroid; with tens of
    # thousands of lists that dominates both adding and searching. The centroids are
    # themselves found through small inverted files: one over sqrt(lists) top centroids,
    # or, for the largest catalogs, two levels over lists^(1/3) and lists^(2/3).
    deep = lists >= config.ivf_deep_quantizer_lists
    sizes = (
        [round(lists ** (1 / 3)), round(lists ** (2 / 3))]
        if deep
        else [max(config.ivf_min_lists // 4, int(np.sqrt(lists)))]
    )
    level_centroids = [centroids]
    for size in reversed(sizes):
        above = level_centroids[0]
        chosen = np.sort(rng.choice(len(above), size, replace=False))
        level_centroids.insert(0, np.ascontiguousarray(above[chosen]))
    quantizer: Any = faiss.IndexBinaryFlat(bits)
    quantizer.add(level_centroids[0])
    for level, members in enumerate(level_centroids[1:]):
        cells = len(level_centroids[level])
        ivf = faiss.IndexBinaryIVF(quantizer, bits, cells)
        ivf.is_trained = True
        # Probes are fixed before adding: descriptors and queries then share the
        # quantizer's errors. The shallow quantizer compares each descriptor with at least
        # ivf_quantizer_candidates centroids; the deep one probes one cell per level.
        ivf.nprobe = (
            1 if deep else max(1, math.ceil(config.ivf_quantizer_candidates * cells / len(members)))
        )
        # Each FAISS index points into the one below it; keep the Python wrapper alive.
        ivf.referenced_quantizer = quantizer  # type: ignore[attr-defined]
        ivf.add(members)
        quantizer = ivf
    index = faiss.IndexBinaryIVF(quantizer, bits, lists)
    index.is_trained = True
    index.referenced_quantizer = quantizer  # type: ignore[attr-defined]
    return index


def search_in_list_order(index: Any, queries: NDArray[np.uint8], k: int) -> tuple[Any, Any]:
    """`index.search(queries, k)`, with an IVF index's queries scanned in the order of the lists
    they probe.

    The lists are scattered over an index far larger than the CPU caches, and a batch's
    descriptors crowd into the same (long) lists: taken in list order, the queries probing one
    list follow each other and find it still in cache. The results are those of
    `index.search`; only the order of work changes.
    """
    # FAISS probes min(nprobe, nlist) lists but expects an assignment nprobe wide; with more
    # probes than lists, only its own search keeps the two consistent.
    if (
        not isinstance(index, faiss.IndexBinaryIVF)
        or len(queries) < 2
        or index.nprobe > index.nlist
    ):
        return index.search(queries, k)
    coarse_distances, lists = index.quantizer.search(queries, index.nprobe)
    order = np.argsort(lists[:, 0], kind="stable")
    found_distances, found_labels = index.search_preassigned(
        queries[order], k, lists[order], coarse_distances[order]
    )
    distances = np.empty_like(found_distances)
    labels = np.empty_like(found_labels)
    distances[order] = found_distances
    labels[order] = found_labels
    return distances, labels
