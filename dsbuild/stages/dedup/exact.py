"""``exact_dedup``: every row hashed into a thin frame, which alone is shuffled so equal rows
meet; the (dropped -> kept) pairs stay on the workers and are rejected in a last map."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dsbuild.kernels import lsh as lsh_kernels
from dsbuild.kernels.hashing import (
    CHECK_KEY,
    ROW_KEY,
    row_hash_pair,
    salted_image_hashes,
)
from dsbuild.records import ID, image_blobs
from dsbuild.stages.base import (
    StageError,
    holds_text,
    register,
)
from dsbuild.stages.dedup.drop import (
    _DROPPED_META,
    _ROUTED,
    _drop_routed,
    _group_routed,
    add_cluster_stats,
    cluster_stats,
)
from dsbuild.stages.dedup.keep import Deduplicator, KeepRule, arrow_ids, keeper_order

IMAGE_META_SUFFIXES = ("_height", "_width", "_channels", "_format")




class ExactDedupOptions(KeepRule):
    columns: list[str] | None = Field(
        None, description="columns that define a duplicate; default all data columns (for images: the "
        "picture, not its file's path, format or size)")
    image_hash: Literal["pixels", "bytes"] = Field("pixels", description="hash images by decoded pixels (same picture in another file matches) or raw bytes")


@register
class ExactDedup(Deduplicator):
    """Rows equal on the chosen columns: one copy stays, the others name it.

    Only a thin frame moves: (content hash, check hash, id, position, quality rank) per
    row is shuffled by hash so equal rows meet; each group names its duplicates (their
    partition and row -> kept id). Those pairs, one per dropped row, are kept on the
    workers and shuffled again to the partition each dropped row lives in, where a last
    map over the full rows rejects them: nothing proportional to the data passes through
    the driver. The shuffle by hash has half as many partitions as the input (its
    cost grows with its partitions, and a thin row is small). The shuffle key is a 64-bit
    hash; a second, independently keyed hash splits any collision, so two different rows
    merge only if 128 bits agree (full rows are not compared; pandas hashes numbers
    without the key, so the second hash takes the columns in reverse order, and a single
    numeric column's hash is one-to-one). Two passes over the input (hashing, then
    rejecting), so the shape is a chain and the pipeline checkpoints its input.
    """

    name = "exact_dedup"
    shape = "chain"
    Options = ExactDedupOptions

    def _image(self) -> str:
        return self.ctx.roles.image_column

    def columns(self, meta: pd.DataFrame) -> list[str]:
        if self.options.columns is not None:
            return list(self.options.columns)
        image = self._image()
        skip = {ID, self.ctx.roles.id}  # the id names a record: two copies have two ids
        if self._is_image(meta):  # a file's path says where a picture came from, not what it is
            skip.add("path")
            if self.options.image_hash == "pixels":
                skip |= {image + s for s in IMAGE_META_SUFFIXES}
        return [c for c in meta.columns if c not in skip and not str(c).startswith("_")]

    def check(self, meta):
        cols = self.columns(meta)
        self.require_columns(meta, cols)
        if not cols:
            raise StageError(f"stage {self.ctx.name!r}: no data columns to compare")
        self.check_keep_rule(meta)

    def _is_image(self, meta: pd.DataFrame) -> bool:
        """The data has the job's image column, of pictures: a text column named ``image``
        (a CSV manifest's file names) is compared as the text it is; as pictures, none
        decoded and every row was the same one."""
        image = self._image()
        return image in meta.columns and not holds_text(meta[image])

    def content_hashes(self, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Each row's hash with ``ROW_KEY`` and with ``CHECK_KEY``, the columns encoded once for both."""
        cols = self.columns(part)
        image = self._image() if self._is_image(part) else None
        plain = [c for c in cols if c != image]
        hashes = row_hash_pair(part, plain) if plain else (np.zeros(len(part), dtype=np.uint64),) * 2
        if image not in cols:
            return hashes
        salted = salted_image_hashes(image_blobs(part[image]), pixels=self.options.image_hash == "pixels",
                                     salts=(ROW_KEY.encode(), CHECK_KEY.encode()))
        with np.errstate(over="ignore"):
            first, check = (lsh_kernels.mix64(h * np.uint64(0x100000001B3) + pixels) for h, pixels in zip(hashes, salted))
        return first, check

    def fingerprints(self, part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
        """The thin frame that is shuffled: two hashes, id, where the row lives, keep rank if any."""
        number = partition_info["number"] if partition_info else 0
        h1, h2 = self.content_hashes(part)
        thin = pd.DataFrame({
            "_h1": h1,
            "_h2": h2,
            ID: pd.arrays.ArrowExtensionArray(arrow_ids(part[ID])),
            "_at": (np.int64(number) << np.int64(32)) + np.arange(len(part), dtype=np.int64),
        }, index=part.index)
        if self.options.quality is not None:
            thin["_rank"] = _keep_rank(part, self.options)
        return thin

    def build(self, frame, shapes):
        thin = shapes.map(frame, self.fingerprints, meta=self.fingerprints(frame._meta.copy()), label=f"{self.ctx.name}-hash")
        groups = -(-frame.npartitions // _THIN_PER_GROUP)
        dropped = shapes.group(thin, "_h1", duplicates_in_groups, meta=_DROPPED_META, label=f"{self.ctx.name}-groups", npartitions=groups)
        dropped = shapes.persist(dropped)
        self.clusters_ = shapes.fit(dropped, cluster_stats, add_cluster_stats, label=f"{self.ctx.name}-clusters")
        routed = shapes.route(dropped[_ROUTED], "_partition", like=frame)
        if self.options.action == "group":
            return shapes.map(frame, _group_routed, routed, self.options.group_column, label=self.ctx.name)
        return shapes.map(frame, _drop_routed, routed, label=self.ctx.name)

    def summary(self) -> dict:
        return getattr(self, "clusters_", {})


# Input partitions whose thin frames (~50 bytes a row) share one partition of the shuffle
# by hash. A shuffle's cost grows with its partitions (pieces, tasks; 16 → 16 cost 1.2x
# the CPU of 16 → 4 at 2 M rows), while the group kernel's scattered reads slow down as a
# group outgrows the caches: at 10 M rows in 16 partitions, 16 → 8 took 6-7 % less CPU
# and wall time than 16 → 4 on 2 workers.
_THIN_PER_GROUP = 2


def _keep_rank(part: pd.DataFrame, rule: KeepRule) -> np.ndarray:
    """The quality as a rank where smaller is better; a missing quality ranks last."""
    q = pd.to_numeric(part[rule.quality], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    rank = -q if rule.prefer == "max" else q
    return np.where(np.isnan(rank), np.inf, rank)


def sort_by_hash(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order that puts equal hashes side by side, and each row's leading hash bits in that order.

    numpy sorts plain integers several times faster than it argsorts them (SIMD), so
    the row number rides in the low bits of one integer per row: a sort by (leading
    bits, row). Rows whose hashes differ only below those bits (about one pair among
    2.5 M rows) share a run of equal leading bits; callers compare full hashes there.
    """
    low = max(1, int(len(h) - 1).bit_length())
    mask = np.uint64((1 << low) - 1)
    packed = np.sort((h & ~mask) | np.arange(len(h), dtype=np.uint64))
    return (packed & mask).astype(np.int64), packed >> np.uint64(low)


def duplicates_in_groups(thin: pd.DataFrame) -> pd.DataFrame:
    """(where the row lives, its id, kept id, its cluster's size) for every row of a
    group of equal rows but its keeper.

    The keeper has the best rank, then the lowest id (``keeper_order``), so arrival order
    does not matter.
    One numeric sort by hash sets aside rows whose hash is unique (most rows); ids are
    compared (by Arrow) only inside a run of equal rows.
    """
    rows, lead = sort_by_hash(thin["_h1"].to_numpy())
    run = np.cumsum(np.r_[True, lead[1:] != lead[:-1]]) - 1
    shared = np.bincount(run)[run] >= 2
    if not shared.any():
        return _DROPPED_META.copy()
    rows, same_lead = rows[shared], np.diff(run[shared]) == 0
    h1, h2 = thin["_h1"].to_numpy()[rows], thin["_h2"].to_numpy()[rows]
    rank = thin["_rank"].to_numpy()[rows] if "_rank" in thin.columns else np.zeros(len(rows))
    if (((h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1]) | (rank[1:] != rank[:-1])) & same_lead).any():
        order = np.lexsort((rank, h2, h1))
        h1, h2, rank, rows = h1[order], h2[order], rank[order], rows[order]
    new_group = np.r_[True, (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])]
    group = np.cumsum(new_group) - 1
    size = np.bincount(group)[group]
    arrived = arrow_ids(thin[ID])
    ids = arrived.take(pa.array(rows))  # one scattered read
    run_starts = np.flatnonzero(new_group | np.r_[True, rank[1:] != rank[:-1]])
    best_in_run = segment_argmin(keeper_order(ids), run_starts)
    keeper = best_in_run[np.flatnonzero(new_group[run_starts])][group]
    # Dropped rows in the order they arrived, which is by partition and row: shuffled back
    # and rejected, they are then read in runs rather than scattered.
    drop = np.flatnonzero(keeper != np.arange(len(rows)))
    slot = np.full(len(thin), -1, dtype=np.int64)
    slot[rows[drop]] = drop
    drop = slot[slot >= 0]
    at = thin["_at"].to_numpy()[rows[drop]]
    return pd.DataFrame({
        "_partition": at >> np.int64(32),
        "_at": at,
        ID: pd.arrays.ArrowExtensionArray(arrived.take(pa.array(rows[drop]))),
        "_keeper": pd.arrays.ArrowExtensionArray(ids.take(pa.array(keeper[drop]))),
        "_size": size[drop].astype(np.int32),
    })


def segment_argmin(values: pa.Array, starts: np.ndarray, small: int = 16) -> np.ndarray:
    """Position of the smallest value in each run ``values[starts[k]:starts[k+1]]``.

    Runs of up to ``small`` rows, nearly all of them, are compared column by column;
    longer ones are each sorted, so no run costs much more than its length. Most runs
    are pairs: their one comparison comes from comparing every value with the next.
    """
    ends = np.r_[starts[1:], len(values)]
    sizes = ends - starts
    best = starts.copy()
    short = sizes <= small
    for k in range(1, int(sizes[short].max()) if short.any() else 1):
        g = np.flatnonzero(short & (sizes > k))
        cand = starts[g] + k
        if k == 1:
            next_is_less = pc.less(values.slice(1), values.slice(0, len(values) - 1)).to_numpy(zero_copy_only=False)
            better = next_is_less[starts[g]]
        else:
            better = pc.less(values.take(pa.array(cand)), values.take(pa.array(best[g]))).to_numpy(zero_copy_only=False)
        best[g[better]] = cand[better]
    for g in np.flatnonzero(~short):
        lo = int(starts[g])
        best[g] = lo + pc.sort_indices(values.slice(lo, int(sizes[g])))[0].as_py()
    return best
