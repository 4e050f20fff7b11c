"""Building and searching the FAISS binary indexes (in memory; `index_files` writes them).

One index per hasher for the 64-bit hash codes (exact Hamming range search), one for the 256-bit
ORB descriptors (kNN; exact while that is fast, IVF beyond).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from imgmatch.catalog.ids import hash_entry_ids
from imgmatch.config import SearchConfig
from imgmatch.features import DESCRIPTOR_BYTES
from imgmatch.hashing import HASH_BITS

HASH_CODE_BYTES = HASH_BITS // 8


def new_hash_index() -> Any:
    """An empty exact index of 64-bit codes that keeps the catalog's ids."""
    return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(HASH_BITS))


def hash_indexes_from_rows(rows: Sequence[Any]) -> dict[str, Any]:
    """One FAISS index per hasher from stored (reference id, hasher, code) rows; a code holds
    one 8-byte hash per variant (one for references stored before schema 3, else 8)."""
    by_hasher: dict[str, tuple[list[NDArray[np.int64]], list[bytes]]] = {}
    for reference_id, hasher, code in rows:
        ids, codes = by_hasher.setdefault(hasher, ([], []))
        ids.append(hash_entry_ids(reference_id, len(code) // HASH_CODE_BYTES))
        codes.append(code)
    indexes = {}
    for hasher, (ids, codes) in by_hasher.items():
        index = new_hash_index()
        index.add_with_ids(
            np.frombuffer(b"".join(codes), np.uint8).reshape(-1, HASH_CODE_BYTES),
            np.concatenate(ids),
        )
        indexes[hasher] = index
    return indexes


def new_descriptor_index(config: SearchConfig, training: NDArray[np.uint8]) -> Any:
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


def apply_search_parameters(index: Any, config: SearchConfig) -> None:
    """Probes are not stored in an index file: set them on every index built or read."""
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = config.ivf_probes


def is_ivf(index: Any) -> bool:
    return isinstance(index, faiss.IndexBinaryIVF)


def descriptor_index_kind(index: Any) -> str:
    """ "flat", or "ivf<lists>"."""
    if isinstance(index, faiss.IndexBinaryIVF):
        return f"ivf{index.nlist}"
    return "flat"


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
