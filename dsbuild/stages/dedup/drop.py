"""The last pass of every deduplicating stage: each dropped row, routed to the partition it
lives in, is rejected there (``duplicate-of=<kept id>``) or, with ``action: group``, named
by its cluster; and the clusters counted from the dropped rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dsbuild.kernels.unionfind import add_histograms, size_histogram
from dsbuild.records import ID
from dsbuild.stages.base import (
    REJECT,
    reject,
    with_marks,
)
from dsbuild.stages.dedup.keep import arrow_ids


def _grouped(part: pd.DataFrame, hit: np.ndarray, keepers: pa.Array, column: str) -> pd.DataFrame:
    """``column``: the kept id where ``hit`` (in order, from ``keepers``), the row's own id elsewhere."""
    own = arrow_ids(part[ID])
    if hit.any():
        own = pc.if_else(pa.array(hit), spread_text(keepers, hit), own)
    part[column] = pd.arrays.ArrowStringArray(own)
    return part


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
