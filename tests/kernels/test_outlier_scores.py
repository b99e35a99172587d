import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_auc_score

from dsbuild.kernels.moments import ClassMoments, ColumnMoments
from dsbuild.kernels.sanitize import (
    knn_index,
    knn_scores,
    l2_scores,
    lda_fit,
    log_loss_scores,
    principal_subspace,
    quantize,
    slab_directions,
    slab_scores,
    subspace_residual_scores,
)


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    Z = ColumnMoments.of(data.data).standardize(data.data)
    return Z, data.target, ClassMoments.of(Z, data.target, 2)


def _with_far_points(Z, y, n=20, seed=0):
    rng = np.random.default_rng(seed)
    far = rng.normal(size=(n, Z.shape[1])) * 8
    return np.vstack([Z, far]), np.concatenate([y, rng.integers(0, 2, n)]), np.r_[np.zeros(len(y)), np.ones(n)]


def test_quantize_hides_rounding_noise_but_keeps_order():
    x = np.array([1.0, 1.0 + 1e-15, 2.0, 1e-300, 0.0])
    q = quantize(x)
    assert q[0] == q[1] and q[2] > q[0] and q[4] == 0 and q[3] > 0


def test_l2_matches_direct_distance_and_skips_unlabelled(cancer):
    Z, y, m = cancer
    classes = y.copy()
    classes[0] = -1
    s = l2_scores(Z, classes, m.centroids())
    assert np.isnan(s[0])
    np.testing.assert_allclose(s[1:], np.linalg.norm(Z[1:] - m.centroids()[y[1:]], axis=1))


def test_slab_direction_is_between_the_centroids(cancer):
    Z, y, m = cancer
    v = slab_directions(m.class_counts, m.centroids())
    mu = m.centroids()
    expected = (mu[1] - mu[0]) / np.linalg.norm(mu[1] - mu[0])
    np.testing.assert_allclose(v[1], expected, atol=1e-12)
    np.testing.assert_allclose(v[0], -expected, atol=1e-12)
    s = slab_scores(Z, y, mu, v)
    np.testing.assert_allclose(s, np.abs((Z - mu[y]) @ expected), atol=1e-12)


def test_principal_subspace_picks_k_by_explained_variance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 5)) * np.array([10, 5, 1, 0.1, 0.1])
    basis, ratios = principal_subspace(X.T @ X, 0.95)
    assert basis.shape == (5, 2)
    assert ratios[:2].sum() >= 0.95 > ratios[:1].sum()


def test_svd_residual_is_zero_inside_the_subspace_and_flags_far_points(cancer):
    Z, y, _ = cancer
    Zp, yp, poison = _with_far_points(Z, y)
    m = ClassMoments.of(Zp, yp, 2)
    basis, _ = principal_subspace(m.within_scatter(), 0.9)
    mu = m.centroids()
    inside = mu[yp[:3]] + (basis @ np.ones((basis.shape[1], 3))).T
    assert np.allclose(subspace_residual_scores(inside, yp[:3], mu, basis), 0, atol=1e-9)
    assert roc_auc_score(poison, subspace_residual_scores(Zp, yp, mu, basis)) > 0.95


def test_knn_is_exact_and_excludes_self():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(200, 4))
    classes = rng.integers(0, 2, 200)
    ids = np.array([f"r{i}" for i in range(200)])
    s = knn_scores(Z, classes, ids, knn_index(Z, classes, ids, k=3), k=3)
    for i in (0, 57, 199):
        same = np.flatnonzero((classes == classes[i]) & (np.arange(200) != i))
        d = np.sort(np.linalg.norm(Z[same] - Z[i], axis=1))[:3]
        assert s[i] == pytest.approx(d.mean())


def test_lda_from_moments_agrees_with_sklearn():
    data = load_digits()
    Z = ColumnMoments.of(data.data).standardize(data.data)
    y = data.target
    coef, intercept = lda_fit(ClassMoments.of(Z, y, 10), shrinkage=0.1)
    ours = (Z @ coef + intercept).argmax(1)
    theirs = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(Z, y).predict(Z)
    assert (ours == theirs).mean() > 0.98
    assert (ours == y).mean() > 0.9


def test_out_of_fold_loss_finds_flipped_labels(cancer):
    Z, y, _ = cancer
    rng = np.random.default_rng(0)
    flipped = rng.random(len(y)) < 0.1
    noisy = np.where(flipped, 1 - y, y)
    folds = np.arange(len(y)) % 5
    m = ClassMoments.of(Z, noisy, 2, folds, 5)
    loss = np.empty(len(y))
    for f in range(5):
        coef, b = lda_fit(m.without(f))
        loss[folds == f] = log_loss_scores(Z[folds == f], noisy[folds == f], coef, b)
    assert roc_auc_score(flipped, loss) > 0.9


@pytest.mark.parametrize("parts", [1, 4, 9])
def test_label_moments_in_one_pass_match_moments_of_standardized_rows(parts):
    """Centroids and within-class scatter from raw-feature moments (one pass) equal those
    of the standardized rows (the two passes they replace), for any partitioning."""
    from dsbuild.kernels.sanitize import LabelMoments

    data = load_breast_cancer()
    scaled = data.data * np.array([1.0] * 29 + [1e6])  # a wide column
    X = scaled + np.array([1e9] + [0.0] * 29)  # and one with a large mean
    y = data.target.astype(object)
    y[:7] = None
    chunks = np.array_split(np.random.default_rng(parts).permutation(len(X)), parts)
    merged = LabelMoments.of(X[chunks[0]], y[chunks[0]], with_scatter=True)
    for c in chunks[1:]:
        merged = merged.merge(LabelMoments.of(X[c], y[c], with_scatter=True))
    assert merged.label_counts() == {0: int((y == 0).sum()), 1: int((y == 1).sum())}
    standardizer = merged.total().standardizer()
    classes = np.where(y == None, -1, y).astype(int)
    direct = ClassMoments.of(standardizer.standardize(X), classes, 2)
    np.testing.assert_allclose(merged.centroids([0, 1], standardizer), direct.centroids(), rtol=1e-6, atol=1e-6)  # float64 at 1e9
    # the scatter ignores the offset: it matches the rows without it to the precision X holds them (1e-7 at 1e9)
    unshifted = ClassMoments.of(ColumnMoments.of(scaled).standardize(scaled), classes, 2)
    np.testing.assert_allclose(merged.within_scatter(standardizer), unshifted.within_scatter(), rtol=1e-6, atol=1e-5)


def test_label_moments_centroids_count_missing_values_as_zero_and_drop_the_scatter():
    from dsbuild.kernels.sanitize import LabelMoments

    X = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0], [7.0, 8.0]])
    y = np.array([0, 0, 1, 1], dtype=object)
    m = LabelMoments.of(X, y, with_scatter=True)
    assert m.scatter is None
    standardizer = m.total().standardizer()
    Z = standardizer.standardize(X)
    np.testing.assert_allclose(m.centroids([0, 1], standardizer), [Z[:2].mean(0), Z[2:].mean(0)], rtol=1e-8)
    with pytest.raises(ValueError):
        m.within_scatter(standardizer)
