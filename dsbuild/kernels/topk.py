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
        valid = np.flatnonzero((keys >= 0) & ~np.isnan(scores))
        rows = valid[_largest(keys[valid], scores[valid], lambda at: id_strings(ids, valid[at]), budget)]
        return cls(budget, _items(keys[rows], scores[rows], id_strings(ids, rows)))

    def merge(self, other: LargestPerKey) -> LargestPerKey:
        keys = np.concatenate([self.items["key"].to_numpy(np.int64), other.items["key"].to_numpy(np.int64)])
        scores = np.concatenate([self.items["score"].to_numpy(np.float64), other.items["score"].to_numpy(np.float64)])
        ids = np.concatenate([self.items["id"].to_numpy(object), other.items["id"].to_numpy(object)])
        rows = _largest(keys, scores, lambda at: ids[at], self.budget)
        return LargestPerKey(self.budget, _items(keys[rows], scores[rows], ids[rows]))

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


def _largest(keys: np.ndarray, scores: np.ndarray, ids_at, budget: np.ndarray) -> np.ndarray:
    """Positions of each key's ``budget[key]`` largest (score, smaller id first) rows, in
    the order key, score descending, id. Selection and ordering are numeric; ids (fetched
    by ``ids_at(positions)``) are compared only among rows tied on score, so merging
    partitions' lists costs a partial sort of floats, not a sort of strings."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    chosen = []
    for seg in np.split(order, bounds) if len(order) else []:
        b = int(budget[keys[seg[0]]])
        if b <= 0:
            continue
        if len(seg) > b:
            s = scores[seg]
            cutoff = np.partition(s, len(seg) - b)[len(seg) - b]
            above, tied = seg[s > cutoff], seg[s == cutoff]
            need = b - len(above)
            if need < len(tied):
                tied = tied[np.argsort(_as_text(ids_at(tied)), kind="stable")[:need]]
            seg = np.concatenate([above, tied])
        chosen.append(seg)
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate(chosen)
    rows = rows[np.lexsort((-scores[rows], keys[rows]))]
    k, s = keys[rows], scores[rows]
    same = (k[1:] == k[:-1]) & (s[1:] == s[:-1])
    if same.any():  # rows tied on (key, score): smaller id first, within each run of ties
        tied = np.flatnonzero(np.r_[same, False] | np.r_[False, same])
        run = np.cumsum(np.r_[True, ~same])[tied]
        by_id = np.argsort(_as_text(ids_at(rows[tied])), kind="stable")
        rank = np.empty(len(tied), dtype=np.int64)
        rank[by_id] = np.arange(len(tied))
        rows[tied] = rows[tied][np.lexsort((rank, run))]
    return rows


def _as_text(ids) -> np.ndarray:
    """Ids as Python strings in an object array: they sort as Python (and the cut) compares them."""
    return np.array([str(i) for i in ids], dtype=object)


def _items(keys: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Ids stay Python strings (object dtype): pandas would convert them to Arrow and back at
    every merge."""
    return pd.DataFrame({"key": keys, "score": scores, "id": pd.Series(np.asarray(ids, dtype=object), dtype=object)})


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

BIN_BITS = 24


def score_bits(scores: np.ndarray) -> np.ndarray:
    """The bit pattern of non-negative float64 scores, which sorts as the scores do."""
    return np.ascontiguousarray(np.asarray(scores, dtype=np.float64)).view(np.uint64)


@dataclass
class BitHistogram:
    """Counts of in-range rows per (key, next ``bits`` bits of the score), only the cells
    that hold rows: the leading 12 bits are the sign and exponent, so most of a dense
    2**24 grid would be empty. Partitions' histograms add."""

    bits: int
    cells: np.ndarray  # key << bits | code, ascending
    counts: np.ndarray

    def __add__(self, other: BitHistogram) -> BitHistogram:
        cells = np.concatenate([self.cells, other.cells])
        counts = np.concatenate([self.counts, other.counts])
        order = np.argsort(cells, kind="stable")
        cells, counts = cells[order], counts[order]
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if len(cells) else np.zeros(0, dtype=np.int64)
        return BitHistogram(self.bits, cells[starts], np.add.reduceat(counts, starts) if len(starts) else counts)

    def __radd__(self, other):
        return self if isinstance(other, int) and other == 0 else NotImplemented


@dataclass
class CutSearch:
    """Per key, the range of score bit patterns that holds the budget's last row.

    ``prefix`` holds the leading ``prefix_len`` bits every row of the range shares;
    ``need`` is how many of the range's largest rows the budget still takes (the rest
    were taken in higher ranges). Each histogram round fixes ``BIN_BITS`` more bits: the
    first round the sign, the exponent and 12 bits of the mantissa, so scores within one
    power of two are told apart in one pass.
    """

    prefix: np.ndarray
    prefix_len: int
    need: np.ndarray
    in_range: np.ndarray

    @classmethod
    def start(cls, budget: np.ndarray, counts: np.ndarray) -> CutSearch:
        need = np.minimum(np.asarray(budget, dtype=np.int64), np.asarray(counts, dtype=np.int64))
        return cls(np.zeros(len(need), dtype=np.uint64), 0, need, np.asarray(counts, dtype=np.int64))

    def _bits(self) -> int:
        return min(BIN_BITS, 64 - self.prefix_len)

    def inside(self, keys: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Rows of a searched key whose bits fall in that key's current range."""
        ok = (keys >= 0) & (self.need[np.clip(keys, 0, None)] > 0)
        if self.prefix_len == 0:
            return ok
        shift = np.uint64(64 - self.prefix_len)
        return ok & ((bits >> shift) == self.prefix[np.clip(keys, 0, None)])

    def histogram(self, keys: np.ndarray, scores: np.ndarray) -> BitHistogram:
        """Counts of in-range rows by key and their next ``BIN_BITS`` bits."""
        keys = np.asarray(keys, dtype=np.int64)
        valid = ~np.isnan(scores)
        keys, bits = keys[valid], score_bits(scores[valid])
        rows = self.inside(keys, bits)
        width = self._bits()
        shift = np.uint64(64 - self.prefix_len - width)
        codes = ((bits[rows] >> shift) & np.uint64((1 << width) - 1)).astype(np.int64)
        cells, counts = np.unique((keys[rows] << width) | codes, return_counts=True)
        return BitHistogram(width, cells, counts.astype(np.int64))

    def narrow(self, hist: BitHistogram) -> CutSearch:
        """Fix the next bits: the cell (from the top) where the running count reaches need."""
        width = hist.bits
        prefix, need, in_range = self.prefix.copy(), self.need.copy(), self.in_range.copy()
        owner = hist.cells >> width
        for key in np.flatnonzero(need > 0):
            mine = owner == key
            codes, counts = (hist.cells[mine] & ((1 << width) - 1))[::-1], hist.counts[mine][::-1]
            from_top = np.cumsum(counts)
            b = int(np.searchsorted(from_top, need[key]))
            above = int(from_top[b - 1]) if b else 0
            prefix[key] = (prefix[key] << np.uint64(width)) | np.uint64(codes[b])
            need[key] -= above
            in_range[key] = int(counts[b])
        return CutSearch(prefix, self.prefix_len + width, need, in_range)

    def resolved(self, limit: int) -> bool:
        """True when every searched range is small enough to collect, or fully fixed."""
        return self.prefix_len >= 64 or bool((self.in_range[self.need > 0] <= limit).all())

    def candidates(self, keys: np.ndarray, scores: np.ndarray, ids) -> LargestPerKey:
        """The exact top ``need`` of each key's range; its cut is the global cut."""
        keys = np.asarray(keys, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        valid = ~np.isnan(scores)
        inside = np.zeros(len(keys), dtype=bool)
        inside[valid] = self.inside(keys[valid], score_bits(scores[valid]))
        return LargestPerKey.of(np.where(inside, keys, -1), scores, ids, self.need)
