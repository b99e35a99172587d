import numpy as np
import pandas as pd
import pytest

from dsbuild.kernels.constraints import FunctionalDependency, group_codes, repair_by_majority


def test_parse_dependency():
    fd = FunctionalDependency.parse("zip, state -> city")
    assert fd.determinant == ("zip", "state") and fd.dependent == ("city",)
    assert str(fd) == "zip,state->city"


@pytest.mark.parametrize("text", ["zip city", "-> city", "zip ->", "a -> a"])
def test_bad_dependencies_are_refused(text):
    with pytest.raises(ValueError):
        FunctionalDependency.parse(text)


def frame():
    return pd.DataFrame(
        {
            "zip": ["1", "1", "1", "2", "2", "3", "3", None, "4"],
            "city": ["A", "A", "X", "B", "Y", "C", "C", "Z", None],
        }
    )


def test_majority_repair_fixes_minority_and_leaves_ties():
    f = frame()
    r = repair_by_majority(group_codes(f, ["zip"]), f["city"])
    assert r.values.tolist()[:7] == ["A", "A", "A", "B", "Y", "C", "C"]
    assert r.repaired.tolist() == [False, False, True, False, False, False, False, False, False]
    assert r.unresolved.tolist() == [False, False, False, True, True, False, False, False, False]
    assert r.values.iloc[7] == "Z" and pd.isna(r.values.iloc[8])


def test_repair_does_not_depend_on_row_order():
    f = frame()
    perm = np.random.default_rng(0).permutation(len(f))
    shuffled = f.iloc[perm].reset_index(drop=True)
    r = repair_by_majority(group_codes(shuffled, ["zip"]), shuffled["city"])
    base = repair_by_majority(group_codes(f, ["zip"]), f["city"])
    assert r.values.tolist() == base.values.iloc[perm].tolist()


def test_integer_dependent_keeps_dtype():
    f = pd.DataFrame({"edu": ["HS", "HS", "HS", "BA"], "num": [9, 9, 13, 13]}, index=[0, 0, 1, 1])
    r = repair_by_majority(group_codes(f, ["edu"]), f["num"])
    assert r.values.dtype == np.int64 and r.values.tolist() == [9, 9, 9, 13]


def test_min_share_demands_a_stronger_majority():
    f = pd.DataFrame({"k": ["a"] * 5, "v": ["x", "x", "x", "y", "z"]})
    assert repair_by_majority(group_codes(f, ["k"]), f["v"], min_share=0.5).repaired.sum() == 2
    assert repair_by_majority(group_codes(f, ["k"]), f["v"], min_share=0.7).unresolved.all()
