"""What the near-duplicate stages share: signatures -> band buckets -> verified pairs ->
components -> drop all but one, each shuffle by band key sized by the bytes it moves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dsbuild.kernels import unionfind
from dsbuild.stages.base import (
    KEY,
)
from dsbuild.stages.dedup.candidates import (
    _BAND_META,
    _BAND_PAYLOAD_META,
    _EDGE_META,
    _SHARED_META,
    _SIGNATURE_META,
    add_counts,
    band_rows,
    comparison_counts,
    shared_buckets,
    signatures,
    verify_buckets,
    with_payloads,
)
from dsbuild.stages.dedup.components import (
    _LINKS_META,
    _add,
    count_moved,
    edge_links,
    star_drops,
)
from dsbuild.stages.dedup.drop import (
    _DROPPED_META,
    _ROUTED,
    _drop_routed,
    _group_routed,
    add_cluster_stats,
    cluster_stats,
)
from dsbuild.stages.dedup.keep import Deduplicator, KeepRule

# Bytes a partition of a near-duplicate stage's shuffles by band key holds in memory, from
# which their partition count is chosen, rather than keeping the input's: that count's
# pieces (in x out) and tasks cost more than the rows. 50,000 texts took 41-43 s in 32
# input partitions (32 -> 32 shuffles) and 15-21 s in 8.
SHUFFLE_PARTITION_BYTES = 32 * 2**20
_BAND_KEY_BYTES = 8


def shuffle_partitions(size: float, input_partitions: int) -> int:
    """Partitions for a shuffle of ``size`` bytes (measured, summed over the partitions):
    one per ``SHUFFLE_PARTITION_BYTES``, never more than the input had."""
    return int(min(max(1, np.ceil(size / SHUFFLE_PARTITION_BYTES)), max(input_partitions, 1)))


def column_bytes(part: pd.DataFrame, state=None) -> pd.Series:
    """This partition's bytes in memory by column (objects counted deep), its rows in
    ``_rows``, and in ``_records`` the records they sign (a mirrored image signs twice)."""
    records = int((part["_variant"] == 0).sum()) if "_variant" in part.columns else len(part)
    return pd.concat([part.memory_usage(deep=True, index=False), pd.Series({"_rows": len(part), "_records": records})])


# Close pairs up to which a near-duplicate stage finds its components in one task: links
# of ~100 bytes, a few tens of MiB in the worker that takes them.
ONE_TASK_EDGES = 200_000


class NearDedupOptions(KeepRule):
    pass


class _NearDedup(Deduplicator):
    """Signatures -> band buckets -> verified pairs -> components -> drop all but one.

    Components come from shuffles, not from the driver: the verified edges become links
    between keys that sort as the keep rule does, alternating large-star and small-star
    steps (:mod:`dsbuild.kernels.unionfind`) turn each component into a star around its
    keeper, and each dropped row's (row, kept id) goes back to its partition by a shuffle,
    as in ``exact_dedup``. Only counts reach the driver: the links moved by each step
    (a path of 2,000 nodes settles in 10 rounds), the bytes the signatures and shared
    band rows take (which set the shuffles by band key's partition counts), and the
    summary's sums.
    """

    shape = "chain"
    payload_dtype: Any = np.uint64

    def signer(self, meta: pd.DataFrame):
        raise NotImplementedError

    def build(self, frame, shapes):
        signer = self.signer(frame._meta)
        quality = self.keep_quality()
        signed = shapes.persist(shapes.map(frame, signatures, signer, quality, meta=_SIGNATURE_META, label=f"{self.ctx.name}-signatures"))
        sizes = shapes.fit(signed, column_bytes, _add, label=f"{self.ctx.name}-sizes")
        rows = max(int(sizes["_rows"]), 1)
        self.signed_ = int(sizes["_records"])
        band_row = (sizes.drop(["_rows", "_records", "_payload"]).sum() / rows) + _BAND_KEY_BYTES
        bands = shapes.map(signed, band_rows, signer, self.payload_dtype, meta=_BAND_META, label=f"{self.ctx.name}-bands")
        shared = shapes.persist(shapes.group(bands, "_band_key", shared_buckets, meta=_SHARED_META, label=f"{self.ctx.name}-shared",
                                             npartitions=shuffle_partitions(rows * signer.band_count * band_row, frame.npartitions)))
        shared_rows = shapes.fit(shared, lambda p, s: len(p), _add, label=f"{self.ctx.name}-shared-rows")
        exploded = shapes.map(signed, with_payloads, shapes.route(shared, "_partition", like=signed), meta=_BAND_PAYLOAD_META,
                              label=f"{self.ctx.name}-payloads")
        edges = shapes.group(
            exploded,
            lambda p: p["_band_key"],
            lambda p: verify_buckets(p.drop(columns=[KEY]), signer, self.payload_dtype),
            meta=_EDGE_META,
            label=f"{self.ctx.name}-buckets",
            npartitions=shuffle_partitions(shared_rows * (band_row + sizes["_payload"] / rows), frame.npartitions),
        )
        edges = self.checked(frame, shapes, shapes.persist(edges))
        self.comparisons_ = shapes.fit(edges, comparison_counts, add_counts, label=f"{self.ctx.name}-comparisons")
        dropped = shapes.persist(self.components(shapes, edges))
        self.clusters_ = shapes.fit(dropped, cluster_stats, add_cluster_stats, label=f"{self.ctx.name}-clusters")
        routed = shapes.route(dropped[_ROUTED], "_partition", like=frame)
        if self.options.action == "group":
            return shapes.map(frame, _group_routed, routed, self.options.group_column, label=self.ctx.name)
        return shapes.map(frame, _drop_routed, routed, label=self.ctx.name)

    def keep_quality(self):
        """What ranks a cluster's copies for the keep rule: its quality column (or None)."""
        return self.options.quality

    def checked(self, frame, shapes, edges):
        """The verified edges that stand (images check some on the pictures)."""
        return edges

    def components(self, shapes, edges):
        """Dropped rows (``_DROPPED_META``) of the components of ``edges``: rounds of a
        large-star and a small-star step, each a shuffle by node, until neither moves a link.

        Where the verifying pass counted few close pairs (an upper bound of the edges: a
        pair counts in every band it shares), the links meet in one task, whose
        connected components make the same stars at once: each round cost two shuffles
        and two computes, most of a small job's time in this stage."""
        links = shapes.map(edges, edge_links, self.options, meta=_LINKS_META, label=f"{self.ctx.name}-links")
        if self.comparisons_[1] <= ONE_TASK_EDGES:
            return shapes.whole(links, lambda p: star_drops(unionfind.local_stars(p), self.options), meta=_DROPPED_META,
                                label=f"{self.ctx.name}-stars")
        while True:
            doubled = shapes.map(links, unionfind.both_ways, meta=_LINKS_META, label=f"{self.ctx.name}-both-ways")
            links = shapes.persist(shapes.group(doubled, "u", unionfind.large_star, meta=_LINKS_META, label=f"{self.ctx.name}-large-star"))
            moved = shapes.fit(links, count_moved, _add, label=f"{self.ctx.name}-moved")
            links = shapes.persist(shapes.group(links, "u", unionfind.small_star, meta=_LINKS_META, label=f"{self.ctx.name}-small-star"))
            if moved + shapes.fit(links, count_moved, _add, label=f"{self.ctx.name}-moved") == 0:
                return shapes.group(links, "v", lambda p: star_drops(p, self.options), meta=_DROPPED_META, label=f"{self.ctx.name}-stars")

    def summary(self) -> dict:
        c = getattr(self, "clusters_", None)
        if c is None:
            return {}
        # a bucket's rows are compared with its leaders, in every band a pair shares:
        # comparisons made, not distinct pairs (which no one partition sees)
        comparisons, close = self.comparisons_
        return {**c, "comparisons": comparisons, "close_comparisons": close, "rows_signed": self.signed_}

    unsigned = "no signature"  # what a row the stage could not sign lacks, for the warning

    def result_warnings(self, entry: dict) -> list[str]:
        """Rows without a signature (an image that does not decode, an empty text) are
        compared with none and kept; the counts said nothing of them, so a folder with a
        third of its files unreadable looked deduplicated."""
        notes = super().result_warnings(entry)
        signed, rows = entry.get("summary", {}).get("rows_signed"), entry.get("in", 0)
        if signed is not None and rows > signed:
            notes.append(f"stage {self.ctx.name!r}: {rows - signed:,} of its {rows:,} rows have {self.unsigned} and were "
                         "compared with none (they are kept)")
        return notes
