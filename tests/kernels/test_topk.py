import numpy as np
import pandas as pd
import pytest

from dsbuild.kernels.topk import LargestPerKey, within_cut


def _global_top(keys, scores, ids, budget):
    frame = pd.DataFrame({"k": keys, "neg": -scores, "id": ids}).sort_values(["k", "neg", "id"])
    frame["rank"] = frame.groupby("k").cumcount()
    return set(frame.loc[frame["rank"] < budget[frame["k"]], "id"])


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_merged_cut_selects_exactly_the_global_top(parts):
    rng = np.random.default_rng(parts)
    n = 2000
    keys = rng.integers(0, 3, n)
    scores = np.round(rng.normal(size=n), 1)  # many ties
    ids = np.array([f"r{i:05d}" for i in rng.permutation(n)])
    budget = np.array([0, 37, 500])
    merged = None
    for idx in np.array_split(rng.permutation(n), parts):
        part = LargestPerKey.of(keys[idx], scores[idx], ids[idx], budget)
        merged = part if merged is None else merged.merge(part)
    chosen = within_cut(keys, scores, ids, merged.cut())
    assert set(ids[chosen]) == _global_top(keys, scores, ids, budget)
    assert np.bincount(keys[chosen], minlength=3).tolist() == [0, 37, 500]


def test_budget_larger_than_class_takes_all_and_nan_never():
    keys = np.array([0, 0, 0])
    scores = np.array([1.0, np.nan, 2.0])
    top = LargestPerKey.of(keys, scores, ["a", "b", "c"], np.array([10]))
    assert within_cut(keys, scores, ["a", "b", "c"], top.cut()).tolist() == [True, False, True]


@pytest.mark.parametrize("parts,in_tie", [(1, False), (5, False), (1, True), (5, True)])
def test_histogram_search_reaches_the_same_cut(parts, in_tie):
    from dsbuild.kernels.topk import CutSearch

    rng = np.random.default_rng(7)
    n = 50_000
    keys = rng.integers(0, 3, n)
    scores = np.abs(rng.standard_cauchy(n))
    scores[::97] = 1.5  # a heavy tie
    ids = np.array([f"r{i:06d}" for i in rng.permutation(n)])
    counts = np.bincount(keys, minlength=3)
    budget = np.array([0, 4000, counts[2]])
    limit = 300
    if in_tie:  # the cut falls inside the tie, larger than the limit: every bit gets fixed
        budget[1] = ((keys == 1) & (scores > 1.5)).sum() + 10
        limit = 50
    chunks = np.array_split(np.arange(n), parts)
    search = CutSearch.start(budget, counts)
    rounds = 0
    while not search.resolved(limit=limit):
        search = search.narrow(sum(search.histogram(keys[c], scores[c]) for c in chunks))
        rounds += 1
    assert rounds == (3 if in_tie else 1)
    top = None
    for c in chunks:
        part = search.candidates(keys[c], scores[c], ids[c])
        top = part if top is None else top.merge(part)
    chosen = within_cut(keys, scores, ids, top.cut())
    assert set(ids[chosen]) == _global_top(keys, scores, ids, budget)


def test_one_histogram_round_tells_apart_scores_within_a_power_of_two():
    """The first round fixes the exponent and 12 bits of the mantissa: scores that share
    their exponent (distances to a centroid, say) need no second pass."""
    from dsbuild.kernels.topk import CutSearch

    rng = np.random.default_rng(3)
    n = 1_000_000
    keys = rng.integers(0, 2, n)
    scores = 4.0 + 4.0 * rng.random(n) ** 3  # all in [4, 8): one exponent
    counts = np.bincount(keys, minlength=2)
    search = CutSearch.start(np.array([50_000, 50_000]), counts)
    search = search.narrow(search.histogram(keys, scores))
    assert search.resolved(limit=1_000)
