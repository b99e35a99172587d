"""Label stages on simulated crowds over real labels (digits, Adult)."""

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_breast_cancer, load_digits

from dsbuild.io.sources import bundled_path
from dsbuild.kernels.crowd import DawidSkene, Votes, majority_vote
from dsbuild.kernels.crowd_simulation import simulate_annotations
from dsbuild.stages.base import Roles, StageError
from dsbuild.stages.label import AggregateLabels, AggregateLabelsOptions, LabelingFunctions
from dsbuild.testing import run_stage


@pytest.fixture(scope="module")
def digits_crowd():
    y = load_digits().target
    ids = np.array([f"digit-{i}" for i in range(len(y))])
    ann, _, kind = simulate_annotations(y, 60, np.random.default_rng(3), item_ids=ids, spammers=0.25, adversaries=0.1)
    ann["annotator"] = "w" + ann["annotator"].astype(str)
    data = pd.DataFrame({"id": ids, "pixel_sum": load_digits().data.sum(axis=1)})
    return y, ids, ann, data, kind


@pytest.fixture(scope="module")
def adult_crowd():
    adult = pd.read_csv(bundled_path("adult"), nrows=4000)
    truth = (adult["income"] == ">50K").to_numpy().astype(int)
    ids = np.array([f"adult:{i}" for i in range(len(adult))])
    ann, _, _ = simulate_annotations(truth, 40, np.random.default_rng(5), item_ids=ids, spammers=0.2, adversaries=0.1)
    ann["label"] = np.where(ann["label"] == 1, ">50K", "<=50K")
    data = adult.drop(columns=["income"]).assign(id=ids)
    return adult["income"].to_numpy(), ids, ann, data


def accuracy(kept, ids, truth, column="label"):
    lookup = pd.Series(truth, index=ids)
    return float((kept[column].astype(object).to_numpy() == lookup[kept["id"]].to_numpy()).mean())


def kernel_labels(ann, ids, one_coin=False):
    """The plain kernel on the whole frame in one process: what the stage must reproduce."""
    item = pd.Index(ids).get_indexer(ann["item"])
    annotators, a = np.unique(ann["annotator"], return_inverse=True)
    votes = Votes(item, a, ann["label"], len(ids), len(annotators), 10)
    smoothing, warm_start = (AggregateLabelsOptions.model_fields[f].default for f in ("smoothing", "warm_start"))  # the stage's
    model = DawidSkene(10, len(annotators), one_coin=one_coin, smoothing=smoothing, warm_start=warm_start).fit(votes)
    return model.predict(votes), majority_vote(votes)[0]


def test_dawid_skene_stage_equals_the_kernel_and_beats_majority_vote(digits_crowd):
    y, ids, ann, data, _ = digits_crowd
    stage = AggregateLabels(annotations=ann, method="dawid_skene")
    kept, rejected = run_stage(stage, data, npartitions=3)
    assert rejected.empty and len(kept) == len(data)
    expected, mv = kernel_labels(ann, ids)
    got = kept.set_index("id").loc[ids, "label"].to_numpy()
    assert (got != expected).sum() <= 2  # the stage applies one E-step more than the kernel's fit
    ds_acc = accuracy(kept, ids, y)
    assert ds_acc > (mv == y).mean() + 0.03
    assert kept["label_annotations"].between(3, 7).all()
    assert kept["label_confidence"].between(0, 1).all()
    summary = stage.summary()
    assert summary["rounds"] > 2 and summary["converged"]
    assert summary["annotations"]["used"] == len(ann)
    assert abs(sum(summary["prior"].values()) - 1) < 1e-5  # each share rounded to 6 decimals


@pytest.mark.parametrize("method", ["dawid_skene", "one_coin_dawid_skene", "glad"])
def test_results_do_not_depend_on_partitioning(client, digits_crowd, method):
    """Bit for bit: the confidences differed by up to 1e-14 between one partition and many,
    as the EM sums were added in another order (see crowd.on_grid)."""
    y, ids, ann, data, _ = digits_crowd
    ann, data = ann[ann["item"].isin(ids[:600])], data.head(600)
    outs = []
    for n_data, n_ann, per_partition in ((1, 1, 4_000_000), (4, 3, 700), (3, 5, 300)):  # 700: the EM rounds run over 3 partitions
        shuffled = dd.from_pandas(ann.sample(frac=1.0, random_state=n_data), npartitions=n_ann)
        stage = AggregateLabels(annotations=shuffled, method=method, partition_annotations=per_partition)
        kept, _ = run_stage(stage, data.sample(frac=1.0, random_state=n_ann), npartitions=n_data)
        outs.append(kept)
    for other in outs[1:]:
        pd.testing.assert_frame_equal(outs[0], other, check_exact=True)


@pytest.mark.parametrize("method", ["majority_vote", "wawa", "one_coin_dawid_skene", "glad"])
def test_other_methods_on_adult(adult_crowd, method):
    truth, ids, ann, data = adult_crowd
    kept, rejected = run_stage(AggregateLabels(annotations=ann, method=method, labels=["<=50K", ">50K"]), data, npartitions=2)
    assert rejected.empty
    acc = accuracy(kept, ids, truth)
    assert kept["label"].isin(["<=50K", ">50K"]).all()
    assert acc > 0.8, acc


def test_adult_dawid_skene_beats_majority_vote(adult_crowd):
    truth, ids, ann, data = adult_crowd
    accs = {}
    for method in ("majority_vote", "dawid_skene"):
        kept, _ = run_stage(AggregateLabels(annotations=ann, method=method), data, npartitions=2)
        accs[method] = accuracy(kept, ids, truth)
    assert accs["dawid_skene"] > accs["majority_vote"] + 0.02, accs


def test_messy_annotations_are_counted_not_fatal():
    data = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["old", "old", "old", "old"]})
    ann = pd.DataFrame(
        {
            "task": ["a", "a", "a", "b", "b", "b", "zz", "a", "c", None],
            "worker": ["w1", "w2", "w3", "w1", "w2", "w2", "w1", "w1", "w9", "w1"],
            "answer": ["cat", "cat", "dog", "dog", "dog", "fish", "cat", "cat", None, "cat"],
        }
    )
    stage = AggregateLabels(
        annotations={"frame": ann, "item": "task", "annotator": "worker", "label": "answer"},
        labels=["cat", "dog"], method="majority_vote",
    )
    kept, rejected = run_stage(stage, data, npartitions=2)
    assert kept.set_index("id")["label"].to_dict() == {"a": "cat", "b": "dog"}
    assert rejected.set_index("id")["reason"].to_dict() == {"c": "no-annotations", "d": "no-annotations"}
    s = stage.summary()["annotations"]
    assert s["rows"] == 10 and s["used"] == 7
    assert s["missing_value"] == 2 and s["outside_labels"] == 1 and s["outside_label_examples"] == ["fish"]
    assert s["duplicate_answers"] == 1  # w1 answered "a" twice
    notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 2}})
    assert any("2 of the 10 annotation rows have no item, annotator or label" in n for n in notes), notes
    assert stage.summary()["items_annotated"] == 3  # a, b and the unknown item zz
    assert stage.summary()["annotators"]["single_answer"] == 1  # w3

    keep = AggregateLabels(annotations={"frame": ann, "item": "task", "annotator": "worker", "label": "answer"},
                           labels=["cat", "dog"], no_annotations="keep", method="majority_vote")
    kept, rejected = run_stage(keep, data, npartitions=1)
    assert rejected.empty
    assert kept.set_index("id")["label"].to_dict() == {"a": "cat", "b": "dog", "c": "old", "d": "old"}
    assert kept.set_index("id")["label_annotations"].to_dict() == {"a": 4, "b": 2, "c": 0, "d": 0}


def test_answers_outside_declared_labels_are_said():
    """labels: [cat, dgo] (a typo) left every 'dog' answer out without a word: item c was
    'cat' with confidence 1.0 against one cat and one dog, b and d had no annotations."""
    data = pd.DataFrame({"id": list("abcd")})
    ann = pd.DataFrame({"item": list("aabbccdd"), "annotator": ["w1", "w2"] * 4,
                        "label": ["cat", "cat", "dog", "dog", "cat", "dog", "dog", "dog"]})
    stage = AggregateLabels(annotations=ann, labels=["cat", "dgo"], method="majority_vote")
    run_stage(stage, data)
    (note,) = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 2}})
    assert "5 of the 8 answers give a label outside 'labels' and are not counted ('dog')" in note


def test_label_spellings_spaces_merge_and_case_is_said():
    """A space typed into a form is no new class; a capital might be one, so it is said."""
    data = pd.DataFrame({"id": ["a", "b", "c"]})
    ann = pd.DataFrame({"item": ["a", "a", "a", "b", "b", "c", "c", "c"], "annotator": list("xyzxyxyz"),
                        "label": ["cat", "cat ", " cat", "dog", "dog ", "Dog", "dog", "  "]})
    stage = AggregateLabels(annotations=ann, method="majority_vote")
    kept, _ = run_stage(stage, data)
    assert kept.set_index("id")["label"].to_dict() == {"a": "cat", "b": "dog", "c": "dog"}
    assert kept.set_index("id")["label_annotations"].to_dict() == {"a": 3, "b": 2, "c": 2}
    assert stage.summary()["annotations"]["missing_value"] == 1  # the answer of spaces
    case, missing = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 3}})
    assert "labels 'Dog' and 'dog' differ only in case" in case
    assert "1 of the 8 annotation rows have no item, annotator or label (an empty cell, or only spaces)" in missing


def test_float_item_ids_match_integer_ids():
    """An item column with a missing value is float to pandas: item 10.0 matched no data
    row 10, and every row was rejected as having no annotations."""
    data = pd.DataFrame({"id": pd.array([10, 11, 12], dtype="Int64").astype(str), "x": [1.0, 2.0, 3.0]})
    ann = pd.DataFrame({"task": [10, 10, 11, 11, 12, np.nan], "worker": ["w1", "w2", "w1", "w2", "w1", "w2"],
                        "answer": [True, True, False, False, True, True]})
    assert ann["task"].dtype == np.float64
    stage = AggregateLabels(annotations={"frame": ann, "item": "task", "annotator": "worker", "label": "answer"},
                            method="majority_vote", output="y")
    kept, rejected = run_stage(stage, data, npartitions=2)
    assert rejected.empty and kept.set_index("id")["y"].to_dict() == {"10": True, "11": False, "12": True}


def test_spaces_around_item_ids_are_no_part_of_them():
    """Item ' i2' from a form matched no row 'i2': its answers were lost and the row
    rejected as having none."""
    data = pd.DataFrame({"id": ["i1", "i2", "i3"], "x": [1.0, 2.0, 3.0]})
    ann = pd.DataFrame({"item": ["i1", " i2", "i2 ", "i3", "i3"], "worker": ["w1", "w1", "w2", "w1", "w2"],
                        "answer": ["a", "b", "b", "a", "a"]})
    stage = AggregateLabels(annotations={"frame": ann, "item": "item", "annotator": "worker", "label": "answer"},
                            method="majority_vote", output="y")
    kept, rejected = run_stage(stage, data, npartitions=2)
    assert rejected.empty and kept.set_index("id")["y"].to_dict() == {"i1": "a", "i2": "b", "i3": "a"}

    # the data's own ids with spaces around them match the same items
    kept, rejected = run_stage(stage, data.assign(id=[" i1", "i2 ", "i3"]), npartitions=2)
    assert rejected.empty and kept.set_index("id")["y"].to_dict() == {" i1": "a", "i2 ": "b", "i3": "a"}


def test_label_files_mixing_numbers_and_words_lose_no_answer(tmp_path):
    """Files are typed from a sample: a CSV label column of 0s and 1s rejected a later
    "unsure" as unreadable, and a JSON "1" beside 1 was lost; the same text in two
    Unicode forms split its votes; declared labels of mixed kinds failed to be written."""
    import json

    data = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    rows = [("a", "w1", 1), ("a", "w2", "1"), ("a", "w3", 1.0), ("b", "w1", 0), ("b", "w2", "0"), ("c", "w1", "unsure"), ("c", "w2", "unsure")]
    (tmp_path / "votes.jsonl").write_text("".join(json.dumps({"item": i, "annotator": a, "label": v}) + "\n" for i, a, v in rows))
    stage = AggregateLabels(annotations={"format": "jsonl", "path": str(tmp_path / "votes.jsonl")}, method="majority_vote")
    kept, _ = run_stage(stage, data)
    assert kept.set_index("id")["label"].to_dict() == {"a": "1", "b": "0", "c": "unsure"}  # mixed kinds: text
    assert kept.set_index("id")["label_annotations"].to_dict() == {"a": 3, "b": 2, "c": 2}
    assert stage.summary()["annotations"]["unreadable"] == 0

    numbers = "".join(f"{i},{a},{v}\n" for i, a, v in rows if v != "unsure") + "c,w1,1.0\nc,w2,1\n"
    (tmp_path / "votes.csv").write_text("item,annotator,label\n" + numbers)
    stage = AggregateLabels(annotations={"format": "csv", "path": str(tmp_path / "votes.csv")}, method="majority_vote")
    kept, _ = run_stage(stage, data)
    assert kept["label"].dtype == "Int64" and kept.set_index("id")["label"].to_dict() == {"a": 1, "b": 0, "c": 1}

    cafe = ["caf\u00e9", "cafe\u0301", "tea"]
    ann = pd.DataFrame({"item": ["a", "a", "a"], "annotator": ["w1", "w2", "w3"], "label": cafe})
    stage = AggregateLabels(annotations=ann, method="majority_vote", labels=[0, 1, "caf\u00e9", "tea"])
    kept, _ = run_stage(stage, data.iloc[:1])
    assert kept["label"].tolist() == ["caf\u00e9"] and kept["label_annotations"].tolist() == [3]
    assert kept["label"].dtype == "string"  # one type for 0, 1 and text: Arrow can write it


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_boolean_answers_come_out_as_booleans(tmp_path, fmt):
    """JSON true/false (or a CSV's True/False) read as text came out as the strings
    'True' and 'False', where a typed reader gives booleans; a third answer keeps text."""
    import json

    data = pd.DataFrame({"id": ["a", "b"]})
    rows = [("a", "w1", True), ("a", "w2", True), ("b", "w1", False), ("b", "w2", False)]
    path = tmp_path / f"votes.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"item": i, "annotator": a, "label": v}) + "\n" for i, a, v in rows))
    else:
        path.write_text("item,annotator,label\n" + "".join(f"{i},{a},{v}\n" for i, a, v in rows))
    kept, _ = run_stage(AggregateLabels(annotations={"format": fmt, "path": str(path)}, method="majority_vote"), data)
    assert kept["label"].dtype == "boolean" and kept.set_index("id")["label"].to_dict() == {"a": True, "b": False}
    path.write_text(path.read_text().replace("False", "unsure").replace("false", '"unsure"'))
    kept, _ = run_stage(AggregateLabels(annotations={"format": fmt, "path": str(path)}, method="majority_vote"), data)
    assert kept["label"].dtype == "string" and kept.set_index("id")["label"].to_dict() == {"a": "True", "b": "unsure"}


def test_whole_float_classes_come_out_as_integers(tmp_path):
    """A Parquet label column of classes 0 and 1 with one missing answer is float64 in
    pandas (as is a pivoted wide sheet): the output label column was 0.0 and 1.0."""
    data = pd.DataFrame({"id": ["a", "b"]})
    ann = pd.DataFrame({"item": ["a", "a", "b", "b", "b"], "annotator": ["w1", "w2", "w1", "w2", "w3"], "label": [1.0, 1.0, 0.0, 0.0, np.nan]})
    ann.to_parquet(tmp_path / "votes.parquet", index=False)
    kept, _ = run_stage(AggregateLabels(annotations={"format": "parquet", "path": str(tmp_path / "votes.parquet")}, method="majority_vote"), data)
    assert kept["label"].dtype == "Int64" and kept.set_index("id")["label"].to_dict() == {"a": 1, "b": 0}


def test_single_answer_annotators_and_min_votes(digits_crowd):
    y, ids, ann, data, _ = digits_crowd
    with pytest.raises(StageError, match="min_annotator_votes 100000 leaves no annotator"):  # every row 'no-annotations'
        run_stage(AggregateLabels(annotations=ann, method="majority_vote", min_annotator_votes=100_000), data.head(50))
    extra = pd.DataFrame({"item": ids[:5], "annotator": [f"once{i}" for i in range(5)], "label": y[:5]})
    both = pd.concat([ann, extra], ignore_index=True)
    stage = AggregateLabels(annotations=both, method="dawid_skene")
    run_stage(stage, data.head(200), npartitions=2)
    assert stage.summary()["annotators"]["single_answer"] == 5
    strict = AggregateLabels(annotations=both, method="dawid_skene", min_annotator_votes=2)
    run_stage(strict, data.head(200), npartitions=2)
    assert strict.summary()["annotations"]["from_annotators_below_min_votes"] == 5
    assert strict.summary()["annotators"]["count"] == 60


def test_gold_items_keep_their_label_and_score_annotators(digits_crowd, tmp_path):
    y, ids, ann, data, kind = digits_crowd
    gold = pd.Series(pd.NA, index=range(len(y)), dtype="Int64")
    gold[:300] = y[:300]
    gold[0] = (y[0] + 1) % 10  # a gold label that the crowd disagrees with is still kept
    with_gold = data.assign(known=gold.to_numpy())
    out = tmp_path / "annotators.parquet"
    stage = AggregateLabels(annotations=ann, gold="known", annotators_output=str(out))
    kept, _ = run_stage(stage, with_gold, npartitions=3)
    k = kept.set_index("id")
    assert k.loc[ids[0], "label"] == (y[0] + 1) % 10 and k.loc[ids[0], "label_confidence"] == 1.0
    assert (k.loc[ids[1:300], "label"].to_numpy() == y[1:300]).all()
    table = pd.read_parquet(out)
    assert len(table) == 60 and table["gold_votes"].sum() > 0
    # gold accuracy separates honest annotators from adversaries
    table["kind"] = kind[table["annotator"].str[1:].astype(int)]
    by_kind = table[table["gold_votes"] >= 5].groupby("kind")["gold_accuracy"].mean()
    assert by_kind[0] > by_kind[2] + 0.4
    assert stage.summary()["gold_items_annotated"] == 300
    assert stage.summary()["annotators"]["with_gold"] == int((table["gold_votes"] > 0).sum())


def test_majority_vote_ties_are_seeded_and_partition_independent():
    n = 400
    ids = [f"t{i}" for i in range(n)]
    ann = pd.DataFrame({"item": np.repeat(ids, 2), "annotator": ["x", "y"] * n, "label": ["a", "b"] * n})
    data = pd.DataFrame({"id": ids})
    first, _ = run_stage(AggregateLabels(annotations=ann, method="majority_vote"), data, npartitions=1, seed=7)
    second, _ = run_stage(AggregateLabels(annotations=ann, method="majority_vote"), data, npartitions=3, seed=7)
    pd.testing.assert_series_equal(first["label"], second["label"])
    assert 150 < (first["label"] == "a").sum() < 250
    assert (first["label_confidence"] == 0.5).all()
    always_first, _ = run_stage(AggregateLabels(annotations=ann, method="majority_vote", ties="first"), data)
    assert (always_first["label"] == "a").all()


def test_settings_errors_point_at_the_problem(digits_crowd):
    _, _, ann, data, _ = digits_crowd
    with pytest.raises(ValidationError):
        AggregateLabels(annotations=ann, methd="wawa")
    with pytest.raises(StageError, match="annotation column 'worker'"):
        run_stage(AggregateLabels(annotations={"frame": ann, "annotator": "worker"}), data)
    with pytest.raises(StageError, match="gold column"):
        run_stage(AggregateLabels(annotations=ann, gold="truth"), data)
    with pytest.raises(ValidationError, match="smoothing applies to method dawid_skene only, not one_coin_dawid_skene"):
        AggregateLabels(annotations=ann, method="one_coin_dawid_skene", smoothing=0)  # it had no effect, unsaid
    assert AggregateLabels(annotations=ann, method="dawid_skene", smoothing=0).options.smoothing == 0


@pytest.mark.parametrize("method", ["one_coin_dawid_skene", "glad"])
def test_one_label_for_a_two_label_model_is_said_not_a_traceback(method):
    """Every answer 'cat': the kernel's ValueError stopped the run with a traceback."""
    data = pd.DataFrame({"id": ["a", "b", "c"]})
    ann = pd.DataFrame({"item": ["a", "b", "c"], "annotator": ["w1", "w1", "w2"], "label": ["cat"] * 3})
    with pytest.raises(StageError, match=f"every annotation answers 'cat', and {method} needs at least two labels"):
        run_stage(AggregateLabels(annotations=ann, method=method), data)
    with pytest.raises(StageError, match=f"{method} needs at least two labels"):
        run_stage(AggregateLabels(annotations=ann, method=method, labels=["cat"]), data)
    kept, _ = run_stage(AggregateLabels(annotations=ann, method=method, labels=["cat", "dog"]), data)
    assert (kept["label"] == "cat").all()

# -- labeling_functions -----------------------------------------------------------------


ADULT_RULES = [
    {"name": "degree", "label": ">50K", "column": "education", "op": "in", "value": ["Masters", "Doctorate", "Prof-school"]},
    {"name": "young", "label": "<=50K", "column": "age", "op": "<", "value": 25},
    {"name": "part_time", "label": "<=50K", "column": "hours-per-week", "op": "<", "value": 30},
    {"name": "capital", "label": ">50K", "column": "capital-gain", "op": ">", "value": 5000},
    {"name": "single", "label": "<=50K", "column": "marital-status", "op": "matches", "value": "Never-married|Divorced|Separated"},
    {"name": "exec_married", "label": ">50K", "when": [
        {"column": "occupation", "op": "contains", "value": "exec|prof", "case": False},
        {"column": "relationship", "op": "in", "value": ["Husband", "Wife"]},
    ]},
]


def test_labeling_functions_on_adult(adult_crowd):
    truth, ids, _, data = adult_crowd
    stage = LabelingFunctions(rules=ADULT_RULES)
    kept, rejected = run_stage(stage, data, npartitions=3)
    summary = stage.summary()
    fired = {r["rule"]: r["fired"] for r in summary["rules"]}
    assert fired["degree"] == int(data["education"].isin(["Masters", "Doctorate", "Prof-school"]).sum())
    assert fired["young"] == int((data["age"] < 25).sum())
    assert fired["exec_married"] == int(
        (data["occupation"].str.contains("exec|prof", case=False, na=False) & data["relationship"].isin(["Husband", "Wife"])).sum()
    )
    assert summary["covered"] == len(kept)
    assert set(rejected["reason"]) <= {"no-votes"} and len(kept) + len(rejected) == len(data)
    share = kept["label"].value_counts(normalize=True).max()  # the commonest class scored 0.78: 0.75 passed it
    assert accuracy(kept, ids, truth) > 0.85 > share
    with pytest.raises(ValueError, match="abstains where it does not fire"):
        LabelingFunctions(rules=ADULT_RULES, method="dawid_skene")
    with pytest.raises(ValueError, match="'wawa' or 'majority_vote'"):  # the choices said are the ones it takes
        LabelingFunctions(rules=ADULT_RULES, method="wava")
    one_rule_rows = kept[kept["label_votes"] == 1]
    assert len(one_rule_rows) > 0 and one_rule_rows["label"].isin(["<=50K", ">50K"]).all()


def test_a_rule_value_of_the_wrong_kind_is_refused_before_the_run(adult_crowd):
    """A quoted number against a number column was numpy's traceback from every task."""
    _, _, _, data = adult_crowd
    rules = [{"name": "young", "label": "<=50K", "column": "age", "op": "<", "value": "25"}]
    with pytest.raises(StageError, match="stage 'labeling_functions': rule 'young': condition on column 'age'"):
        run_stage(LabelingFunctions(rules=rules), data.head(50))


def test_labeling_functions_accept_python_functions_and_gold():
    data = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "text": ["great film", "awful", "great", "meh", "awful plot", "fine"],
                         "known": [None, None, None, "neg", None, None]})

    def exclamation(part):
        return np.where(part["text"].str.contains("fine"), "pos", None)

    rules = [
        {"name": "great", "label": "pos", "column": "text", "op": "contains", "value": r"\bgreat\b"},
        {"name": "awful", "label": "neg", "column": "text", "op": "contains", "value": "awful"},
        exclamation,
    ]
    stage = LabelingFunctions(rules=rules, labels=["neg", "pos"], method="majority_vote", gold="known")
    kept, rejected = run_stage(stage, data, npartitions=2, roles=Roles(label="sentiment"))
    assert kept.set_index("id")["sentiment"].to_dict() == {"r0": "pos", "r1": "neg", "r2": "pos", "r3": "neg", "r4": "neg", "r5": "pos"}
    assert rejected.empty
    with pytest.raises(ValidationError, match="unknown op"):
        LabelingFunctions(rules=[{"label": "x", "column": "text", "op": "~="}])
    with pytest.raises(StageError, match="not in labels"):
        run_stage(LabelingFunctions(rules=[{"label": "x", "column": "text", "op": "not_null"}], labels=["y"]), data)


def test_labeling_functions_built_in_python_go_into_a_job():
    """A stage object's rules were dumped as the dataclass's ``{name, label, conditions}``,
    which the job, validating the options again, refused ("a condition is {column, op,
    value[, case]}")."""
    import dsbuild

    rule = {"name": "old", "label": ">50K", "column": "age", "op": ">", "value": 60}
    stage = LabelingFunctions(rules=[rule, {"name": "young", "label": "<=50K", "when": [{"column": "age", "op": "<", "value": 25}]}])
    job = dsbuild.job(name="lf", source={"format": "sample", "name": "adult"}, stages=[stage], sink={"path": "unused"})
    (built,) = job.build_stages()
    assert built.options.rules == stage.options.rules
    (options,) = job.resolved()["stages"][0].values()
    assert options["rules"][0] == {"name": "old", "label": ">50K", "when": [{"column": "age", "op": ">", "value": 60, "case": True}]}


@pytest.mark.parametrize("form", ["stage object", "mapping"])
def test_a_python_job_runs_labeling_functions_that_are_functions(client, tmp_path, form):
    """The options' help allows Python callables, and run_stage ran them, but dsbuild.run
    failed before anything ran: "cannot describe a function in a job" (the job's text,
    for its key and manifest)."""
    import dsbuild

    def over_sixty(part):
        return np.where(part["age"] > 60, ">50K", None)

    options = {"rules": [over_sixty, {"name": "young", "label": "<=50K", "column": "age", "op": "<", "value": 25}],
               "labels": ["<=50K", ">50K"], "output": "weak_label", "no_votes": "keep"}
    stage = LabelingFunctions(**options) if form == "stage object" else {"labeling_functions": options}
    job = dsbuild.job(name="lf", source={"format": "sample", "name": "adult", "partitions": 2}, stages=[stage],
                      sink={"path": str(tmp_path / "out")})
    manifest = dsbuild.run(job, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data", columns=["age", "weak_label"])
    assert (kept.loc[kept["age"] > 60, "weak_label"] == ">50K").all()
    assert (kept.loc[kept["age"] < 25, "weak_label"] == "<=50K").all()
    (options,) = manifest["job"]["stages"][0].values()
    assert options["rules"][0].startswith("<function ") and options["rules"][0].endswith("over_sixty>")


@pytest.mark.parametrize("form", ["frame key", "whole value", "stage object"])
def test_a_python_job_passes_annotations_as_a_frame(client, tmp_path, form):
    """Every form the options' help offers runs through ``dsbuild.run`` (the job could not be
    turned into its manifest text, or the stage object lost the frame)."""
    import dsbuild

    data = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    ann = pd.DataFrame({"item": ["a", "a", "b", "b", "b"], "annotator": ["w1", "w2", "w1", "w2", "w3"], "label": [1, 1, 0, 0, 1]})
    stage = {
        "frame key": {"aggregate_labels": {"annotations": {"frame": ann}, "method": "majority_vote"}},
        "whole value": {"aggregate_labels": {"annotations": ann, "method": "majority_vote"}},
        "stage object": AggregateLabels(annotations=ann, method="majority_vote"),
    }[form]
    job = dsbuild.job(name="frames", source={"format": "frame", "frame": data}, stages=[stage], sink={"path": str(tmp_path / "out")})
    manifest = dsbuild.run(job, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data")
    assert kept.set_index("id")["label"].to_dict() == {"a": 1, "b": 0}
    assert manifest["stages"][1]["rejected_by_reason"] == {"no-annotations": 1}
    (options,) = manifest["job"]["stages"][0].values()
    named = options["annotations"] if form == "whole value" else options["annotations"]["frame"]
    assert named == "<pandas frame: 5 rows, columns ['item', 'annotator', 'label']>"


def test_a_job_reads_annotations_from_csv_and_reports_in_the_manifest(client, tmp_path):
    import dsbuild

    y = load_digits().target
    ids = np.array([f"digits:{i}" for i in range(len(y))])
    ann, _, _ = simulate_annotations(y, 40, np.random.default_rng(11), item_ids=ids, spammers=0.2, adversaries=0.1)
    ann = ann[ann["item"] != "digits:5"]  # one image nobody labeled
    ann.rename(columns={"item": "image_id", "annotator": "worker", "label": "answer"}).to_csv(tmp_path / "crowd.csv", index=False)
    job = {
        "name": "crowd-digits",
        "source": {"format": "sample", "name": "digits", "partitions": 3},
        "columns": {"label": "label", "image": "image"},
        "stages": [{"aggregate_labels": {
            "annotations": {"format": "csv", "path": str(tmp_path / "crowd.csv"), "item": "image_id", "annotator": "worker", "label": "answer"},
            "output": "crowd_label",
        }}],
        "sink": {"path": str(tmp_path / "out")},
    }
    manifest = dsbuild.run(job, client=client)
    stage = manifest["stages"][1]
    assert stage["rejected_by_reason"] == {"no-annotations": 1}
    assert stage["summary"]["annotations"]["used"] == len(ann)
    assert stage["summary"]["annotators"]["count"] == 40
    assert stage["metrics"]["annotated"] == len(y) - 1
    assert manifest["warnings"] == []
    kept = pd.read_parquet(tmp_path / "out" / "data")
    assert (kept["crowd_label"].astype(str) == kept["label"].astype(str)).mean() > 0.9

    # Items named without the data's id prefix match no row: said, not only counted.
    ann.assign(item=ann["item"].str.removeprefix("digits:")).rename(
        columns={"item": "image_id", "annotator": "worker", "label": "answer"}).to_csv(tmp_path / "crowd.csv", index=False)
    manifest = dsbuild.run(job, client=client, overwrite=True)
    assert manifest["stages"][1]["rejected_by_reason"] == {"no-annotations": len(y)}
    (warning,) = manifest["warnings"]
    assert f"none of the {len(y) - 1:,} annotated items is a row of the data (annotation items: 0, 1, 10, …)" in warning


def test_answers_not_counted_or_counted_twice_are_said():
    """Repeated answers outvoted the other annotators, and an annotation file of no usable
    vote rejected every row, each without a word."""
    data = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})
    ann = pd.DataFrame({"item": ["b"] * 5, "annotator": ["w1", "w1", "w1", "w2", "w3"], "label": ["tea", "tea", "tea", "cafe", "cafe"]})
    stage = AggregateLabels(annotations=ann, method="majority_vote")
    kept, _ = run_stage(stage, data)
    assert kept.set_index("id")["label"].to_dict() == {"b": "tea"}  # counted as crowd-kit counts them: said, not changed
    notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 1}})
    assert any("2 answers repeat an answer of the same annotator to the same item" in n for n in notes)

    stage = AggregateLabels(annotations=ann, method="majority_vote", labels=["yes", "no"])
    kept, rejected = run_stage(stage, data)
    assert kept.empty and len(rejected) == 2
    notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 0}})
    assert any("none of the 5 annotation rows is a vote" in n and "outside the labels 5" in n for n in notes)

    with pytest.raises(StageError, match="the annotations hold no rows"):
        run_stage(AggregateLabels(annotations=ann.iloc[:0], method="majority_vote", labels=["yes", "no"]), data)


def test_gold_values_outside_the_labels_are_said(client, tmp_path):
    """A boolean gold column against answers 0 and 1 matched no class: the gold was left
    out (no annotator scored, no label kept) and the manifest said nothing."""
    import dsbuild

    data = pd.DataFrame({"id": ["a", "b", "c", "d"], "known": pd.array([True, None, False, None], dtype="boolean")})
    ann = pd.DataFrame({"item": list("aabbccdd"), "annotator": ["w1", "w2"] * 4, "label": [1, 1, 0, 1, 0, 0, 1, 1]})
    job = dsbuild.job(name="gold", source={"format": "frame", "frame": data},
                      stages=[AggregateLabels(annotations=ann, method="majority_vote", gold="known")], sink={"path": str(tmp_path / "out")})
    manifest = dsbuild.run(job, client=client)
    (warning,) = manifest["warnings"]
    assert "2 rows' gold values in 'known' are not among the labels [0, 1] and are not used (0 are)" in warning


def test_wide_annotations_a_column_per_annotator(digits_crowd, tmp_path):
    """Vendors ship a sheet with a column per annotator; it was refused ('annotation column
    'annotator' is not in the annotations'). Read with wide: true it gives what the same
    answers in rows give, an empty cell being no answer, not a missing value."""
    _, ids, ann, data, _ = digits_crowd
    ann, data = ann[ann["item"].isin(ids[:300])], data.head(300)
    sheet = ann.pivot(index="item", columns="annotator", values="label").reset_index()
    sheet.to_csv(tmp_path / "wide.csv", index=False)
    long, _ = run_stage(AggregateLabels(annotations=ann), data)
    stage = AggregateLabels(annotations={"format": "csv", "path": str(tmp_path / "wide.csv"), "wide": True})
    wide, _ = run_stage(stage, data)
    pd.testing.assert_frame_equal(wide, long)
    counts = stage.summary()["annotations"]
    assert counts["used"] == counts["rows"] == len(ann) and counts["missing_value"] == 0
    with pytest.raises(StageError, match="or wide: true for a column per annotator"):
        run_stage(AggregateLabels(annotations={"format": "csv", "path": str(tmp_path / "wide.csv")}), data)


def crowd_beside_a_constant_annotator(y):
    """1-3 answers per item from 30 annotators, and a 31st who answers 0 to 70% of the items."""
    ids = np.array([f"item-{i}" for i in range(len(y))])
    ann, _, _ = simulate_annotations(y, 30, np.random.default_rng(0), item_ids=ids, min_votes=1, max_votes=3)
    zero = ids[np.random.default_rng(0).random(len(y)) < 0.7]
    return ids, pd.concat([ann, pd.DataFrame({"item": zero, "annotator": 30, "label": 0})]), pd.DataFrame({"id": ids})


def test_one_coin_does_not_collapse_beside_a_constant_annotator():
    """One-coin Dawid–Skene (as crowd-kit's) sent every digit to '0' when one prolific
    annotator always answers 0 beside 1-3 others: accuracy 0.10 (majority vote 0.51)."""
    y = load_digits().target
    ids, ann, data = crowd_beside_a_constant_annotator(y)
    stage = AggregateLabels(annotations=ann, method="one_coin_dawid_skene")
    kept, _ = run_stage(stage, data)
    assert accuracy(kept, ids, y) > 0.65
    notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": len(y)}})
    assert not any("collapsed" in n for n in notes), notes


def test_a_model_that_collapses_onto_one_class_is_said():
    """On a binary crowd the same annotator makes one class the one-coin model's best fit
    (EM started from the truth ends there too): every tumour '0', 0.37, and not a word."""
    y = load_breast_cancer().target
    ids, ann, data = crowd_beside_a_constant_annotator(y)
    for method, said in (("one_coin_dawid_skene", True), ("dawid_skene", False)):
        stage = AggregateLabels(annotations=ann, method=method)
        run_stage(stage, data)
        notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": len(y)}})
        assert any(f"{method} put 100% of the items in '0', which 64% of the answers give" in n for n in notes) == said, notes


def test_a_categorical_label_column_gives_the_classes_answered(digits_crowd, tmp_path):
    """A Parquet dictionary label column counted its unused categories ('unsure', 'skip')
    as classes: GLAD spread wrong answers over them too and changed labels."""
    _, ids, ann, data, _ = digits_crowd
    ann, data = ann[ann["item"].isin(ids[:400])], data.head(400)
    plain = ann.assign(label="d" + ann["label"].astype(str))
    plain.to_parquet(tmp_path / "plain.parquet", index=False)
    plain.assign(label=pd.Categorical(plain["label"], categories=[*sorted(set(plain["label"])), "unsure", "skip"])).to_parquet(
        tmp_path / "categorical.parquet", index=False)
    outs = []
    for name in ("plain", "categorical"):
        stage = AggregateLabels(annotations={"format": "parquet", "path": str(tmp_path / f"{name}.parquet")}, method="glad")
        outs.append(run_stage(stage, data)[0])
        assert "unsure" not in stage.summary()["labels"]
    pd.testing.assert_frame_equal(outs[0], outs[1])


def test_a_label_model_that_did_not_converge_is_said(digits_crowd):
    """max_iter reached: the summary said converged false at most, and the run no word;
    a model that converged in its last allowed round was reported as not converged."""
    _, ids, ann, data, _ = digits_crowd
    ann, data = ann[ann["item"].isin(ids[:300])], data.head(300)
    stage = AggregateLabels(annotations=ann, max_iter=2)
    run_stage(stage, data)
    notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 300}})
    assert stage.summary()["converged"] is False
    assert any("dawid_skene did not converge in max_iter 2 rounds" in n for n in notes), notes
    rounds = AggregateLabels(annotations=ann)
    run_stage(rounds, data)
    needed = rounds.summary()["rounds"] - 1
    exact = AggregateLabels(annotations=ann, max_iter=needed)
    run_stage(exact, data)
    assert exact.summary()["converged"] is True
    assert not exact.result_warnings({"summary": exact.summary(), "metrics": {"annotated": 300}})


def test_confusion_matrices_too_large_for_a_worker_are_refused(monkeypatch):
    """Free-text answers from many annotators: Dawid–Skene's confusion matrices grow with
    annotators × classes², and workers died mid-run instead of a word before it."""
    import dsbuild.stages.label.aggregate as label

    monkeypatch.setattr(label, "_confusion_budget", lambda: 20 * 30 * 30 * 8 - 1)
    data = pd.DataFrame({"id": [f"i{i}" for i in range(60)]})
    ann = pd.DataFrame({"item": data["id"], "annotator": [f"w{i % 20}" for i in range(60)], "label": [f"spelling {i % 30}" for i in range(60)]})
    with pytest.raises(StageError, match="dawid_skene would keep a 30 × 30 confusion matrix for each of 20 annotators"):
        run_stage(AggregateLabels(annotations=ann), data)
    kept, _ = run_stage(AggregateLabels(annotations=ann, method="glad"), data)
    assert len(kept) == 60


def test_the_confusion_budget_is_an_eighth_of_the_smallest_worker(client):
    """A fixed 512 MiB refused Dawid–Skene on workers with room for it."""
    from dsbuild.stages.label.aggregate import MIN_CONFUSION_BYTES, _confusion_budget

    limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert _confusion_budget() == max(MIN_CONFUSION_BYTES, min(limits) // 8)


def test_answers_without_annotators_are_votes_for_majority_vote(tmp_path):
    """A sheet of (item, label) rows, no annotator, was refused even for majority vote, which
    needs no annotator; annotator: null takes each row as a vote."""
    data = pd.DataFrame({"id": ["a", "b", "c"]})
    pd.DataFrame({"item": ["a", "a", "a", "b", "b", "c"], "label": ["cat", "dog", "cat", "dog", "dog", "cat"]}).to_csv(
        tmp_path / "votes.csv", index=False)
    source = {"format": "csv", "path": str(tmp_path / "votes.csv")}
    with pytest.raises(StageError, match="column 'annotator' is not in the annotations.*annotator: null, with method: majority_vote"):
        run_stage(AggregateLabels(annotations=source, method="majority_vote"), data)
    stage = AggregateLabels(annotations={**source, "annotator": None}, method="majority_vote")
    kept, _ = run_stage(stage, data, npartitions=2)
    assert kept.set_index("id")["label"].to_dict() == {"a": "cat", "b": "dog", "c": "cat"}
    assert not stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 3}})  # repeats of one annotator are the point
    with pytest.raises(StageError, match="dawid_skene weighs each annotator by their answers, and annotator: null gives none"):
        run_stage(AggregateLabels(annotations={**source, "annotator": None}), data)


def test_dawid_skene_is_not_overconfident_on_a_sparse_crowd():
    """400 annotators, 1-3 answers per digit: unsmoothed, an annotator with a few answers
    got a confusion matrix of 0s and 1s, and Dawid–Skene scored 0.55 against majority
    vote's 0.62 with a mean confidence of 0.78. The default prior on the confusion
    matrices scores above majority vote, with confidences near its accuracy."""
    y = load_digits().target
    ids = np.array([f"digit-{i}" for i in range(len(y))])
    ann, _, _ = simulate_annotations(y, 400, np.random.default_rng(2), item_ids=ids, min_votes=1, max_votes=3,
                                     spammers=0.2, adversaries=0.1)
    data = pd.DataFrame({"id": ids})
    got = {}
    for method in ("majority_vote", "dawid_skene"):
        kept, _ = run_stage(AggregateLabels(annotations=ann, method=method), data, npartitions=2)
        got[method] = (accuracy(kept, ids, y), kept["label_confidence"].mean())
    (mv, _), (ds, confidence) = got["majority_vote"], got["dawid_skene"]
    assert ds > mv + 0.03, got
    assert confidence - ds < 0.12, got


def test_a_small_crowd_keeps_its_minority_answers():
    """Four annotators, eight rows: with a fixed count of pseudo-answers per class, a class
    without items fitted the prior best, and EM emptied 'no' until every row was 'yes'
    with confidence 1.0, although three of the four answers to r1 are 'no'."""
    data = pd.DataFrame({"id": [f"r{i}" for i in range(6)]})
    ann = pd.DataFrame([("r0", "a", "yes"), ("r0", "b", "yes"), ("r0", "c", "no"), ("r0", "d", "yes"),
                        ("r1", "a", "no"), ("r1", "b", "no"), ("r1", "c", "no"), ("r1", "d", "yes"),
                        ("r2", "a", "yes"), ("r2", "b", "no"), ("r3", "a", "yes"), ("r4", "d", "yes"), ("r5", "d", "yes")],
                       columns=["item", "annotator", "label"])
    kept, _ = run_stage(AggregateLabels(annotations=ann), data)
    labels = kept.set_index("id")["label"]
    assert labels["r1"] == "no" and labels["r0"] == "yes", labels
    assert kept["label_confidence"].max() < 0.999


def test_unreadable_annotation_lines_are_named(tmp_path):
    """A broken line in an annotation file was said as a count alone ('1 annotation rows
    could not be read'): which file and line, and why, was nowhere to be found."""
    data = pd.DataFrame({"id": ["a", "b"]})
    (tmp_path / "long.csv").write_text("item,annotator,label\na,w1,cat\nb,w2,dog,extra\nb,w1,dog\n")
    (tmp_path / "wide.csv").write_text("item,w1,w2\na,cat,cat\nb,dog,dog,extra\n")
    for name, wide in (("long.csv", False), ("wide.csv", True)):
        stage = AggregateLabels(annotations={"format": "csv", "path": str(tmp_path / name), "wide": wide}, method="majority_vote")
        run_stage(stage, data)
        notes = stage.result_warnings({"summary": stage.summary(), "metrics": {"annotated": 1}})
        assert any(f"1 annotation rows could not be read and are not counted ({name}:1: csv:fields=expected 3, got 4)" in n
                   for n in notes), notes


def test_dawid_skene_does_not_over_label_a_rare_class():
    """A binary crowd (20 % spammers, 10 % adversaries) on items of which 1 % are of one
    class: from majority vote's shares, which put 17 % of the items in it, EM crawled and
    after max_iter rounds labelled 344 items rare of 89 (crowd-kit: 1,379). One-coin's
    first rounds find the noisy annotators first. (Since the bound counts the prior once per
    item, EM stops at round 13 with 62 rare, accuracy 0.991; it had run out of rounds at 84.)"""
    rng = np.random.default_rng(0)
    truth = (rng.random(10_000) < 0.01).astype(int)
    ids = np.array([f"r{i}" for i in range(len(truth))])
    ann, _, _ = simulate_annotations(truth, 100, rng, item_ids=ids, spammers=0.2, adversaries=0.1)
    kept, _ = run_stage(AggregateLabels(annotations=ann), pd.DataFrame({"id": ids}), npartitions=2)
    rare = int((kept["label"] == 1).sum())
    assert 0.6 * truth.sum() < rare < 1.3 * truth.sum(), (rare, truth.sum())
    assert accuracy(kept, ids, truth) > 0.99


def test_a_run_out_of_rounds_says_whether_its_labels_still_moved():
    """The rare-class crowd above with tol 1e-10 runs all 100 rounds: its bound still rises
    by ~7e-10 per answer, while no label has changed since round 82. The warning said only
    "did not converge ... raise max_iter", which a user reads as "do not trust these
    labels"; it now says what had not settled."""
    rng = np.random.default_rng(0)
    truth = (rng.random(10_000) < 0.01).astype(int)
    ids = np.array([f"r{i}" for i in range(len(truth))])
    ann, _, _ = simulate_annotations(truth, 100, rng, item_ids=ids, spammers=0.2, adversaries=0.1)
    stage = AggregateLabels(annotations=ann, tol=1e-10)
    run_stage(stage, pd.DataFrame({"id": ids}), npartitions=2)
    summary = stage.summary()
    assert summary["converged"] is False and summary["label_changes"] == 0 and summary["watched_rounds"] == 10
    assert 0 < summary["confidence_shift"] < 0.01 and 0 < abs(summary["elbo_change"]) < 1e-4
    (note,) = [n for n in stage.result_warnings({"summary": summary, "metrics": {"annotated": len(ids)}}) if "converge" in n]
    assert "no item's label changed in the 10 rounds before the last, so the labels are likely final" in note, note
    early = AggregateLabels(annotations=ann, max_iter=12)
    run_stage(early, pd.DataFrame({"id": ids}), npartitions=3)
    assert early.summary()["label_changes"] > 0
    (note,) = [n for n in early.result_warnings({"summary": early.summary(), "metrics": {"annotated": len(ids)}}) if "converge" in n]
    assert f"{early.summary()['label_changes']:,} label changes in the 10 rounds before the last" in note, note


def test_glad_out_of_rounds_says_what_still_moved(digits_crowd):
    """GLAD's warning, like Dawid–Skene's, says how far the bound still moved and whether
    labels changed in its last rounds (it said only "did not converge")."""
    _, ids, ann, data, _ = digits_crowd
    ann, data = ann[ann["item"].isin(ids[:300])], data.head(300)
    stage = AggregateLabels(annotations=ann, method="glad", max_iter=3)
    run_stage(stage, data, npartitions=2)
    summary = stage.summary()
    assert summary["converged"] is False and summary["watched_rounds"] == 2 and "elbo_change" in summary
    (note,) = [n for n in stage.result_warnings({"summary": summary, "metrics": {"annotated": 300}}) if "converge" in n]
    assert "glad did not converge in max_iter 3 rounds" in note and "the bound per annotation still" in note, note
    assert "rounds before the last" in note, note


def test_wawa_ties_do_not_amplify_into_one_class():
    """Two annotators who disagree on every item: majority vote's ties, broken by a
    draw, gave one of them 49 % agreement and the other 51 %, and Wawa's weighted vote
    then gave all 2,000 items the second one's label. A vote for a tied class agrees
    half: the two weigh the same, and each item's tie goes to its seeded draw."""
    ids = [f"t{i}" for i in range(2000)]
    ann = pd.DataFrame({"item": np.repeat(ids, 2), "annotator": ["x", "y"] * 2000, "label": ["a", "b"] * 2000})
    data = pd.DataFrame({"id": ids})
    outs = []
    for npartitions in (1, 3):
        stage = AggregateLabels(annotations=ann, method="wawa")
        kept, _ = run_stage(stage, data, npartitions=npartitions, seed=7)
        outs.append(kept.set_index("id").loc[ids, "label"])
        assert [a["skill"] for a in stage.summary()["annotators"]["lowest_skill"]] == [0.5, 0.5]
    pd.testing.assert_series_equal(outs[0], outs[1])
    assert 900 < (outs[0] == "a").sum() < 1100


def test_labeling_functions_min_confidence_says_what_the_confidence_is():
    """aggregate_labels' majority vote and Wawa still give the share of an item's answers
    (and say so); labeling_functions' confidence is now a probability (no note)."""
    rules = [{"name": "big", "label": "a", "column": "x", "op": ">", "value": 1},
             {"name": "small", "label": "b", "column": "x", "op": "<", "value": 3}]
    meta = pd.DataFrame({"id": pd.Series(dtype=str), "x": pd.Series(dtype=float)})
    assert not LabelingFunctions(rules=rules, min_confidence=0.9, output="weak").column_warnings(meta)
    ann = pd.DataFrame({"item": ["a"], "annotator": ["w"], "label": ["x"]})
    assert not AggregateLabels(annotations=ann, min_confidence=0.9).column_warnings(meta)  # dawid_skene: a posterior
    (note,) = AggregateLabels(annotations=ann, method="wawa", min_confidence=0.9).column_warnings(meta)
    assert "an item one annotator answered has confidence 1.0" in note and "filter on label_annotations" in note


def ece(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the rows' share-weighted gap between mean confidence and
    accuracy in ten equal-width bins of confidence."""
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    return float(sum((which == b).mean() * abs(confidence[which == b].mean() - right[which == b].mean())
                     for b in range(bins) if (which == b).any()))


def test_labeling_functions_confidence_is_a_calibrated_probability():
    """The confidence was the share of a row's votes its label got: a row one rule fired on
    had 1.0, and on Adult (six rules, 23,164 rows labelled) those rows were right 0.87 of the
    time; expected calibration error 0.093. It is now the label's probability with each rule
    right as often as it agrees with the other rules: those rows 0.85, ECE 0.023."""
    adult = pd.read_csv(bundled_path("adult")).assign(id=lambda f: [f"a{i:05d}" for i in range(len(f))])
    stage = LabelingFunctions(rules=ADULT_RULES, output="weak")
    kept, _ = run_stage(stage, adult, npartitions=3)
    confidence, right = kept["weak_confidence"].to_numpy(float), (kept["weak"] == kept["income"]).to_numpy(float)
    assert ece(confidence, right) < 0.04 and abs(confidence.mean() - right.mean()) < 0.02
    alone = (kept["weak_votes"] == 1).to_numpy()
    assert abs(confidence[alone].mean() - right[alone].mean()) < 0.05 and confidence[alone].max() < 1
    accuracy = {r["rule"]: r["accuracy"] for r in stage.summary()["rules"]}
    assert accuracy["exec_married"] < 0.9 < accuracy["young"]  # right 0.70 and 0.99 of the time


def test_labeling_functions_count_rules_that_vote_together_once():
    """A copy of a rule, or a rule implied by another (a higher threshold on the same
    column, a subset of the same values), was counted as an independent vote: each vouched
    for the other's accuracy (exec_married 0.98, right 0.70 of the time) and the confidence
    was too high (Adult, six rules and five such: expected calibration error 0.088, mean
    confidence 0.935 at accuracy 0.890). The pair now counts as one vote where both fire."""
    adult = pd.read_csv(bundled_path("adult")).assign(id=lambda f: [f"a{i:05d}" for i in range(len(f))])
    rules = ADULT_RULES + [
        {"name": "doctorate", "label": ">50K", "column": "education", "op": "in", "value": ["Doctorate", "Prof-school"]},
        {"name": "big_capital", "label": ">50K", "column": "capital-gain", "op": ">", "value": 7000},
        {"name": "teen", "label": "<=50K", "column": "age", "op": "<", "value": 21},
        {"name": "own_child", "label": "<=50K", "column": "relationship", "op": "==", "value": "Own-child"},
        {**ADULT_RULES[5], "name": "exec_married_copy"},
    ]
    stage = LabelingFunctions(rules=rules, output="weak")
    kept, _ = run_stage(stage, adult, npartitions=3)
    confidence, right = kept["weak_confidence"].to_numpy(float), (kept["weak"] == kept["income"]).to_numpy(float)
    assert ece(confidence, right) < 0.04 and abs(confidence.mean() - right.mean()) < 0.03
    summary = stage.summary()
    pairs = {(p["kept"], p["dropped"]) for p in summary["dependent"]}
    assert pairs == {("doctorate", "degree"), ("teen", "young"), ("big_capital", "capital"), ("exec_married", "exec_married_copy")}
    rules_out = {r["rule"]: r for r in summary["rules"]}
    assert rules_out["exec_married"]["accuracy"] < 0.9  # right 0.70 of the time: its copy no longer vouches for it
    assert rules_out["exec_married_copy"]["fired"] == rules_out["exec_married"]["fired"] > 0 == rules_out["exec_married_copy"]["counted"]
    assert rules_out["degree"]["fired"] == int(adult["education"].isin(["Masters", "Doctorate", "Prof-school"]).sum())
    (note,) = stage.result_warnings({"summary": summary, "metrics": {}})
    assert "4 pairs of rules" in note and "'degree' where 'doctorate' fires (100% of its rows)" in note
    independent = LabelingFunctions(rules=rules, output="weak", dependent=None)
    run_stage(independent, adult.head(2000), npartitions=2)
    assert independent.summary()["dependent"] == []
