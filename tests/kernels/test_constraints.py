import numpy as np
import pandas as pd
import pytest

from dsbuild.kernels.constraints import (
    FunctionalDependency,
    majority_table,
    pair_counts,
    repair,
    table_positions,
)


def test_parse_dependency():
    fd = FunctionalDependency.parse("zip, state -> city")
    assert fd.determinant == ("zip", "state") and fd.dependent == ("city",)
    assert str(fd) == "zip,state->city"


@pytest.mark.parametrize("text", ["zip city", "-> city", "zip ->", "a -> a"])
def test_bad_dependencies_are_refused(text):
    with pytest.raises(ValueError):
        FunctionalDependency.parse(text)


ZIP_CITY = FunctionalDependency.parse("zip -> city")


def frame():
    return pd.DataFrame(
        {
            "zip": ["1", "1", "1", "2", "2", "3", "3", None, "4"],
            "city": ["A", "A", "X", "B", "Y", "C", "C", "Z", None],
        }
    )


def repaired(f, fd=ZIP_CITY, dep="city", min_share=0.5, parts=1):
    """Repair from counts made on ``parts`` slices of ``f`` (as partitions would)."""
    slices = np.array_split(np.arange(len(f)), parts)
    pairs = pd.concat([pair_counts(f.iloc[s], fd) for s in slices], ignore_index=True)
    return repair(f, majority_table(pairs, fd, min_share), fd, dep)


def test_majority_repair_fixes_minority_and_leaves_ties():
    r = repaired(frame())
    assert r.values.tolist()[:7] == ["A", "A", "A", "B", "Y", "C", "C"]
    assert r.repaired.tolist() == [False, False, True, False, False, False, False, False, False]
    assert r.unresolved.tolist() == [False, False, False, True, True, False, False, False, False]
    assert r.values.iloc[7] == "Z" and pd.isna(r.values.iloc[8])


def test_only_conflicted_groups_travel():
    table = majority_table(pair_counts(frame(), ZIP_CITY), ZIP_CITY)
    assert table["zip"].tolist() == ["1", "2"]
    assert table["_majority:city"].iloc[0] == "A" and table["_clear:city"].tolist() == [True, False]


@pytest.mark.parametrize("parts", [2, 4, 9])
def test_repair_does_not_depend_on_partitioning_or_row_order(parts):
    f = frame()
    perm = np.random.default_rng(0).permutation(len(f))
    shuffled = f.iloc[perm].reset_index(drop=True)
    base = repaired(f)
    r = repaired(shuffled, parts=parts)
    assert r.values.tolist() == base.values.iloc[perm].tolist()
    assert r.repaired.tolist() == base.repaired[perm].tolist()


def test_integer_dependent_keeps_dtype():
    f = pd.DataFrame({"edu": ["HS", "HS", "HS", "BA"], "num": [9, 9, 13, 13]}, index=[0, 0, 1, 1])
    r = repaired(f, FunctionalDependency.parse("edu -> num"), "num")
    assert r.values.dtype == np.int64 and r.values.tolist() == [9, 9, 9, 13]
    assert r.majority.tolist()[:3] == [9, 9, 9] and pd.isna(r.majority.iloc[3])


def test_min_share_demands_a_stronger_majority():
    f = pd.DataFrame({"k": ["a"] * 5, "v": ["x", "x", "x", "y", "z"]})
    fd = FunctionalDependency.parse("k -> v")
    assert repaired(f, fd, "v", min_share=0.5).repaired.sum() == 2
    assert repaired(f, fd, "v", min_share=0.7).unresolved.all()


def test_two_determinants_and_two_dependents():
    f = pd.DataFrame(
        {
            "zip": ["1", "1", "1", "1", "2", "2"],
            "state": ["CA", "CA", "CA", "NY", "CA", "CA"],
            "city": ["A", "A", "B", "C", "D", "D"],
            "county": ["x", "y", "x", "z", "w", None],
        }
    )
    fd = FunctionalDependency.parse("zip, state -> city, county")
    table = majority_table(pair_counts(f, fd), fd)
    assert table[["zip", "state"]].values.tolist() == [["1", "CA"]]
    assert table_positions(f, table, fd.determinant).tolist() == [0, 0, 0, -1, -1, -1]
    city = repair(f, table, fd, "city")
    county = repair(f, table, fd, "county")
    assert city.values.tolist() == ["A", "A", "A", "C", "D", "D"]
    assert county.values.tolist()[:4] == ["x", "x", "x", "z"] and county.repaired.tolist()[1]


def test_repair_of_dictionary_dates_and_decimals():
    """Each partition of a Parquet dictionary column holds its own categories: a majority
    from another partition became missing when cast to them. Dates and decimals come as
    objects, which the majority once held as strings, and failed to take them."""
    import datetime
    from decimal import Decimal

    fd = FunctionalDependency.parse("k -> v")
    cases = [
        (pd.Categorical(["x"] * 3), pd.Categorical(["y"]), "x"),
        (pd.Series([datetime.date(2020, 1, 1)] * 3, dtype=object), pd.Series([datetime.date(2021, 5, 5)], dtype=object), datetime.date(2020, 1, 1)),
        (pd.Series([Decimal("1.50")] * 3, dtype=object), pd.Series([Decimal("7.25")], dtype=object), Decimal("1.50")),
    ]
    for most, other, majority in cases:
        parts = [pd.DataFrame({"k": ["a"] * len(v), "v": v}) for v in (most, other)]
        table = majority_table(pd.concat([pair_counts(p, fd) for p in parts], ignore_index=True), fd)
        r = repair(parts[1], table, fd, "v")
        assert r.values.tolist() == [majority] and r.repaired.tolist() == [True] and r.majority.tolist() == [majority]
        assert type(r.values.iloc[0]) is type(majority)


def test_float_dependent_is_repaired():
    """A float dependent (education-num cast to float) was a crash: pandas' NA does not
    fit a numpy float column."""
    f = pd.DataFrame({"edu": ["HS", "HS", "HS", "BA"], "num": [9.0, 9.0, 13.0, 13.0]})
    r = repaired(f, FunctionalDependency.parse("edu -> num"), "num")
    assert r.values.dtype == np.float64 and r.values.tolist() == [9.0, 9.0, 9.0, 13.0]
    assert r.majority.tolist()[:3] == [9.0, 9.0, 9.0] and pd.isna(r.majority.iloc[3])
