"""Choosing rows per (group, label) cell, at random or nearest the decision boundary, the
same for any partitioning: what ``resample`` and ``massage`` share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.kernels import selection
from dsbuild.kernels.fairness import (
    joint_text,
    merge_tables,
)
from dsbuild.stages.fairness.base import FairnessStage


def _favorable_rows(values, favorable) -> np.ndarray:
    """Whether each row's label is the favourable one; a missing label (``pd.NA`` of a
    nullable boolean or integer column, whose ``==`` has no truth value) is not."""
    return np.array([not _isna(v) and v == favorable for v in values], dtype=bool)


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


class CellChooser:
    """The wiring around :mod:`dsbuild.kernels.selection` for stages that pick rows per cell.

    Pass 1 counts rows per (group, label) and histograms each cell's keys; the stage then
    says how many rows it wants from each cell; pass 2 gathers only the keys in each
    cell's boundary bucket. The result picks exactly those rows, for any partitioning.
    ``cell_of(part, state)`` names each row's cell (None: no cell); ``keys_of(part,
    state)`` gives (key in [0, 1], tie-break) per row, smallest chosen first.
    """

    def __init__(self, stage: FairnessStage, cell_of, keys_of):
        self.stage = stage
        self.cell_of = cell_of
        self.keys_of = keys_of

    def count(self, part, state=None):
        cells = self.cell_of(part, state)
        keys, _ = self.keys_of(part, state)
        present = np.array([c is not None for c in cells], dtype=bool)
        codes, names = pd.factorize(pd.Series(cells[present], dtype=object))
        hist = selection.key_histogram(codes, keys[present], len(names))
        table = self.stage.table(self.stage.counted(part))
        return table, {str(n): hist[i] for i, n in enumerate(names)}

    @staticmethod
    def merge_counts(a, b):
        hist = dict(a[1])
        for k, h in b[1].items():
            hist[k] = hist[k] + h if k in hist else h
        return merge_tables(a[0], b[0]), hist

    def plan(self, frame, shapes, wanted: dict[str, int], hists: dict[str, np.ndarray], state) -> dict:
        cells = sorted(hists)
        index = pd.Index(cells, dtype=object)
        hist = np.stack([hists[c] for c in cells]) if cells else np.zeros((0, selection.BUCKETS), np.int64)
        want = np.array([wanted.get(c, 0) for c in cells], dtype=np.int64)
        bucket, inside = selection.boundaries(hist, want)
        edge = {"index": index, "bucket": bucket, "state": state}
        candidates = shapes.fit(frame, self._boundary, selection.merge_boundary_keys, edge, label=f"{self.stage.ctx.name}-edge")
        key_limit, tie_limit = selection.thresholds(candidates, inside)
        return {**edge, "key": key_limit, "tie": tie_limit}

    def _boundary(self, part, edge):
        codes, keys, ties = self._coded(part, edge)
        return selection.boundary_keys(codes, keys, ties, edge["bucket"])

    def _coded(self, part, plan):
        cells = self.cell_of(part, plan["state"])
        codes = plan["index"].get_indexer(pd.Index(np.where([c is None for c in cells], "\x00", cells), dtype=object))
        keys, ties = self.keys_of(part, plan["state"])
        return codes, keys, ties

    def chosen(self, part, plan) -> tuple[np.ndarray, np.ndarray]:
        """(cell code per row, whether the row is among its cell's wanted rows)."""
        codes, keys, ties = self._coded(part, plan)
        return codes, selection.chosen(codes, keys, ties, plan["bucket"], plan["key"], plan["tie"])


def _borderline_keys(score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Nearest the boundary first: positives with the lowest score, negatives the highest."""
    return np.where(positive, score, 1.0 - score)


def _joint(table: pd.DataFrame, sensitive) -> np.ndarray:
    return joint_text([table[c].to_numpy(dtype=object) for c in sensitive])
