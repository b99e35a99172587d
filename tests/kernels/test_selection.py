"""Exactly the r smallest keys per cell, found from a histogram and one boundary bucket."""

import numpy as np
import pandas as pd

from dsbuild.kernels.selection import boundaries, boundary_keys, chosen, key_histogram, merge_boundary_keys, thresholds


def select(cells, keys, ties, wanted, n_cells, chunks, buckets=64):
    parts = np.array_split(np.arange(len(cells)), chunks)
    hist = sum(key_histogram(cells[p], keys[p], n_cells, buckets) for p in parts)
    bucket, inside = boundaries(hist, wanted)
    cand = boundary_keys(cells[:0], keys[:0], ties[:0], bucket, buckets)
    for p in parts:
        cand = merge_boundary_keys(cand, boundary_keys(cells[p], keys[p], ties[p], bucket, buckets))
    key_limit, tie_limit = thresholds(cand, inside)
    return chosen(cells, keys, ties, bucket, key_limit, tie_limit, buckets)


def test_chooses_the_r_smallest_in_each_cell_for_any_chunking():
    rng = np.random.default_rng(0)
    n = 20_000
    cells = rng.integers(0, 5, n)
    cells[:50] = -1  # rows outside every cell are never chosen
    keys = np.round(rng.random(n), 3)  # many equal keys: ties decide
    ties = rng.random(n)
    wanted = np.array([0, 1, 1234, 10_000, 3999])
    frame = pd.DataFrame({"cell": cells, "key": keys, "tie": ties})
    expected = np.zeros(n, dtype=bool)
    for c, r in enumerate(wanted):
        rows = frame[frame["cell"] == c].sort_values(["key", "tie"])
        expected[rows.index[: r]] = True
    for chunks in (1, 3, 7):
        got = select(cells, keys, ties, wanted, 5, chunks)
        assert np.array_equal(got, expected)
    counts = np.bincount(cells[expected], minlength=5)
    sizes = np.bincount(cells[cells >= 0], minlength=5)
    assert list(counts) == [0, 1, 1234, sizes[3], 3999]
