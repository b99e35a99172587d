"""Gaussian copula from mergeable statistics: marginals and rank correlations of Adult."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from dsbuild.kernels.copula import Marginals, ScoreMoments, fit_in_memory

NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "sex", "race", "income"]


@pytest.fixture(scope="module")
def adult():
    from pathlib import Path

    import dsbuild

    return pd.read_csv(Path(dsbuild.__file__).parent / "io" / "data" / "adult.csv.gz")


@pytest.fixture(scope="module")
def fitted(adult):
    copula = fit_in_memory(adult, NUMERIC, CATEGORICAL)
    return copula, copula.sample(len(adult), np.random.default_rng(1))


def test_marginals_match(adult, fitted):
    _, sample = fitted
    for c in NUMERIC:
        assert ks_2samp(adult[c], sample[c].astype(float)).statistic < 0.02, c
    for c in CATEGORICAL:
        gap = (adult[c].value_counts(normalize=True) - sample[c].value_counts(normalize=True)).abs().max()
        assert gap < 0.01, c


def test_rank_correlations_match(adult, fitted):
    """A Gaussian copula models monotone dependence, so rank (Spearman) correlations are
    its target; Pearson on raw values also counts non-monotone shapes it cannot express
    (age × hours rises then falls), so it gets a looser bound."""
    _, sample = fitted
    s = sample[NUMERIC].astype(float)
    assert np.abs(adult[NUMERIC].corr("spearman") - s.corr("spearman")).to_numpy().max() <= 0.05
    assert np.abs(adult[NUMERIC].corr() - s.corr()).to_numpy().max() <= 0.08


def test_fit_does_not_depend_on_how_rows_are_split(adult, fitted):
    copula, _ = fitted
    shuffled = adult.sample(frac=1, random_state=0)
    cuts = np.linspace(0, len(shuffled), 8).astype(int)
    parts = [shuffled.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    m = Marginals.scan(parts[0], NUMERIC, CATEGORICAL)
    for p in parts[1:]:
        m = m.merge(Marginals.scan(p, NUMERIC, CATEGORICAL))
    edges = m.needing_histograms()
    hist = Marginals.histograms(parts[0], edges)
    for p in parts[1:]:
        hist = Marginals.merge_histograms(hist, Marginals.histograms(p, edges))
    m = m.with_histograms(hist)
    moments = ScoreMoments()
    for p in parts:
        moments = moments.merge(ScoreMoments.scan(m.scores(p)))
    assert np.allclose(moments.correlation(), copula.correlation_, atol=1e-9)


def test_missing_values_come_back_at_their_rate():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=4000), "c": rng.choice(["a", "b"], 4000)})
    frame.loc[rng.random(4000) < 0.2, "x"] = np.nan
    sample = fit_in_memory(frame, ["x"], ["c"]).sample(20000, np.random.default_rng(2))
    assert abs(sample["x"].isna().mean() - frame["x"].isna().mean()) < 0.015


def test_category_pairs_merge_as_counted_whole(adult):
    from dsbuild.kernels.copula import CategoryPairs, category_links, linkable_pairs

    columns = ["education", "occupation", "relationship", "marital-status", "sex"]
    m = Marginals.scan(adult, [], columns)
    pairs = linkable_pairs(m)
    assert len(pairs) == 10
    whole = CategoryPairs.scan(adult, pairs)
    parts = CategoryPairs.scan(adult.iloc[:10000], pairs).merge(CategoryPairs.scan(adult.iloc[10000:], pairs))
    for k in pairs:
        pd.testing.assert_series_equal(whole.counts[k].sort_index(), parts.counts[k].sort_index(), check_names=False)
    links = category_links(m, whole)
    assert len(links) == len({link.child for link in links}) <= len(columns) - 1  # a tree: one parent per column
    placed = {links[0].parent}
    for link in links:  # parents are drawn before their children
        assert link.parent in placed
        placed.add(link.child)
    assert np.allclose([link.cumulative[:, -1] for link in links][0], 1.0)
