"""Outlier scores for data sanitization (Steinhardt, Koh & Liang 2017; Koh, Steinhardt & Liang 2022).

Each scorer takes standardized features ``Z``, each row's class index and statistics fitted
on the whole data set (:mod:`dsbuild.kernels.moments`), and returns one score per row:
larger means more suspicious. A row whose class index is -1 (no label) scores NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from dsbuild.kernels.moments import (
    ClassMoments,
    ColumnMoments,
    Standardizer,
    round_bits,
)


def quantize(scores: np.ndarray, bits: int = 32) -> np.ndarray:
    """Round to ``bits`` significant bits, so float64 rounding noise from a different
    partitioning (sums added in another order) cannot reorder two rows."""
    return round_bits(scores, bits)


@dataclass
class LabelMoments:
    """Per label value: rows and NaN-aware column moments of the raw features, and the
    within-label scatter of the labelled rows; all merged with Chan et al.'s pairwise
    update, so columns with a large mean (incomes, timestamps) keep their precision.

    One pass over the data gives the standardizer (all rows), the class centroids and,
    when no feature is missing, the within-class scatter, all in standardized units: the
    second pass over standardized rows that :class:`ClassMoments` needs is not needed.
    The scatter becomes ``None`` once a missing value is seen (a missing feature
    standardizes to 0, which raw moments cannot express).
    """

    rows: dict  # label -> rows; the key None holds unlabelled rows
    columns: dict  # label -> ColumnMoments
    scatter: np.ndarray | None  # (d, d): sum over labelled rows of (x - mean_y)(x - mean_y)^T

    @classmethod
    def of(cls, X: np.ndarray, labels: np.ndarray, with_scatter: bool = False) -> LabelMoments:
        X = np.asarray(X, dtype=np.float64)
        codes, values = pd.factorize(pd.Series(labels, dtype=object), use_na_sentinel=True)
        scatter = np.zeros((X.shape[1], X.shape[1])) if with_scatter and np.isfinite(X).all() else None
        rows, columns = {}, {}
        for code in np.unique(codes):
            members = X[codes == code]
            key = None if code < 0 else _plain(values[code])
            rows[key] = len(members)
            columns[key] = ColumnMoments.of(members)
            if scatter is not None and key is not None:
                centred = members - columns[key].mean
                scatter += centred.T @ centred
        return cls(rows, columns, scatter)

    def merge(self, other: LabelMoments) -> LabelMoments:
        rows, columns = dict(self.rows), dict(self.columns)
        scatter = None if self.scatter is None or other.scatter is None else self.scatter + other.scatter
        for key, n in other.rows.items():
            if key not in rows:
                rows[key], columns[key] = n, other.columns[key]
                continue
            if scatter is not None and key is not None:
                delta = other.columns[key].mean - columns[key].mean
                scatter = scatter + np.outer(delta, delta) * (rows[key] * n / (rows[key] + n))
            rows[key] += n
            columns[key] = columns[key].merge(other.columns[key])
        return LabelMoments(rows, columns, scatter)

    def label_counts(self) -> dict:
        return {k: n for k, n in self.rows.items() if k is not None}

    def total(self) -> ColumnMoments:
        """Column moments of all rows, labelled or not."""
        moments = list(self.columns.values())
        out = moments[0]
        for m in moments[1:]:
            out = out.merge(m)
        return out

    def centroids(self, classes: list, standardizer: Standardizer) -> np.ndarray:
        """(classes, d) class means of the standardized rows (a missing value counts as 0)."""
        out = np.zeros((len(classes), len(standardizer.mean)))
        for k, c in enumerate(classes):
            m = self.columns[c]
            out[k] = m.count * (m.mean - standardizer.mean) / standardizer.std / self.rows[c]
        return round_bits(out, 32)

    def within_scatter(self, standardizer: Standardizer) -> np.ndarray:
        """Class-centred scatter of the standardized rows; only when no value was missing."""
        if self.scatter is None:
            raise ValueError("the within-class scatter is unknown when features have missing values")
        W = self.scatter / np.outer(standardizer.std, standardizer.std)
        return round_bits((W + W.T) / 2, 32)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _offsets(Z: np.ndarray, classes: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labelled = classes >= 0
    D = Z - centroids[np.where(labelled, classes, 0)]
    return D, labelled


def l2_scores(Z: np.ndarray, classes: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Euclidean distance to the row's class centroid."""
    D, labelled = _offsets(Z, classes, centroids)
    return np.where(labelled, np.sqrt(np.einsum("ij,ij->i", D, D)), np.nan)


def slab_directions(counts: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(classes, d) unit vectors from the mean of all other classes to each class's mean.

    For two classes these are the one line between the centroids (with opposite signs);
    for more, one-vs-rest.
    """
    n = np.asarray(counts, dtype=np.float64)
    sums = centroids * n[:, None]
    rest_n = n.sum() - n
    rest = np.divide(sums.sum(0) - sums, rest_n[:, None], out=np.zeros_like(sums), where=rest_n[:, None] > 0)
    v = centroids - rest
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def slab_scores(Z: np.ndarray, classes: np.ndarray, centroids: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """|<z - mu_y, v_y>|: how far along the between-class direction a row sits."""
    D, labelled = _offsets(Z, classes, centroids)
    proj = np.einsum("ij,ij->i", D, directions[np.where(labelled, classes, 0)])
    return np.where(labelled, np.abs(proj), np.nan)


def principal_subspace(scatter: np.ndarray, variance: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(basis d x k, explained-variance ratios of all components) of a scatter matrix.

    k is the fewest leading components that explain ``variance`` of the total, but
    always less than d: a subspace that is the whole space leaves no residual to score.
    """
    values, vectors = np.linalg.eigh((scatter + scatter.T) / 2)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)
    vectors = vectors[:, order]
    total = values.sum()
    ratios = values / total if total > 0 else np.zeros_like(values)
    k = int(np.searchsorted(np.cumsum(ratios), variance - 1e-12) + 1)
    k = min(max(k, 1), max(len(values) - 1, 1))
    return vectors[:, :k], ratios


def subspace_residual_scores(Z: np.ndarray, classes: np.ndarray, centroids: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Distance of the class-centred row from the principal subspace spanned by ``basis``."""
    D, labelled = _offsets(Z, classes, centroids)
    inside = D @ basis
    residual = np.einsum("ij,ij->i", D, D) - np.einsum("ij,ij->i", inside, inside)
    return np.where(labelled, np.sqrt(np.clip(residual, 0.0, None)), np.nan)


def knn_index(ref_Z: np.ndarray, ref_classes: np.ndarray, ref_ids: np.ndarray, k: int = 5) -> dict:
    """Per class, a fitted neighbour search over the reference rows and their ids.

    Built once and shared with every partition's task.
    """
    from sklearn.neighbors import NearestNeighbors

    index = {}
    ref_ids = np.asarray(ref_ids, dtype=object)
    for c in np.unique(ref_classes[ref_classes >= 0]):
        rows = np.flatnonzero(ref_classes == c)
        nn = NearestNeighbors(n_neighbors=min(k + 1, len(rows))).fit(ref_Z[rows])
        index[int(c)] = (nn, ref_ids[rows])
    return index


def knn_scores(Z: np.ndarray, classes: np.ndarray, ids: np.ndarray, index: dict, k: int = 5) -> np.ndarray:
    """Mean distance to the k nearest reference rows of the same class, never itself.

    With every row in the reference this is the exact k-NN defence; with a sample it is
    the distance to the sample's neighbours, the same for any partitioning.
    """
    scores = np.full(len(Z), np.nan)
    ids = np.asarray(ids, dtype=object)
    for c in np.unique(classes[classes >= 0]):
        if int(c) not in index:
            continue
        nn, ref_ids = index[int(c)]
        rows = np.flatnonzero(classes == c)
        dist, ind = nn.kneighbors(Z[rows])
        m = dist.shape[1]
        is_self = ref_ids[ind] == ids[rows][:, None]
        order = np.argsort(is_self, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, axis=1)
        usable = np.minimum(m - is_self.any(axis=1), k)
        take = np.arange(m)[None, :] < usable[:, None]
        total = np.where(take, dist, 0.0).sum(axis=1)
        scores[rows] = np.divide(total, usable, out=np.full(len(rows), np.nan), where=usable > 0)
    return scores


def lda_fit(moments: ClassMoments, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(coef d x classes, intercept) of linear discriminant analysis from moments alone.

    LDA is the linear model whose fit needs only class counts, centroids and the pooled
    covariance, so its out-of-fold version is exact at any partitioning with no sample.
    The covariance is shrunk toward a scaled identity, as sklearn's ``shrinkage``.
    """
    n = moments.class_counts
    mu = moments.centroids()
    cov = moments.pooled_covariance()
    d = cov.shape[0]
    target = np.trace(cov) / d if d else 1.0
    cov = (1 - shrinkage) * cov + shrinkage * max(target, 1e-12) * np.eye(d)
    coef = np.linalg.solve(cov, mu.T)
    prior = np.clip(n / max(n.sum(), 1.0), 1e-12, None)
    intercept = -0.5 * np.einsum("cd,dc->c", mu, coef) + np.log(prior)
    return coef, intercept


def log_loss_scores(Z: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Cross-entropy of the row's own label under a linear model: -log p(y | z)."""
    logits = Z @ coef + intercept
    labelled = classes >= 0
    own = logits[np.arange(len(Z)), np.where(labelled, classes, 0)]
    return np.where(labelled, logsumexp(logits, axis=1) - own, np.nan)
