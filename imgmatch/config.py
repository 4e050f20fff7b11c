"""Every threshold and size the pipeline uses, in one frozen object, named with its unit."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class ImageLimits:
    """What `load_image` accepts."""

    max_image_pixels: int = 40_000_000
    # What one decoded image may take in memory: pixels times the bytes Pillow keeps per pixel
    # in the file's mode (1 for gray or palette, 2 for 16-bit gray, 4 for colour, alpha,
    # 32-bit integer and float), measured at the size the decoder produces (a JPEG's reduced
    # size). The default admits a 40-megapixel image in any mode; lower it to bound memory.
    max_decoded_bytes: int = 160_000_000
    max_file_bytes: int = 50 * 1024 * 1024
    min_side_px: int = 32
    # A listing whose gray levels barely vary has no content to match: refuse it outright so a
    # blank or single-colour image can never be flagged.
    min_gray_stddev: float = 2.0
    # The working size: an image whose long side is more than twice this is reduced by a whole
    # factor to a long side between this and twice this, JPEGs while libjpeg decodes them
    # (scaling by 1/2, 1/4 or 1/8), other formats right after decoding, before any other copy.
    # ORB works at 640 to 1,024 px and hashes at 512, so nothing they use is lost.
    decode_side_px: int = 1024


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the hash path, the ORB path, verification and scoring."""

    # Hash path: 64-bit perceptual hashes.
    hashers: tuple[str, ...] = ("phash", "dhash")
    max_hamming_distance: int = 10
    # Within this many bits a hash match alone flags (score >= 0.5); farther, up to
    # max_hamming_distance, it only adds to ORB evidence. Apparel shot on white differs by 8-10
    # bits between unrelated products, and a reused photo verifies with ORB as well.
    hash_only_flag_distance: int = 4

    # ORB path: features on a normalised gray image whose long side is this many pixels.
    feature_side_px: int = 640
    orb_features: int = 1000
    # Listings keep up to this much of their resolution (see FeatureExtractor), with more
    # features to cover it.
    listing_max_side_px: int = 1024
    listing_orb_features: int = 1500
    # ORB detects this many times the features wanted, then keeps them spread over a grid of
    # orb_grid_cells x orb_grid_cells: orb_grid_share of the budget is shared out per cell, the
    # rest goes to the strongest.
    orb_oversampling: int = 3
    orb_grid_cells: int = 8
    orb_grid_share: float = 0.5
    orb_scale_factor: float = 1.2
    orb_levels: int = 8
    # Polished metal has few corners; a low FAST threshold keeps enough of them.
    orb_fast_threshold: int = 10
    orb_edge_threshold_px: int = 15
    clahe_clip_limit: float = 2.0
    # OpenCV's thread pool is process-wide. imgmatch runs images side by side (worker
    # processes, concurrent requests), so one thread per image: a second thread inside one
    # image cost more CPU than it saved wall time on 2 cores.
    opencv_threads: int = 1
    # References are also indexed mirrored, so a mirrored crop or collage is still caught.
    index_mirrored_references: bool = True
    # A reference needs this many ORB features that differ by more than
    # distinct_feature_bits from every other feature of the same photo. A gradient, a ramp or a
    # line has no features, a checkerboard only repeats of one corner, and the hashes of such
    # images match any other plain image. Bundled references and shared-dataset photos have 69
    # or more (745 photos); generated gradients, ramps, lines and checkerboards 2 or fewer: 12
    # is about 6x from either side.
    min_distinct_reference_features: int = 12
    distinct_feature_bits: int = 40

    # Candidate search.
    knn_neighbours: int = 5
    max_descriptor_distance_bits: int = 64
    ratio_test: float = 0.85
    max_candidates: int = 8
    min_votes: int = 6

    # Geometric verification.
    ransac_reprojection_px: float = 6.0
    # RANSAC stops after this many iterations, or sooner once it is this sure that no better
    # model exists; a candidate's few hundred correspondences rarely need more than a few dozen.
    ransac_max_iterations: int = 2000
    ransac_confidence: float = 0.995
    # A homography has more freedom than a similarity: it replaces the similarity only when it
    # explains this many times as many inliers.
    homography_min_inlier_gain: float = 1.1
    # A reference shrunk below 1/max_area_scale of its area, or blown up beyond max_area_scale
    # times, is no real copy.
    max_area_scale: float = 400.0
    # The mapped outline's longest over shortest side may exceed the reference's own aspect ratio
    # by at most this factor: beyond, extreme perspective or a collapsed side.
    max_side_ratio_over_aspect: float = 8.0
    min_inliers: int = 12
    min_inlier_ratio: float = 0.2
    # A weaker design whose inliers lie this much inside a stronger design's verified
    # reference frame is explained by that reference, and dropped.
    max_explained_share: float = 0.8
    # A verified region smaller than this share of the listing is too small to be evidence.
    min_box_area_ratio: float = 0.005

    # Scoring: the ORB score is inliers / (inliers + score_half_inliers), so at this many inliers
    # the ORB evidence alone reaches 0.5.
    score_half_inliers: int = 12
    # The hash score falls linearly from 1 at 0 bits to this at hash_only_flag_distance bits (a
    # hash match alone flags), then from below hash_score_beyond_flag_max towards 0 at
    # max_hamming_distance + 1 bits (a looser hash match alone stays under the 0.5 default
    # threshold and only adds to ORB evidence).
    hash_score_at_flag_distance: float = 0.6
    hash_score_beyond_flag_max: float = 0.5
    flag_threshold: float = 0.5

    # How a verified geometry is named in the evidence (`transform`): rotated from this angle
    # on, cropped when the reference's outline overhangs the listing by more than this share of
    # its width or height, embedded when its box covers less than this share of the listing.
    rotated_min_degrees: float = 5.0
    cropped_min_overhang_share: float = 0.05
    embedded_max_area_share: float = 0.6

    def with_overrides(self, **overrides: Any) -> DetectorConfig:
        """Return a copy with the named fields replaced; unknown names raise `TypeError`."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown DetectorConfig fields: {sorted(unknown)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class SearchConfig:
    """How the descriptor index is chosen and searched."""

    # Up to this many descriptors an exact flat index is fast enough (a listing's 1,000
    # descriptors against 20,000 take a few ms); beyond, an inverted-file (IVF) index.
    exact_search_max_descriptors: int = 20_000
    # IVF: about this many descriptors per list (midway to the next retrain), at least
    # ivf_min_lists lists.
    ivf_list_size: int = 128
    ivf_min_lists: int = 64
    # A query costs the quantizer (below) plus the list it probes. One probe of short lists
    # finds fewer of the exact nearest neighbours than more probes of longer ones, at a
    # fraction of the time: votes need some, not all, of the true matches
    # (`python -m imgmatch.bench.quick` times the search and counts the copies still flagged).
    ivf_probes: int = 1
    # Lists are found through a second, small inverted file over sqrt(lists) top centroids.
    # Its probes are as many as compare a descriptor with at least this many list centroids:
    # 10 top lists for the 32 bundled references, 2 at 1,000 references, 1 near 65,536 lists;
    # a small catalog's few, coarse top lists would otherwise assign descriptors to poor lists.
    # Descriptors are assigned with the same probes as queries, so both share its errors.
    ivf_quantizer_candidates: int = 256
    # From this many lists up (about 6,000 references), the centroids are found through two
    # small inverted files instead of one, each probed once: with sqrt(lists) top centroids,
    # finding the list cost as much as scanning it. It finds somewhat fewer exact neighbours.
    ivf_deep_quantizer_lists: int = 65_536
    # Rebuild the IVF index (new centroids, new list count) when the catalog grew this much.
    ivf_retrain_growth: float = 2.0
    faiss_threads: int = 1
    # FAISS index files larger than this are refused rather than deserialised.
    max_index_file_bytes: int = 8 * 1024**3
