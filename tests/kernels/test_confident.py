import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import cross_val_predict

from dsbuild.kernels.confident import (
    ConfidentSums,
    agrees_with_label,
    confident_joint,
    margin_candidates,
    prune_counts,
    round_preserving_sum,
    suggested_labels,
)
from dsbuild.kernels.topk import LargestPerKey, within_cut


def find_issues(probs, labels, parts=1):
    """The kernels chained as the stage chains them, over ``parts`` partitions."""
    n, k = probs.shape
    chunks = np.array_split(np.arange(n), parts)
    sums = ConfidentSums.of(probs[chunks[0]], labels[chunks[0]], k)
    for c in chunks[1:]:
        sums = sums.merge(ConfidentSums.of(probs[c], labels[c], k))
    t = sums.thresholds()
    joint = sum(confident_joint(probs[c], labels[c], t) for c in chunks)
    budget = prune_counts(joint, sums.counts)
    ids = np.array([f"{i:06d}" for i in range(n)])
    top = None
    for c in chunks:
        rows, keys, margins = margin_candidates(probs[c], labels[c], budget)
        part = LargestPerKey.of(keys, margins, ids[c][rows], budget.ravel())
        top = part if top is None else top.merge(part)
    rows, keys, margins = margin_candidates(probs, labels, budget)
    flagged = np.zeros(n, dtype=bool)
    flagged[rows[within_cut(keys, margins, ids[rows], top.cut())]] = True
    return flagged & ~agrees_with_label(probs, labels)


@pytest.fixture(scope="module")
def noisy_digits():
    data = load_digits()
    rng = np.random.default_rng(0)
    flipped = rng.random(len(data.target)) < 0.1
    noisy = np.where(flipped, (data.target + rng.integers(1, 10, len(flipped))) % 10, data.target)
    probs = cross_val_predict(LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1), data.data, noisy, cv=5, method="predict_proba")
    return probs, noisy, flipped, data.target


def test_round_preserving_sum():
    assert round_preserving_sum([0.5, 0.5, 0.5, 0.5]).sum() == 2
    rounded = round_preserving_sum([1.4, 1.4, 1.2])
    assert rounded.sum() == 4 and sorted(rounded[:2]) == [1, 2] and rounded[2] == 1


def test_thresholds_are_mean_self_confidence():
    probs = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    sums = ConfidentSums.of(probs, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(sums.thresholds(), [0.8, 0.8])


def test_confident_joint_counts_confident_rows_only():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 1])
    joint = confident_joint(probs, labels, np.array([0.6, 0.7]))
    assert joint.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize("parts", [1, 4])
def test_finds_flipped_digits(noisy_digits, parts):
    probs, noisy, flipped, truth = noisy_digits
    flagged = find_issues(probs, noisy, parts)
    precision = (flagged & flipped).sum() / flagged.sum()
    recall = (flagged & flipped).sum() / flipped.sum()
    assert precision > 0.6 and recall > 0.85  # 10% of rows flipped: chance precision is 0.1
    suggested = suggested_labels(probs, noisy)
    assert (suggested[flagged & flipped] == truth[flagged & flipped]).mean() > 0.8


def test_same_as_cleanlab_on_the_same_probabilities(noisy_digits):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    probs, noisy, _, _ = noisy_digits
    ours = find_issues(probs, noisy)
    theirs = cleanlab_filter.find_label_issues(noisy, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    assert (ours != theirs).sum() <= 0.01 * len(noisy)


def test_in_memory_chain_equals_the_partitioned_one(noisy_digits):
    from dsbuild.kernels.confident import find_label_issues

    probs, noisy, _, _ = noisy_digits
    assert (find_label_issues(probs, noisy, [f"{i:06d}" for i in range(len(noisy))]) == find_issues(probs, noisy, 3)).all()
