"""SMOTE (Chawla et al., 2002): new minority rows on segments between a row and one of its
k nearest same-class neighbours.

Split in three pure steps so each can be checked on its own against imbalanced-learn:
neighbours (scikit-learn's exact search), draws (which row, which neighbour, where on
the segment), interpolation. The draws follow imbalanced-learn's layout — one index into
the flattened (row, neighbour) table, then one uniform step per new row — so the same
draws give the same rows.
"""

from __future__ import annotations

import numpy as np


def nearest_neighbours(x: np.ndarray, k: int, scale: np.ndarray | None = None) -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows (exact, Euclidean), each column
    divided by ``scale`` first: in raw units a column in dollars decides alone."""
    x = np.asarray(x, dtype=np.float64)
    if scale is not None:
        x = x / np.asarray(scale, dtype=np.float64)
    k = min(k, len(x) - 1)
    if k < 1:
        raise ValueError(f"SMOTE needs at least 2 rows of a class, got {len(x)}")
    from sklearn.neighbors import NearestNeighbors  # imported where used: a second off every worker's start

    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    return nn.kneighbors(x, return_distance=False)[:, 1:]


def draw(rng: np.random.Generator, n_rows: int, k: int, n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, neighbour columns, steps) for ``n_samples`` new rows."""
    flat = rng.integers(0, n_rows * k, size=n_samples)
    steps = rng.random(n_samples)
    return flat // k, flat % k, steps


def interpolate(x: np.ndarray, neighbours: np.ndarray, rows: np.ndarray, cols: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``x[row] + step · (x[neighbour] − x[row])`` for each draw."""
    x = np.asarray(x, dtype=np.float64)
    base = x[rows]
    return base + np.asarray(steps, dtype=np.float64)[:, None] * (x[neighbours[rows, cols]] - base)


def smote(x: np.ndarray, n_samples: int, k: int, rng: np.random.Generator, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(new rows, the row each was grown from) for one class; neighbours are found on the
    columns divided by ``scale`` (as imbalanced-learn's users put a StandardScaler first),
    and the rows are made in ``x``'s units (interpolation commutes with scaling)."""
    neighbours = nearest_neighbours(x, k, scale)
    rows, cols, steps = draw(rng, len(x), neighbours.shape[1], n_samples)
    return interpolate(x, neighbours, rows, cols, steps), rows


def class_targets(counts: dict, ratio: float = 1.0, classes=None) -> dict:
    """New rows per class so each chosen class reaches ``ratio`` × the largest class."""
    if not counts:
        return {}
    top = max(counts.values())
    goal = int(round(ratio * top))
    chosen = counts if classes is None else {c: counts[c] for c in classes if c in counts}
    return {c: goal - n for c, n in sorted(chosen.items(), key=lambda kv: str(kv[0])) if n < goal and n >= 2}
