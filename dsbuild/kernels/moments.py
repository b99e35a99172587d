"""Mergeable first and second moments: standardisation, class centroids, covariances.

Every statistic here is a sum (or a Chan et al. merge of sums), so a data set split into
any partitions gives the same result up to float64 rounding. Downstream code quantizes
scores (:func:`dsbuild.kernels.sanitize.quantize`) so that rounding never changes a
decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class ColumnMoments:
    """Per-column count, mean and sum of squared deviations, ignoring missing values.

    Merged with Chan, Golub & LeVeque's pairwise update, which stays accurate when a
    column's mean is large against its spread (incomes, timestamps).
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> ColumnMoments:
        X = np.asarray(X, dtype=np.float64)
        present = np.isfinite(X)  # an infinite value is as unknown as a missing one: one made every mean NaN
        count = present.sum(axis=0).astype(np.float64)
        total = np.where(present, X, 0.0).sum(axis=0)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        dev = np.where(present, X - mean, 0.0)
        return cls(count, mean, (dev * dev).sum(axis=0))

    @classmethod
    def empty(cls, d: int) -> ColumnMoments:
        return cls(np.zeros(d), np.zeros(d), np.zeros(d))

    def merge(self, other: ColumnMoments) -> ColumnMoments:
        n = self.count + other.count
        delta = other.mean - self.mean
        safe = np.where(n > 0, n, 1.0)
        mean = self.mean + delta * other.count / safe
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / safe
        return ColumnMoments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation; 1 where a column is constant or empty."""
        var = np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0)
        std = np.sqrt(var)
        return np.where(std > 1e-12 * np.maximum(np.abs(self.mean), 1.0), std, 1.0)

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """Zero mean, unit variance; a missing value becomes 0 (the column mean)."""
        return self.standardizer(bits=None).standardize(X)

    def standardizer(self, bits: int | None = 32) -> Standardizer:
        """The fitted mean and spread, rounded to ``bits`` significant bits.

        Rounding makes the standardized values bit-identical whatever order the sums were
        added in, so every later step starts from the same numbers at any partitioning.
        """
        mean, std = self.mean, self.std
        if bits is not None:
            mean, std = round_bits(mean, bits), round_bits(std, bits)
        return Standardizer(mean, std)


@dataclass(frozen=True)
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    def standardize(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std
        return np.nan_to_num(Z, nan=0.0, posinf=0.0, neginf=0.0)


def round_bits(x: np.ndarray, bits: int) -> np.ndarray:
    mantissa, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return np.ldexp(np.round(mantissa * 2.0**bits) / 2.0**bits, exponent)


@dataclass
class ClassMoments:
    """Counts and sums per (group, class) and sums of outer products per group.

    Groups are cross-validation folds when a method needs out-of-fold statistics, else
    one group. Combining two is plain addition. The within-class scatter needs no
    per-class outer products: it is the total scatter minus the between-class part, so
    memory is ``groups x d x d`` however many classes there are. Meant for standardized
    data (values of order one), where raw sums of squares lose nothing to cancellation.
    """

    counts: np.ndarray  # (groups, classes)
    sums: np.ndarray  # (groups, classes, d)
    outer: np.ndarray  # (groups, d, d)

    @classmethod
    def empty(cls, n_groups: int, n_classes: int, d: int) -> ClassMoments:
        return cls(
            np.zeros((n_groups, n_classes)),
            np.zeros((n_groups, n_classes, d)),
            np.zeros((n_groups, d, d)),
        )

    @classmethod
    def of(
        cls,
        Z: np.ndarray,
        classes: np.ndarray,
        n_classes: int,
        groups: np.ndarray | None = None,
        n_groups: int = 1,
    ) -> ClassMoments:
        """Moments of rows ``Z`` whose class index is ``classes`` (-1 skips a row)."""
        Z = np.asarray(Z, dtype=np.float64)
        classes = np.asarray(classes, dtype=np.int64)
        groups = np.zeros(len(Z), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        out = cls.empty(n_groups, n_classes, Z.shape[1])
        keep = classes >= 0
        Z, classes, groups = Z[keep], classes[keep], groups[keep]
        if not len(Z):
            return out
        cell = groups * n_classes + classes
        onehot = sp.csr_matrix(
            (np.ones(len(cell)), (cell, np.arange(len(cell)))), shape=(n_groups * n_classes, len(cell))
        )
        out.counts = np.bincount(cell, minlength=n_groups * n_classes).reshape(n_groups, n_classes).astype(np.float64)
        out.sums = np.asarray(onehot @ Z).reshape(n_groups, n_classes, -1)
        for g in np.unique(groups):
            Zg = Z[groups == g]
            out.outer[g] = Zg.T @ Zg
        return out

    def merge(self, other: ClassMoments) -> ClassMoments:
        return ClassMoments(self.counts + other.counts, self.sums + other.sums, self.outer + other.outer)

    def total(self) -> ClassMoments:
        """All groups as one."""
        return ClassMoments(self.counts.sum(0, keepdims=True), self.sums.sum(0, keepdims=True), self.outer.sum(0, keepdims=True))

    def without(self, group: int) -> ClassMoments:
        """Every group but one: the training side of an out-of-fold split."""
        keep = np.arange(len(self.counts)) != group
        return ClassMoments(
            self.counts[keep].sum(0, keepdims=True),
            self.sums[keep].sum(0, keepdims=True),
            self.outer[keep].sum(0, keepdims=True),
        )

    @property
    def class_counts(self) -> np.ndarray:
        return self.counts.sum(0)

    def centroids(self) -> np.ndarray:
        """(classes, d) class means; a class with no rows gets the zero vector."""
        n = self.class_counts
        sums = self.sums.sum(0)
        return np.divide(sums, n[:, None], out=np.zeros_like(sums), where=n[:, None] > 0)

    def mean(self) -> np.ndarray:
        n = self.class_counts.sum()
        return self.sums.sum((0, 1)) / max(n, 1.0)

    def within_scatter(self) -> np.ndarray:
        """Sum over rows of (z - mu_y)(z - mu_y)^T: the class-centred scatter matrix."""
        n = self.class_counts
        sums = self.sums.sum(0)
        between = (sums.T * np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)) @ sums
        scatter = self.outer.sum(0) - between
        return (scatter + scatter.T) / 2

    def pooled_covariance(self) -> np.ndarray:
        """Within-class covariance, shared by all classes (as in LDA)."""
        n = self.class_counts
        dof = max(n.sum() - np.count_nonzero(n), 1.0)
        return self.within_scatter() / dof
