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
        items = pd.DataFrame({"key": keys[rows], "score": scores[rows], "id": id_strings(ids, rows)})
        return cls(budget, _keep_largest(items, budget))

    def merge(self, other: LargestPerKey) -> LargestPerKey:
        return LargestPerKey(self.budget, _keep_largest(pd.concat([self.items, other.items], ignore_index=True), self.budget))

    def cut(self) -> dict[int, tuple[float, str]]:
        """For each key with a positive budget, the last (score, id) inside the budget."""
        last = self.items.groupby("key", sort=True).tail(1)
        return {int(k): (float(s), str(i)) for k, s, i in zip(last["key"], last["score"], last["id"])}


def id_strings(ids, rows: np.ndarray) -> np.ndarray:
    """``ids[rows]`` as str objects. Only those rows are converted: turning every id of a
    partition into a Python string costs more than scoring it."""
    if isinstance(ids, (list, tuple)):
        ids = np.asarray(ids, dtype=object)
    return np.asarray(ids[rows], dtype=object).astype(str).astype(object)


def _keep_largest(items: pd.DataFrame, budget: np.ndarray) -> pd.DataFrame:
    items = items.assign(neg=-items["score"]).sort_values(["key", "neg", "id"], kind="stable")
    rank = items.groupby("key", sort=False).cumcount().to_numpy()
    keep = rank < budget[items["key"].to_numpy()]
    return items.loc[keep, ["key", "score", "id"]].reset_index(drop=True)


def within_cut(keys: np.ndarray, scores: np.ndarray, ids, cut: dict[int, tuple[float, str]]) -> np.ndarray:
    """True for rows inside their key's budget: above the cut, or tied with a smaller id."""
    keys = np.asarray(keys, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    out = np.zeros(len(keys), dtype=bool)
    for key, (score, last_id) in cut.items():
        rows = keys == key
        out |= rows & (scores > score)
        tied = np.flatnonzero(rows & (scores == score))
        out[tied] = id_strings(ids, tied) <= last_id
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


# -- narrowing the cut with histograms, for budgets too large to collect ---------------

BIN_BITS = 12


def score_bits(scores: np.ndarray) -> np.ndarray:
    """The bit pattern of non-negative float64 scores, which sorts as the scores do."""
    return np.ascontiguousarray(np.asarray(scores, dtype=np.float64)).view(np.uint64)


@dataclass
class CutSearch:
    """Per key, the range of score bit patterns that holds the budget's last row.

    ``prefix`` holds the leading ``prefix_len`` bits every row of the range shares;
    ``need`` is how many of the range's largest rows the budget still takes (the rest
    were taken in higher ranges). Each histogram round fixes ``BIN_BITS`` more bits.
    """

    prefix: np.ndarray
    prefix_len: int
    need: np.ndarray
    in_range: np.ndarray

    @classmethod
    def start(cls, budget: np.ndarray, counts: np.ndarray) -> CutSearch:
        need = np.minimum(np.asarray(budget, dtype=np.int64), np.asarray(counts, dtype=np.int64))
        return cls(np.zeros(len(need), dtype=np.uint64), 0, need, np.asarray(counts, dtype=np.int64))

    def inside(self, keys: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Rows of a searched key whose bits fall in that key's current range."""
        ok = (keys >= 0) & (self.need[np.clip(keys, 0, None)] > 0)
        if self.prefix_len == 0:
            return ok
        shift = np.uint64(64 - self.prefix_len)
        return ok & ((bits >> shift) == self.prefix[np.clip(keys, 0, None)])

    def histogram(self, keys: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(keys, 2**BIN_BITS) counts of in-range rows by their next BIN_BITS bits."""
        keys = np.asarray(keys, dtype=np.int64)
        valid = ~np.isnan(scores)
        keys, bits = keys[valid], score_bits(scores[valid])
        rows = self.inside(keys, bits)
        shift = np.uint64(64 - self.prefix_len - BIN_BITS)
        bins = ((bits[rows] >> shift) & np.uint64((1 << BIN_BITS) - 1)).astype(np.int64)
        cell = keys[rows] * (1 << BIN_BITS) + bins
        return np.bincount(cell, minlength=len(self.need) << BIN_BITS).reshape(len(self.need), 1 << BIN_BITS)

    def narrow(self, hist: np.ndarray) -> CutSearch:
        """Fix the next bits: the bin (from the top) where the running count reaches need."""
        prefix, need, in_range = self.prefix.copy(), self.need.copy(), self.in_range.copy()
        for key in np.flatnonzero(need > 0):
            from_top = np.cumsum(hist[key][::-1])
            b = int(np.searchsorted(from_top, need[key]))
            above = int(from_top[b - 1]) if b else 0
            chosen = (1 << BIN_BITS) - 1 - b
            prefix[key] = (prefix[key] << np.uint64(BIN_BITS)) | np.uint64(chosen)
            need[key] -= above
            in_range[key] = int(hist[key][chosen])
        return CutSearch(prefix, self.prefix_len + BIN_BITS, need, in_range)

    def resolved(self, limit: int) -> bool:
        """True when every searched range is small enough to collect, or fully fixed."""
        return self.prefix_len + BIN_BITS > 64 or bool((self.in_range[self.need > 0] <= limit).all())

    def candidates(self, keys: np.ndarray, scores: np.ndarray, ids) -> LargestPerKey:
        """The exact top ``need`` of each key's range; its cut is the global cut."""
        keys = np.asarray(keys, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        valid = ~np.isnan(scores)
        inside = np.zeros(len(keys), dtype=bool)
        inside[valid] = self.inside(keys[valid], score_bits(scores[valid]))
        return LargestPerKey.of(np.where(inside, keys, -1), scores, ids, self.need)
