"""Round trip with labeling tools: items out as Label Studio tasks or an MTurk batch CSV,
annotations back in from a Label Studio JSON export or an MTurk batch results CSV.

Exports are sharded one file per partition, so a large data set never passes through one
process. Every exported item carries its dsbuild ``id`` (as ``dsbuild_id``), which comes
back with the annotations and joins them to the data in ``aggregate_labels``. Imports
give annotation rows ``item, annotator, label`` (plus the tool's own ids for audit).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import posixpath
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from dsbuild.records import ID, sniff_image_format

ITEM_FIELD = "dsbuild_id"
ANNOTATION_COLUMNS = ["item", "annotator", "label"]
SKIPPED = "_skipped"  # why the tool's own marks leave an answer out (a cancelled annotation, a rejected assignment)
GROUND_TRUTH = "_ground_truth"  # Label Studio's ground_truth mark: the answer is the item's known label, not a vote


# -- export -----------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """A value Label Studio can show: images as data URIs, numpy scalars as Python."""
    if isinstance(value, (bytes, bytearray)):
        fmt = sniff_image_format(bytes(value))
        mime = "image/jpeg" if fmt == "jpeg" else f"image/{fmt}" if fmt != "unknown" else "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(bytes(value)).decode()}"
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value


def label_studio_tasks(part: pd.DataFrame, columns: list[str] | None = None) -> list[dict]:
    """Label Studio tasks (``{"data": {...}}``) for a frame's rows."""
    columns = [c for c in (columns or part.columns) if c != ID and not str(c).startswith("_")]
    ids = part[ID].astype(str).tolist()
    data = {c: part[c].tolist() for c in columns}
    return [{"data": {ITEM_FIELD: ids[i], **{c: _json_value(data[c][i]) for c in columns}}} for i in range(len(part))]


def mturk_batch(part: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """An MTurk batch input table: one row per item, ``${column}`` in the HIT template."""
    columns = [c for c in (columns or part.columns) if c != ID and not str(c).startswith("_")]
    out = pd.DataFrame({ITEM_FIELD: part[ID].astype(str).to_numpy()})
    for c in columns:
        out[c] = [_json_value(v) for v in part[c].tolist()]
    return out


def _write_tasks(part: pd.DataFrame, path: str, columns) -> int:
    with fsspec.open(path, "w") as f:
        json.dump(label_studio_tasks(part, columns), f)
    return len(part)


def _write_batch(part: pd.DataFrame, path: str, columns) -> int:
    with fsspec.open(path, "w") as f:
        mturk_batch(part, columns).to_csv(f, index=False)
    return len(part)


def _export(frame, folder: str, stem: str, ext: str, writer, columns) -> list[str]:
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    import dask

    paths = [posixpath.join(folder, f"{stem}-{i:05d}.{ext}") for i in range(frame.npartitions)]
    counts = dask.compute(*[dask.delayed(writer)(p, path, columns) for p, path in zip(frame.to_delayed(), paths)])
    return [p for p, n in zip(paths, counts) if n] or paths[:0]


def export_label_studio(frame, folder: str, columns: list[str] | None = None) -> list[str]:
    """Write ``tasks-NNNNN.json`` files (Label Studio's import format), one per partition."""
    return _export(frame, folder, "tasks", "json", _write_tasks, columns)


def export_mturk(frame, folder: str, columns: list[str] | None = None) -> list[str]:
    """Write ``batch-NNNNN.csv`` files to upload as MTurk batches, one per partition."""
    return _export(frame, folder, "batch", "csv", _write_batch, columns)


# -- import -----------------------------------------------------------------------------


def _annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    return None if completed_by is None else str(completed_by)


def _choice(result: dict, from_name: str | None) -> Any:
    if from_name is not None and result.get("from_name") != from_name:
        return None
    value = result.get("value") or {}
    for key in ("choices", "labels", "taxonomy"):
        if key in value and value[key]:
            chosen = value[key]
            return chosen[0] if isinstance(chosen, list) and len(chosen) == 1 else json.dumps(chosen)
    for key in ("rating", "number", "text"):
        if key in value:
            v = value[key]
            return v[0] if isinstance(v, list) and len(v) == 1 else v
    return None


def parse_label_studio_export(tasks: list[dict], from_name: str | None = None, item_field: str = ITEM_FIELD,
                              keep_skipped: bool = False) -> pd.DataFrame:
    """Annotation rows from Label Studio's JSON export (cancelled annotations skipped; with
    ``keep_skipped`` each is a row without a label, its ``_skipped`` saying so, to be counted).
    ``_ground_truth`` marks the answers a reviewer set as the task's ground truth.

    A task without ``item_field`` in its data keeps Label Studio's task id as the item.
    Several choices in one answer become one label (their JSON list), so a multi-choice
    answer is still one vote. Answers to more than one control (a choice and a comment
    box) need ``from_name``: the label is not guessed.
    """
    tasks = _task_list(tasks, item_field)
    rows, controls = [], set()
    for task in tasks:
        data = task.get("data") or {}
        item = data.get(item_field, task.get("id"))
        for ann in task.get("annotations") or task.get("completions") or []:
            who = _annotator(ann.get("completed_by"))
            if ann.get("was_cancelled"):
                if keep_skipped:
                    rows.append((None if item is None else str(item), who, None, task.get("id"), ann.get("id"), False, "cancelled annotation"))
                continue
            answers = [(r.get("from_name"), _choice(r, from_name)) for r in ann.get("result") or []]
            answers = [(control, label) for control, label in answers if label is not None]
            controls.update(control for control, _ in answers)
            if answers:
                rows.append((None if item is None else str(item), who, answers[0][1], task.get("id"), ann.get("id"),
                             ann.get("ground_truth") is True, None))
    if from_name is None and len(controls) > 1:  # a choice and a comment box: which one is the label?
        raise ValueError(f"say which control holds the label (from_name: ...); the export answers {sorted(map(str, controls))}")
    out = pd.DataFrame(rows, columns=[*ANNOTATION_COLUMNS, "task_id", "annotation_id", GROUND_TRUTH, SKIPPED]).astype(
        {"task_id": object, "annotation_id": object, GROUND_TRUTH: bool, SKIPPED: object})
    return out if keep_skipped else out.drop(columns=[SKIPPED])


def _task_list(tasks: Any, item_field: str) -> list[dict]:
    """The tasks of an export, or a ValueError saying what the file is instead. One task
    (the API's ``GET /api/tasks/<id>``) is a list of one; it failed with an AttributeError
    naming no file. Label Studio's JSON-MIN export (flat records, no
    ``annotations``) gave no rows and 'the annotations hold no rows', not why."""
    if isinstance(tasks, dict) and "data" in tasks:
        return [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError("not a Label Studio JSON export: expected a list of tasks, each with 'data' and 'annotations'")
    flat = [t for t in tasks if "data" not in t and not ({"annotations", "completions"} & t.keys())]
    if flat:
        raise ValueError(f"a record without 'data' or 'annotations' (keys {sorted(flat[0])[:6]}): Label Studio's JSON-MIN or "
                         "CSV exports flatten the answers, which this reader does not read: export as JSON")
    return tasks


def parse_mturk_results(results: pd.DataFrame, answer: str | None = None, item_field: str = ITEM_FIELD,
                        keep_skipped: bool = False) -> pd.DataFrame:
    """Annotation rows from an MTurk batch results CSV; rejected assignments skipped (with
    ``keep_skipped``, rows without a label whose ``_skipped`` says so, to be counted).

    The label is ``Answer.<answer>``; or, for radio/checkbox templates that give one
    column per option (``Answer.<answer>.<option>`` true/false), the option marked true.
    """
    answers = [c for c in results.columns if str(c).startswith("Answer.")]
    if answer is None:
        fields = sorted({c.split(".")[1] for c in answers})
        if len(fields) != 1:
            raise ValueError(f"say which answer field holds the label (answer: ...); the results have {fields}")
        answer = fields[0]
    rejected = (results["AssignmentStatus"].astype(str) == "Rejected").to_numpy() if "AssignmentStatus" in results.columns \
        else np.zeros(len(results), dtype=bool)
    if not keep_skipped:
        results, rejected = results[~rejected], rejected[~rejected]
    if "WorkerId" not in results.columns:  # a KeyError naming no file, before
        raise ValueError("column 'WorkerId' is missing: this is not an MTurk batch results CSV")
    item_col = f"Input.{item_field}"
    if item_col not in results.columns:
        raise ValueError(f"column {item_col!r} is missing: export the batch with export_mturk so items carry their id, "
                         "or name the input column that holds the data's ids (item_field: ...)")
    direct = f"Answer.{answer}"
    if direct in results.columns:
        label = results[direct]
    elif f"{direct}.label" in results.columns:
        label = results[f"{direct}.label"]
    else:
        options = [c for c in answers if c.startswith(direct + ".")]
        if not options:
            raise ValueError(f"no column {direct!r} or {direct}.<option> in the results")
        marked = results[options].astype(str).apply(lambda col: col.str.lower().isin(["true", "1", "on", "yes"]))
        picked = marked.to_numpy()
        names = np.array([c[len(direct) + 1:] for c in options], dtype=object)
        label = pd.Series(np.where(picked.sum(axis=1) == 1, names[picked.argmax(axis=1)], None), index=results.index)
    out = pd.DataFrame(
        {
            "item": results[item_col].astype(str).to_numpy(),
            "annotator": results["WorkerId"].astype(str).to_numpy(),
            "label": label.to_numpy(dtype=object),
            "assignment_id": results["AssignmentId"].astype(str).to_numpy() if "AssignmentId" in results.columns else None,
        }
    )
    if keep_skipped:
        out.loc[rejected, "label"] = None
        out[SKIPPED] = np.where(rejected, "rejected assignment", None)
    return out


def _read_label_studio_file(path: str, from_name: str | None, item_field: str) -> pd.DataFrame:
    with fsspec.open(path, "r") as f, _named(path):
        return parse_label_studio_export(json.load(f), from_name, item_field, keep_skipped=True)


def _read_mturk_file(path: str, answer: str | None, item_field: str) -> pd.DataFrame:
    with fsspec.open(path, "rb") as f, _named(path):
        return parse_mturk_results(pd.read_csv(io.BytesIO(f.read()), dtype=str, keep_default_na=False, na_values=[""]), answer, item_field,
                                   keep_skipped=True)


@contextlib.contextmanager
def _named(path: str):
    """An export that cannot be read as annotations is a source error naming its file."""
    from dsbuild.io.sources import SourceError

    try:
        yield
    except ValueError as e:  # json.JSONDecodeError too
        raise SourceError(f"{path}: {e}") from None


_EXPORT_OPTIONS = {"label_studio": ("format", "path", "from_name", "item_field"), "mturk": ("format", "path", "answer", "item_field")}


def check_export_spec(spec: dict) -> None:
    """A misspelt option of an export is said when the job is loaded, with a close match and
    the valid ones, as a source's is: ``answers: digit`` was a ValueError traceback from
    ``dsbuild validate``."""
    import difflib

    fmt = spec.get("format")
    if fmt not in _EXPORT_OPTIONS:
        raise ValueError(f"unknown labeling export format {fmt!r}: label_studio or mturk")
    valid = _EXPORT_OPTIONS[fmt]
    for key in spec:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            raise ValueError(f"unknown option {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; valid options for a {fmt} export: {', '.join(valid)}")
    if "path" not in spec:
        raise ValueError(f"a {fmt} export needs a path")


def read_labeling_export(spec: dict):
    """A Dask frame of annotation rows, one partition per export file.

    ``{format: label_studio, path, from_name?, item_field?}`` or
    ``{format: mturk, path, answer?, item_field?}``; ``path`` may be a glob or a list.
    """
    import dask
    import dask.dataframe as dd

    check_export_spec(spec)
    spec = dict(spec)
    fmt = spec.pop("format")
    paths = spec.pop("path")
    item_field = spec.pop("item_field", ITEM_FIELD)
    if fmt == "label_studio":
        reader, extra = _read_label_studio_file, spec.pop("from_name", None)
    else:
        reader, extra = _read_mturk_file, spec.pop("answer", None)
    files = sorted(fsspec.open_files(paths if isinstance(paths, list) else [paths], "rb"), key=lambda f: f.path)
    if not files:
        raise FileNotFoundError(f"no {fmt} export at {paths!r}")
    urls = [f.full_name for f in files]
    parts = [dask.delayed(reader)(u, extra, item_field) for u in urls]
    first_meta = (parse_label_studio_export([], extra, item_field, keep_skipped=True) if fmt == "label_studio" else _empty_mturk()).iloc[:0]
    return dd.from_delayed(parts, meta=first_meta, verify_meta=False)


def _empty_mturk() -> pd.DataFrame:
    return pd.DataFrame({"item": pd.Series([], dtype=str), "annotator": pd.Series([], dtype=str), "label": pd.Series([], dtype=object), "assignment_id": pd.Series([], dtype=str),
                         SKIPPED: pd.Series([], dtype=object)})
