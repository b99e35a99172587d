"""Rules declared as data: each op, missing values, regex flags, bad specs, functions."""

import numpy as np
import pandas as pd
import pytest

from dsbuild.io.sources import bundled_path
from dsbuild.kernels.labeling_functions import LabelingRule, RuleCondition, rule_votes, vote_matrix


@pytest.fixture(scope="module")
def adult():
    return pd.read_csv(bundled_path("adult"), nrows=3000)


@pytest.mark.parametrize(
    "op,value,expected",
    [
        ("<", 30, lambda d: d["age"] < 30),
        (">=", 60, lambda d: d["age"] >= 60),
        ("between", [30, 40], lambda d: d["age"].between(30, 40)),
        ("in", [25, 26], lambda d: d["age"].isin([25, 26])),
        ("not_in", [25, 26], lambda d: ~d["age"].isin([25, 26])),
    ],
)
def test_numeric_conditions_match_pandas(adult, op, value, expected):
    got = RuleCondition("age", op, value).holds(adult)
    assert np.array_equal(got, expected(adult).to_numpy())


def test_text_conditions_and_missing_values(adult):
    occupation = adult["occupation"]
    assert occupation.isna().any()
    contains = RuleCondition("occupation", "contains", "exec", case=False).holds(adult)
    assert np.array_equal(contains, occupation.str.contains("exec", case=False, na=False).to_numpy())
    matches = RuleCondition("occupation", "matches", "Sales|Tech-support").holds(adult)
    assert np.array_equal(matches, occupation.isin(["Sales", "Tech-support"]).to_numpy())
    assert np.array_equal(RuleCondition("occupation", "is_null").holds(adult), occupation.isna().to_numpy())
    # a missing value never passes a comparison or a negated set
    assert not RuleCondition("occupation", "!=", "Sales").holds(adult)[occupation.isna().to_numpy()].any()
    assert not RuleCondition("occupation", "not_in", ["Sales"]).holds(adult)[occupation.isna().to_numpy()].any()


def test_rules_from_specs_vote_or_abstain(adult):
    rule = LabelingRule.from_spec(
        {"name": "senior_exec", "label": ">50K", "when": [
            {"column": "age", "op": ">=", "value": 40},
            {"column": "occupation", "op": "==", "value": "Exec-managerial"},
        ]}
    )
    votes = rule_votes(rule, adult)
    fires = (adult["age"] >= 40) & (adult["occupation"] == "Exec-managerial")
    assert (votes[fires.to_numpy()] == ">50K").all()
    assert all(v is None for v in votes[~fires.to_numpy()])
    assert rule.columns() == ["age", "occupation"]


def test_functions_and_the_vote_matrix(adult):
    rules = [
        LabelingRule.from_spec({"label": "<=50K", "column": "hours-per-week", "op": "<", "value": 20}),
        lambda d: np.where(d["capital-gain"] > 7000, ">50K", None),
    ]
    matrix = vote_matrix(rules, adult)
    assert matrix.shape == (len(adult), 2)
    assert (matrix[:, 1] == ">50K").sum() == (adult["capital-gain"] > 7000).sum()
    with pytest.raises(ValueError, match="returned 1 labels"):
        rule_votes(lambda d: ["x"], adult)


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"column": "age", "op": "<", "value": 3}, "needs a 'label'"),
        ({"label": 1, "column": "age", "op": "~", "value": 3}, "unknown op"),
        ({"label": 1, "column": "age", "op": "in", "value": 3}, "needs a list"),
        ({"label": 1, "column": "text", "op": "contains", "value": "("}, "not a regular expression"),
        ({"label": 1, "when": [{"column": "age"}]}, "a condition is"),
        ({"label": 1, "when": [], "column": "age"}, "unknown keys"),
    ],
)
def test_bad_rule_specs_say_why(spec, message):
    with pytest.raises(ValueError, match=message):
        LabelingRule.from_spec(spec)


def test_conditions_on_dates_and_zoned_times_from_a_job_file():
    """Parquet dates come as date objects and timestamps often with a zone, while a job
    file writes a date as text (JSON) or a date (YAML): '==' and 'in' never held and
    '<' and 'between' failed."""
    import datetime

    import pyarrow as pa

    from dsbuild.io.sources import to_pandas

    frame = to_pandas(pa.table({
        "d": pa.array([datetime.date(2020, 1, i) for i in (1, 2, 3)] + [None]),
        "t": pa.array([datetime.datetime(2021, 1, 1, h, tzinfo=datetime.timezone.utc) for h in (0, 12, 23)] + [None], pa.timestamp("us", tz="Asia/Tokyo")),
    }))
    cases = [
        (("d", "==", "2020-01-02"), [False, True, False, False]),
        (("d", "in", ["2020-01-03"]), [False, False, True, False]),
        (("d", ">=", "2020-01-02"), [False, True, True, False]),
        (("d", "between", ["2020-01-01", "2020-01-02"]), [True, True, False, False]),
        (("t", "<", datetime.date(2021, 1, 2)), [True, True, False, False]),
        (("t", ">", "2021-01-01T20:00:00+00:00"), [False, False, True, False]),
    ]
    for (column, op, value), want in cases:
        assert RuleCondition(column, op, value).holds(frame).tolist() == want, (column, op, value)
    with pytest.raises(ValueError, match="column 'd'"):
        RuleCondition("d", "==", "soon").holds(frame)


@pytest.mark.parametrize("column,op,value", [("age", "<", "25"), ("age", "between", ["20", "30"]), ("education", ">", 3)])
def test_a_value_of_the_wrong_kind_is_named(adult, column, op, value):
    """age < '25' (a quoted number in YAML) stopped the run with numpy's 'ufunc less did
    not contain a loop with signature ...' from inside a task."""
    rule = LabelingRule.from_spec({"name": "young", "label": "<=50K", "column": column, "op": op, "value": value})
    with pytest.raises(ValueError, match=f"condition on column '{column}' .* compares it with a value of another kind"):
        rule.fires(adult)


def test_rules_that_vote_together_are_found_from_mergeable_counts():
    from sklearn.datasets import load_breast_cancer

    from dsbuild.kernels.labeling_functions import agreement_counts, dependent_pairs, drop_dependent

    frame = load_breast_cancer(as_frame=True).frame
    rules = [LabelingRule.from_spec(r, i) for i, r in enumerate([
        {"name": "large", "label": 0, "column": "mean radius", "op": ">", "value": 15},
        {"name": "very_large", "label": 0, "column": "mean radius", "op": ">", "value": 18},  # implies large
        {"name": "smooth", "label": 1, "column": "mean concave points", "op": "<", "value": 0.03},
        {"name": "small", "label": 1, "column": "mean radius", "op": "<", "value": 12},
    ])]
    codes = np.column_stack([pd.Series(rule_votes(r, frame)).map({0: 0, 1: 1}).fillna(-1).to_numpy(dtype=np.int64) for r in rules])
    whole = agreement_counts(codes, 2)
    halves = [agreement_counts(codes[s], 2) for s in (slice(0, 300), slice(300, None))]
    np.testing.assert_array_equal(whole["same"], halves[0]["same"] + halves[1]["same"])
    assert whole["same"][0, 1] == whole["fired"][1] == (frame["mean radius"] > 18).sum()
    pairs = dependent_pairs(whole, 0.99)
    assert [(k, d) for k, d, _ in pairs] == [(1, 0)]  # very_large is kept, large dropped where both fire
    out = drop_dependent(codes, pairs)
    assert ((out[:, 0] >= 0) == ((frame["mean radius"] > 15) & (frame["mean radius"] <= 18))).all()
    assert (out[:, 1:] == codes[:, 1:]).all()
