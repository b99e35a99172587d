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
