"""Mergeable statistics for robust cleaning: value counts, a quantile sketch, MAD and IQR.

Every summary here is built per partition and merged by adding counts, so the merged
result is the same for any partitioning and any merge order (no float state depends on
order, except :attr:`Distribution.total` in sketch mode, which is a plain sum: the mean
made of it is rounded).

- :class:`ValueCounts` is exact: medians, quantiles (numpy's ``linear`` rule), modes and
  means from it equal numpy's on the whole column. Its size is the number of distinct
  values, so it suits categories and low-cardinality numbers.
- :class:`QuantileSketch` is a DDSketch-style log-bucket histogram: the quantile it
  returns is within relative error ``alpha`` of the exact value at rank
  ``floor(q * (n - 1))`` (the "lower" quantile), for any data, with memory logarithmic in
  the value range. Bucket counts add, so merges are exact and order-free.
- :class:`Distribution` keeps exact counts up to ``max_distinct`` values and switches to
  the sketch beyond that; whether it switched depends only on the whole column's number
  of distinct values, never on the partitioning.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dsbuild.kernels.dtypes import as_text
from dsbuild.kernels.moments import round_bits

MAD_TO_SIGMA = 1.4826
MEAN_AD_TO_SIGMA = 1.2533


def _sum_counts(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and their summed counts."""
    if len(keys) == 0:
        return keys, counts.astype(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)


def _present(values) -> np.ndarray:
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    s = s[s.notna()]
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=np.float64)
    return s.astype(str).to_numpy(dtype=object)


class ValueCounts:
    """Exact counts of distinct values, sorted by value. Missing values are not counted."""

    def __init__(self, values: np.ndarray | None = None, counts: np.ndarray | None = None):
        self.values = values if values is not None else np.array([], dtype=np.float64)
        self.counts = counts if counts is not None else np.array([], dtype=np.int64)

    @classmethod
    def of(cls, values) -> ValueCounts:
        present = _present(values)
        vc = pd.Series(present).value_counts(sort=False)
        keys = vc.index.to_numpy(dtype=present.dtype)
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], vc.to_numpy(dtype=np.int64)[order])

    def merge(self, other: ValueCounts) -> ValueCounts:
        if not len(other.values):
            return self
        if not len(self.values):
            return other
        keys = np.concatenate([self.values, other.values])
        if keys.dtype == object:
            keys = keys.astype(str).astype(object)
        return ValueCounts(*_sum_counts(keys, np.concatenate([self.counts, other.counts])))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def distinct(self) -> int:
        return len(self.values)

    def quantile(self, q: float) -> float:
        """As ``np.quantile(column, q)`` (linear interpolation between closest ranks)."""
        n = self.n
        if n == 0:
            return math.nan
        h = (n - 1) * q
        lo = math.floor(h)
        cum = np.cumsum(self.counts)
        v_lo = float(self.values[np.searchsorted(cum, lo + 1)])
        v_hi = float(self.values[np.searchsorted(cum, min(lo + 2, n))])
        return v_lo + (h - lo) * (v_hi - v_lo)

    def median(self) -> float:
        return self.quantile(0.5)

    def mean(self) -> float:
        """NaN when the column holds inf and -inf: its callers say so (impute refuses it)."""
        n = self.n
        with np.errstate(invalid="ignore"):
            return float(np.dot(self.values.astype(np.float64), self.counts) / n) if n else math.nan

    def mode(self):
        """The most frequent value; ties go to the smallest value, so the choice is stable."""
        if not self.n:
            return None
        value = self.values[int(np.argmax(self.counts))]
        return value.item() if hasattr(value, "item") else value

    @classmethod
    def by_group(cls, codes: np.ndarray, values: pd.Series) -> dict[int, ValueCounts]:
        """Exact counts of ``values`` within each group code, in one vectorised pass.

        ``codes`` are non-negative group numbers, one per row; missing values are skipped.
        The same counts as ``ValueCounts.of`` on each group's rows.
        """
        values = values if isinstance(values, pd.Series) else pd.Series(values)
        present = values.notna().to_numpy()
        if not present.all():
            codes, values = codes[present], values[present]
        if not len(values):
            return {}
        try:
            vcodes, uniques = pd.factorize(values, sort=True)
        except TypeError:  # lists, arrays and dicts cannot be hashed: counted by their text
            vcodes, uniques = pd.factorize(as_text(values), sort=True)
        uniques = _present(pd.Series(uniques))
        nv = len(uniques)
        keys = codes.astype(np.int64) * nv + vcodes
        span = (int(codes.max()) + 1) * nv
        if span <= 4 * len(keys) + 1024:
            counts = np.bincount(keys, minlength=span)
            keys = np.flatnonzero(counts)
            counts = counts[keys]
        else:
            keys, counts = np.unique(keys, return_counts=True)
        group, value = keys // nv, keys % nv
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        return {
            int(group[a]): cls(uniques[value[a:b]], counts[a:b].astype(np.int64))
            for a, b in zip(starts, ends)
        }

    def deviations(self, center: float) -> ValueCounts:
        """Counts of ``|x - center|``, for the MAD without another pass over the data."""
        dev = np.abs(self.values.astype(np.float64) - center)
        return ValueCounts(*_sum_counts(dev, self.counts))


class QuantileSketch:
    """Log-bucket quantile sketch (DDSketch): relative error ``alpha``, exact merges."""

    def __init__(self, alpha: float = 0.005):
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.pos = (np.array([], dtype=np.int64), np.array([], dtype=np.int64))
        self.neg = (np.array([], dtype=np.int64), np.array([], dtype=np.int64))
        self.zeros = 0

    _TINY = 1e-300

    def _keys(self, x: np.ndarray) -> np.ndarray:
        return np.ceil(np.log(x) / self._log_gamma).astype(np.int64)

    def add(self, values, counts=None) -> QuantileSketch:
        x = np.asarray(values, dtype=np.float64)
        w = np.ones(len(x), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        keep = ~np.isnan(x)
        x, w = x[keep], w[keep]
        pos, neg = x > self._TINY, x < -self._TINY
        self.zeros += int(w[~(pos | neg)].sum())
        for side, mask, sign in (("pos", pos, 1.0), ("neg", neg, -1.0)):
            if mask.any():
                keys, cnt = getattr(self, side)
                new = self._keys(sign * x[mask])
                setattr(self, side, _sum_counts(np.concatenate([keys, new]), np.concatenate([cnt, w[mask]])))
        return self

    @classmethod
    def of(cls, values, alpha: float = 0.005) -> QuantileSketch:
        return cls(alpha).add(_present(values))

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        if other.alpha != self.alpha:
            raise ValueError("cannot merge sketches with different alpha")
        out = QuantileSketch(self.alpha)
        out.zeros = self.zeros + other.zeros
        for side in ("pos", "neg"):
            (ka, ca), (kb, cb) = getattr(self, side), getattr(other, side)
            setattr(out, side, _sum_counts(np.concatenate([ka, kb]), np.concatenate([ca, cb])))
        return out

    @property
    def n(self) -> int:
        return int(self.pos[1].sum() + self.neg[1].sum() + self.zeros)

    def _value(self, key: np.ndarray) -> np.ndarray:
        return 2.0 * self.gamma ** key.astype(np.float64) / (self.gamma + 1.0)

    def quantile(self, q: float) -> float:
        """Within relative error alpha of the exact value at rank ``floor(q * (n - 1))``."""
        n = self.n
        if n == 0:
            return math.nan
        rank = math.floor(q * (n - 1))
        neg_keys, neg_counts = self.neg
        values = np.concatenate([-self._value(neg_keys[::-1]), [0.0], self._value(self.pos[0])])
        counts = np.concatenate([neg_counts[::-1], [self.zeros], self.pos[1]])
        return float(values[np.searchsorted(np.cumsum(counts), rank + 1)])

    def median(self) -> float:
        return self.quantile(0.5)


class Distribution:
    """One column's mergeable summary: exact counts while small, a sketch beyond.

    ``total`` and ``n`` give the mean; ``quantile`` is exact (numpy's rule) while
    :attr:`exact`, else within relative error ``alpha`` (see :class:`QuantileSketch`).
    """

    def __init__(self, max_distinct: int = 50_000, alpha: float = 0.005):
        self.max_distinct = max_distinct
        self.alpha = alpha
        self.counts: ValueCounts | None = ValueCounts()
        self.sketch: QuantileSketch | None = None
        self.total = 0.0

    @classmethod
    def of(cls, values, max_distinct: int = 50_000, alpha: float = 0.005) -> Distribution:
        return cls.from_counts(ValueCounts.of(values), max_distinct, alpha)

    @classmethod
    def from_counts(cls, counts: ValueCounts, max_distinct: int = 50_000, alpha: float = 0.005) -> Distribution:
        out = cls(max_distinct, alpha)
        numeric = counts.values.dtype != object
        out.total = float(np.dot(counts.values, counts.counts)) if numeric else math.nan
        out.counts = counts
        return out._maybe_sketch()

    @classmethod
    def by_group(cls, codes: np.ndarray, values, max_distinct: int = 50_000, alpha: float = 0.005) -> dict[int, Distribution]:
        """One distribution per group code (see :meth:`ValueCounts.by_group`)."""
        return {g: cls.from_counts(vc, max_distinct, alpha) for g, vc in ValueCounts.by_group(codes, values).items()}

    def _maybe_sketch(self) -> Distribution:
        if self.counts is not None and self.counts.distinct > self.max_distinct:
            self.sketch = QuantileSketch(self.alpha).add(self.counts.values, self.counts.counts)
            self.counts = None
        return self

    def merge(self, other: Distribution) -> Distribution:
        out = Distribution(self.max_distinct, self.alpha)
        out.total = self.total + other.total
        if self.counts is not None and other.counts is not None:
            out.counts = self.counts.merge(other.counts)
            return out._maybe_sketch()
        out.counts = None
        out.sketch = self._as_sketch().merge(other._as_sketch())
        return out

    def _as_sketch(self) -> QuantileSketch:
        if self.sketch is not None:
            return self.sketch
        return QuantileSketch(self.alpha).add(self.counts.values, self.counts.counts)

    @property
    def exact(self) -> bool:
        return self.counts is not None

    @property
    def n(self) -> int:
        return self.counts.n if self.exact else self.sketch.n

    def quantile(self, q: float) -> float:
        return self.counts.quantile(q) if self.exact else self.sketch.quantile(q)

    def median(self) -> float:
        return self.quantile(0.5)

    def mean(self) -> float:
        """Exact from the counts; from a sketch, ``total / n`` rounded to 32 significant bits:
        ``total`` is a float sum in the partitions' order, and its last bits (an imputed
        mean) changed with the partitioning."""
        if self.exact:
            return self.counts.mean()
        return float(round_bits(self.total / self.n, 32)) if self.n else math.nan

    def error_bound(self) -> str:
        return "exact" if self.exact else f"relative error <= {self.alpha:g} (lower quantile)"


def mad(counts: ValueCounts, center: float | None = None) -> float:
    """Median absolute deviation (unscaled) from exact counts."""
    center = counts.median() if center is None else center
    return counts.deviations(center).median()


def robust_scale(median_abs_dev: float, mean_abs_dev: float) -> float:
    """A robust standard deviation: 1.4826·MAD, or 1.2533·mean |x − median| when MAD is 0.

    The fallback (Iglewicz & Hoaglin) keeps a column that is mostly one value (a median
    and MAD of 0, like capital gains) from flagging every other value.
    """
    if median_abs_dev > 0:
        return MAD_TO_SIGMA * median_abs_dev
    return MEAN_AD_TO_SIGMA * mean_abs_dev


def robust_z(x: np.ndarray, center: float, scale: float) -> np.ndarray:
    """(x − median) / robust scale; 0 where the scale is 0 (all values equal)."""
    x = np.asarray(x, dtype=np.float64)
    if not scale > 0:
        return np.zeros_like(x)
    return (x - center) / scale


def iqr_fences(q1: float, q3: float, k: float = 1.5) -> tuple[float, float]:
    """Tukey's fences: values outside ``[q1 − k·IQR, q3 + k·IQR]`` are outliers."""
    spread = q3 - q1
    return q1 - k * spread, q3 + k * spread
