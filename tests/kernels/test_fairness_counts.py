"""Group × label counts: mergeable, and equal to fairlearn's and a direct computation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    selection_rate,
)

import dsbuild
from dsbuild.kernels.fairness import (
    LABEL,
    bin_labels,
    contingency,
    equalized_odds,
    favorable_value,
    group_text,
    joint_text,
    massage_changes,
    max_strength,
    merge_tables,
    parity,
    resample_targets,
    reweighing,
    tidy,
)

DATA = Path(dsbuild.__file__).parent / "io" / "data"


@pytest.fixture(scope="module")
def adult():
    return pd.read_csv(DATA / "adult.csv.gz")


@pytest.fixture(scope="module")
def german():
    return pd.read_csv(DATA / "german_credit.csv.gz")


def table_in_chunks(frame, chunks, **kw):
    parts = np.array_split(np.arange(len(frame)), chunks)
    table = None
    for idx in parts:
        t = contingency(frame.iloc[idx], **kw)
        table = t if table is None else merge_tables(table, t)
    return table


def test_merged_table_equals_whole_table(adult):
    kw = dict(sensitive=["sex", "race"], label="income", weight="fnlwgt")
    whole = contingency(adult, **kw)
    merged = table_in_chunks(adult, 7, **kw)
    pd.testing.assert_frame_equal(whole[["sex", "race", LABEL, "n"]], merged[["sex", "race", LABEL, "n"]])
    np.testing.assert_allclose(whole["w"], merged["w"], rtol=1e-12)
    assert whole["n"].sum() == len(adult)
    direct = adult.groupby(["sex", "race", "income"]).size()
    assert direct.loc[("Female", "Black", ">50K")] == whole.set_index(["sex", "race", LABEL]).loc[("Female", "Black", ">50K"), "n"]


def test_merge_is_the_groupby_of_both_tables(adult):
    """The dict merge gives the pandas groupby's table exactly, for string, integer and
    boolean labels, and a table with cells the other lacks."""
    kw = dict(sensitive=["sex", "race", "age"], weight="fnlwgt", bins={"age": [25]}, extra={"_pred": np.arange(len(adult)) % 3 == 0})
    for label in (adult["income"], adult["education-num"], adult["income"] == ">50K"):
        frame = adult.assign(_y=label)
        a = contingency(frame.iloc[:20_000], label="_y", **{**kw, "extra": {"_pred": kw["extra"]["_pred"][:20_000]}})
        b = contingency(frame.iloc[20_000:20_300], label="_y", **{**kw, "extra": {"_pred": kw["extra"]["_pred"][20_000:20_300]}})
        groupby = tidy(pd.concat([a, b], ignore_index=True))
        pd.testing.assert_frame_equal(merge_tables(a, b), groupby)


@pytest.mark.parametrize("weighted", [False, True])
def test_parity_equals_fairlearn(adult, weighted):
    adult = adult.iloc[:6000]
    weight = "fnlwgt" if weighted else None
    sw = adult["fnlwgt"].to_numpy(float) if weighted else None
    table = table_in_chunks(adult, 3, sensitive=["sex", "race"], label="income", weight=weight)
    report = parity(table, ["sex", "race"], ">50K")
    y = (adult["income"] == ">50K").astype(int)
    for view, sf in [("sex", adult["sex"]), ("race", adult["race"]), ("sex × race", adult[["sex", "race"]])]:
        got = report[view]
        assert got["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y, y, sensitive_features=sf, sample_weight=sw), abs=1e-12
        )
        assert got["demographic_parity_ratio"] == pytest.approx(
            demographic_parity_ratio(y, y, sensitive_features=sf, sample_weight=sw), abs=1e-12
        )
    frame = MetricFrame(metrics=selection_rate, y_true=y, y_pred=y, sensitive_features=adult["sex"],
                        sample_params={"sample_weight": sw} if weighted else None)
    for g, rate in frame.by_group.items():
        assert report["sex"]["groups"][g]["base_rate"] == pytest.approx(rate, abs=1e-12)


def test_spd_and_di_against_the_privileged_group(adult):
    table = contingency(adult, ["sex"], "income")
    report = parity(table, ["sex"], ">50K", privileged={"sex": "Male"})["sex"]
    rate = adult.assign(y=adult["income"] == ">50K").groupby("sex")["y"].mean()
    assert report["reference"] == "Male"
    assert report["spd"] == pytest.approx(rate["Female"] - rate["Male"], abs=1e-12)
    assert report["di"] == pytest.approx(rate["Female"] / rate["Male"], abs=1e-12)
    assert report["groups"]["Female"]["count"] == (adult["sex"] == "Female").sum()
    # without a named privileged group the reference is the group with the highest rate
    assert parity(table, ["sex"], ">50K")["sex"]["reference"] == "Male"


def test_reference_group_of_tied_weighted_rates_does_not_depend_on_the_chunks():
    """Two groups with the same weighted rate (the same weights and labels, in another
    order): float sums of the weights differ in their last bits with the chunks, and the
    reference (the group with the highest rate) changed with them."""
    rng = np.random.default_rng(0)
    w, lab = np.round(rng.uniform(0.1, 3, 60), 3), rng.choice(["y", "n"], 60)
    perm = rng.permutation(60)
    frame = pd.concat([pd.DataFrame({"g": "a", "l": lab, "w": w}), pd.DataFrame({"g": "b", "l": lab[perm], "w": w[perm]})])
    frame = frame.sample(frac=1, random_state=1).reset_index(drop=True)
    refs = {parity(table_in_chunks(frame, c, sensitive=["g"], label="l", weight="w"), ["g"], "y")["g"]["reference"] for c in range(1, 12)}
    assert refs == {"a"}


def test_equalized_odds_equals_fairlearn(adult):
    adult = adult.iloc[:6000]
    y = (adult["income"] == ">50K").astype(int)
    pred = (adult["education-num"] > 12).astype(int)
    table = contingency(adult, ["sex", "race"], "income", extra={"pred": np.where(pred == 1, ">50K", "<=50K")})
    got = equalized_odds(table, ["sex", "race"], ">50K", prediction="pred")
    for view, sf in [("sex", adult["sex"]), ("race", adult["race"])]:
        assert got[view]["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y, pred, sensitive_features=sf), abs=1e-12)
        assert got[view]["equalized_odds_ratio"] == pytest.approx(
            equalized_odds_ratio(y, pred, sensitive_features=sf), abs=1e-12)


def test_reweighing_equals_direct_pandas(adult):
    table = table_in_chunks(adult, 5, sensitive=["sex", "race"], label="income")
    w = reweighing(table, ["sex", "race"]).set_index(["sex", "race", LABEL])["factor"]
    n = len(adult)
    p_s = adult.groupby(["sex", "race"]).size() / n
    p_y = adult.groupby("income").size() / n
    p_sy = adult.groupby(["sex", "race", "income"]).size() / n
    for (s, r, y), p in p_sy.items():
        assert w.loc[(s, r, y)] == pytest.approx(p_s.loc[(s, r)] * p_y.loc[y] / p, rel=1e-12)
    # after reweighing, every group has the same weighted rate of >50K
    rows = adult.set_index(["sex", "race", "income"]).index
    weights = w.reindex(rows).to_numpy()
    after = pd.Series(weights * (adult["income"] == ">50K"), index=adult.index).groupby(adult["sex"]).sum() / \
        pd.Series(weights, index=adult.index).groupby(adult["sex"]).sum()
    assert after["Female"] == pytest.approx(after["Male"], abs=1e-12)


def test_reweighing_of_fractional_weights_does_not_depend_on_the_chunks(adult):
    """Sums of fractional weights (a job's own sample weights, an earlier reweigh) differ in
    their last bits with the chunks; so did every factor, and the output's weights."""
    frame = adult.iloc[:5000].assign(w=np.random.default_rng(0).uniform(0.2, 2.0, 5000))
    factors = [reweighing(table_in_chunks(frame, c, sensitive=["sex"], label="income", weight="w"), ["sex"])["factor"].tolist()
               for c in (1, 3, 7, 13)]
    assert all(f == factors[0] for f in factors[1:])


def test_reweighing_composes_with_existing_weights(adult):
    table = contingency(adult, ["sex"], "income", weight="fnlwgt")
    w = reweighing(table, ["sex"]).set_index(["sex", LABEL])["factor"]
    total = adult["fnlwgt"].sum()
    p_s = adult.groupby("sex")["fnlwgt"].sum() / total
    p_y = adult.groupby("income")["fnlwgt"].sum() / total
    p_sy = adult.groupby(["sex", "income"])["fnlwgt"].sum() / total
    assert w.loc[("Female", ">50K")] == pytest.approx(p_s["Female"] * p_y[">50K"] / p_sy[("Female", ">50K")], rel=1e-12)


def test_resample_targets_make_group_and_label_independent(german):
    german = german.assign(age_group=group_text(german["age"], [25]))
    table = contingency(german, ["age"], "credit", bins={"age": [25]})
    t = resample_targets(table, ["age"]).set_index(["age", LABEL])
    n_s = german.groupby("age_group").size()
    n_y = german.groupby("credit").size()
    for (s, y), row in t.iterrows():
        assert row["target"] == round(n_s[s] * n_y[y] / len(german))
        assert row["n"] == ((german["age_group"] == s) & (german["credit"] == y)).sum()
    rates = t["target"].unstack()
    good = rates["good"] / rates.sum(axis=1)
    assert abs(good["<25"] - good[">=25"]) < 0.005


def test_massage_count_is_kamiran_calders_m(adult):
    table = contingency(adult, ["sex"], "income")
    changes = massage_changes(table, ["sex"], ">50K").set_index("sex")["change"]
    d = (adult["sex"] == "Female").sum()
    f = (adult["sex"] == "Male").sum()
    dp = ((adult["sex"] == "Female") & (adult["income"] == ">50K")).sum()
    fp = ((adult["sex"] == "Male") & (adult["income"] == ">50K")).sum()
    m = round((d * fp - f * dp) / (d + f))
    assert changes["Female"] == m > 0
    assert changes["Male"] == -m


def _weighted_rates(frame, weights, group):
    favourable = pd.Series(weights * (frame["income"] == ">50K"), index=frame.index).groupby(frame[group]).sum()
    return favourable / pd.Series(weights, index=frame.index).groupby(frame[group]).sum()


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.75])
def test_reweighing_strength_moves_each_group_part_or_past_the_way(adult, strength):
    """Group g's weighted favourable rate becomes r_g + λ·(r − r_g); its total weight stays."""
    table = contingency(adult, ["sex"], "income")
    w = reweighing(table, ["sex"], strength).set_index(["sex", LABEL])["factor"]
    weights = w.reindex(adult.set_index(["sex", "income"]).index).to_numpy()
    before = (adult["income"] == ">50K").groupby(adult["sex"]).mean()
    overall = (adult["income"] == ">50K").mean()
    after = _weighted_rates(adult, weights, "sex")
    for g in ("Female", "Male"):
        assert after[g] == pytest.approx(before[g] + strength * (overall - before[g]), rel=1e-12)
    totals = pd.Series(weights, index=adult.index).groupby(adult["sex"]).sum()
    assert np.allclose(totals, adult.groupby("sex").size(), rtol=1e-12)
    if strength > 1:  # past parity: the deprived group now has the higher rate
        assert after["Female"] > after["Male"]


def test_strength_beyond_the_possible_is_an_error_that_names_the_limit(adult):
    table = contingency(adult, ["sex"], "income")
    favourable = adult["income"] == ">50K"
    rate = favourable.groupby(adult["sex"]).mean().to_numpy()
    limit = max_strength(np.concatenate([rate, 1 - rate]), np.repeat([favourable.mean(), 1 - favourable.mean()], 2))
    assert limit > 1
    with pytest.raises(ValueError, match=f"largest possible here is {limit:.3g}"):
        reweighing(table, ["sex"], limit * 1.01)
    reweighing(table, ["sex"], limit * 0.99)


def test_resample_and_massage_strength(german):
    table = contingency(german, ["age"], "credit", bins={"age": [25]})
    full = resample_targets(table, ["age"]).set_index(["age", LABEL])
    half = resample_targets(table, ["age"], 0.5).set_index(["age", LABEL])
    none = resample_targets(table, ["age"], 0.0).set_index(["age", LABEL])
    assert (none["target"] == none["n"]).all()
    assert np.all(np.abs(half["target"] - (half["n"] + full["expected"]) / 2) <= 0.5 + 1e-9)
    m1 = massage_changes(table, ["age"], "good").set_index("age")["change"]
    m_half = massage_changes(table, ["age"], "good", 0.5).set_index("age")["change"]
    assert np.all(np.abs(m_half - m1 / 2) <= 1)
    # a strength that would flip more rows than a group has is refused, as reweighing's is
    # (it was cut to the rows there were, far from moving each rate that part of the way)
    positives = table[table[LABEL] == "good"].groupby("age")["n"].sum()
    rate = (positives / table.groupby("age")["n"].sum()).to_numpy()
    limit = max_strength(rate, np.full(len(rate), positives.sum() / table["n"].sum()))
    with pytest.raises(ValueError, match=f"largest possible here is {limit:.3g}"):
        massage_changes(table, ["age"], "good", limit * 1.01)
    edge = massage_changes(table, ["age"], "good", limit * 0.99).set_index("age")
    assert (edge["change"] <= edge["n"] - edge["positives"]).all() and (edge["change"] >= -edge["positives"]).all()


def test_bins_and_missing_groups():
    assert bin_labels([25]) == ["<25", ">=25"]
    assert bin_labels([25, 60]) == ["<25", "[25,60)", ">=60"]
    ages = pd.Series([19, 25, 24.5, None, 61, 40])
    assert list(group_text(ages, [25, 60])) == ["<25", "[25,60)", "<25", "<NA>", ">=60", "[25,60)"]
    assert list(group_text(pd.Series(["a", None, "b"]))) == ["a", "<NA>", "b"]


def test_blank_sensitive_text_is_missing(adult):
    """A sensitive value of blank text ("" or spaces, as Parquet and JSON keep a blank
    cell) is missing, as a CSV reader and the cleaning stages make it: it was a group of
    its own, and two such rows with no favourable label made the audit's disparate impact 0."""
    for dtype in (object, "string", "category"):
        col = pd.Series(["a", "", None, "  ", "b"], dtype=dtype)
        assert list(group_text(col)) == ["a", "<NA>", "<NA>", "<NA>", "b"]
    frame = adult.iloc[:2000].copy()
    frame.loc[[0, 1], "sex"] = ["", " "]
    as_none = frame.assign(sex=frame["sex"].replace({"": None, " ": None}))
    tables = [contingency(f, ["sex", "race"], "income") for f in (frame, as_none)]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert parity(tables[0], ["sex"], ">50K")["sex"]["groups"].keys() == {"Female", "Male"}


def test_a_group_without_weight_does_not_blank_the_headline_figures(adult):
    """A group whose rows all weigh 0 (or have no usable weight) has no base rate; when its
    name sorted first, Python's min kept its NaN and the view's SPD and DI were null, the
    same data with the group named otherwise gave the other groups' figures."""
    frame = adult.iloc[:3000].assign(w=1.0)
    frame.loc[frame["race"] == "Other", "w"] = 0.0
    heads = []
    for name in ("Other", "Aaa-other"):
        renamed = frame.assign(race=frame["race"].replace({"Other": name}))
        view = parity(contingency(renamed, ["race"], "income", weight="w"), ["race"], ">50K")["race"]
        assert np.isnan(view["groups"][name]["spd"])
        heads.append((view["spd"], view["di"]))
    assert heads[0] == heads[1] and not np.isnan(heads[0]).any()


def test_favorable_value_is_named_or_obvious():
    assert favorable_value([0, 1]) == 1
    assert favorable_value([True, False]) is True
    assert favorable_value(["good", "bad"], "good") == "good"
    with pytest.raises(ValueError, match="favorable"):
        favorable_value(["good", "bad"])
    with pytest.raises(ValueError, match="not among"):
        favorable_value(["good", "bad"], "great")


def test_equalized_odds_leaves_out_rows_without_a_group(adult):
    """As the parity figures do: three rows without a sex made their own group, whose
    rates of 0 or 1 gave an equalized odds difference of 1 whatever the model did."""
    adult = adult.iloc[:6000].copy()
    adult.loc[[0, 1, 2], "sex"] = None
    y = (adult["income"] == ">50K").astype(int)
    pred = (adult["education-num"] > 12).astype(int)
    table = contingency(adult, ["sex", "race"], "income", extra={"pred": np.where(pred == 1, ">50K", "<=50K")})
    got = equalized_odds(table, ["sex", "race"], ">50K", prediction="pred")
    known = adult["sex"].notna()
    assert "<NA>" not in got["sex"]["true_positive_rate"]
    assert got["sex"]["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y[known], pred[known], sensitive_features=adult["sex"][known]), abs=1e-12)
    assert not any("<NA>" in g for g in got["sex × race"]["false_positive_rate"])


def test_intersections_whose_values_hold_the_separator_keep_their_own_names():
    """Intersections were named by joining values with ", ": ("x, y", "z") and ("x",
    "y, z") were both "x, y, z", one group, and the audit failed on its duplicate name. A
    value holding the separator is now quoted; every other name is as it was."""
    a = np.array(["x, y", "x", "Female", '"q'], dtype=object)
    b = np.array(["z", "y, z", "White", "w"], dtype=object)
    assert joint_text([a, b]).tolist() == ['"x, y", z', 'x, "y, z"', "Female, White", '"\\"q", w']
    assert joint_text([a]).tolist() == a.tolist()
    table = pd.DataFrame({"a": a[:2], "b": b[:2], LABEL: [True, False], "n": [3, 5], "w": [3.0, 5.0]})
    report = parity(table, ["a", "b"], True, privileged={"a": "x", "b": "y, z"})
    assert report["a × b"]["reference"] == 'x, "y, z"'
    assert {k: v["count"] for k, v in report["a × b"]["groups"].items()} == {'"x, y", z': 3, 'x, "y, z"': 5}
    assert report["a"]["reference"] == "x" and set(report["b"]["groups"]) == {"z", "y, z"}
    assert parity(table, ["b"], True, privileged={"b": "y, z"})["b"]["reference"] == "y, z"
