"""Pick exactly the r rows with the smallest keys in each cell, without collecting a cell.

Resampling and massaging need "the r most borderline rows of this group × label cell"
(or, for uniform sampling, r rows at random: the r smallest per-record uniforms). A sort
would gather the cell in one place; instead two mergeable passes find each cell's r-th
key: a histogram of keys per cell locates the bucket that holds it, then only the keys
in that one bucket are gathered and sorted. Keys lie in [0, 1]; a second key breaks ties,
so the choice is exact and the same for any partitioning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BUCKETS = 4096


def bucket_of(keys: np.ndarray, buckets: int = BUCKETS) -> np.ndarray:
    return np.clip((np.asarray(keys, dtype=np.float64) * buckets).astype(np.int64), 0, buckets - 1)


def key_histogram(cells: np.ndarray, keys: np.ndarray, n_cells: int, buckets: int = BUCKETS) -> np.ndarray:
    """Counts of keys per (cell, bucket); rows with cell < 0 are left out."""
    cells = np.asarray(cells, dtype=np.int64)
    keep = cells >= 0
    flat = cells[keep] * buckets + bucket_of(keys[keep], buckets)
    return np.bincount(flat, minlength=n_cells * buckets).reshape(n_cells, buckets)


def boundaries(histogram: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the bucket holding the r-th smallest key, and how many of the r lie in it.

    r = 0 gives bucket -1 (nothing chosen); r ≥ the cell's size gives bucket ``buckets``
    (everything chosen).
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    cum = np.cumsum(histogram, axis=1)
    n_cells, buckets = histogram.shape
    bucket = np.full(n_cells, -1, dtype=np.int64)
    inside = np.zeros(n_cells, dtype=np.int64)
    for c in range(n_cells):
        r = wanted[c]
        if r <= 0:
            continue
        if r >= cum[c, -1]:
            bucket[c] = buckets
            continue
        b = int(np.searchsorted(cum[c], r, side="left"))
        bucket[c] = b
        inside[c] = r - (cum[c, b - 1] if b > 0 else 0)
    return bucket, inside


def boundary_keys(cells: np.ndarray, keys: np.ndarray, ties: np.ndarray, bucket: np.ndarray, buckets: int = BUCKETS) -> pd.DataFrame:
    """(cell, key, tie) of the rows that fall in their cell's boundary bucket."""
    cells = np.asarray(cells, dtype=np.int64)
    ok = cells >= 0
    on_edge = np.zeros(len(cells), dtype=bool)
    on_edge[ok] = bucket_of(keys[ok], buckets) == bucket[cells[ok]]
    return pd.DataFrame({"cell": cells[on_edge], "key": keys[on_edge], "tie": ties[on_edge]})


def merge_boundary_keys(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([a, b], ignore_index=True)


def thresholds(candidates: pd.DataFrame, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell the (key, tie) of the last chosen row; a row is chosen if it is ≤ this."""
    n_cells = len(inside)
    key = np.full(n_cells, -np.inf)
    tie = np.full(n_cells, -np.inf)
    ordered = candidates.sort_values(["cell", "key", "tie"], kind="stable")
    for c, rows in ordered.groupby("cell", sort=True):
        r = int(inside[int(c)])
        if r > 0:
            key[int(c)] = rows["key"].iloc[r - 1]
            tie[int(c)] = rows["tie"].iloc[r - 1]
    return key, tie


def chosen(cells, keys, ties, bucket, key_limit, tie_limit, buckets: int = BUCKETS) -> np.ndarray:
    """True for the rows among their cell's r smallest (key, tie)."""
    cells = np.asarray(cells, dtype=np.int64)
    out = np.zeros(len(cells), dtype=bool)
    ok = cells >= 0
    c = cells[ok]
    k = np.asarray(keys, dtype=np.float64)[ok]
    t = np.asarray(ties, dtype=np.float64)[ok]
    b = bucket_of(k, buckets)
    edge = bucket[c]
    below = b < edge
    at = (b == edge) & ((k < key_limit[c]) | ((k == key_limit[c]) & (t <= tie_limit[c])))
    out[ok] = below | at
    return out
