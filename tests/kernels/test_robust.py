import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes

from dsbuild.kernels.robust import (
    Distribution,
    QuantileSketch,
    ValueCounts,
    iqr_fences,
    mad,
    robust_scale,
    robust_z,
)


def split_merge(cls, x, cuts, **kw):
    parts = np.split(x, sorted(cuts))
    out = cls.of(parts[0], **kw)
    for p in parts[1:]:
        out = out.merge(cls.of(p, **kw))
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-50, 50), min_size=1, max_size=200),
    st.lists(st.integers(0, 200), max_size=5),
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]),
)
def test_value_counts_merge_equals_numpy_on_whole(values, cuts, q):
    x = np.array(values, dtype=float)
    vc = split_merge(ValueCounts, x, [min(c, len(x)) for c in cuts])
    assert vc.quantile(q) == pytest.approx(np.quantile(x, q))
    assert vc.mean() == pytest.approx(x.mean())
    assert mad(vc) == pytest.approx(np.median(np.abs(x - np.median(x))))


def test_value_counts_mode_breaks_ties_by_smallest_value():
    vc = ValueCounts.of(np.array(["b", "a", "b", "a", "c"], dtype=object))
    assert vc.mode() == "a"
    assert ValueCounts.of(np.array([], dtype=float)).mode() is None


def test_missing_values_are_not_counted():
    vc = ValueCounts.of(np.array([1.0, np.nan, 3.0]))
    assert vc.n == 2 and vc.median() == 2.0


def test_sketch_meets_its_stated_error_on_real_data():
    x = load_diabetes().data.ravel()
    alpha = 0.01
    sketch = split_merge(QuantileSketch, x, [100, 1000, 2500], alpha=alpha)
    ordered = np.sort(x)
    for q in np.linspace(0, 1, 21):
        exact = ordered[int(np.floor(q * (len(x) - 1)))]
        assert abs(sketch.quantile(q) - exact) <= alpha * abs(exact) + 1e-12


def test_sketch_merge_is_independent_of_partitioning():
    rng = np.random.default_rng(0)
    x = rng.lognormal(2, 1.5, 20_000) * np.where(rng.random(20_000) < 0.2, -1, 1)
    x[::50] = 0
    a = split_merge(QuantileSketch, x, [3])
    b = split_merge(QuantileSketch, x, [100, 5000, 12000, 19999])
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        assert a.quantile(q) == b.quantile(q)


def test_distribution_switches_to_sketch_on_total_cardinality_only():
    x = np.arange(300, dtype=float)
    one = split_merge(Distribution, x, [], max_distinct=250)
    many = split_merge(Distribution, x, [100, 200], max_distinct=250)
    assert not one.exact and not many.exact
    assert one.median() == many.median()
    assert abs(one.median() - 149) <= 0.005 * 149
    small = split_merge(Distribution, x[:200], [50, 120], max_distinct=250)
    assert small.exact and small.median() == np.median(x[:200])
    assert small.error_bound() == "exact"


def test_robust_scale_falls_back_to_mean_deviation_when_mad_is_zero():
    x = np.array([0.0] * 90 + [100.0] * 10)
    vc = ValueCounts.of(x)
    assert mad(vc) == 0
    scale = robust_scale(mad(vc), np.abs(x - vc.median()).mean())
    assert scale == pytest.approx(1.2533 * 10)
    assert robust_z(np.array([100.0]), 0.0, scale)[0] == pytest.approx(100 / scale)
    assert robust_z(np.array([5.0]), 5.0, 0.0)[0] == 0


def test_iqr_fences():
    assert iqr_fences(10, 20) == (-5, 35)


def test_counts_by_group_equal_counts_of_each_group():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, 400)
    x = rng.integers(0, 30, 400).astype(float)
    x[::17] = np.nan
    found = ValueCounts.by_group(codes, x)
    for g in range(5):
        one = ValueCounts.of(x[codes == g])
        assert found[g].values.tolist() == one.values.tolist() and found[g].counts.tolist() == one.counts.tolist()
    words = pd.Series(["b", "a", None, "b", "c", "a"], dtype="str")
    by_word = ValueCounts.by_group(np.array([0, 0, 1, 1, 1, 2]), words)
    assert by_word[1].values.tolist() == ["b", "c"] and by_word[2].mode() == "a"
    dist = Distribution.by_group(codes, x, max_distinct=10)
    assert not dist[0].exact and dist[0].n == np.isfinite(x[codes == 0]).sum()


def test_sketched_mean_is_the_same_whatever_the_cuts():
    """In sketch mode the mean comes from a float sum added in the partitions' order."""
    x = np.random.default_rng(0).normal(size=5000) * 7.3 + 0.1
    means = {split_merge(Distribution, x, cuts, max_distinct=5).mean() for cuts in ([], [2500], [700, 1400, 4000], list(range(300, 5000, 300)))}
    assert len(means) == 1 and means.pop() == pytest.approx(x.mean(), rel=1e-9)
