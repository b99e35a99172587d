"""Deduplication: exact copies, near-duplicate images and texts, and test-set leaks.

``exact_dedup`` hashes every row into a thin frame, shuffles only that frame so equal
rows meet, keeps the (dropped -> kept) pairs on the workers and rejects them in a last
map. The near-duplicate stages chain shapes the same way: map every row to a signature
-> thin rows of its LSH band keys (one row per band, no signature) grouped by band key
-> the rows of shared buckets fetch their signatures (a shuffle to the records'
partitions) -> group by band key again so candidates meet -> verify candidates ->
connected components by rounds of groups by node (large-star and small-star steps; in
one task when the verifying pass counted few close pairs) ->
the dropped rows shuffled to their partitions -> map that drops every member of a
cluster but one. Which member stays is a deterministic rule: the best
``quality`` value when one is named, then the lowest id. ``decontaminate`` indexes a
reference source (a test split) in a fit and drops rows that match it.

The modules: ``keep`` (which copy stays), ``drop`` (the last pass that rejects or groups
the dropped rows), ``exact``, ``signers`` (perceptual hashes, MinHash), ``candidates``
(band buckets and verified pairs), ``components``, ``near`` (what the near stages
share), ``images``, ``text`` and ``decontaminate``. Importing the package registers the
stages.
"""

from dsbuild.stages.dedup.candidates import (
    EDGE_COLUMNS,
    add_counts,
    band_rows,
    comparison_counts,
    leader_pairs,
    shared_buckets,
    signatures,
    verify_buckets,
    with_payloads,
)
from dsbuild.stages.dedup.components import count_moved, edge_links, star_drops
from dsbuild.stages.dedup.decontaminate import (
    Decontaminate,
    DecontaminateOptions,
    ReferenceIndex,
)
from dsbuild.stages.dedup.drop import (
    _drop_routed,
    add_cluster_stats,
    cluster_stats,
    spread_text,
)
from dsbuild.stages.dedup.exact import (
    IMAGE_META_SUFFIXES,
    ExactDedup,
    ExactDedupOptions,
    duplicates_in_groups,
    segment_argmin,
    sort_by_hash,
)
from dsbuild.stages.dedup.images import (
    NearDedupImages,
    NearDedupImagesOptions,
    scored_pairs,
    with_first_thumbnails,
)
from dsbuild.stages.dedup.keep import (
    Deduplicator,
    KeepRule,
    arrow_ids,
    ids_of_keys,
    keeper_order,
    node_keys,
    padded_order,
)
from dsbuild.stages.dedup.near import (
    ONE_TASK_EDGES,
    SHUFFLE_PARTITION_BYTES,
    NearDedupOptions,
    column_bytes,
    shuffle_partitions,
)
from dsbuild.stages.dedup.signers import ImageSigner, TextSigner, joined_text
from dsbuild.stages.dedup.text import NearDedupText, NearDedupTextOptions

__all__ = [
    "EDGE_COLUMNS",
    "IMAGE_META_SUFFIXES",
    "ONE_TASK_EDGES",
    "SHUFFLE_PARTITION_BYTES",
    "Decontaminate",
    "DecontaminateOptions",
    "Deduplicator",
    "ExactDedup",
    "ExactDedupOptions",
    "ImageSigner",
    "KeepRule",
    "NearDedupImages",
    "NearDedupImagesOptions",
    "NearDedupOptions",
    "NearDedupText",
    "NearDedupTextOptions",
    "ReferenceIndex",
    "TextSigner",
    "_drop_routed",
    "add_cluster_stats",
    "add_counts",
    "arrow_ids",
    "band_rows",
    "cluster_stats",
    "column_bytes",
    "comparison_counts",
    "count_moved",
    "duplicates_in_groups",
    "edge_links",
    "ids_of_keys",
    "joined_text",
    "keeper_order",
    "leader_pairs",
    "node_keys",
    "padded_order",
    "scored_pairs",
    "segment_argmin",
    "shared_buckets",
    "shuffle_partitions",
    "signatures",
    "sort_by_hash",
    "spread_text",
    "star_drops",
    "verify_buckets",
    "with_first_thumbnails",
    "with_payloads",
]
