"""Round trip through Label Studio and MTurk file formats, back into aggregate_labels."""

import json

import cv2
import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from dsbuild.io.labeling import (
    export_label_studio,
    export_mturk,
    parse_label_studio_export,
    parse_mturk_results,
    read_labeling_export,
)
from dsbuild.kernels.crowd_simulation import simulate_annotations
from dsbuild.stages.label import AggregateLabels
from dsbuild.testing import run_stage

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def digits_items():
    digits = load_digits()
    n = 300
    images = [cv2.imencode(".png", (img * 16).astype(np.uint8))[1].tobytes() for img in digits.images[:n]]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(n)], "image": images, "pixel_sum": digits.data[:n].sum(axis=1)})
    crowd, _, _ = simulate_annotations(digits.target[:n], 15, np.random.default_rng(0), item_ids=frame["id"].to_numpy())
    return frame, digits.target[:n], crowd


def test_label_studio_round_trip(tmp_path, digits_items):
    frame, truth, crowd = digits_items
    with dask.config.set({"dataframe.convert-string": False}):  # keep image bytes as bytes
        files = export_label_studio(dd.from_pandas(frame, npartitions=3), str(tmp_path / "tasks"))
    assert len(files) == 3
    tasks = [t for f in files for t in json.load(open(f))]
    assert len(tasks) == len(frame)
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")
    # what Label Studio exports after people labeled the imported tasks
    by_item = crowd.groupby("item")
    for k, task in enumerate(tasks):
        task["id"] = 1000 + k
        answers = by_item.get_group(task["data"]["dsbuild_id"])
        task["annotations"] = [
            {"id": int(j), "completed_by": {"id": int(a), "email": f"w{a}@lab.org"}, "was_cancelled": False,
             "result": [{"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [CLASSES[l]]}}]}
            for j, (a, l) in enumerate(zip(answers["annotator"], answers["label"]))
        ]
    tasks[0]["annotations"].append({"id": 9, "completed_by": 3, "was_cancelled": True, "result": []})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))

    rows = parse_label_studio_export(tasks)
    assert len(rows) == len(crowd)
    assert rows["annotator"].str.endswith("@lab.org").all()

    stage = AggregateLabels(annotations={"format": "label_studio", "path": str(export)}, labels=CLASSES)
    kept, rejected = run_stage(stage, frame.drop(columns=["image"]), npartitions=2)
    assert rejected.empty
    accuracy = (kept.set_index("id").loc[frame["id"], "label"].to_numpy() == np.array(CLASSES)[truth]).mean()
    assert accuracy > 0.85
    assert stage.summary()["annotations"]["used"] == len(crowd)
    # the cancelled annotation is counted as skipped, not lost without a word (nor missing a value)
    assert stage.summary()["annotations"]["skipped"] == {"cancelled annotation": 1}
    assert stage.summary()["annotations"]["missing_value"] == 0 and stage.summary()["annotations"]["rows"] == len(crowd) + 1


def test_mturk_round_trip(tmp_path, digits_items):
    frame, truth, crowd = digits_items
    files = export_mturk(dd.from_pandas(frame[["id", "pixel_sum"]], npartitions=2), str(tmp_path / "batch"))
    batch = pd.concat([pd.read_csv(f) for f in files])
    assert list(batch.columns) == ["dsbuild_id", "pixel_sum"] and len(batch) == len(frame)
    # an MTurk batch results file: one row per assignment, inputs echoed, a radio group per option
    inputs = batch.set_index("dsbuild_id")
    results = pd.DataFrame(
        {
            "HITId": "H" + crowd["item"].astype(str),
            "AssignmentId": [f"A{i}" for i in range(len(crowd))],
            "WorkerId": "W" + crowd["annotator"].astype(str),
            "AssignmentStatus": "Approved",
            "Input.dsbuild_id": crowd["item"],
            "Input.pixel_sum": inputs.loc[crowd["item"], "pixel_sum"].to_numpy(),
        }
    )
    for k, name in enumerate(CLASSES):
        results[f"Answer.digit.{name}"] = np.where(crowd["label"] == k, "true", "false")
    results.loc[0, "AssignmentStatus"] = "Rejected"
    path = tmp_path / "Batch_1_batch_results.csv"
    results.to_csv(path, index=False)

    rows = parse_mturk_results(pd.read_csv(path, dtype=str))
    assert len(rows) == len(crowd) - 1
    assert (rows["label"].to_numpy() == np.array(CLASSES)[crowd["label"].to_numpy()[1:]]).all()

    stage = AggregateLabels(annotations={"format": "mturk", "path": str(tmp_path / "Batch_*.csv")}, labels=CLASSES)
    kept, _ = run_stage(stage, frame.drop(columns=["image"]), npartitions=2)
    accuracy = (kept.set_index("id").loc[frame["id"], "label"].to_numpy() == np.array(CLASSES)[truth]).mean()
    assert accuracy > 0.85
    # a user who rejected assignments saw fewer answers than the batch had, and no word of why
    counts = stage.summary()["annotations"]
    assert counts["skipped"] == {"rejected assignment": 1} and counts["used"] == len(crowd) - 1 == counts["rows"] - 1
    assert counts["missing_value"] == 0


def test_mturk_results_need_a_clear_answer_field():
    results = pd.DataFrame({"WorkerId": ["w"], "Input.dsbuild_id": ["a"], "Answer.x": ["1"], "Answer.y": ["2"]})
    with pytest.raises(ValueError, match="which answer field"):
        parse_mturk_results(results)
    assert parse_mturk_results(results, answer="y")["label"].tolist() == ["2"]
    with pytest.raises(ValueError, match="column 'WorkerId' is missing: this is not an MTurk batch results CSV"):
        parse_mturk_results(results.drop(columns=["WorkerId"]), answer="y")  # was a KeyError naming no file
    with pytest.raises(ValueError, match=r"unknown option 'anwser' \(did you mean 'answer'\?\)"):
        read_labeling_export({"format": "mturk", "path": "x.csv", "anwser": "y"})


def test_a_misspelt_export_option_is_a_validation_error_not_a_traceback():
    """``answers: digit`` passed the job's loader and stopped ``dsbuild validate`` with a
    ValueError traceback from reading the export."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown option 'answers' \(did you mean 'answer'\?\); valid options for a mturk export"):
        AggregateLabels(annotations={"format": "mturk", "path": "x.csv", "answers": "digit"})
    with pytest.raises(ValidationError, match="unknown option 'answer'.*label_studio export: format, path, from_name, item_field"):
        AggregateLabels(annotations={"format": "label_studio", "path": "x.json", "answer": "digit"})


def test_label_studio_export_with_a_comment_box_needs_from_name():
    """A project with a choice and a free-text comment: without from_name, a comment
    could have been taken as the label of every annotation that had one first."""
    from dsbuild.io.labeling import parse_label_studio_export

    tasks = [{"id": 1, "data": {"dsbuild_id": "a"}, "annotations": [{"id": 10, "completed_by": 3, "result": [
        {"from_name": "comment", "type": "textarea", "value": {"text": ["blurry"]}},
        {"from_name": "digit", "type": "choices", "value": {"choices": ["7"]}},
    ]}]}]
    with pytest.raises(ValueError, match=r"from_name: .*\['comment', 'digit'\]"):
        parse_label_studio_export(tasks)
    rows = parse_label_studio_export(tasks, from_name="digit")
    assert rows[["item", "annotator", "label"]].values.tolist() == [["a", "3", "7"]]


def test_a_label_studio_file_that_is_no_list_of_tasks_is_named(tmp_path):
    """One task (the API's GET /api/tasks/<id>) stopped the run with AttributeError: 'str'
    object has no attribute 'get', naming no file; a JSON-MIN export gave 'the annotations
    hold no rows' and no reason."""
    task = {"id": 1, "data": {"dsbuild_id": "a"}, "annotations": [
        {"id": 10, "completed_by": 3, "result": [{"from_name": "c", "type": "choices", "value": {"choices": ["x"]}}]}]}
    assert parse_label_studio_export(task)[["item", "annotator", "label"]].values.tolist() == [["a", "3", "x"]]
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, "dsbuild_id": "a", "c": "x", "annotator": 3, "annotation_id": 10}]))
    (tmp_path / "other.json").write_text(json.dumps({"tasks": []}))
    data = pd.DataFrame({"id": ["a"]})
    for name, why in (("min.json", "JSON-MIN or CSV exports flatten the answers, which this reader does not read: export as JSON"),
                      ("other.json", "not a Label Studio JSON export: expected a list of tasks")):
        stage = AggregateLabels(annotations={"format": "label_studio", "path": str(tmp_path / name)}, method="majority_vote")
        with pytest.raises(Exception, match=f"{name}: .*{why}"):
            run_stage(stage, data)


def _label_studio_tasks(crowd: pd.DataFrame, ids, names) -> list[dict]:
    """Label Studio's JSON export of a crowd's answers: a task per item, an annotation per answer."""
    by_item = crowd.groupby("item")
    tasks = []
    for k, item in enumerate(ids):
        answers = by_item.get_group(item)
        tasks.append({"id": 1000 + k, "data": {"dsbuild_id": item}, "annotations": [
            {"id": 10 * k + j, "completed_by": {"id": int(a), "email": f"w{a}@lab.org"}, "was_cancelled": False, "ground_truth": False,
             "result": [{"from_name": "digit", "to_name": "image", "type": "choices", "value": {"choices": [names[l]]}}]}
            for j, (a, l) in enumerate(zip(answers["annotator"], answers["label"]))]})
    return tasks


def test_label_studio_ground_truth_is_the_items_label_and_scores_the_crowd(tmp_path):
    """A reviewer's answer marked ground truth in Label Studio was one vote among the
    crowd's: where three workers outvoted it, the item took the crowd's label, and it told
    nothing about the workers. It is now the item's label (confidence 1), scores the workers
    who answered that item, and the manifest counts the gold items."""
    digits = load_digits()
    n, reviewed = 600, 150
    truth = digits.target[:n]
    ids = np.array([f"d{i}" for i in range(n)])
    crowd, _, kind = simulate_annotations(truth, 30, np.random.default_rng(11), item_ids=ids, spammers=0.3, adversaries=0.15)
    tasks = _label_studio_tasks(crowd, ids, CLASSES)
    for k in range(reviewed):  # the lead's reviewed answers, marked ground truth in the export
        tasks[k]["annotations"].append({"id": 99_000 + k, "completed_by": {"id": 999, "email": "lead@lab.org"}, "was_cancelled": False,
                                        "ground_truth": True, "result": [{"from_name": "digit", "to_name": "image", "type": "choices",
                                                                          "value": {"choices": [CLASSES[truth[k]]]}}]})
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    assert parse_label_studio_export(tasks)["_ground_truth"].sum() == reviewed

    data = pd.DataFrame({"id": ids})
    stage = AggregateLabels(annotations={"format": "label_studio", "path": str(export)}, labels=CLASSES,
                            annotators_output=str(tmp_path / "annotators.parquet"))
    kept, rejected = run_stage(stage, data, npartitions=2)
    assert rejected.empty
    k = kept.set_index("id").loc[ids]
    outvoted = [i for i in range(reviewed) if (crowd[crowd["item"] == ids[i]]["label"] != truth[i]).mean() > 0.5]
    assert outvoted  # items the crowd got wrong, which the reviewer's answer fixes
    assert (k["label"].to_numpy()[:reviewed] == np.array(CLASSES)[truth[:reviewed]]).all()
    assert (k["label_confidence"].to_numpy()[:reviewed] == 1.0).all()
    summary = stage.summary()
    assert summary["annotations"]["ground_truth"] == reviewed and summary["gold_items_annotated"] == reviewed
    assert summary["annotations"]["used"] == len(crowd)  # the reviewer's answers are gold, not votes
    table = pd.read_parquet(tmp_path / "annotators.parquet")
    assert len(table) == 30 and "lead@lab.org" not in set(table["annotator"])  # a reviewer is no crowd worker
    table["kind"] = kind[table["annotator"].str.extract(r"w(\d+)@")[0].astype(int)]
    by_kind = table[table["gold_votes"] >= 5].groupby("kind")["gold_accuracy"].mean()
    assert by_kind[0] > by_kind[2] + 0.4  # the ground truth tells honest workers from adversaries


def test_label_studio_ground_truths_that_disagree_are_said_and_not_used():
    tasks = [{"id": i, "data": {"dsbuild_id": f"t{i}"}, "annotations": [
        {"id": 10 * i + j, "completed_by": j, "ground_truth": gt,
         "result": [{"from_name": "c", "type": "choices", "value": {"choices": [label]}}]}
        for j, (label, gt) in enumerate(answers)]}
        for i, answers in enumerate([[("a", False), ("a", False), ("b", True)],  # the reviewer overrules the crowd
                                     [("a", False), ("a", True), ("b", True)],  # two reviewers disagree: the crowd's answer
                                     [("a", True), ("b", True)]])]  # nobody else answered: no label
    stage = AggregateLabels(annotations=parse_label_studio_export(tasks), method="majority_vote")
    kept, rejected = run_stage(stage, pd.DataFrame({"id": ["t0", "t1", "t2"]}))
    assert kept.set_index("id")["label"].to_dict() == {"t0": "b", "t1": "a"}
    assert rejected["id"].tolist() == ["t2"]
    counts = stage.summary()["annotations"]
    assert counts["ground_truth"] == 5 and counts["ground_truth_conflicts"] == 2 and counts["used"] == 3
    assert any("2 items have ground-truth answers that disagree" in n for n in stage.result_warnings(
        {"summary": stage.summary(), "metrics": {"annotated": 3}}))
