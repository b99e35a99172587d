import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from dsbuild.kernels.moments import ClassMoments, ColumnMoments


def _split(n, parts, seed=0):
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, n), parts - 1, replace=False))
    return np.split(np.arange(n), cuts)


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_column_moments_merge_equals_whole(parts):
    X = load_breast_cancer().data.copy()
    X[::17, 3] = np.nan
    merged = ColumnMoments.empty(X.shape[1])
    for idx in _split(len(X), parts):
        merged = merged.merge(ColumnMoments.of(X[idx]))
    np.testing.assert_allclose(merged.mean, np.nanmean(X, axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, np.nanstd(X, axis=0), rtol=1e-10)
    Z = merged.standardize(X)
    assert not np.isnan(Z).any()
    np.testing.assert_allclose(Z[~np.isnan(X[:, 3]), 3].mean(), 0, atol=1e-10)


def test_chan_merge_keeps_precision_on_large_offsets():
    rng = np.random.default_rng(1)
    X = 1e9 + rng.normal(size=(10_000, 2))
    merged = ColumnMoments.empty(2)
    for idx in _split(len(X), 5):
        merged = merged.merge(ColumnMoments.of(X[idx]))
    np.testing.assert_allclose(merged.std, X.std(axis=0), rtol=1e-6)


def test_constant_column_standardizes_to_zero():
    X = np.column_stack([np.ones(10), np.arange(10.0)])
    Z = ColumnMoments.of(X).standardize(X)
    assert np.all(Z[:, 0] == 0)


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_class_moments_merge_and_scatter(parts):
    data = load_digits()
    Z = ColumnMoments.of(data.data).standardize(data.data)
    y = data.target
    folds = np.arange(len(y)) % 4
    merged = ClassMoments.empty(4, 10, Z.shape[1])
    for idx in _split(len(y), parts):
        merged = merged.merge(ClassMoments.of(Z[idx], y[idx], 10, folds[idx], 4))
    centroids = np.vstack([Z[y == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(merged.centroids(), centroids, atol=1e-12)
    D = Z - centroids[y]
    np.testing.assert_allclose(merged.within_scatter(), D.T @ D, atol=1e-8)
    rest = merged.without(2)
    np.testing.assert_allclose(rest.centroids()[5], Z[(y == 5) & (folds != 2)].mean(0), atol=1e-12)
    assert rest.class_counts.sum() == (folds != 2).sum()


def test_unlabelled_rows_are_skipped():
    Z = np.arange(12.0).reshape(6, 2)
    m = ClassMoments.of(Z, np.array([0, 0, 1, -1, 1, -1]), 2)
    assert m.class_counts.tolist() == [2, 2]
    np.testing.assert_allclose(m.centroids(), [[1, 2], [6, 7]])
