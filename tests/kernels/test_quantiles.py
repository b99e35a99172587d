"""Per-group distributions merge across partitions; Feldman's repair keeps order and
makes groups' distributions alike."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dsbuild
from dsbuild.kernels.quantiles import GroupDistribution, repair

DATA = Path(dsbuild.__file__).parent / "io" / "data"


@pytest.fixture(scope="module")
def adult():
    return pd.read_csv(DATA / "adult.csv.gz")


def fitted(values, groups, chunks, max_distinct=2048, bins=2048):
    parts = np.array_split(np.arange(len(values)), chunks)
    dist = GroupDistribution()
    for p in parts:
        dist = dist.merge(GroupDistribution.scan(values[p], groups[p], max_distinct), max_distinct)
    if dist.needs_histogram:
        edges = dist.histogram_edges(bins)
        for p in parts:
            dist = dist.merge(GroupDistribution.histogram(values[p], groups[p], edges))
    return dist


def test_exact_counts_merge_to_the_whole(adult):
    v = adult["age"].to_numpy(float)
    g = adult["sex"].to_numpy(object)
    dist = fitted(v, g, 7)
    assert dist.exact is not None and dist.error == 0
    direct = adult.groupby(["sex", "age"]).size()
    assert dist.exact.loc[("Female", 37.0)] == direct.loc[("Female", 37)]
    assert dist.exact.sum() == len(adult)
    for q in (0.1, 0.5, 0.9):
        for sex in ("Female", "Male"):
            exp = np.quantile(v[g == sex], q, method="inverted_cdf")
            assert dist.quantile(sex, np.array([q]))[0] == exp


def test_full_repair_aligns_the_groups_and_keeps_order(adult):
    v = adult["hours-per-week"].to_numpy(float)
    g = adult["sex"].to_numpy(object)
    spread = np.random.default_rng(0).random(len(v))
    out = repair(fitted(v, g, 3), v, g, level=1.0, spread=spread)
    before = abs(v[g == "Female"].mean() - v[g == "Male"].mean())
    after = abs(out[g == "Female"].mean() - out[g == "Male"].mean())
    assert before >= 5 and after <= 1
    for sex in ("Female", "Male"):
        m = g == sex
        order = np.lexsort((spread[m], v[m]))
        assert np.all(np.diff(out[m][order]) >= -1e-9)
    assert np.array_equal(repair(fitted(v, g, 3), v, g, level=0.0), v)
    half = repair(fitted(v, g, 3), v, g, level=0.5, spread=spread)
    assert set(half) <= set(v) and np.all((half - v) * (out - half) >= 0)


def test_partial_repair_steps_in_rank_among_the_values_as_aif360_does():
    """repair_level 0.5 gave (1 − λ)·x + λ·target, a value the data need not have (8
    months). AIF360's repairer steps λ of the way in rank among the feature's distinct
    values, rounding half to even; worked by hand: the distinct values are 1 2 5 7 14 20,
    the targets 5 (lower halves) and 14 (upper), so 1 → 2, 2 → 7 (not 8), and 7 and 20 stay
    (half a step, rounded to none)."""
    v, g = np.array([1, 2, 5, 14, 7, 20], dtype=float), np.array(list("aabbcc"), dtype=object)
    np.testing.assert_array_equal(repair(fitted(v, g, 2), v, g, level=0.5), [2, 7, 5, 14, 7, 20])
    np.testing.assert_array_equal(repair(fitted(v, g, 2), v, g, level=1.0), [5, 14, 5, 14, 5, 14])


def test_partial_repair_ranks_a_value_the_fit_never_saw_among_the_fitted_values():
    """A value outside fit_on moved the linear way, (1 − λ)·x + λ·target: 999 went to 499.5
    while a fitted 1000 beside it, at the same quantile, stepped in rank to 10. AIF360's
    repairer ranks every value among those of the data it repairs, so the unseen value is
    ranked among the fitted values and itself; worked by hand: distinct 0 10 1000, the
    target of a's top value 0, so at λ 0.5 999 (as 1000) steps 1 of 2 ranks down, to 10,
    and 1500 2 of 3 (1.5 rounded to even); at λ 0.25 999 stays (half a rank rounds to
    none) and 1500 steps one rank, to 1000. In 1 2 3 5 7 14 20 the unseen 3, target 14,
    steps 2 of 3 ranks up to 7, as the fitted 2 does; linearly it was 8.5."""
    v, g = np.array([0, 10, 1000, 0, 0, 0], dtype=float), np.array(list("aaabbb"), dtype=object)
    a = np.array(["a", "a", "a"], dtype=object)
    np.testing.assert_array_equal(repair(fitted(v, g, 2), np.array([1000.0, 999.0, 1500.0]), a, level=0.5), [10, 10, 10])
    np.testing.assert_array_equal(repair(fitted(v, g, 2), np.array([999.0, 1500.0]), a[:2], level=0.25), [999, 1000])
    v, g = np.array([1, 2, 5, 14, 7, 20], dtype=float), np.array(list("aabbcc"), dtype=object)
    np.testing.assert_array_equal(repair(fitted(v, g, 2), np.array([2.0, 3.0]), a[:2], level=0.5), [7, 7])


@pytest.mark.parametrize("values, groups, expected", [
    # two groups: the median of each quantile's pair is its lower value, as AIF360 takes it
    ([1, 2, 3, 4, 5, 6, 7, 8], list("aaaabbbb"), [1, 2, 3, 4, 1, 2, 3, 4]),
    # groups of other sizes: b's quartiles meet a's halves
    ([1, 2, 10, 20, 30, 40], list("aabbbb"), [1, 2, 1, 1, 2, 2]),
    # four groups: the second of four values at each quantile
    ([1, 2, 10, 20, 5, 6, 7, 9], list("aabbccdd"), [5, 6, 5, 6, 5, 6, 5, 6]),
])
def test_full_repair_takes_the_lower_middle_of_an_even_number_of_groups(values, groups, expected):
    """np.median of two groups' values at a quantile is their mean: 1 and 5 became 3, and a
    whole-number feature got halves (40.5 hours). AIF360's repairer (BlackBoxAuditing's
    get_median) takes the lower middle value; worked by hand here."""
    v, g = np.array(values, dtype=float), np.array(groups, dtype=object)
    spread = np.linspace(0.1, 0.9, len(v))
    for chunks in (1, 3):
        np.testing.assert_array_equal(repair(fitted(v, g, chunks), v, g, spread=spread), expected)
        np.testing.assert_array_equal(repair(fitted(v, g, chunks), v, g), expected)


def test_histogram_path_has_the_stated_error(adult):
    v = adult["fnlwgt"].to_numpy(float)
    g = adult["race"].to_numpy(object)
    dist = fitted(v, g, 5, max_distinct=100, bins=1024)
    assert dist.exact is None
    assert dist.error == pytest.approx((v.max() - v.min()) / 1024)
    for race in ("White", "Black"):
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            exact = np.quantile(v[g == race], q, method="inverted_cdf")
            assert abs(dist.quantile(race, np.array([q]))[0] - exact) <= dist.error
    # same result for any partitioning
    again = fitted(v, g, 2, max_distinct=100, bins=1024)
    assert all(np.array_equal(dist.hist[k], again.hist[k]) for k in dist.hist)
    out = repair(dist, v, g)
    meds = [np.median(out[g == r]) for r in ("White", "Black", "Asian-Pac-Islander")]
    assert max(meds) - min(meds) <= 3 * dist.error
