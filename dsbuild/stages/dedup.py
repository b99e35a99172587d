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
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from dsbuild.kernels import lsh as lsh_kernels
from dsbuild.kernels import unionfind
from dsbuild.kernels.containment import ShingleIndex
from dsbuild.kernels.dtypes import blank_text
from dsbuild.kernels.hashing import (
    CHECK_KEY,
    ROW_KEY,
    VERIFY_SIDE,
    aligned_similarity,
    hamming,
    image_content_hashes,
    perceptual_hashes,
    row_hash_pair,
    row_hashes,
    salted_image_hashes,
    verification_thumbnails,
)
from dsbuild.kernels.minhash import (
    EMPTY,
    MinHasher,
    bands_for_recall,
    set_similarity,
    shingle_hashes,
    signature_similarity,
)
from dsbuild.kernels.minhash import band_keys as minhash_band_keys
from dsbuild.kernels.unionfind import add_histograms, size_histogram
from dsbuild.records import ID, image_blobs, image_size
from dsbuild.stages.base import (
    KEY,
    REJECT,
    Stage,
    StageError,
    StageOptions,
    _did_you_mean,
    holds_text,
    register,
    reject,
    with_marks,
)

IMAGE_META_SUFFIXES = ("_height", "_width", "_channels", "_format")


class KeepRule(StageOptions):
    quality: str | None = Field(None, description="column whose best value decides which copy stays; default (and among "
                                "equals): the lowest id, a number at its end compared as a number (f.csv:9 stays rather "
                                "than f.csv:10, id 9 rather than 10), whatever the partitioning")
    prefer: Literal["max", "min"] = Field("max", description="best quality is the largest (max) or smallest (min) value")
    action: Literal["drop", "group"] = Field(
        "drop", description="drop: reject every copy but the one that stays (reason duplicate-of=<its id>); "
        "group: keep every row and name its cluster in group_column, so that split by: [duplicate_group] "
        "keeps copies out of different splits")
    group_column: str = Field("duplicate_group", description="with action group: each row's cluster, the id of the "
                              "copy that would stay (a row in no cluster: its own id)")


class Deduplicator(Stage):
    """What every deduplicating stage shares: with ``action: group`` it adds a column."""

    def columns_after(self, meta: pd.DataFrame) -> pd.DataFrame:
        if self.options.action != "group":
            return meta
        return meta.assign(**{self.options.group_column: pd.arrays.ArrowStringArray(pa.array([], pa.large_string()))})

    def check_keep_rule(self, meta: pd.DataFrame) -> None:
        if self.options.quality:
            self.require_columns(meta, [self.options.quality], what="quality column")
            if holds_text(meta[self.options.quality]):
                # read as numbers, every value was missing, and the lowest id stayed without a word
                raise StageError(f"stage {self.ctx.name!r}: quality column {self.options.quality!r} holds text; quality "
                                 f"needs numbers (or times): the copy with the {self.options.prefer} value stays")
        col = self.options.group_column
        if self.options.action == "group" and col in meta.columns:
            raise StageError(f"stage {self.ctx.name!r}: group_column {col!r} is already a column of the data; name another")


def _grouped(part: pd.DataFrame, hit: np.ndarray, keepers: pa.Array, column: str) -> pd.DataFrame:
    """``column``: the kept id where ``hit`` (in order, from ``keepers``), the row's own id elsewhere."""
    own = arrow_ids(part[ID])
    if hit.any():
        own = pc.if_else(pa.array(hit), spread_text(keepers, hit), own)
    part[column] = pd.arrays.ArrowStringArray(own)
    return part


# -- exact_dedup ----------------------------------------------------------------------


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
_TEXT = pd.ArrowDtype(pa.large_string())
_DROPPED_META = pd.DataFrame({
    "_partition": pd.Series([], dtype=np.int64), "_at": pd.Series([], dtype=np.int64),
    ID: pd.Series([], dtype=_TEXT), "_keeper": pd.Series([], dtype=_TEXT),
    "_size": pd.Series([], dtype=np.int32),
})
_ROUTED = ["_partition", "_at", ID, "_keeper"]  # what the rejecting pass needs


def cluster_stats(dropped: pd.DataFrame, state=None) -> dict:
    """Clusters among one shuffled partition's dropped rows (a cluster never spans two).

    A cluster of size s has s - 1 dropped rows, each carrying s: counting rows per size
    gives clusters per size without comparing ids."""
    rows_per_size = np.bincount(dropped["_size"].to_numpy(dtype=np.int64), minlength=2)
    size = np.arange(2, len(rows_per_size))
    sizes = np.repeat(size, rows_per_size[2:] // (size - 1))
    return {"clusters": len(sizes), "rows_in_clusters": int(sizes.sum()), "cluster_sizes": size_histogram(sizes)}


def add_cluster_stats(a: dict, b: dict) -> dict:
    return {
        "clusters": a["clusters"] + b["clusters"],
        "rows_in_clusters": a["rows_in_clusters"] + b["rows_in_clusters"],
        "cluster_sizes": add_histograms(a["cluster_sizes"], b["cluster_sizes"]),
    }


def _drop_routed(part: pd.DataFrame, dropped: pd.DataFrame) -> pd.DataFrame:
    """Reject this partition's rows that ``dropped`` (routed here by partition) names.

    A stage's input is the rows kept so far, all unmarked, so the reasons column is
    built whole by Arrow (``duplicate-of=<kept id>`` where a row is dropped, missing
    elsewhere), without a Python string per row."""
    marked = REJECT in part.columns and part[REJECT].notna().any()
    part = with_marks(part)
    if part.empty or dropped.empty:
        return part
    hit, keepers = _routed_keepers(part, dropped)
    reasons = pc.binary_join_element_wise(_DUPLICATE_OF, keepers, _EMPTY)
    column = spread_text(reasons, hit)
    if marked:  # the first reason stays
        return reject(part, hit, column.to_numpy(zero_copy_only=False))
    part[REJECT] = pd.arrays.ArrowStringArray(column)
    return part


def _group_routed(part: pd.DataFrame, dropped: pd.DataFrame, column: str) -> pd.DataFrame:
    """``action: group``: name each row's cluster instead of rejecting its copies."""
    part = with_marks(part)
    if part.empty or dropped.empty:
        return _grouped(part, np.zeros(len(part), dtype=bool), pa.array([], pa.large_string()), column)
    return _grouped(part, *_routed_keepers(part, dropped), column)


def _routed_keepers(part: pd.DataFrame, dropped: pd.DataFrame) -> tuple[np.ndarray, pa.LargeStringArray]:
    """(this partition's rows that ``dropped`` names, their kept ids in row order)."""
    rows = dropped["_at"].to_numpy() & np.int64(0xFFFFFFFF)
    if rows.max() >= len(part):
        raise RuntimeError("deduplication: the input's partitions changed between its two passes")
    slot = np.full(len(part), -1, dtype=np.int64)
    slot[rows] = np.arange(len(rows))
    hit = slot >= 0
    named = pa.table([arrow_ids(dropped[ID]), arrow_ids(dropped["_keeper"])], names=["id", "keeper"]).take(pa.array(slot[hit]))
    if not pc.all(pc.equal(arrow_ids(part[ID]).filter(pa.array(hit)), named["id"])).as_py():
        raise RuntimeError("deduplication: the input's partitions changed between its two passes")
    return hit, named["keeper"].combine_chunks()


_DUPLICATE_OF = pa.scalar("duplicate-of=", pa.large_string())
_EMPTY = pa.scalar("", pa.large_string())


def spread_text(values: pa.LargeStringArray, where: np.ndarray) -> pa.LargeStringArray:
    """``values`` (no nulls) in order at the rows where ``where`` holds, null elsewhere.

    Built from ``values``' own bytes with new offsets: a take with null indices costs
    several times more, and nearly half the rows can be duplicates.
    """
    own = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + len(values) + 1]
    lengths = np.zeros(len(where), dtype=np.int64)
    lengths[where] = np.diff(own)
    offsets = np.empty(len(where) + 1, dtype=np.int64)
    offsets[0] = own[0]
    np.cumsum(lengths, out=offsets[1:])
    offsets[1:] += own[0]
    valid = pa.py_buffer(np.packbits(where, bitorder="little"))
    data = values.buffers()[2] or pa.py_buffer(b"")
    return pa.LargeStringArray.from_buffers(len(where), pa.py_buffer(offsets), data, valid)


def _keep_rank(part: pd.DataFrame, rule: KeepRule) -> np.ndarray:
    """The quality as a rank where smaller is better; a missing quality ranks last."""
    q = pd.to_numeric(part[rule.quality], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    rank = -q if rule.prefer == "max" else q
    return np.where(np.isnan(rank), np.inf, rank)


def arrow_ids(ids) -> pa.Array:
    """Record ids as one Arrow text array (zero-copy when they already are Arrow text)."""
    arr = pa.array(ids, from_pandas=True)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr if arr.type == pa.large_string() else pc.cast(arr, pa.large_string())


_NUMBER_WIDTH = 20  # digits of the largest int64


def keeper_order(ids: pa.Array) -> pa.Array:
    """A key per id whose byte order is the order in which a duplicate's copy stays: the
    id as text, but a number at its end compared as a number, so ``f.csv:9`` (read first)
    stays rather than ``f.csv:10``, and id 9 rather than id 10, as a user of
    ``drop_duplicates`` expects; as text, 10 came first. The trailing digits are padded
    with zeros to 20 and a byte of their count follows, so ``x7`` and ``x07`` still
    differ (a total order: the same keeper at any partitioning). Built from the ids'
    bytes with numpy, no Python string per row."""
    ids = arrow_ids(ids)
    data, offsets = _bytes_of(ids)
    length = np.diff(offsets)
    if not len(ids) or ((length == length[0]).all() and _digits_end_alike(data.reshape(len(ids), -1))):
        return ids  # padded alike, the keys would sort as the ids do (copies named in one form: most data)
    return padded_order(ids)


def padded_order(ids: pa.Array) -> pa.LargeBinaryArray:
    """:func:`keeper_order`'s keys, always padded: keys made for different sets of ids
    (each partition's) compare as the ids' keeper order, which the ids themselves, where
    ``keeper_order`` may return them, do only within one set. :func:`ids_of_keys` reads
    the ids back."""
    ids = arrow_ids(ids)
    data, offsets = _bytes_of(ids)
    starts, ends = offsets[:-1], offsets[1:]
    length = ends - starts
    run = np.zeros(len(ids), dtype=np.int64)  # trailing digits, read from the end: one step per digit
    alive = np.flatnonzero(length > 0)
    while len(alive) and run[alive[0]] < 255:  # a count that fits its byte
        last = data[ends[alive] - run[alive] - 1]
        alive = alive[_is_digit(last)]
        run[alive] += 1
        alive = alive[length[alive] > run[alive]]
    position = np.arange(len(data))
    pad = np.where(run > 0, np.maximum(_NUMBER_WIDTH - run, 0), 0)
    out_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(length + pad + 1, out=out_offsets[1:])
    out = np.full(out_offsets[-1], ord("0"), dtype=np.uint8)
    row = np.repeat(np.arange(len(ids)), length)
    within = position - starts[row]
    out[out_offsets[row] + within + np.where(within >= (length - run)[row], pad[row], 0)] = data
    out[out_offsets[1:] - 1] = run
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ids), [None, pa.py_buffer(out_offsets), pa.py_buffer(out)])


def ids_of_keys(keys: pa.Array, skip: int = 0) -> pa.LargeStringArray:
    """The ids of :func:`padded_order` keys that follow ``skip`` bytes of something else:
    the last byte counts the trailing digits, which stand after their padding zeros."""
    data, offsets = _bytes_of(keys)
    starts, ends = offsets[:-1] + skip, offsets[1:] - 1
    run = data[ends] if len(keys) else np.zeros(0, dtype=np.uint8)
    run = run.astype(np.int64)
    pad = np.where(run > 0, np.maximum(_NUMBER_WIDTH - run, 0), 0)
    prefix = ends - starts - run - pad
    length = ends - starts - pad
    out_offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(length, out=out_offsets[1:])
    row = np.repeat(np.arange(len(keys)), length)
    within = np.arange(out_offsets[-1]) - out_offsets[row]
    out = data[starts[row] + within + np.where(within >= prefix[row], pad[row], 0)]
    return pa.LargeStringArray.from_buffers(len(keys), pa.py_buffer(out_offsets), pa.py_buffer(out.tobytes()))


def node_keys(ids, quality: np.ndarray, rule: KeepRule) -> pa.LargeBinaryArray:
    """A key per id whose byte order is the order in which a cluster's copy stays: the
    quality's rank (when the rule names one: eight bytes, in float order, a missing
    quality last) then the id's :func:`padded_order`. The smallest key of a cluster is
    its keeper, whichever partition saw which member."""
    keys = padded_order(ids)
    if rule.quality is None:
        return keys
    rank = np.asarray(quality, dtype=float) * (-1.0 if rule.prefer == "max" else 1.0)
    bits = (np.where(np.isnan(rank), np.inf, rank) + 0.0).view(np.uint64)  # + 0.0: -0.0 ties 0.0, as numbers do
    ordered = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63)).astype(">u8").view(np.uint8)
    data, offsets = _bytes_of(keys)
    out_offsets = offsets + 8 * np.arange(len(offsets), dtype=np.int64)
    out = np.empty(out_offsets[-1], dtype=np.uint8)
    out[(out_offsets[:-1, None] + np.arange(8)).reshape(-1)] = ordered
    row = np.repeat(np.arange(len(keys)), np.diff(offsets))
    out[np.arange(len(data)) - offsets[row] + out_offsets[row] + 8] = data
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(keys), [None, pa.py_buffer(out_offsets), pa.py_buffer(out)])


def _bytes_of(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets from 0) of a large string or binary array without nulls."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _is_digit(b: np.ndarray) -> np.ndarray:
    return (b >= 48) & (b <= 57)


def _digits_end_alike(rows: np.ndarray) -> bool:
    """Whether ids of one length (a row of bytes each) all end in as many digits as the first."""
    width = rows.shape[1]
    run = 0
    while run < min(width, 255) and _is_digit(rows[0, width - run - 1]):
        run += 1
    if run >= 255:
        return False
    return bool(_is_digit(rows[:, width - run :]).all() and (run == width or not _is_digit(rows[:, width - run - 1]).any()))


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


# -- signatures for near duplicates ------------------------------------------------------


class ImageSigner:
    """Perceptual hashes + bit-sampled (or pigeonhole) bands; verified by Hamming distance.

    Sampled bands are set so a pair at ``max_distance`` is found with probability 0.9
    by the bands alone; closer pairs, which most copies are, almost surely.
    """

    MISS_AT_MAX = 0.1

    def __init__(self, column: str, kind: str, max_distance: int, mirror: bool, search: str, bands: int | None, band_bits: int, seed: int):
        self.column, self.kind, self.max_distance, self.mirror = column, kind, max_distance, mirror
        self.words = 2 if kind == "phash+dhash" else 1
        if search == "pigeonhole":
            self.masks = lsh_kernels.pigeonhole_masks(bands or max_distance + 1, self.words)
        else:
            n = bands or lsh_kernels.sampled_bands_for(max_distance, band_bits, self.MISS_AT_MAX, bits=64 * self.words)
            self.masks = lsh_kernels.sampled_masks(n, band_bits, seed, self.words)

    def sign(self, part: pd.DataFrame):
        """(ok, entries): entries[:, v] is the code of variant v (0 as is, 1 mirrored)."""
        hashes, ok = perceptual_hashes(image_blobs(part[self.column]), self.kind, mirrored=self.mirror)
        if self.words == 1:
            return ok, hashes.reshape(len(part), -1)
        return ok, hashes if self.mirror else hashes[:, None, :]

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return lsh_kernels.band_keys(payload, self.masks)

    @property
    def band_count(self) -> int:
        return len(self.masks)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return hamming(a, b).astype(float)

    def close(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.distance(a, b) <= self.max_distance


class TextSigner:
    """MinHash signatures, bands from the threshold's S-curve; verified by the exact Jaccard
    similarity of the shingles where both texts have at most ``num_perm // 4`` of them,
    by the signatures' estimate otherwise.

    A short text's signature misjudges it: a few shingles leave most bins to be borrowed,
    and two that fall in one bin leave one value. Two titles of 3 shingles sharing 2
    (Jaccard 0.5) had equal signatures where each one's own shingle lost its bin to a
    shared one; pairs of texts of 10-30 words, one word apart (Jaccard 0.37-0.72), were
    judged above 0.8 in 0.5-3.2 % of cases. Their shingles ride after the signature
    (the payload grows by a quarter), so they are judged on what they hold.
    """

    def __init__(self, columns: list[str], num_perm: int, shingle: int, unit: str, threshold: float, seed: int,
                 normalize: bool = True):
        self.columns, self.shingle, self.unit, self.threshold = columns, shingle, unit, threshold
        self.normalize = normalize
        self.hasher = MinHasher(num_perm, seed=seed)
        self.sets = num_perm // 4
        self.bands, self.rows = bands_for_recall(threshold, num_perm)  # candidates are verified: recall first

    def text(self, part: pd.DataFrame) -> list[str]:
        return joined_text(part, self.columns)

    def sign(self, part: pd.DataFrame):
        """A text without a word (empty, or only punctuation when normalized) has no
        shingle and is left out: two of them are not duplicates of each other."""
        payload = self.hasher(self.text(part), size=self.shingle, unit=self.unit, normalize=self.normalize, sets=self.sets)
        return (self._signature(payload) != EMPTY).any(axis=1), payload[:, None, :]

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return minhash_band_keys(self._signature(payload), self.bands, self.rows)

    def _signature(self, payload: np.ndarray) -> np.ndarray:
        return np.atleast_2d(payload)[:, : self.hasher.num_perm]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        exact, known = set_similarity(a[:, self.hasher.num_perm :], b[:, self.hasher.num_perm :])
        return np.where(known, exact, signature_similarity(self._signature(a), self._signature(b)))

    @property
    def band_count(self) -> int:
        return self.bands

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1.0 - self.similarity(a, b)

    def close(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.similarity(a, b) >= self.threshold


def joined_text(part: pd.DataFrame, columns: list[str]) -> list[str]:
    """Each row's text: its fields joined by a space, a missing one empty."""
    if len(columns) == 1:
        return part[columns[0]].astype("string").fillna("").tolist()
    return part[columns].astype("string").fillna("").agg(" ".join, axis=1).tolist()


def signatures(part: pd.DataFrame, signer, quality: str | None, partition_info=None) -> pd.DataFrame:
    """One row per (record, orientation): its signature (payload) and what verifying
    needs, and where the record lives (partition and row, for the pass that drops it)."""
    ok, entries = signer.sign(part)
    ids = part[ID].to_numpy(dtype=object)[ok]
    number = partition_info["number"] if partition_info else 0
    at = ((np.int64(number) << np.int64(32)) + np.arange(len(part), dtype=np.int64))[ok]
    q = pd.to_numeric(part[quality], errors="coerce").to_numpy(dtype=float)[ok] if quality else np.zeros(ok.sum())
    entries = entries[ok]
    frames = [pd.DataFrame({
        "_variant": np.full(len(ids), variant, dtype=np.int8), ID: ids, "_at": at, "_quality": q,
        "_payload": _as_objects(entries[:, variant]),
    }) for variant in range(entries.shape[1])]
    return pd.concat(frames, ignore_index=True) if frames else _SIGNATURE_META.copy()


def band_rows(signed: pd.DataFrame, signer, dtype) -> pd.DataFrame:
    """One thin row per (record, orientation, band): the bucket key and what verifying
    needs but the signature, which only rows that share a bucket fetch (:func:`with_payloads`)."""
    keys = signer.keys(_payloads(signed["_payload"].to_numpy(), dtype)) if len(signed) else np.zeros((0, 1), dtype=np.uint64)
    bands = keys.shape[1]
    return pd.DataFrame({
        "_band_key": keys.reshape(-1).astype(np.uint64),
        **{c: np.repeat(signed[c].to_numpy(), bands) for c in ("_variant", ID, "_at", "_quality")},
    })


def shared_buckets(bands: pd.DataFrame) -> pd.DataFrame:
    """The band rows whose bucket holds another row (only those are compared), with the
    partition their record lives in."""
    shared = bands[bands["_band_key"].duplicated(keep=False)]
    return shared.assign(_partition=shared["_at"].to_numpy() >> np.int64(32))


def with_payloads(signed: pd.DataFrame, wanted: pd.DataFrame) -> pd.DataFrame:
    """The band rows ``wanted`` (routed to this partition) with their records' signatures."""
    payload = signed.set_index(["_at", "_variant"])["_payload"]
    found = payload.reindex(pd.MultiIndex.from_arrays([wanted["_at"].to_numpy(), wanted["_variant"].to_numpy()]))
    return wanted.reset_index(drop=True).drop(columns="_partition", errors="ignore").assign(_payload=found.to_numpy())


def _as_objects(payload: np.ndarray) -> np.ndarray:
    out = np.empty(len(payload), dtype=object)
    for i, row in enumerate(payload):
        out[i] = row.tobytes() if isinstance(row, np.ndarray) else np.uint64(row).tobytes()
    return out


def _payloads(values, dtype) -> np.ndarray:
    return np.stack([np.frombuffer(v, dtype=dtype) for v in values]) if len(values) else np.zeros((0, 1), dtype=dtype)


_SIGNATURE_META = pd.DataFrame({
    "_variant": pd.Series([], dtype=np.int8), ID: pd.Series([], dtype=object), "_at": pd.Series([], dtype=np.int64),
    "_quality": pd.Series([], dtype=float), "_payload": pd.Series([], dtype=object),
})
_BAND_META = pd.DataFrame({"_band_key": pd.Series([], dtype=np.uint64), **{c: _SIGNATURE_META[c] for c in ("_variant", ID, "_at", "_quality")}})
_SHARED_META = _BAND_META.assign(_partition=pd.Series([], dtype=np.int64))
_BAND_PAYLOAD_META = _BAND_META.assign(_payload=pd.Series([], dtype=object))


EDGE_COLUMNS = {
    "a": object, "b": object, "qa": float, "qb": float, "at_a": np.int64, "at_b": np.int64, "distance": float,
    "mirrored": bool, "candidates": np.int64, "verified": np.int64,
}
_EDGE_META = pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()})


def verify_buckets(part: pd.DataFrame, signer, dtype) -> pd.DataFrame:
    """Verified edges among rows sharing a band key, each row checked against its bucket's
    leaders rather than against every other row (``leader_pairs``).

    One extra row (a = None) carries this partition's counts of comparisons and of close
    pairs, so the fit can report candidates even where none verified.
    """
    empty = pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()})
    if part.empty:
        return empty
    ids = part[ID].to_numpy(dtype=object)
    rank = pd.factorize(ids, sort=True)[0]
    variant = part["_variant"].to_numpy()
    order = np.lexsort((variant, rank, part["_band_key"].to_numpy()))  # a bucket's rows by id, at any partitioning
    keys, ids, rank, variant = part["_band_key"].to_numpy()[order], ids[order], rank[order], variant[order]
    payload = _payloads(part["_payload"].to_numpy()[order], dtype)
    q = part["_quality"].to_numpy()[order]
    at = part["_at"].to_numpy()[order]

    def pairable(i, j):
        return (rank[i] != rank[j]) & ((variant[i] == 0) | (variant[j] == 0))

    def close(i, j):
        a, b = _squeeze(payload[i]), _squeeze(payload[j])
        return signer.close(a, b), signer.distance(a, b)

    i, j, distance, compared = leader_pairs(keys, pairable, close)
    verified = len(i)
    # a pair found in several of this partition's bands is one edge
    _, first = np.unique((rank[i] * 2 + variant[i]) * (2 * len(part)) + rank[j] * 2 + variant[j], return_index=True)
    i, j, distance = i[first], j[first], distance[first]
    edges = pd.DataFrame({
        "a": ids[i], "b": ids[j], "qa": q[i], "qb": q[j], "at_a": at[i], "at_b": at[j], "distance": distance,
        "mirrored": variant[i] != variant[j], "candidates": 0, "verified": 0,
    })
    tally = pd.DataFrame({  # counted before the merge of bands, which depends on the partitioning
        "a": [None], "b": [None], "qa": [np.nan], "qb": [np.nan], "at_a": [-1], "at_b": [-1], "distance": [np.nan], "mirrored": [False],
        "candidates": [compared], "verified": [verified],
    })
    return pd.concat([tally, edges], ignore_index=True).astype(EDGE_COLUMNS)


_COMPARE_CHUNK = 1 << 16


def leader_pairs(keys: np.ndarray, pairable, close) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(leader, member, distance, comparisons) of the close pairs in runs of equal ``keys``
    (sorted), found by comparing each row with its run's leaders only.

    A run's first row leads; every later row is compared with it; the first row that no
    earlier leader took leads next, and so on. A bucket holding one cluster of n copies
    costs n - 1 comparisons instead of n (n - 1) / 2: 3,000 variants of one licence made
    4.5 M pairs in each of 16 bands (30 s, 2.9 GB). A row that is close to two leaders
    joins both, so components are those of all pairs whenever leaders are close to their
    cluster; what is lost is a pair of members both far from every leader they meet, in
    every band they share. ``pairable(i, j)`` says which positions may pair at all;
    ``close(i, j)`` returns (close, distance).
    """
    n = len(keys)
    new_run = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_run)
    end_of = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))
    settled = new_run & (end_of - np.arange(n) == 1)
    run = np.cumsum(new_run) - 1
    open_rows = np.flatnonzero(~settled)
    found_i, found_j, found_d, compared = [], [], [], 0
    while len(open_rows):
        leads = open_rows[np.r_[True, run[open_rows][1:] != run[open_rows][:-1]]]
        settled[leads] = True
        counts = end_of[leads] - leads - 1
        lead = np.repeat(leads, counts)
        member = lead + 1 + np.arange(len(lead)) - np.repeat(np.cumsum(counts) - counts, counts)
        ok = pairable(lead, member)
        lead, member = lead[ok], member[ok]
        compared += len(lead)
        for s in range(0, len(lead), _COMPARE_CHUNK):
            li, mj = lead[s : s + _COMPARE_CHUNK], member[s : s + _COMPARE_CHUNK]
            good, distance = close(li, mj)
            found_i.append(li[good])
            found_j.append(mj[good])
            found_d.append(np.asarray(distance, dtype=float)[good])
            settled[mj[good]] = True
        open_rows = open_rows[~settled[open_rows]]
    if not found_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), compared
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d), compared


def _squeeze(payload: np.ndarray) -> np.ndarray:
    return payload[:, 0] if payload.ndim == 2 and payload.shape[1] == 1 and payload.dtype == np.uint64 else payload


def comparison_counts(edges: pd.DataFrame, state=None) -> tuple[int, int]:
    """(comparisons, close ones) the verifying pass counted in its tally rows."""
    return int(edges["candidates"].sum()), int(edges["verified"].sum())


def add_counts(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


_LINKS_META = pd.DataFrame({
    "u": pd.Series([], dtype=pd.ArrowDtype(pa.large_binary())), "v": pd.Series([], dtype=pd.ArrowDtype(pa.large_binary())),
    "u_at": pd.Series([], dtype=np.int64), "v_at": pd.Series([], dtype=np.int64), "moved": pd.Series([], dtype=bool),
})


def edge_links(edges: pd.DataFrame, rule: KeepRule) -> pd.DataFrame:
    """The verified edges as links between :func:`node_keys` (larger key first), so that
    each component's smallest key is its keeper; as stars where this partition's edges
    already join a component (:func:`unionfind.local_stars`)."""
    real = edges[edges["a"].notna()]
    a, b = node_keys(real["a"], real["qa"].to_numpy(), rule), node_keys(real["b"], real["qb"].to_numpy(), rule)
    at_a, at_b = real["at_a"].to_numpy(dtype=np.int64), real["at_b"].to_numpy(dtype=np.int64)
    a_first = pc.greater(a, b).to_numpy(zero_copy_only=False)
    flag = pa.array(a_first)
    return unionfind.local_stars(unionfind.link_frame(pc.if_else(flag, a, b), pc.if_else(flag, b, a), np.where(a_first, at_a, at_b),
                                                  np.where(a_first, at_b, at_a), np.zeros(len(real), dtype=bool)))


def count_moved(links: pd.DataFrame, state=None) -> int:
    return int(links["moved"].sum())


def _add(a: int, b: int) -> int:
    return a + b


def star_drops(links: pd.DataFrame, rule: KeepRule) -> pd.DataFrame:
    """The dropped rows of star-shaped components (links grouped by their centre, the
    keeper): where each lives, its id, the kept id, its cluster's size."""
    at = links["u_at"].to_numpy(dtype=np.int64)
    skip = 0 if rule.quality is None else 8
    return pd.DataFrame({
        "_partition": at >> np.int64(32),
        "_at": at,
        ID: pd.arrays.ArrowExtensionArray(ids_of_keys(unionfind.as_arrow(links["u"]), skip)),
        "_keeper": pd.arrays.ArrowExtensionArray(ids_of_keys(unionfind.as_arrow(links["v"]), skip)),
        "_size": unionfind.star_sizes(links).astype(np.int32),
    }, index=pd.RangeIndex(len(links)))


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
    """This partition's bytes in memory by column (objects counted deep), and its rows in ``_rows``."""
    return pd.concat([part.memory_usage(deep=True, index=False), pd.Series({"_rows": len(part)})])


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
        quality = self.options.quality
        signed = shapes.persist(shapes.map(frame, signatures, signer, quality, meta=_SIGNATURE_META, label=f"{self.ctx.name}-signatures"))
        sizes = shapes.fit(signed, column_bytes, _add, label=f"{self.ctx.name}-sizes")
        rows = max(int(sizes["_rows"]), 1)
        band_row = (sizes.drop(["_rows", "_payload"]).sum() / rows) + _BAND_KEY_BYTES
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
        return {**c, "comparisons": comparisons, "close_comparisons": close}


# -- near_dedup_images -----------------------------------------------------------------


class NearDedupImagesOptions(KeepRule):
    hash: Literal["phash+dhash", "phash", "dhash"] = Field("phash+dhash", description="perceptual hash: pHash and dHash side by side (128 bits), or one 64-bit hash")
    max_distance: int | None = Field(None, ge=0, le=64, description="largest Hamming distance between hashes of duplicates "
                                     "(summed over both hashes); default 20 of phash+dhash's 128 bits, 10 of one hash's 64")
    mirror: bool = Field(False, description="also hash each image mirrored, so flipped copies are caught")
    search: Literal["sampled", "pigeonhole"] = Field("sampled", description="sampled bit bands (fast at scale; the bits drawn from the "
                                                     "job's seed, so under another seed a pair near max_distance may be found or "
                                                     "missed; a pair's distance is exact) or pigeonhole bands (every pair within "
                                                     "max_distance, whatever the seed, slow for large distances)")
    bands: int | None = Field(None, ge=1, description="number of LSH bands; default chosen from max_distance")
    band_bits: int = Field(20, ge=4, le=40, description="bits per sampled band")
    min_similarity: float | None = Field(
        0.99, ge=-1, le=1,
        description="pairs whose hashes differ by more than trust_distance must also correlate this well once aligned "
        "(8x8 means after registering one thumbnail on the other); null trusts the hashes alone",
    )
    trust_distance: int = Field(4, ge=0, le=128, description="hash distance up to which a pair is a duplicate without looking at the pictures")
    check_below: int = Field(
        80, ge=0,
        description="a pair is checked when one picture is smaller than this many pixels on its shorter side (hashes of "
        "small pictures come from few real pixels and collide); pairs of larger pictures are trusted on their hashes",
    )

    @property
    def distance(self) -> int:
        """max_distance, or the default for the hash's length: 20 of 128 bits is 10 of 64
        (20 of one 64-bit hash took a page of text for a photo of coins, and made 25,652
        sampled bands where the pair of hashes needs 93)."""
        if self.max_distance is not None:
            return self.max_distance
        return 20 if self.hash == "phash+dhash" else 10

    @model_validator(mode="after")
    def _bands_reach(self):
        """The search can reach max_distance with a bounded number of bands: past it a
        run failed with a traceback (no 20-bit band misses 50 of 64 bits) or hung making
        millions of bands."""
        bits = 128 if self.hash == "phash+dhash" else 64
        if self.search == "pigeonhole":
            if self.bands is None and self.distance + 1 > bits:
                raise ValueError(f"search: pigeonhole needs max_distance + 1 bands of {self.hash}'s {bits} bits; "
                                 f"max_distance {self.distance} is every pair")
            return self
        if self.bands is None:
            _check_sampled_reach(self.distance, self.band_bits, self.hash)
        return self


_MAX_SAMPLED_BANDS = 100_000


def _check_sampled_reach(distance: int, band_bits: int, hash: str) -> None:
    """That sampled bands of ``band_bits`` can reach ``distance`` with a bounded number of
    bands: past it a run failed with a traceback (no 20-bit band misses 50 of 64 bits) or
    hung making millions of bands."""
    bits = 128 if hash == "phash+dhash" else 64
    hit = lsh_kernels.band_hit_probability(distance, band_bits, bits)
    bands = lsh_kernels.sampled_bands_for(distance, band_bits, ImageSigner.MISS_AT_MAX, bits) if hit > 0 else None
    if bands is None or bands > _MAX_SAMPLED_BANDS:
        raise ValueError(
            f"max_distance {distance} of {hash}'s {bits} bits needs "
            f"{'more bands than there are' if bands is None else f'{bands:,} sampled bands'} of band_bits {band_bits} "
            f"(each image gets one key per band; at most {_MAX_SAMPLED_BANDS:,}): lower max_distance or band_bits, or set bands")


@register
class NearDedupImages(_NearDedup):
    """Near-duplicate pictures by perceptual hash: re-encoded, resized, lightly edited copies."""

    name = "near_dedup_images"
    Options = NearDedupImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image_column

    def check(self, meta):
        self.require_image_column(meta)
        self.check_keep_rule(meta)

    def signer(self, meta):
        o = self.options
        return ImageSigner(self._column(), o.hash, o.distance, o.mirror, o.search, o.bands, o.band_bits, seed=self.ctx.seed)

    def checked(self, frame, shapes, edges):
        """The hash pairs that stand once the doubtful ones are checked on the pictures.

        Small simple pictures (digits, icons, aligned faces) have hashes as close as
        edited copies'. Pairs with a picture smaller than ``check_below`` whose hashes
        differ by more than ``trust_distance`` are checked by ``aligned_similarity`` on
        thumbnails. Each doubtful pair goes (a shuffle) to the partition where its first
        picture lives, which adds that picture's thumbnail (and keeps a pair found in
        several partitions' bands once), then to its second picture's partition, which
        adds the other thumbnail and scores the pair: pictures are decoded where they
        live, and only counts reach the driver (the pairs once came there, and a
        dict of their pictures' ids went to every partition). Larger pictures are not
        checked: their hashes separate distinct pictures, while textured ones (grass,
        gravel) correlate poorly after JPEG and cropping. The pairs that pass rejoin the
        trusted edges partition by partition. Where no pair is doubtful (every hash
        distance within trust_distance), a count over the edges says so and nothing moves.
        """
        o = self.options
        self.image_checked_ = 0
        if o.min_similarity is None or not shapes.fit(edges, lambda p, s: int(_is_doubtful(p, o.trust_distance).sum()), _add,
                                                      label=f"{self.ctx.name}-doubtful"):
            return edges
        doubtful = shapes.map(edges, _doubtful, o.trust_distance, meta=_ROUTED_PAIR_META, label=f"{self.ctx.name}-pairs")
        first = shapes.map(frame, with_first_thumbnails, shapes.route(doubtful, "_partition", like=frame), self._column(),
                           meta=_ROUTED_PAIR_META, label=f"{self.ctx.name}-thumbnails")
        scored = shapes.persist(shapes.map(frame, scored_pairs, shapes.route(first, "_partition", like=frame), self._column(),
                                           o.check_below, meta=_SCORED_META, label=f"{self.ctx.name}-check"))
        self.image_checked_, self.image_rejected_ = shapes.fit(scored, lambda p, s: _check_counts(p, o.min_similarity), add_counts,
                                                               label=f"{self.ctx.name}-checked")
        return shapes.concat([
            shapes.map(edges, _trusted, o.trust_distance, meta=_EDGE_META, label=f"{self.ctx.name}-trusted"),
            shapes.map(scored, _passed, o.min_similarity, meta=_EDGE_META, label=f"{self.ctx.name}-passed"),
        ])

    def summary(self) -> dict:
        out = super().summary()
        if out:
            out["pairs_checked_on_images"] = getattr(self, "image_checked_", 0)
            out["pairs_rejected_on_images"] = getattr(self, "image_rejected_", 0)
        return out


_PAIR = ["a", "b", "mirrored", "distance"]  # one hash pair: an edge found in several bands, or partitions, repeats it
_ROUTED_PAIR_META = _EDGE_META.assign(_partition=pd.Series([], dtype=np.int64), thumb_a=pd.Series([], dtype=object),
                                      side_a=pd.Series([], dtype=np.int64))
_SCORED_META = _EDGE_META.assign(similarity=pd.Series([], dtype=float))


def _doubtful(edges: pd.DataFrame, trust_distance: int) -> pd.DataFrame:
    """The hash pairs too far apart to trust without looking at the pictures, bound for
    the partition of their first picture."""
    pairs = edges[_is_doubtful(edges, trust_distance)]
    return pairs.assign(_partition=pairs["at_a"].to_numpy(dtype=np.int64) >> np.int64(32),
                        thumb_a=pd.Series(None, index=pairs.index, dtype=object), side_a=np.zeros(len(pairs), dtype=np.int64))


def _is_doubtful(edges: pd.DataFrame, trust_distance: int) -> np.ndarray:
    return (edges["a"].notna() & (edges["distance"] > trust_distance)).to_numpy(dtype=bool)


def _thumbnails_at(part: pd.DataFrame, column: str, ids: pd.Series, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thumbnail bytes or None, shorter side) of this partition's rows at ``at`` (where
    ``signatures`` said they live), each picture decoded once however many pairs name it."""
    rows, slot = np.unique(at & np.int64(0xFFFFFFFF), return_inverse=True)
    if len(rows) and (rows.max() >= len(part) or not np.array_equal(
            part[ID].to_numpy(dtype=object)[rows[slot]], ids.to_numpy(dtype=object))):
        raise RuntimeError("near_dedup_images: the input's partitions changed between its passes")
    images = image_blobs(part[column].iloc[rows])
    thumbs, ok = verification_thumbnails(images)
    blobs = np.array([t.tobytes() if good else None for t, good in zip(thumbs, ok)], dtype=object)
    sides = np.array([min(image_size(d) or (0, 0)) for d in images], dtype=np.int64)
    return blobs[slot], sides[slot]


def with_first_thumbnails(part: pd.DataFrame, pairs: pd.DataFrame, column: str) -> pd.DataFrame:
    """The doubtful pairs whose first picture lives in this partition, each once (the
    same pair comes from the bands of several partitions), with that picture's thumbnail,
    bound for the partition of their second picture."""
    if pairs.empty:
        return _ROUTED_PAIR_META.copy()
    pairs = pairs.reset_index(drop=True).sort_values(_PAIR, kind="stable").drop_duplicates(_PAIR, ignore_index=True)
    thumbs, sides = _thumbnails_at(part, column, pairs["a"], pairs["at_a"].to_numpy(dtype=np.int64))
    out = pairs.assign(_partition=pairs["at_b"].to_numpy(dtype=np.int64) >> np.int64(32), thumb_a=thumbs, side_a=sides)
    return out[list(_ROUTED_PAIR_META.columns)]


def scored_pairs(part: pd.DataFrame, pairs: pd.DataFrame, column: str, check_below: int) -> pd.DataFrame:
    """The doubtful pairs whose second picture lives in this partition, as edges with the
    aligned similarity of their thumbnails: -1 where a picture gave none, +inf where both
    pictures are at least ``check_below`` pixels on their shorter side (trusted on their
    hashes; an unknown size counts as small)."""
    if pairs.empty:
        return _SCORED_META.copy()
    pairs = pairs.reset_index(drop=True)
    thumbs_b, sides_b = _thumbnails_at(part, column, pairs["b"], pairs["at_b"].to_numpy(dtype=np.int64))

    def score(a, b, side_a, side_b, mirrored):
        if a is None or b is None:
            return -1.0
        if min(side_a, side_b) >= check_below:
            return np.inf
        return aligned_similarity(_thumbnail(a), _thumbnail(b), mirrored=mirrored)

    scores = [score(*args) for args in zip(pairs["thumb_a"], thumbs_b, pairs["side_a"], sides_b, pairs["mirrored"])]
    return pairs[list(EDGE_COLUMNS)].astype(EDGE_COLUMNS).assign(similarity=np.asarray(scores, dtype=float))


def _thumbnail(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(VERIFY_SIDE, VERIFY_SIDE)


def _check_counts(scored: pd.DataFrame, min_similarity: float) -> tuple[int, int]:
    """(pairs checked on the pictures, pairs that failed)."""
    return len(scored), int((~(scored["similarity"] >= min_similarity)).sum())


def _trusted(edges: pd.DataFrame, trust_distance: int) -> pd.DataFrame:
    """This partition's edges but the doubtful ones (and its tally row)."""
    return edges[~_is_doubtful(edges, trust_distance)].astype(EDGE_COLUMNS)


def _passed(scored: pd.DataFrame, min_similarity: float) -> pd.DataFrame:
    """The doubtful pairs scored here that passed the check (once each: repeats of an edge
    make no other component). They join the trusted edges as partitions of their own: the
    edges and the scored pairs are partitioned apart (by band key, by picture), and a
    map over both broadcast a one-partition frame of edges to every partition of pairs,
    counting its comparisons as many times."""
    return scored[(scored["similarity"] >= min_similarity).to_numpy(dtype=bool)].drop(columns="similarity").astype(EDGE_COLUMNS)


# -- near_dedup_text -------------------------------------------------------------------


class NearDedupTextOptions(KeepRule):
    fields: list[str] | None = Field(None, min_length=1, description="columns whose text is compared; default columns.text")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity (estimated; exact for short texts, see "
                             "shingle) at which two records are duplicates "
                             "(estimated from MinHash permutations drawn from the job's seed: the same seed gives the same "
                             "output on any workers and partitioning; under another, a pair near the threshold may fall on "
                             "the other side)")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length: more permutations estimate "
                          "similarity closer to the true Jaccard, so the seed decides fewer pairs")
    shingle: int = Field(5, ge=1, le=32, description="shingle size, in words or characters; a text shorter than one "
                         "shingle is one shingle (it matches only its copies), and two texts of up to num_perm / 4 "
                         "shingles each (36 words at the defaults) are compared on their shingles' exact Jaccard "
                         "similarity, longer ones on the MinHash estimate")
    unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters (char for text "
                                          "without spaces between words, such as Chinese or Japanese: as words, "
                                          "only exact copies match)")
    normalize: bool = Field(True, description="compare letters and digits only, case- and width-folded (NFKC): "
                            "'Dog!' and 'dog' are one word; false compares the text as it is, words split on spaces")


@register
class NearDedupText(_NearDedup):
    """Near-duplicate texts or records by MinHash LSH over word or character shingles."""

    name = "near_dedup_text"
    Options = NearDedupTextOptions
    payload_dtype = np.uint32

    def _fields(self) -> list[str]:
        if self.options.fields:
            return list(self.options.fields)
        if self.ctx.roles.text:
            return [self.ctx.roles.text]
        raise StageError(f"stage {self.ctx.name!r}: name the text with columns.text or the fields option")

    def check(self, meta):
        self.require_columns(meta, self._fields())
        self.check_keep_rule(meta)

    def signer(self, meta):
        o = self.options
        return TextSigner(self._fields(), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1,
                          normalize=o.normalize)


# -- decontaminate ---------------------------------------------------------------------


class DecontaminateOptions(StageOptions):
    reference: dict = Field(..., description="the source to protect, e.g. {format: parquet, path: test.parquet}")
    match: Literal["exact", "near", "contained"] = Field(
        "near", description="drop exact copies only, near copies too, or (text) rows that contain a reference item")
    kind: Literal["auto", "rows", "image", "text"] = Field("auto", description="compare whole rows, images (columns.image) or text")
    columns: list[str] | None = Field(None, description="for rows: columns compared (default the data columns both sources share); for text: the fields")
    max_distance: int = Field(20, ge=0, le=64, description="images: largest Hamming distance of pHash+dHash codes")
    mirror: bool = Field(False, description="images: also catch mirrored copies")
    threshold: float = Field(0.8, gt=0, le=1, description="text: estimated Jaccard similarity of a leak")
    containment: float = Field(0.5, gt=0, le=1, description="text, contained: share of a reference item's shingles a leaking row holds")
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32)
    unit: Literal["word", "char"] = "word"
    normalize: bool = Field(True, description="text: compare letters and digits only, case- and width-folded, as near_dedup_text")

    @model_validator(mode="after")
    def _has_format(self):
        _check_sampled_reach(self.max_distance, 20, "phash+dhash")  # as images are compared: a distance no band reaches hung
        if "format" not in self.reference:
            raise ValueError("reference needs a format (parquet, csv, jsonl, images, sample)")
        from dsbuild.io.sources import check_source_spec

        check_source_spec(self.reference, "reference")
        return self


class ReferenceIndex:
    """What is known about the reference set: content hashes, band buckets and, for
    ``match: contained``, every shingle."""

    def __init__(self, exact: dict, buckets: dict, payloads: dict, shingles: ShingleIndex | None = None):
        self.exact, self.buckets, self.payloads, self.shingles = exact, buckets, payloads, shingles

    def merge(self, other: ReferenceIndex) -> ReferenceIndex:
        buckets = dict(self.buckets)
        for k, v in other.buckets.items():
            buckets[k] = sorted(set(buckets.get(k, ())) | set(v))
        exact = dict(self.exact)
        for k, v in other.exact.items():
            exact[k] = min(v, exact.get(k, v))
        shingles = self.shingles.merge(other.shingles) if self.shingles is not None else None
        return ReferenceIndex(exact, buckets, {**self.payloads, **other.payloads}, shingles)


@register
class Decontaminate(Stage):
    """Drop rows that copy (exactly or nearly) a row of a reference set, e.g. the test split.

    The reference is read and indexed in a fit (content hashes and LSH buckets, sized by
    the reference, which is usually far smaller than the data), then each data
    partition is checked against the broadcast index. ``near`` compares whole texts, so
    a test item quoted inside a long document is missed; ``contained`` finds it: a row
    leaks an item when it holds ``containment`` of the item's shingles (exactly, from
    every shingle of the reference). An item shorter than one shingle is found only as
    a whole row.
    """

    name = "decontaminate"
    shape = "chain"
    Options = DecontaminateOptions

    def _kind(self, meta) -> str:
        o = self.options
        if o.kind != "auto":
            return o.kind
        if self.ctx.roles.image_column in meta.columns and not holds_text(meta[self.ctx.roles.image_column]):
            return "image"
        if self.ctx.roles.text and self.ctx.roles.text in meta.columns:
            return "text"
        return "rows"

    def _columns(self, meta, ref_meta=None) -> list[str]:
        if self.options.columns:
            return list(self.options.columns)
        kind = self._kind(meta)
        if kind == "image":
            return [self.ctx.roles.image_column]
        if kind == "text":
            return [self.ctx.roles.text]
        cols = [c for c in meta.columns if c not in (ID, self.ctx.roles.id) and not str(c).startswith("_")]
        return [c for c in cols if ref_meta is None or c in ref_meta.columns]

    def check(self, meta):
        """The reference exists and has the compared columns: ``validate`` says so before a run."""
        from dsbuild.io.sources import SourceError, read_source

        self.require_columns(meta, self._columns(meta))
        if self.options.match == "contained" and self._kind(meta) != "text":
            raise StageError(f"stage {self.ctx.name!r}: match: contained looks for reference texts inside rows, and this "
                             f"stage compares {self._kind(meta)}s; name the text with columns.text (or kind: text)")
        try:
            reference = read_source(self.options.reference, count_rows=False).frame._meta
        except SourceError as e:
            raise StageError(f"stage {self.ctx.name!r}: reference: {e}") from None
        self._require_in_reference(reference, self._columns(meta, reference))

    def _require_in_reference(self, reference: pd.DataFrame, cols: list[str]) -> None:
        """The columns compared must be in the reference file too (it may name them otherwise)."""
        have = [c for c in reference.columns if not str(c).startswith("_") and c != ID]
        if not cols:  # every row hashed alike, and every row was a leak of the reference's first
            raise StageError(f"stage {self.ctx.name!r}: the data and the reference {self.options.reference.get('path', '')} "
                             f"share no column to compare; the reference's columns are {have}: name the text with "
                             "columns.text or the compared columns with columns")
        missing = [c for c in cols if c not in reference.columns]
        if missing:
            raise StageError(f"stage {self.ctx.name!r}: column {missing[0]!r} is not in the reference "
                             f"{self.options.reference.get('path', '')}; its columns are {have}"
                             f"{_did_you_mean(missing[0], have)}; the data and the reference are compared column by column, by name")

    def signer(self, meta):
        o = self.options
        kind = self._kind(meta)
        if kind == "image" and o.match == "near":
            return ImageSigner(self._columns(meta)[0], "phash+dhash", o.max_distance, o.mirror, "sampled", None, 20, seed=self.ctx.seed)
        if kind == "text" and o.match == "near":
            return TextSigner(self._columns(meta), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1,
                              normalize=o.normalize)
        return None

    def exact_hashes(self, part: pd.DataFrame, cols: list[str], dtypes: dict | None = None) -> np.ndarray:
        if self._kind(part) == "image" or (len(cols) == 1 and cols[0] == self.ctx.roles.image_column and not holds_text(part[cols[0]])):
            return image_content_hashes(image_blobs(part[cols[0]]))
        return row_hashes(part[cols].astype(dtypes) if dtypes else part, cols)

    def build(self, frame, shapes):
        from dsbuild.io.sources import read_source

        reference = read_source(self.options.reference).frame
        cols = self._columns(frame._meta, reference._meta)
        self._require_in_reference(reference._meta, cols)
        signer = self.signer(frame._meta)
        dtypes = _hash_dtypes(frame._meta, reference._meta, cols)
        index = shapes.fit(reference, lambda p, s: self._index(p, cols, signer, dtypes), lambda a, b: a.merge(b), label=f"{self.ctx.name}-reference")
        self.reference_rows_ = len(index.exact)
        return shapes.map(frame, self._check_rows, cols, signer, shapes.broadcast(index), dtypes, label=self.ctx.name)

    def _index(self, part: pd.DataFrame, cols, signer, dtypes: dict) -> ReferenceIndex:
        ids = part[ID].astype(str).to_numpy(dtype=object)
        exact: dict = {}
        blank = _blank_rows(part, cols)
        for h, rid, b in zip(self.exact_hashes(part, cols, dtypes).tolist(), ids, blank):
            if not b:
                exact[h] = min(rid, exact.get(h, rid))
        buckets: dict = {}
        payloads: dict = {}
        shingles = None
        if self.options.match == "contained":
            shingles = ShingleIndex.of(*self._shingles(part, cols), ids)
        if signer is not None and len(part):
            ok, entries = signer.sign(part)
            for variant in range(entries.shape[1]):
                payload = entries[ok, variant]
                for rid, p, keys in zip(ids[ok], payload, signer.keys(payload)):
                    payloads[(rid, variant)] = p
                    for k in keys.tolist():
                        buckets.setdefault(k, []).append((rid, variant))
        return ReferenceIndex(exact, buckets, payloads, shingles)

    def _shingles(self, part: pd.DataFrame, cols) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        return shingle_hashes(joined_text(part, cols), o.shingle, o.unit, o.normalize)

    def _check_rows(self, part: pd.DataFrame, cols, signer, index: ReferenceIndex, dtypes: dict) -> pd.DataFrame:
        part = with_marks(part)
        n = len(part)
        leak = np.full(n, None, dtype=object)
        near = np.zeros(n, dtype=np.int64)
        if n:
            blank = _blank_rows(part, cols)
            for r, h in enumerate(self.exact_hashes(part, cols, dtypes).tolist()):
                leak[r] = None if blank[r] else index.exact.get(h)
        part["_m_exact_leaks"] = pd.notna(leak).astype(np.int64)
        if signer is not None and n:
            ok, entries = signer.sign(part)
            rows = np.flatnonzero(ok & pd.isna(leak))
            payload = entries[rows, 0]
            for r, p, keys in zip(rows, payload, signer.keys(payload)):
                found = sorted({ref for k in keys.tolist() for ref in index.buckets.get(k, ())})
                close = [rid for rid, v in found if signer.close(np.asarray([p]), np.asarray([index.payloads[(rid, v)]]))[0]]
                if close:
                    leak[r] = min(close)
                    near[r] = 1
        if index.shingles is not None and n:
            rows = np.flatnonzero(pd.isna(leak))
            found = index.shingles.contained(*self._shingles(part.iloc[rows], cols), len(rows), self.options.containment)
            leak[rows] = found
            near[rows] = pd.notna(found)
        part["_m_near_leaks"] = near
        hit = np.array([x is not None for x in leak], dtype=bool)
        return reject(part, hit, np.array([f"contaminated={x}" for x in leak], dtype=object))

    def summary(self) -> dict:
        return {"reference_rows_indexed": getattr(self, "reference_rows_", None)}


def _blank_rows(part: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Rows whose compared columns are all missing or blank text: nothing there can leak.
    A test set with one empty question made every empty row of the data a leak of it."""
    blank = np.ones(len(part), dtype=bool)
    for c in cols:
        blank &= part[c].isna().to_numpy(dtype=bool) | blank_text(part[c])
    return blank


def _hash_dtypes(data: pd.DataFrame, reference: pd.DataFrame, cols: list[str]) -> dict:
    """A dtype for each compared column whose dtype differs between the data and the
    reference, in which equal values of both hash alike. Sets written apart differ in
    type, not value: integers that are floats where the other set had a missing value,
    timestamps in another unit or zone, booleans with and without nulls; hashed as they
    came, no row of one matched the other, and every leak was kept."""
    out = {}
    for c in cols:
        a, b = data[c].dtype, reference[c].dtype
        if a == b:
            continue
        if all(pd.api.types.is_bool_dtype(t) for t in (a, b)):
            out[c] = "boolean"
        elif all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in (a, b)):
            out[c] = np.float64
        elif all(isinstance(t, pd.DatetimeTZDtype) for t in (a, b)):
            out[c] = pd.DatetimeTZDtype("ns", "UTC")
        elif all(pd.api.types.is_datetime64_dtype(t) for t in (a, b)):
            out[c] = np.dtype("datetime64[ns]")
    return out
