"""Exact "largest k per class" as a mergeable statistic.

Removing exactly ``floor(fraction * n_c)`` rows per class needs the k-th largest score
of each class over the whole data set. Each partition keeps only its own k largest
per class, and merging two such lists and keeping the k largest again is exact, so the
result is the same for any partitioning. Ties on score are broken by record id (the
smaller id goes first), so the cut is a total order and the budget is met exactly.
Memory is the budget itself: ``sum_c k_c`` (score, id) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class LargestPerKey:
    """The ``budget[key]`` largest (score, id) pairs for each integer key."""

    budget: np.ndarray
    items: pd.DataFrame  # columns key, score, id

    @classmethod
    def of(cls, keys: np.ndarray, scores: np.ndarray, ids, budget: np.ndarray) -> LargestPerKey:
        keys = np.asarray(keys, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        budget = np.asarray(budget, dtype=np.int64)
        ids = np.asarray(ids).astype(str).astype(object)
        valid = (keys >= 0) & ~np.isnan(scores)
        chosen = []
        for key in np.unique(keys[valid]):
            rows = np.flatnonzero(valid & (keys == key))
            b = int(budget[key])
            if b <= 0:
                continue
            if len(rows) > b:
                cutoff = np.partition(scores[rows], len(rows) - b)[len(rows) - b]
                rows = rows[scores[rows] >= cutoff]
            chosen.append(rows)
        rows = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        items = pd.DataFrame({"key": keys[rows], "score": scores[rows], "id": ids[rows]})
        return cls(budget, _keep_largest(items, budget))

    def merge(self, other: LargestPerKey) -> LargestPerKey:
        return LargestPerKey(self.budget, _keep_largest(pd.concat([self.items, other.items], ignore_index=True), self.budget))

    def cut(self) -> dict[int, tuple[float, str]]:
        """For each key with a positive budget, the last (score, id) inside the budget."""
        last = self.items.groupby("key", sort=True).tail(1)
        return {int(k): (float(s), str(i)) for k, s, i in zip(last["key"], last["score"], last["id"])}


def _keep_largest(items: pd.DataFrame, budget: np.ndarray) -> pd.DataFrame:
    items = items.assign(neg=-items["score"]).sort_values(["key", "neg", "id"], kind="stable")
    rank = items.groupby("key", sort=False).cumcount().to_numpy()
    keep = rank < budget[items["key"].to_numpy()]
    return items.loc[keep, ["key", "score", "id"]].reset_index(drop=True)


def within_cut(keys: np.ndarray, scores: np.ndarray, ids, cut: dict[int, tuple[float, str]]) -> np.ndarray:
    """True for rows inside their key's budget: above the cut, or tied with a smaller id."""
    keys = np.asarray(keys, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids).astype(str)
    out = np.zeros(len(keys), dtype=bool)
    for key, (score, last_id) in cut.items():
        rows = keys == key
        above = scores > score
        tied = (scores == score) & (ids <= last_id)
        out |= rows & (above | tied)
    return out


@dataclass
class HashSample:
    """A uniform sample of at most ``size`` rows: those with the smallest hash draws.

    A bottom-k sketch: each partition keeps its ``size`` smallest draws and a merge keeps
    the ``size`` smallest of both, so the sample (and its row order) is the same for any
    partitioning. When the data has at most ``size`` rows the sample is all of it.
    """

    size: int
    draws: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    X: np.ndarray

    @classmethod
    def of(cls, draws, ids, labels, X, size: int) -> HashSample:
        draws = np.asarray(draws, dtype=np.float64)
        keep = np.argsort(draws, kind="stable")[:size]
        return cls(size, draws[keep], np.asarray(ids, dtype=object)[keep], np.asarray(labels, dtype=object)[keep], np.asarray(X, dtype=np.float64)[keep])

    def merge(self, other: HashSample) -> HashSample:
        return HashSample.of(
            np.concatenate([self.draws, other.draws]),
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.labels, other.labels]),
            np.vstack([self.X, other.X]),
            self.size,
        )
