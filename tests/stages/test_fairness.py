"""Fairness stages on Adult and German credit: right figures, same for any partitioning."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.preprocessing import CorrelationRemover as FairlearnCorrelationRemover

import dsbuild
from dsbuild.stages import StageError
from dsbuild.stages.base import Roles, StageContext
from dsbuild.stages.fairness import (
    CorrelationRemoverStage,
    DisparateImpactRemover,
    FairnessAudit,
    Massage,
    Resample,
    Reweigh,
    order_warnings_for_job,
)
from dsbuild.testing import run_stage

DATA = Path(dsbuild.__file__).parent / "io" / "data"
PARTITIONS = (1, 3, 7)
ADULT = Roles(label="income", sensitive=("sex", "race"))
ADULT_SEX = Roles(label="income", sensitive=("sex",))
GERMAN = Roles(label="credit", sensitive=("age",))
FEATURES = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


@pytest.fixture(scope="module")
def adult():
    a = pd.read_csv(DATA / "adult.csv.gz")
    a.insert(0, "id", [f"adult:{i}" for i in range(len(a))])
    return a


@pytest.fixture(scope="module")
def german():
    g = pd.read_csv(DATA / "german_credit.csv.gz")
    g.insert(0, "id", [f"german:{i}" for i in range(len(g))])
    return g


def run_all(make, frame, roles, partitions=PARTITIONS):
    out = []
    for n in partitions:
        stage = make()
        kept, rejected = run_stage(stage, frame, npartitions=n, roles=roles)
        out.append((stage, kept, rejected))
    return out


def test_audit_figures_and_partition_independence(adult):
    runs = run_all(lambda: FairnessAudit(favorable=">50K", privileged={"sex": "Male", "race": "White"}), adult, ADULT)
    summaries = [s.summary() for s, _, _ in runs]
    assert summaries[0] == summaries[1] == summaries[2]
    kept = runs[0][1]
    assert len(kept) == len(adult) and runs[0][2].empty
    data = summaries[0]["data"]
    y = adult["income"] == ">50K"
    rate = y.groupby(adult["sex"]).mean()
    assert data["sex"]["di"] == pytest.approx(rate["Female"] / rate["Male"], abs=1e-6)
    assert data["sex"]["spd"] == pytest.approx(rate["Female"] - rate["Male"], abs=1e-6)
    cross = y.groupby([adult["sex"], adult["race"]]).mean()
    group = data["sex × race"]["groups"]["Female, Black"]
    assert group["base_rate"] == pytest.approx(cross[("Female", "Black")], abs=1e-6)
    assert group["di"] == pytest.approx(cross[("Female", "Black")] / cross[("Male", "White")], abs=1e-6)
    assert data["sex × race"]["reference"] == "Male, White"


def test_intersections_whose_values_hold_the_separator_stay_apart(german):
    """("x, y", "z") and ("x", "y, z") were one intersection, "x, y, z": the audit failed
    (float() of a Series) and the repair pooled the two groups' distributions."""
    frame = german.assign(a=np.where(german["sex"] == "male", "x, y", "x"), b=np.where(german["sex"] == "male", "z", "y, z"))
    roles = Roles(label="credit", sensitive=("a", "b"))
    audit = FairnessAudit(favorable="good")
    run_stage(audit, frame, npartitions=3, roles=roles)
    groups = audit.summary()["data"]["a × b"]["groups"]
    assert {k: v["count"] for k, v in groups.items()} == {'"x, y", z': 690, 'x, "y, z"': 310}
    repair = DisparateImpactRemover(columns=["duration"])
    run_stage(repair, frame, npartitions=3, roles=roles)
    assert repair.summary()["features"]["duration"]["groups"] == ['"x, y", z', 'x, "y, z"']


def test_audit_then_reweigh_count_in_one_pass(adult, monkeypatch):
    """An audit followed by a reweigh of the same table, built with one Shapes (as the
    pipeline builds a job): one counting pass serves both, and each reports what it
    reports alone. A reweigh that counts another table counts again."""
    import dask
    import dask.dataframe as dd

    from dsbuild.kernels.fairness import contingency
    from dsbuild.stages.fairness import base as fairness  # where FairnessStage.table counts
    from dsbuild.stages.base import StageContext
    from dsbuild.stages.shapes import Shapes

    calls = []

    def counted(part, *args, **kwargs):
        calls.append(len(part))
        return contingency(part, *args, **kwargs)

    def audit():
        return FairnessAudit(favorable=">50K").bind(StageContext("fairness_audit", 0, ADULT))

    def reweigh(roles=ADULT):
        return Reweigh(favorable=">50K").bind(StageContext("reweigh", 0, roles))

    with dask.config.set(scheduler="sync", **{"dataframe.convert-string": False}):
        frame = dd.from_pandas(adult, npartitions=4, sort=False)
        alone = audit()
        alone.build(frame, Shapes())
        direct = reweigh().build(frame, Shapes()).compute()
        monkeypatch.setattr(fairness, "contingency", counted)
        shapes = Shapes()
        paired, paired_reweigh = audit(), reweigh()
        audited = paired.build(frame, shapes)
        out = paired_reweigh.build(audited, shapes)
        weights = out["weight"].compute()
        assert sorted(calls) == sorted(len(p) for p in frame.partitions) and sum(calls) == len(adult)
        reweigh(ADULT_SEX).build(audited, shapes)
        assert len(calls) == 8
    assert list(out.columns) == [*audited.columns, "weight"]
    pd.testing.assert_series_equal(weights, direct["weight"])
    assert paired.summary() == alone.summary()
    assert paired.table_.equals(paired_reweigh.table_)
    assert len(weights) == len(adult)


def test_audit_with_a_model_reports_its_predictions(german):
    stage = FairnessAudit(favorable="good", bins={"age": [25]}, model="logistic_regression", folds=3)
    run_stage(stage, german, npartitions=3, roles=GERMAN)
    s = stage.summary()
    assert set(s["data"]["age"]["groups"]) == {"<25", ">=25"}
    assert s["data"]["age"]["groups"]["<25"]["count"] == (german["age"] < 25).sum()
    model = s["model"]
    assert 0 <= model["equalized_odds"]["age"]["equalized_odds_difference"] <= 1
    assert set(model["predictions"]["age"]["groups"]) == {"<25", ">=25"}


def test_audit_says_how_well_its_model_predicts_and_warns_when_it_barely_does(german):
    """The audit's model parity read as the parity of a model; on German credit's numeric
    columns its logistic regression is right 70.6% of the time where 'good' alone is right
    70.0%: near one prediction for everyone, so parity figures that look fair mean nothing.
    The summary gives its out-of-fold accuracy and balanced accuracy (scikit-learn's, on the
    same predictions), and a model with little skill is said."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    def audit(features):
        stage = FairnessAudit(favorable="good", bins={"age": [25]}, model="logistic_regression", folds=3)
        run_stage(stage, german, npartitions=3, roles=dataclasses.replace(GERMAN, features=features))
        entry = {"in": len(german), "summary": stage.summary()}
        return stage, entry["summary"]["model"], stage.result_warnings(entry)

    stage, model, notes = audit(("duration", "amount", "installment_rate", "residence_since", "existing_credits", "people_liable"))
    y = german["credit"].eq("good").to_numpy()
    predicted = stage.scores(german, stage.ranker_) >= 0.5
    assert model["accuracy"] == pytest.approx(accuracy_score(y, predicted)) and 0.70 <= model["accuracy"] < 0.72
    assert model["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert model["balanced_accuracy"] < 0.6
    [note] = notes
    assert note.startswith("stage 'fairness_audit': its logistic_regression tells the labels apart little better than chance "
                           f"(out-of-fold balanced accuracy {model['balanced_accuracy']:.3f}, chance 0.5; accuracy")
    _, model, notes = audit(("duration", "amount", "status", "credit_history", "savings"))
    assert model["balanced_accuracy"] > 0.6 and not notes


def test_a_disparate_impact_that_rests_on_a_handful_of_rows_is_said(german, adult):
    """German credit by personal status × age: one row under 25 of status A91, favourable,
    is the reference (rate 1), so the audit's disparate impact is 0.57 and massage's 'after'
    0.68, headlines of one row's luck that the figures alone did not show."""
    roles = Roles(label="credit", sensitive=("personal_status_sex", "age"), bins=(("age", (25.0,)),))
    for stage in (FairnessAudit(favorable="good"), Massage(favorable="good")):
        run_stage(stage, german, npartitions=2, roles=roles)
        summary = stage.summary()
        view = (summary.get("after") or summary["data"])["personal_status_sex × age"]
        assert view["reference"] == "A91, <25" and view["groups"]["A91, <25"]["count"] == 1
        notes = stage.result_warnings({"in": len(german), "summary": summary})
        assert [n for n in notes if "'A91, <25' (1 row(s), favourable rate 1)" in n] == notes and len(notes) == 1
        assert notes[0].startswith(f"stage '{stage.name}': by personal_status_sex × age, the disparate impact {view['di']:.3g} rests on")
    audit = FairnessAudit(favorable=">50K")
    run_stage(audit, adult, npartitions=2, roles=ADULT)
    assert audit.result_warnings({"in": len(adult), "summary": audit.summary()}) == []  # its smallest group has 109 rows


def test_a_by_value_whose_disparate_impact_rests_on_a_handful_of_rows_is_said(adult):
    """``by``'s figures are each value's rows alone: Adult's whole has no group under 30
    rows, but a 15 % split by sex × race has, and its disparate impact 0 was said nowhere
    (jobs/fairness_adult.yaml's test and validation splits)."""
    frame = adult.assign(split=np.where(np.arange(len(adult)) % 20 < 3, "test", "train"))
    audit = FairnessAudit(favorable=">50K", by=["split"])
    run_stage(audit, frame, npartitions=2, roles=ADULT)
    summary = audit.summary()
    notes = audit.result_warnings({"in": len(frame), "summary": summary})
    test = summary["by"]["split"]["test"]["data"]["sex × race"]
    small = [g for g, x in test["groups"].items() if x["count"] < 30]
    assert small and notes and all("(rows where split = test)" in n for n in notes)
    assert any(n.startswith(f"stage 'fairness_audit': by sex × race (rows where split = test), the disparate impact "
                            f"{test['di']:.3g} rests on") for n in notes)
    groups = [g for n in notes for g in small if f"{g!r} (" in n]
    assert groups and all(test["groups"][g]["count"] < 30 for g in groups)


def test_the_ranker_is_fitted_with_the_rows_weights(german):
    """The counts were weighted but the model behind the audit, massage and preferential
    resample was not: rows of weight 0 (here each row's copy with the other label) taught it
    as much as the rest. Weighted, the doubled data gives the original data's model figures."""
    def audit(frame):
        stage = FairnessAudit(favorable="good", bins={"age": [25]}, model="logistic_regression", folds=3)
        run_stage(stage, frame, npartitions=3, roles=GERMAN)
        return stage.summary()["model"]

    original = german.assign(weight=1.0)
    flipped = german.assign(id=german["id"] + "-copy", weight=0.0,
                            credit=german["credit"].map({"good": "bad", "bad": "good"}))
    alone, doubled = audit(original), audit(pd.concat([original, flipped], ignore_index=True))
    def figures(model):
        groups = model["predictions"]["age"]["groups"]
        return [groups["<25"]["base_rate"], groups[">=25"]["base_rate"], model["predictions"]["age"]["spd"],
                model["equalized_odds"]["age"]["equalized_odds_difference"]]

    assert figures(doubled) == pytest.approx(figures(alone), abs=1e-6)
    unweighted = audit(pd.concat([original, flipped], ignore_index=True).drop(columns="weight"))
    assert figures(unweighted)[:2] != pytest.approx(figures(alone)[:2], abs=1e-3)


def test_reweigh_equals_direct_pandas_and_composes(german):
    german = german.assign(weight=np.where(german["sex"] == "female", 2.0, 1.0))
    runs = run_all(lambda: Reweigh(favorable="good", bins={"age": [25]}), german, GERMAN)
    weights = [k.set_index("id")["weight"] for _, k, _ in runs]
    pd.testing.assert_series_equal(weights[0], weights[1], rtol=1e-12)
    pd.testing.assert_series_equal(weights[0], weights[2], rtol=1e-12)
    g = german.assign(s=np.where(german["age"] >= 25, "old", "young"))
    total = g["weight"].sum()
    p_s = g.groupby("s")["weight"].sum() / total
    p_y = g.groupby("credit")["weight"].sum() / total
    p_sy = g.groupby(["s", "credit"])["weight"].sum() / total
    expected = g["weight"] * [p_s[s] * p_y[y] / p_sy[(s, y)] for s, y in zip(g["s"], g["credit"])]
    got = weights[0].reindex(g["id"]).to_numpy()
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-12)
    after = runs[0][0].summary()["after"]["age"]
    assert after["di"] == pytest.approx(1.0, abs=1e-6)
    assert runs[0][0].summary()["before"]["age"]["di"] < 0.95


def test_reweigh_rejects_rows_whose_weight_no_trainer_takes(german):
    """A missing, infinite or negative weight counts for nothing and its row is rejected
    with the value; the other rows get the weights they get without those rows."""
    bad = {3: np.nan, 10: np.inf, 20: -1.0}
    weights = np.ones(len(german))
    for i, w in bad.items():
        weights[i] = w
    kept, rejected = run_stage(Reweigh(favorable="good", bins={"age": [25]}), german.assign(weight=weights),
                               npartitions=3, roles=GERMAN)
    assert sorted(rejected["id"]) == sorted(f"german:{i}" for i in bad)
    assert set(rejected["reason"]) == {"weight:weight=nan", "weight:weight=inf", "weight:weight=-1.0"}
    assert np.isfinite(kept["weight"]).all() and len(kept) == len(german) - len(bad)
    alone, _ = run_stage(Reweigh(favorable="good", bins={"age": [25]}), german.drop(index=list(bad)).assign(weight=1.0),
                         roles=GERMAN)
    pd.testing.assert_series_equal(kept.set_index("id")["weight"].sort_index(), alone.set_index("id")["weight"].sort_index(),
                                   rtol=1e-12)


def test_reweigh_where_counts_and_weighs_the_training_rows_only(german):
    """With where, the weights equal reweighing the training rows alone; test rows keep theirs."""
    split = german.assign(split=np.where(np.arange(len(german)) % 4 == 0, "test", "train"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    kept, _ = run_stage(Reweigh(favorable="good", bins={"age": [25]}, where=train), split, npartitions=3, roles=GERMAN)
    alone, _ = run_stage(Reweigh(favorable="good", bins={"age": [25]}), split[split["split"] == "train"], roles=GERMAN)
    got = kept.set_index("id")["weight"]
    pd.testing.assert_series_equal(got.reindex(alone["id"]), alone.set_index("id")["weight"], check_names=False, rtol=1e-12)
    assert (got[kept.set_index("id")["split"] == "test"] == 1.0).all()


def test_the_jobs_bins_serve_every_fairness_stage_and_a_stages_own_replace_them(german):
    """columns.bins cut age once for the whole job; a stage's bins replace a column's."""
    by_job = Roles(label="credit", sensitive=("age",), bins=(("age", (25.0,)),))
    job_wide = run_stage(Reweigh(favorable="good"), german, roles=by_job)[0]
    own = run_stage(Reweigh(favorable="good", bins={"age": [25]}), german, roles=GERMAN)[0]
    pd.testing.assert_series_equal(job_wide.set_index("id")["weight"], own.set_index("id")["weight"])
    other = run_stage(Reweigh(favorable="good", bins={"age": [40]}), german, roles=by_job)[0]
    assert not np.allclose(other.set_index("id")["weight"], own.set_index("id")["weight"])
    audit = FairnessAudit(favorable="good")
    run_stage(audit, german, roles=by_job)
    assert set(audit.summary()["data"]["age"]["groups"]) == {"<25", ">=25"}


def test_a_numeric_sensitive_column_without_bins_is_warned_about(german):
    meta = german.iloc[:0]
    unbinned = Reweigh(favorable="good").bind(StageContext("reweigh", 0, GERMAN))
    (note,) = unbinned.column_warnings(meta)
    assert "'age'" in note and "columns.bins" in note
    binned = Reweigh(favorable="good").bind(StageContext("reweigh", 0, Roles(label="credit", sensitive=("age",), bins=(("age", (25.0,)),))))
    assert binned.column_warnings(meta) == []
    as_codes = Reweigh(favorable="good").bind(StageContext("reweigh", 0, Roles(label="credit", sensitive=("sex",))))
    assert as_codes.column_warnings(meta) == []
    remover = CorrelationRemoverStage().bind(StageContext("correlation_remover", 0, GERMAN))
    assert remover.column_warnings(meta) == []  # a number there, as in fairlearn


def test_reweigh_strength_past_parity_is_partition_independent(german):
    """strength 1.5: the young's weighted good-credit rate ends above the old's, the same
    weights for any partitioning; a strength no weighting can reach names the stage."""
    runs = run_all(lambda: Reweigh(favorable="good", bins={"age": [25]}, strength=1.5), german, GERMAN)
    weights = [k.set_index("id")["weight"] for _, k, _ in runs]
    for other in weights[1:]:
        pd.testing.assert_series_equal(weights[0], other, rtol=1e-12)
    data = runs[0][0].summary()["after"]["age"]["groups"]
    assert data["<25"]["base_rate"] > data[">=25"]["base_rate"]
    with pytest.raises(StageError, match="'reweigh'.*strength 20"):
        run_stage(Reweigh(favorable="good", bins={"age": [25]}, strength=20), german, roles=GERMAN)


def cell_sizes(kept, frame_label, groups):
    return kept.groupby([groups, kept[frame_label]]).size()


@pytest.mark.parametrize("method", ["uniform", "preferential"])
def test_resample_reaches_the_target_cells_exactly(german, method):
    runs = run_all(lambda: Resample(favorable="good", bins={"age": [25]}, method=method, folds=3), german, GERMAN)
    stage, kept, rejected = runs[0]
    for _, k, r in runs[1:]:
        assert k["id"].tolist() == kept["id"].tolist()
        assert r["id"].tolist() == rejected["id"].tolist()
    targets = {c["cell"]: c["target"] for c in stage.summary()["cells"]}
    groups = np.where(kept["age"] >= 25, ">=25", "<25")
    sizes = kept.groupby([groups, kept["credit"]]).size()
    for (g, y), n in sizes.items():
        assert n == targets[f"{g}/{y}"]
    added = kept[kept["id"].str.contains("#rs")]
    assert len(added) == sum(max(c["target"] - c["count"], 0) for c in stage.summary()["cells"])
    parents = added["id"].str.split("#").str[0]
    originals = german.set_index("id").loc[parents]
    assert (originals["amount"].to_numpy() == added["amount"].to_numpy()).all()
    assert set(rejected["reason"]) <= {"sampled-out-of-cell=<25/bad", "sampled-out-of-cell=>=25/good"}
    assert len(rejected) == sum(max(c["count"] - c["target"], 0) for c in stage.summary()["cells"])
    assert stage.summary()["after"]["age"]["di"] == pytest.approx(1.0, abs=0.01)


def test_resample_reject_reasons_name_the_cell_with_its_labels_text(adult):
    """A reason's rule ends at its first '=', so the cell's '=' was rewritten: Adult's
    ``<=50K`` came out ``≤50K``, a label no row has. The rule now says what happened and
    the detail is the cell as the summary names it."""
    stage = Resample(favorable=">50K")
    kept, rejected = run_stage(stage, adult, npartitions=3, roles=ADULT_SEX)
    over = {c["cell"]: c["count"] - c["target"] for c in stage.summary()["cells"] if c["count"] > c["target"]}
    assert set(over) == {"Female/<=50K", "Male/>50K"}
    assert rejected["reason"].value_counts().to_dict() == {f"sampled-out-of-cell={c}": n for c, n in over.items()}
    rule, cell = rejected["reason"].iloc[0].split("=", 1)
    assert rule == "sampled-out-of-cell" and (rejected["sex"] + "/" + rejected["income"] == cell).iloc[0]


def test_resample_cells_whose_group_or_label_holds_a_slash_stay_apart():
    """Group ``a/b`` × label ``c`` and ``a`` × ``b/c`` were both the cell ``a/b/c``: each
    took the other's rows and target, and the output missed its cell sizes."""
    n = 400
    rng = np.random.default_rng(0)
    g = np.where(np.arange(n) % 2 == 0, "a/b", "a")
    y = np.where(rng.random(n) < np.where(g == "a/b", 0.8, 0.3), "c", "b/c")
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "g": g, "y": y})
    stage = Resample(favorable="c")
    kept, rejected = run_stage(stage, frame, npartitions=3, roles=Roles(label="y", sensitive=("g",)))
    cells = {c["cell"]: c["target"] for c in stage.summary()["cells"]}
    assert set(cells) == {"a/c", 'a/"b/c"', '"a/b"/c', '"a/b"/"b/c"'}
    sizes = kept.groupby(["g", "y"]).size()
    assert sizes[("a/b", "c")] == cells['"a/b"/c'] and sizes[("a", "b/c")] == cells['a/"b/c"']
    assert set(rejected["reason"]) == {'sampled-out-of-cell="a/b"/c', 'sampled-out-of-cell=a/"b/c"'}


@pytest.mark.parametrize("method", ["uniform", "preferential"])
def test_resample_where_samples_the_training_rows_alone(german, method):
    """With where, the cells are the training rows' and reach their targets; every test
    row comes out once, unchanged, and the result is the same for any partitioning."""
    split = german.assign(split=np.where(np.arange(len(german)) % 4 == 0, "test", "train"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    runs = run_all(lambda: Resample(favorable="good", bins={"age": [25]}, method=method, folds=3, where=train), split, GERMAN,
                   partitions=(1, 3))
    stage, kept, rejected = runs[0]
    assert kept["id"].tolist() == runs[1][1]["id"].tolist() and rejected["id"].tolist() == runs[1][2]["id"].tolist()
    assert (rejected["split"] == "train").all() and kept["id"][kept["split"] == "test"].str.contains("#").sum() == 0
    test_ids = split["id"][split["split"] == "test"]
    assert sorted(kept["id"][kept["split"] == "test"]) == sorted(test_ids)
    cells = {c["cell"]: c for c in stage.summary()["cells"]}
    trained = split[split["split"] == "train"]
    assert sum(c["count"] for c in cells.values()) == len(trained)
    out = kept[kept["split"] == "train"]
    sizes = out.groupby([np.where(out["age"] >= 25, ">=25", "<25"), out["credit"]]).size()
    assert {f"{g}/{y}": n for (g, y), n in sizes.items()} == {k: c["target"] for k, c in cells.items()}


def test_massage_where_relabels_training_rows_only(adult):
    adult = adult.iloc[:12000].assign(split=np.where(np.arange(12000) % 5 == 0, "test", "train"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    stage = Massage(favorable=">50K", folds=3, sample_rows=8000, where=train)
    kept, _ = run_stage(stage, adult, npartitions=3, roles=ADULT_SEX)
    after = kept.set_index("id")
    before = adult.set_index("id").loc[after.index]
    flipped = after["income"] != before["income"]
    assert flipped.any() and not flipped[after["split"] == "test"].any()
    training = after[after["split"] == "train"]
    rate = (training["income"] == ">50K").groupby(training["sex"]).mean()
    assert rate["Female"] == pytest.approx(rate["Male"], abs=1e-3)
    assert stage.summary()["before"]["sex"]["groups"]["Female"]["count"] == ((adult["split"] == "train") & (adult["sex"] == "Female")).sum()


def test_preferential_resampling_removes_borderline_rows(adult):
    adult = adult.iloc[:12000]
    stage = Resample(favorable=">50K", method="preferential", folds=3, sample_rows=8000)
    kept, rejected = run_stage(stage, adult, npartitions=3, roles=ADULT_SEX)
    assert len(kept) + len(rejected) == len(adult) + kept["id"].str.contains("#rs").sum()
    scores = stage.scores(adult, stage.ranker_)
    score = pd.Series(scores, index=adult["id"])
    dropped_pos = rejected[rejected["income"] == ">50K"]["id"]
    male_pos = adult[(adult["sex"] == "Male") & (adult["income"] == ">50K")]["id"]
    assert score[dropped_pos].max() <= score[male_pos[~male_pos.isin(dropped_pos)]].min()


def test_massage_flips_m_labels_nearest_the_boundary(adult):
    adult = adult.iloc[:12000]
    runs = run_all(lambda: Massage(favorable=">50K", folds=3, sample_rows=8000), adult, ADULT_SEX, partitions=(1, 4))
    stage, kept, _ = runs[0]
    assert kept["income"].tolist() == runs[1][1]["income"].tolist()
    before = adult.set_index("id")["income"]
    after = kept.set_index("id")["income"]
    flipped = after != before.reindex(after.index)
    d, f = (adult["sex"] == "Female").sum(), (adult["sex"] == "Male").sum()
    dp = ((adult["sex"] == "Female") & (adult["income"] == ">50K")).sum()
    fp = ((adult["sex"] == "Male") & (adult["income"] == ">50K")).sum()
    m = round((d * fp - f * dp) / (d + f))
    sex = kept.set_index("id")["sex"]
    assert ((after == ">50K") & flipped & (sex == "Female")).sum() == m
    assert ((after == "<=50K") & flipped & (sex == "Male")).sum() == m
    rate = (after == ">50K").groupby(sex).mean()
    assert rate["Female"] == pytest.approx(rate["Male"], abs=1e-3)
    assert (after == ">50K").sum() == (before == ">50K").sum()


@pytest.mark.parametrize("dtype", ["boolean", "Int64"])
def test_massage_and_preferential_resample_take_a_nullable_label_with_a_missing_value(adult, dtype):
    """A Parquet nullable boolean or integer label with a missing value: comparing pd.NA to
    the favourable value has no truth value, and both stages failed with a TypeError."""
    frame = adult.iloc[:600].assign(income=(adult["income"].iloc[:600] == ">50K").astype(dtype))
    frame.loc[3, "income"] = pd.NA
    for stage in (Massage(favorable=1, folds=3), Resample(favorable=1, method="preferential", folds=3)):
        kept, rejected = run_stage(stage, frame, npartitions=3, roles=ADULT_SEX)
        assert str(kept["income"].dtype) == dtype
        assert kept.set_index("id").loc["adult:3", "income"] is pd.NA
        assert len(kept) + len(rejected) == len(frame) + kept["id"].str.contains("#rs").sum()


def test_a_privileged_group_no_row_has_is_refused(adult):
    """privileged {sex: male} (or {age: 25} for the bin >=25) silently left the reference to
    the group with the highest base rate: the SPD and DI were against another group."""
    frame = adult.iloc[:600]
    roles = Roles(label="income", sensitive=("sex", "age"), bins=(("age", (25.0,)),))
    for make in (FairnessAudit, Reweigh, Resample, Massage):
        for privileged, message in [({"sex": "male"}, r"privileged sex: 'male' is not a group of 'sex'; its groups are \['Female', 'Male'\]"),
                                    ({"age": 25}, r"privileged age: 25 is not a group of 'age'; its groups are \['<25', '>=25'\]")]:
            with pytest.raises(StageError, match=message):
                run_stage(make(favorable=">50K", privileged=privileged), frame, npartitions=2, roles=roles)
    stage = FairnessAudit(favorable=">50K", privileged={"sex": "Female", "age": ">=25"})
    run_stage(stage, frame, npartitions=2, roles=roles)
    assert stage.summary()["data"]["sex"]["reference"] == "Female"
    assert stage.summary()["data"]["age"]["reference"] == ">=25"


def test_a_favorable_label_no_row_has_is_refused_by_every_stage(adult):
    """reweigh and uniform resample need no favourable label for their weights and cells,
    so favorable: '>50k' (for '>50K') ran without a word and their summaries silently left
    out the before/after figures; the audit and massage refused it."""
    frame = adult.iloc[:600]
    for stage in (Reweigh(favorable=">50k"), Resample(favorable=">50k"), FairnessAudit(favorable=">50k"), Massage(favorable=">50k")):
        with pytest.raises(StageError, match=rf"'{stage.name}': favorable label '>50k' is not among the labels \['<=50K', '>50K'\]"):
            run_stage(stage, frame, npartitions=2, roles=ADULT_SEX)
            stage.summary()


def test_massage_summary_after_counts_a_flip_into_a_cell_that_had_no_row(adult):
    """A group of one favourable row is demoted; its unfavourable cell did not exist, so the
    summary's 'after' lost the row (a count and a base rate the output does not have)."""
    frame = adult.iloc[:2000].copy()
    frame.loc[0, ["sex", "income"]] = ["Other", ">50K"]
    stage = Massage(favorable=">50K", folds=3)
    kept, _ = run_stage(stage, frame, npartitions=3, roles=ADULT)
    assert kept.set_index("id").loc["adult:0", "income"] == "<=50K"
    audit = FairnessAudit(favorable=">50K")
    run_stage(audit, kept, npartitions=2, roles=ADULT)
    after, actual = stage.summary()["after"], audit.summary()["data"]
    for view in ("sex", "race", "sex × race"):
        assert after[view] == actual[view]


def test_rankers_impute_an_infinite_feature_as_a_missing_one(adult):
    """One inf in a ranker's feature stopped massage, preferential resample and a model
    audit with scikit-learn's 'Input X contains infinity'; a missing value was imputed."""
    frame = adult.iloc[:400].astype({"age": float})
    frame.loc[0, "age"] = np.inf
    roles = Roles(label="income", sensitive=("sex",), features=("age", "education-num", "hours-per-week"))
    for stage in (Massage(favorable=">50K", folds=3), Resample(favorable=">50K", method="preferential", folds=3),
                  FairnessAudit(favorable=">50K", model="logistic_regression", folds=3)):
        kept, rejected = run_stage(stage, frame, npartitions=2, roles=roles)
        assert len(kept) + len(rejected) >= len(frame)


@pytest.mark.parametrize("make", [CorrelationRemoverStage, DisparateImpactRemover])
def test_feature_repairs_refuse_label_options_they_would_ignore(make):
    """The feature repairs read no label: privileged: {sex: Male} (a repair toward the
    privileged group's distribution, a user might think) and favorable were taken and did
    nothing, where any other unknown option is an error."""
    from pydantic import ValidationError

    for name, value in (("privileged", {"sex": "Male"}), ("favorable", ">50K")):
        with pytest.raises(ValidationError, match=f"unknown option '{name}'"):
            make(**{name: value})
    assert make(bins={"age": [25]}).options.bins == {"age": [25]}


@pytest.mark.parametrize("make", [CorrelationRemoverStage, DisparateImpactRemover])
def test_feature_repairs_refuse_columns_they_would_not_change(adult, make):
    """columns: [] changed every numeric feature (an empty list read as 'the default'), and
    columns naming the label or a sensitive column changed nothing, both without a word."""
    frame = adult.iloc[:300].assign(y=(adult["income"].iloc[:300] == ">50K").astype(int))
    roles = Roles(label="y", sensitive=("sex", "age"), bins=(("age", (30.0,)),))
    for columns, message in [([], "no features to change"), (["y"], "columns names 'y', the label"),
                             (["age", "hours-per-week"], "columns names 'age', a sensitive column")]:
        with pytest.raises(StageError, match=message):
            run_stage(make(columns=columns), frame, npartitions=2, roles=roles)
    kept, _ = run_stage(make(columns=["hours-per-week"]), frame, npartitions=2, roles=roles)
    after = kept.set_index("id").loc[frame["id"]]
    assert (after["hours-per-week"].to_numpy() != frame["hours-per-week"].to_numpy()).any()
    assert (after["education-num"].to_numpy() == frame["education-num"].to_numpy()).all()


def test_disparate_impact_remover_fit_on_with_features_past_max_distinct(adult):
    """Features with more distinct values than max_distinct (fnlwgt, any continuous one) have
    no groups until the histogram pass, and fit_on was said to match none of the rows."""
    frame = adult.iloc[:1500].assign(split=np.where(np.arange(1500) % 5 == 0, "test", "train"))
    roles = Roles(label="income", sensitive=("sex",), features=("fnlwgt",))
    stage = DisparateImpactRemover(fit_on=[{"column": "split", "op": "==", "value": "train"}], max_distinct=100)
    kept, _ = run_stage(stage, frame, npartitions=3, roles=roles)
    assert not stage.summary()["features"]["fnlwgt"]["exact"]
    assert (kept.set_index("id").loc[frame["id"], "fnlwgt"].to_numpy() != frame["fnlwgt"].to_numpy()).any()
    with pytest.raises(StageError, match="matched none of the rows"):
        run_stage(DisparateImpactRemover(fit_on=[{"column": "split", "op": "==", "value": "Train"}], max_distinct=100), frame, npartitions=3, roles=roles)


def test_correlation_remover_equals_fairlearn(adult):
    dummies = pd.get_dummies(adult[["sex", "race"]], dtype=float)
    x = pd.concat([dummies, adult[FEATURES].astype(float)], axis=1)
    expected = FairlearnCorrelationRemover(sensitive_feature_ids=list(dummies.columns), alpha=0.7).fit(x).transform(x)
    outputs = []
    for _, kept, _ in run_all(lambda: CorrelationRemoverStage(alpha=0.7), adult, Roles(sensitive=("sex", "race"), features=tuple(FEATURES))):
        got = kept.set_index("id").loc[adult["id"], FEATURES].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)
        assert kept["sex"].tolist() == kept["sex"].tolist()
        outputs.append(got)
    # the same values to the last bit at every partitioning (they differed in it)
    assert all(np.array_equal(got, outputs[0]) for got in outputs[1:])


def test_correlation_remover_reports_the_correlation_its_output_has(adult):
    """max_abs_correlation_after was (1 − alpha) × the correlation before: the covariance
    shrinks so, but the feature's spread shrinks too, and the output's correlation is
    larger (0.1173 for 0.115 on hours-per-week by sex at alpha 0.5)."""
    features = ["age", "education-num", "hours-per-week"]
    stage = CorrelationRemoverStage(alpha=0.5)
    kept, _ = run_stage(stage, adult, npartitions=3, roles=Roles(sensitive=("sex", "race"), features=tuple(features)))
    indicators = pd.get_dummies(kept[["sex", "race"]], dtype=float).drop(columns=["sex_Male", "race_White"])
    assert stage.summary()["sensitive_levels_left_out"] == {"sex": "Male", "race": "White"}
    for f in features:
        for when, frame in (("before", adult.set_index("id").loc[kept["id"]].reset_index()), ("after", kept)):
            measured = max(abs(np.corrcoef(indicators[c], frame[f])[0, 1]) for c in indicators.columns)
            assert stage.summary()[f"max_abs_correlation_{when}"][f] == pytest.approx(measured, abs=2e-6), (f, when)


def test_correlation_remover_leaves_a_row_with_an_infinite_feature_out_of_the_fit(adult):
    """One inf in a feature made the merged moments inf/NaN, and every row's features NaN."""
    frame = adult.iloc[:1000].astype({"age": float})
    frame.loc[0, "age"] = np.inf
    roles = Roles(sensitive=("sex",), features=("age", "education-num", "hours-per-week"))
    kept, _ = run_stage(CorrelationRemoverStage(), frame, npartitions=3, roles=roles)
    without, _ = run_stage(CorrelationRemoverStage(), frame.iloc[1:], npartitions=3, roles=roles)
    kept = kept.set_index("id")
    assert kept.loc["adult:0", "age"] == np.inf
    np.testing.assert_allclose(kept.loc[without["id"], list(roles.features)].to_numpy(),
                               without[list(roles.features)].to_numpy(), rtol=0, atol=1e-9)


def test_correlation_remover_leaves_a_row_without_its_group_out_of_the_fit(adult):
    """A missing sex was a level of its own: three such rows got an indicator fitted to
    them alone, which moved their features to the other rows' means (their own values
    lost), where a missing numeric sensitive value, or feature, leaves its row as it is."""
    frame = adult.iloc[:1000].copy()
    frame.loc[[0, 1, 2], "sex"] = None
    roles = Roles(sensitive=("sex",), features=("age", "education-num", "hours-per-week"))
    kept, _ = run_stage(CorrelationRemoverStage(), frame, npartitions=3, roles=roles)
    without, _ = run_stage(CorrelationRemoverStage(), frame.iloc[3:], npartitions=3, roles=roles)
    kept = kept.set_index("id")
    features = list(roles.features)
    np.testing.assert_array_equal(kept.loc[frame["id"][:3], features].to_numpy(), frame[features][:3].to_numpy(dtype=float))
    np.testing.assert_allclose(kept.loc[without["id"], features].to_numpy(), without[features].to_numpy(), rtol=0, atol=1e-9)


def test_correlation_remover_refuses_a_group_fit_on_has_not(adult):
    """A race only in the test rows had no indicator of its own: its rows were shifted as
    those of the level left out (White) were, without a word."""
    frame = adult.iloc[:2000].assign(split=lambda f: np.where((f["race"] == "Amer-Indian-Eskimo") | (np.arange(len(f)) % 4 == 0), "test", "train"))
    roles = Roles(sensitive=("sex", "race"), features=("age", "education-num", "hours-per-week"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    for n in (1, 3):
        with pytest.raises(StageError, match=r"'correlation_remover': race group 'Amer-Indian-Eskimo' is in none of the rows "
                                             r"fit_on \(split == 'train'\) names, so the fit learnt nothing about it"):
            run_stage(CorrelationRemoverStage(fit_on=train), frame, npartitions=n, roles=roles)
    # rows it leaves as they are (a feature missing) need no fit
    unfit = frame["race"] == "Amer-Indian-Eskimo"
    kept, _ = run_stage(CorrelationRemoverStage(fit_on=train), frame.assign(age=frame["age"].where(~unfit)), npartitions=3, roles=roles)
    assert kept.set_index("id").loc[frame["id"][unfit], "hours-per-week"].tolist() == frame.loc[unfit, "hours-per-week"].tolist()


@pytest.mark.parametrize("max_distinct", [2048, 10])
def test_disparate_impact_remover_refuses_a_group_fit_on_has_not(adult, max_distinct):
    """A race only in the test rows has no quantile function to repair from: its rows
    passed unrepaired, without a word, while every other group's moved."""
    frame = adult.iloc[:2000].assign(split=lambda f: np.where((f["race"] == "Amer-Indian-Eskimo") | (np.arange(len(f)) % 4 == 0), "test", "train"))
    roles = Roles(sensitive=("race",), features=("age", "hours-per-week"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    for n in (1, 3):
        with pytest.raises(StageError, match=r"'disparate_impact_remover': group 'Amer-Indian-Eskimo' has age values in none of "
                                             r"the rows fit_on \(split == 'train'\) names"):
            run_stage(DisparateImpactRemover(fit_on=train, max_distinct=max_distinct), frame, npartitions=n, roles=roles)
    # rows it leaves as they are (the value missing) need no fit
    unfit = frame["race"] == "Amer-Indian-Eskimo"
    gone = frame.assign(age=frame["age"].where(~unfit), **{"hours-per-week": frame["hours-per-week"].where(~unfit)})
    kept, _ = run_stage(DisparateImpactRemover(fit_on=train, max_distinct=max_distinct), gone, npartitions=3, roles=roles)
    assert kept.set_index("id").loc[frame["id"][unfit], "age"].isna().all()


@pytest.mark.parametrize("max_distinct", [2048, 10])
def test_disparate_impact_remover_leaves_an_infinite_value_as_it_is(adult, max_distinct):
    """An inf went into the groups' distributions: exact quantiles repaired other rows to
    inf, and the histogram's range (to inf) made every row of the feature NaN."""
    frame = adult.iloc[:1000].astype({"age": float})
    frame.loc[0, "age"] = np.inf
    roles = Roles(sensitive=("sex",), features=("age",))
    kept, _ = run_stage(DisparateImpactRemover(max_distinct=max_distinct), frame, npartitions=3, roles=roles)
    without, _ = run_stage(DisparateImpactRemover(max_distinct=max_distinct), frame.iloc[1:], npartitions=3, roles=roles)
    kept = kept.set_index("id")
    assert kept.loc["adult:0", "age"] == np.inf
    np.testing.assert_allclose(kept.loc[without["id"], "age"].to_numpy(), without["age"].to_numpy(), rtol=0, atol=1e-9)


def test_disparate_impact_remover_aligns_groups(german):
    runs = run_all(lambda: DisparateImpactRemover(bins={"age": [25]}, columns=["amount", "duration"], max_distinct=50), german, GERMAN)
    stage, kept, _ = runs[0]
    for _, k, _ in runs[1:]:
        np.testing.assert_allclose(k["amount"].to_numpy(), kept["amount"].to_numpy(), rtol=1e-12)
    summary = stage.summary()["features"]
    assert summary["duration"]["exact"] and not summary["amount"]["exact"]
    young = kept["age"] < 25
    for col in ("amount", "duration"):
        gap_before = abs(german.loc[german["age"] < 25, col].mean() - german.loc[german["age"] >= 25, col].mean())
        gap_after = abs(kept.loc[young, col].mean() - kept.loc[~young, col].mean())
        assert gap_before > 0 and gap_after < 0.2 * gap_before + summary[col]["quantile_error"]
    half = run_stage(DisparateImpactRemover(bins={"age": [25]}, columns=["duration"], repair_level=0.5), german, roles=GERMAN)[0]
    full = run_stage(DisparateImpactRemover(bins={"age": [25]}, columns=["duration"]), german, roles=GERMAN)[0]
    before, half, full = german.sort_values("id")["duration"].to_numpy(), half["duration"].to_numpy(), full["duration"].to_numpy()
    # half way in rank among the durations the data has, as AIF360 steps: a duration some row has
    assert set(half) <= set(before) and np.all((half - before) * (full - half) >= 0) and (half != before).any()
    amount = run_stage(DisparateImpactRemover(bins={"age": [25]}, columns=["amount"], repair_level=0.5, max_distinct=50), german, roles=GERMAN)[0]
    full = run_stage(DisparateImpactRemover(bins={"age": [25]}, columns=["amount"], max_distinct=50), german, roles=GERMAN)[0]
    linear = 0.5 * german.sort_values("id")["amount"].to_numpy() + 0.5 * full["amount"].to_numpy()  # a histogram's: linear
    assert np.abs(amount["amount"].to_numpy() - linear).max() <= 1  # each rounded to a whole number, as the column holds


def test_disparate_impact_remover_keeps_a_whole_number_feature_whole_at_any_partitioning(german):
    """Two groups' median was the mean of their two values at each quantile: German
    credit's durations (months) came out as halves. The lower middle value, as AIF360
    takes it, is a duration some row has."""
    roles = Roles(label="credit", sensitive=("sex",))
    runs = [run_stage(DisparateImpactRemover(columns=["duration"]), german, npartitions=n, roles=roles)[0] for n in (1, 4, 13)]
    repaired = runs[0]["duration"].to_numpy()
    assert all(np.array_equal(k["duration"].to_numpy(), repaired) for k in runs[1:])
    assert np.array_equal(repaired, np.round(repaired)) and set(repaired) <= set(german["duration"])
    assert not np.array_equal(repaired, german.sort_values("id")["duration"].to_numpy())


@pytest.mark.parametrize("options", [{"repair_level": 0.6, "max_distinct": 100}, {}], ids=["partial-histogram", "full"])
def test_disparate_impact_remover_keeps_an_integer_feature_an_integer(german, options):
    """An integer feature came out as float64 (AIF360 keeps a column's type). Values a
    histogram gave are rounded, as oversample rounds a whole-number column; a nullable
    one keeps its missing values."""
    frame = german.assign(split=np.where(np.arange(len(german)) % 4 == 0, "test", "train"), duration=german["duration"].astype("Int64"))
    frame.loc[3, "duration"] = pd.NA
    stage = lambda: DisparateImpactRemover(columns=["amount", "duration"], fit_on=[{"column": "split", "op": "==", "value": "train"}], **options)
    runs = [run_stage(stage(), frame, npartitions=n, roles=Roles(label="credit", sensitive=("sex",)))[0] for n in (1, 4, 13)]
    for kept in runs:
        assert kept["amount"].dtype == np.int64 and kept["duration"].dtype == "Int64"
        pd.testing.assert_frame_equal(kept, runs[0])
    assert runs[0].set_index("id").loc["german:3", "duration"] is pd.NA
    assert (runs[0]["amount"].to_numpy() != frame.sort_values("id")["amount"].to_numpy()).any()


def test_distributed_run_matches_threads(client, adult):
    stage = Reweigh(favorable=">50K")
    kept, _ = run_stage(stage, adult, npartitions=4, roles=ADULT)
    local = run_stage(Reweigh(favorable=">50K"), adult, npartitions=2, roles=ADULT)[0]
    np.testing.assert_allclose(kept["weight"], local["weight"], rtol=1e-12)


def test_settings_are_checked(german):
    with pytest.raises(StageError, match="sensitive"):
        run_stage(Reweigh(), german, roles=Roles(label="credit"))
    with pytest.raises(StageError, match="bins"):
        run_stage(Reweigh(bins={"amount": [1000]}), german, roles=GERMAN)
    stage = FairnessAudit()
    run_stage(stage, german, roles=GERMAN)
    with pytest.raises(StageError, match="favorable"):
        stage.summary()


def test_order_warnings_name_both_stages_and_say_why():
    from dsbuild.stages.base import Stage, StageContext

    class Dedup(Stage):
        name = "exact_dedup"

    fair = Reweigh().bind(StageContext("reweigh"))
    dedup = Dedup().bind(StageContext("exact_dedup"))
    notes = order_warnings_for_job([fair, dedup])
    assert len(notes) == 1 and "'reweigh'" in notes[0] and "'exact_dedup'" in notes[0] and "duplicates" in notes[0]
    assert order_warnings_for_job([dedup, fair]) == []


def test_a_fairness_stage_before_label_issues_is_warned_about():
    """label_issues (the sanitize family) drops or relabels rows: weights counted before it
    describe labels the output does not have, and validate said nothing."""
    from dsbuild.stages.sanitize import LabelIssues

    fair = Reweigh().bind(StageContext("reweigh"))
    issues = LabelIssues().bind(StageContext("label_issues"))
    (note,) = order_warnings_for_job([fair, issues])
    assert "'reweigh' runs before 'label_issues'" in note
    assert order_warnings_for_job([issues, fair]) == []


def test_an_audit_before_the_cleaning_is_the_before_of_a_before_and_after():
    """An audit changes no row, so auditing the rows as they came, then cleaning, then
    auditing again shows what the cleaning did to the groups; validate told the user to
    move the first audit after the cleaning (its "weights, labels and group counts would be
    wrong for the output"), which would lose the "before". A mitigation is still warned."""
    from dsbuild.stages.sanitize import Sanitize

    before, after = (FairnessAudit().bind(StageContext(n)) for n in ("fairness_audit", "fairness_audit#2"))
    sanitize, fair = Sanitize().bind(StageContext("sanitize")), Reweigh().bind(StageContext("reweigh"))
    assert order_warnings_for_job([before, sanitize, after]) == []
    (note,) = order_warnings_for_job([before, fair, sanitize, after])
    assert note.startswith("stage 'reweigh' runs before 'sanitize'")


def test_massage_promotes_into_a_file_whose_dictionary_lacks_the_label(client, tmp_path):
    """A Parquet dictionary label, one file holding only 'no' (its dictionary has no 'yes')
    and the rows nearest the boundary: a promoted row's 'yes' was cast to that file's
    categories and came out missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for k, label in enumerate(["yes", "no", "no"]):
        sex = np.where((np.arange(300) % 10 < 7) == (label == "yes"), "M", "F")
        x = rng.normal(size=300) + (1.0 if label == "yes" else -1.0) + (2.5 if k == 2 else 0.0)
        pq.write_table(pa.table({"x": x, "sex": sex, "y": pa.array([label] * 300).dictionary_encode()}), tmp_path / "in" / f"p{k}.parquet")
    manifest = dsbuild.run({
        "name": "massage", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in")},
        "columns": {"label": "y", "sensitive": ["sex"], "features": ["x"]},
        "stages": [{"massage": {"favorable": "yes"}}], "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    out = pd.read_parquet(tmp_path / "out" / "data")
    promoted = manifest["stages"][1]["metrics"]["promoted"]
    assert promoted > 0 and out["y"].notna().all()
    assert (out["y"] == "yes").sum() == 300 + promoted - manifest["stages"][1]["metrics"]["demoted"]
    assert (out.loc[out["id"].str.startswith("p2"), "y"] == "yes").sum() > 0


def test_audit_by_split_gives_each_splits_figures_from_one_pass(adult):
    """Each split's figures are the audit of its rows alone; the whole is unchanged, and a
    row without a split still counts in it."""
    adult = adult.iloc[:6000].assign(split=np.where(np.arange(6000) % 3 == 0, "test", "train").astype(object))
    adult.loc[5, "split"] = None
    runs = run_all(lambda: FairnessAudit(favorable=">50K", by=["split"]), adult, ADULT, partitions=(1, 3))
    audit = runs[0][0].summary()
    assert audit == runs[1][0].summary()
    alone = FairnessAudit(favorable=">50K")
    run_stage(alone, adult, roles=ADULT)
    assert audit["data"] == alone.summary()["data"] and audit["rows"] == 6000
    for value, rows in (("test", adult[adult["split"] == "test"]), ("train", adult[adult["split"] == "train"])):
        one = FairnessAudit(favorable=">50K")
        run_stage(one, rows, roles=ADULT)
        assert audit["by"]["split"][value] == {"rows": len(rows), "data": one.summary()["data"]}
    assert audit["by"]["split"]["<NA>"]["rows"] == 1
    # a float column's values are named as sensitive groups are: 1, not 1.0
    fold = FairnessAudit(favorable=">50K", by=["fold"])
    run_stage(fold, adult.assign(fold=(np.arange(6000) % 2).astype(float)), roles=ADULT)
    assert sorted(fold.summary()["by"]["fold"]) == ["0", "1"]
    from dsbuild.report import highlights

    lines = highlights({"stages": [{"name": "fairness_audit", "summary": audit}]})
    assert "fairness_audit (split = test, 2\u202f000 rows): disparate impact by sex " in "\n".join(lines)


@pytest.mark.parametrize("stage", [Reweigh, Resample, Massage])
def test_a_where_that_names_no_row_is_an_error_not_a_silent_no_op(german, stage):
    """'training' for 'train': the stage had nothing to fit on, passed every row on as it
    was (reweigh), or failed deep inside (resample's IndexError, massage's empty labels)."""
    split = german.assign(split=np.where(np.arange(len(german)) % 4 == 0, "test", "train"))
    typo = [{"column": "split", "op": "==", "value": "training"}]
    with pytest.raises(StageError, match=r"where \(split == 'training'\) matched none of the rows, so there is nothing to fit on"):
        run_stage(stage(favorable="good", bins={"age": [25]}, where=typo), split, npartitions=2, roles=GERMAN)


def test_resample_passes_rows_without_a_label_as_reweigh_does(german):
    """No counted row had a label (an unlabelled batch): resample's plan had no cells and
    its apply failed with 'IndexError: index 0 is out of bounds', where reweigh gives such
    rows the factor 1."""
    unlabelled = german.assign(credit=None)
    kept, rejected = run_stage(Resample(bins={"age": [25]}), unlabelled, npartitions=2, roles=GERMAN)
    assert rejected.empty and kept["id"].tolist() == sorted(german["id"])


@pytest.mark.parametrize("stage", ["reweigh", "resample"])
def test_a_mitigation_that_counted_no_label_says_so(client, tmp_path, german, stage):
    """An unlabelled batch (or columns.label naming an empty column) passed every row with
    weight 1, unsampled, and the run said nothing."""
    job = {"name": "unlabelled", "source": {"format": "frame", "frame": german.assign(credit=None)},
           "columns": {"label": "credit", "sensitive": ["age"], "bins": {"age": [25]}},
           "stages": [{stage: {}}], "sink": {"path": str(tmp_path / "out")}}
    manifest = dsbuild.run(job, client=client)
    assert manifest["totals"]["kept"] == len(german)
    assert [w for w in manifest["warnings"] if w.startswith(f"stage '{stage}': no row has a label")] == [
        f"stage '{stage}': no row has a label ('credit' is missing in all 1,000), so it had nothing to count and "
        "changed nothing; check columns.label"]


def test_a_where_comparing_a_text_column_with_a_number_is_refused_before_the_run(german):
    """A column of numbers read as text never equals the number 30: every row failed the
    test, silently."""
    text = german.assign(age=german["age"].astype(str))
    stage = Reweigh(favorable="good", where=[{"column": "age", "op": "in", "value": [30, 40]}])
    stage.bind(StageContext("reweigh", 0, Roles(label="credit", sensitive=("sex",))))
    with pytest.raises(StageError, match=r"'reweigh': where\[0\]: cannot compare column 'age'.*text column is not compared with a number; write the value as text \('30'\)"):
        stage.check(text.iloc[:0])


@pytest.mark.parametrize("stage", [lambda **o: CorrelationRemoverStage(**o),
                                   lambda **o: DisparateImpactRemover(bins={"age": [25]}, columns=["amount", "duration"], **o)],
                         ids=["correlation_remover", "disparate_impact_remover"])
def test_feature_repairs_fit_on_the_training_rows_and_change_every_row(german, stage):
    """fit_on: the repair is learnt from the training rows alone (test rows' features do
    not move it) and applied to every row, as a scaler fitted on train transforms test."""
    split = german.assign(split=np.where(np.arange(len(german)) % 4 == 0, "test", "train"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    runs = [run_stage(stage(fit_on=train), split, npartitions=n, roles=GERMAN)[0].set_index("id").sort_index() for n in (1, 3)]
    pd.testing.assert_frame_equal(runs[0], runs[1])
    shifted = split.assign(amount=np.where(split["split"] == "test", split["amount"] * 10, split["amount"]))
    rows = runs[0].index[runs[0]["split"] == "train"]
    for fit_on, same in ((train, True), ([], False)):  # fitted on every row, the test rows' amounts move the training rows'
        moved = run_stage(stage(fit_on=fit_on), shifted, npartitions=2, roles=GERMAN)[0].set_index("id")
        unmoved = run_stage(stage(fit_on=fit_on), split, npartitions=2, roles=GERMAN)[0].set_index("id")
        assert np.allclose(moved.loc[rows, "amount"], unmoved.loc[rows, "amount"]) == same
    test_rows = runs[0].index[runs[0]["split"] == "test"]
    assert not np.allclose(runs[0].loc[test_rows, "amount"], split.set_index("id").loc[test_rows, "amount"])  # test rows change too
    with pytest.raises(StageError, match=r"fit_on \(split == 'Train'\) matched none of the rows"):
        run_stage(stage(fit_on=[{"column": "split", "op": "==", "value": "Train"}]), split, roles=GERMAN)


@pytest.mark.parametrize("stage", ["reweigh", "resample"])
def test_a_group_of_one_label_that_no_weight_can_move_is_said(client, tmp_path, german, stage):
    """Weights (or samples) per group and label cannot move the favourable rate of a group
    whose rows all carry one label: the view kept its disparity (German credit by
    personal_status × housing: 0.17 → 0.70) and the run said nothing."""
    mixed = german.assign(region=np.where(german.index < 20, "north", np.where(german.index % 2, "east", "west")))
    frame = mixed.assign(credit=mixed["credit"].where(mixed["region"] != "north", "bad"))

    def job(frame, out):
        return {"name": "one-label", "source": {"format": "frame", "frame": frame}, "columns": {"label": "credit", "sensitive": ["region"]},
                "stages": [{stage: {"favorable": "good"}}], "sink": {"path": str(tmp_path / out)}}

    manifest = dsbuild.run(job(frame, "out"), client=client)
    [note] = [w for w in manifest["warnings"] if "one label only" in w]
    assert note.startswith(f"stage '{stage}': by region, 1 group(s) hold rows of one label only: north (none favourable); ")
    assert note.endswith("bin or merge such groups, or give them rows of both labels")
    after = manifest["stages"][-1]["summary"]["after"]["region"]
    assert after["groups"]["north"]["base_rate"] == 0 and f"stays at {after['di']:.3g}" in note
    assert not [w for w in dsbuild.run(job(mixed, "mixed"), client=client)["warnings"] if "one label only" in w]


def test_fairness_stages_that_read_features_leave_out_the_index_to_csv_wrote(german):
    """The ranker of massage (and the feature repairs) took a written index, ``Unnamed:
    0``, as a default feature; it is left out, and the stages that read features say so."""
    frame = german.assign(**{"Unnamed: 0": pd.array(np.arange(len(german)), dtype="Int64")})
    for make, reads in ((Massage, True), (Reweigh, False), (DisparateImpactRemover, True)):
        stage = make().bind(StageContext(make.name, 0, GERMAN))
        warned = [n for n in stage.column_warnings(frame.iloc[:0]) if "'Unnamed: 0' is not one of its features" in n]
        assert len(warned) == reads
    massage = Massage().bind(StageContext("massage", 0, GERMAN))
    assert "Unnamed: 0" not in massage.ranker_columns(frame.iloc[:0])[0]
    assert "Unnamed: 0" not in DisparateImpactRemover().bind(StageContext("d", 0, GERMAN)).features(frame.iloc[:0])
