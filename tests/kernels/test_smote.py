"""SMOTE kernel: the same rows as imbalanced-learn given the same neighbours and draws."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from dsbuild.kernels.smote import class_targets, draw, interpolate, nearest_neighbours, smote

imblearn = pytest.importorskip("imblearn")


def test_same_rows_as_imbalanced_learn_for_the_same_draws():
    from imblearn.over_sampling import SMOTE

    x, y = load_breast_cancer(return_X_y=True)
    minority = x[y == 1] if (y == 1).sum() < (y == 0).sum() else x[y == 0]
    label = 1 if (y == 1).sum() < (y == 0).sum() else 0
    need = abs(int((y == 1).sum() - (y == 0).sum()))
    xr, yr = SMOTE(k_neighbors=5, random_state=np.random.RandomState(3)).fit_resample(x, y)
    theirs = xr[len(x):]
    assert (yr[len(x):] == label).all() and len(theirs) == need

    neighbours = nearest_neighbours(minority, 5)
    state = np.random.RandomState(3)  # imbalanced-learn's draws, in its order
    flat = state.randint(low=0, high=neighbours.size, size=need)
    steps = state.uniform(size=need)
    ours = interpolate(minority, neighbours, flat // 5, flat % 5, steps)
    assert np.allclose(ours, theirs, rtol=0, atol=1e-9)


def test_new_rows_lie_between_a_row_and_a_neighbour():
    x = np.random.default_rng(0).normal(size=(40, 3))
    new, base = smote(x, 100, 4, np.random.default_rng(1))
    neighbours = nearest_neighbours(x, 4)
    for row, b in zip(new, base):
        ends = x[neighbours[b]] - x[b]
        # some neighbour n with row = x[b] + t (x[n] - x[b]), 0 <= t <= 1
        t = (ends @ (row - x[b])) / np.einsum("ij,ij->i", ends, ends)
        close = np.linalg.norm(x[b] + t[:, None] * ends - row, axis=1)
        j = np.argmin(close)
        assert close[j] < 1e-9 and -1e-12 <= t[j] <= 1 + 1e-12


def test_draws_are_reproducible_and_in_range():
    a = draw(np.random.default_rng(5), 10, 3, 50)
    b = draw(np.random.default_rng(5), 10, 3, 50)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    rows, cols, steps = a
    assert rows.max() < 10 and cols.max() < 3 and (0 <= steps).all() and (steps < 1).all()


def test_class_targets_fill_up_to_the_ratio_of_the_largest_class():
    assert class_targets({"a": 100, "b": 30, "c": 1}) == {"b": 70}  # c is too small to interpolate
    assert class_targets({"a": 100, "b": 30}, ratio=0.5) == {"b": 20}
    assert class_targets({"a": 100, "b": 30, "d": 10}, classes=["d"]) == {"d": 90}


def test_scaled_neighbours_give_imbalanced_learns_rows_after_a_standard_scaler():
    """German credit's amount (DM, spread 2,800) outweighed duration (months, 12) and age
    (years, 11): the neighbours were the rows nearest in amount alone (8 % of them the
    neighbours after scaling). With the features' spread as ``scale`` the rows are those of
    StandardScaler → SMOTE → inverse_transform, in the data's units."""
    from pathlib import Path

    import pandas as pd
    from imblearn.over_sampling import SMOTE
    from sklearn.preprocessing import StandardScaler

    import dsbuild

    german = pd.read_csv(Path(dsbuild.__file__).parent / "io" / "data" / "german_credit.csv.gz")
    x = german[["duration", "amount", "installment_rate", "age", "existing_credits"]].to_numpy(np.float64)
    y = (german["credit"] == "bad").to_numpy().astype(int)
    scaler = StandardScaler().fit(x)
    xr, _ = SMOTE(k_neighbors=5, random_state=np.random.RandomState(3)).fit_resample(scaler.transform(x), y)
    theirs = scaler.inverse_transform(xr[len(x):])

    minority = x[y == 1]
    neighbours = nearest_neighbours(minority, 5, scale=scaler.scale_)
    state = np.random.RandomState(3)
    flat = state.randint(low=0, high=neighbours.size, size=len(theirs))
    ours = interpolate(minority, neighbours, flat // 5, flat % 5, state.uniform(size=len(theirs)))
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-6)
    raw = nearest_neighbours(minority, 5)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(raw, neighbours)]) < 1  # of 5
