"""CorrelationRemover from merged moments equals fairlearn's on data that fits in memory."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.preprocessing import CorrelationRemover as FairlearnCorrelationRemover

import dsbuild
from dsbuild.kernels.correlation import CorrelationRemover, Moments

DATA = Path(dsbuild.__file__).parent / "io" / "data"
FEATURES = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


@pytest.fixture(scope="module")
def adult():
    return pd.read_csv(DATA / "adult.csv.gz")


def merged_moments(x: np.ndarray, chunks: int) -> Moments:
    m = Moments.of(x[:0])
    for chunk in np.array_split(x, chunks):
        m = m.merge(Moments.of(chunk))
    return m


@pytest.mark.parametrize("alpha", [1.0, 0.35, 0.0])
@pytest.mark.parametrize("chunks", [1, 7])
def test_equals_fairlearn_on_adult(adult, alpha, chunks):
    sensitive = pd.get_dummies(adult[["sex", "race"]], dtype=float).drop(columns=["sex_Male", "race_White"])
    x = pd.concat([sensitive, adult[FEATURES].astype(float)], axis=1)
    theirs = FairlearnCorrelationRemover(sensitive_feature_ids=list(sensitive.columns), alpha=alpha).fit(x)
    k = sensitive.shape[1]
    arr = x.to_numpy()
    ours = CorrelationRemover(alpha).fit(merged_moments(arr, chunks), k)
    np.testing.assert_allclose(ours.beta_, theirs.beta_, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(ours.transform(arr[:, :k], arr[:, k:]), theirs.transform(x), rtol=1e-8, atol=1e-8)


def test_same_coefficients_and_output_whatever_the_chunks(adult):
    """Moments merged in another order differ in their last bits; the fitted coefficients
    did too, and so every value the stage changed differed with the partitioning."""
    sensitive = pd.get_dummies(adult[["sex", "race"]], dtype=float).drop(columns=["sex_Male", "race_White"])
    arr = pd.concat([sensitive, adult[FEATURES].astype(float)], axis=1).to_numpy()
    k = sensitive.shape[1]
    fits = [CorrelationRemover().fit(merged_moments(arr, chunks), k) for chunks in (1, 2, 7, 13)]
    whole = fits[0].transform(arr[:, :k], arr[:, k:])
    for fit in fits[1:]:
        assert np.array_equal(fit.beta_, fits[0].beta_) and np.array_equal(fit.sensitive_mean_, fits[0].sensitive_mean_)
        parts = [fit.transform(a[:, :k], a[:, k:]) for a in np.array_split(arr, 11)]
        assert np.array_equal(np.concatenate(parts), whole)


def test_rank_deficient_sensitive_columns_give_fairlearns_projection(adult):
    sensitive = pd.get_dummies(adult[["sex"]], dtype=float)  # both levels: columns sum to one
    x = pd.concat([sensitive, adult[FEATURES].astype(float)], axis=1)
    theirs = FairlearnCorrelationRemover(sensitive_feature_ids=list(sensitive.columns)).fit(x).transform(x)
    arr = x.to_numpy()
    ours = CorrelationRemover().fit(merged_moments(arr, 3), 2).transform(arr[:, :2], arr[:, 2:])
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-8)


def test_output_is_uncorrelated_with_the_sensitive_columns():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5000, 2))
    z = s @ np.array([[2.0, -1.0, 0.5], [0.3, 4.0, 0.0]]) + rng.normal(size=(5000, 3))
    out = CorrelationRemover().fit(Moments.of(np.hstack([s, z])), 2).transform(s, z)
    corr = np.corrcoef(np.hstack([s, out]).T)[:2, 2:]
    assert np.abs(corr).max() < 1e-9  # coefficients rounded to 32 bits
    assert np.abs(np.corrcoef(np.hstack([s, z]).T)[:2, 2:]).max() > 0.5


def test_moments_merge_exactly():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=1e6, scale=3.0, size=(1000, 4))
    whole = Moments.of(x)
    merged = merged_moments(x, 9)
    assert merged.n == 1000
    np.testing.assert_allclose(merged.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(merged.covariance(), np.cov(x.T), rtol=1e-9)
    np.testing.assert_allclose(merged.cross, whole.cross, rtol=1e-9)
