"""Annotations read, counted and coded: a row per answer (item, annotator, label), or a
wide sheet's column per annotator, as small integer codes grouped by item.
"""

from __future__ import annotations

import heapq
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, model_validator

from dsbuild.io.labeling import GROUND_TRUTH, SKIPPED
from dsbuild.kernels import crowd
from dsbuild.records import ID
from dsbuild.stages.base import (
    StageOptions,
)
from dsbuild.stages.label.classes import Classes, label_keys

ITEM, ANNOTATOR, LABEL = "_item", "_annotator", "_label"
ANONYMOUS = "(anonymous)"  # the annotator of every answer when annotations.annotator is null
A_CODE, L_CODE, GOLD = "_a", "_l", "_g"
TRUTH = "_t"  # a coded answer is a ground truth (annotator code -1: no vote)

ITEM_EXAMPLES = 3  # annotation item ids a warning shows


class AnnotationSource(StageOptions):
    """Where the annotations are and which columns hold item, annotator and label.

    Other keys are the source's own (``format``, ``path``, ...). From Python, pass a
    pandas or Dask frame as ``frame`` instead (or as the whole ``annotations`` value).
    """

    model_config = ConfigDict(extra="allow", frozen=True, arbitrary_types_allowed=True)
    item: str = "item"
    annotator: str | None = Field("annotator", description="null: anonymous answers, each row its own annotator (majority_vote)")
    label: str = "label"
    wide: bool = Field(False, description="a column per annotator holding its answers, beside the item column (an empty "
                       "cell is no answer), instead of a row per answer (item, annotator, label)")
    frame: Any = Field(None, exclude=True, description="a pandas or Dask frame of annotations (Python jobs)")

    @model_validator(mode="after")
    def _readable(self):
        if self.frame is None and (self.model_extra or {}).get("format") in ("label_studio", "mturk"):
            from dsbuild.io.labeling import check_export_spec

            check_export_spec(self.source_spec())
        elif self.frame is None:
            from dsbuild.io.sources import check_source_spec

            check_source_spec(self.source_spec())  # named under annotations by the job's loader
        return self

    def source_spec(self) -> dict:
        return dict(self.model_extra or {})

    def named(self) -> tuple[str, ...]:
        """The columns a row per answer needs: item, annotator (unless anonymous), label."""
        return tuple(c for c in (self.item, self.annotator, self.label) if c is not None)

    def read(self, count_rows: bool = True):
        text = "all" if self.wide else self.named()
        return read_annotation_source(self.source_spec(), count_rows, text=text)


def _inventory(part: pd.DataFrame, _state) -> dict:
    """What the raw annotations hold: readable rows, annotators, labels seen (mergeable).

    Counts are taken on the raw values and only the distinct ones are turned into keys.
    """
    bad = part["_reason"].notna() if "_reason" in part.columns else pd.Series(False, index=part.index)
    skipped = part[SKIPPED].notna() & ~bad if SKIPPED in part.columns else pd.Series(False, index=part.index)
    missing = ~bad & ~skipped & (part[ITEM].isna() | part[ANNOTATOR].isna() | part[LABEL].isna())
    ok = part[~bad & ~skipped & ~missing]
    truth = ok[GROUND_TRUTH].to_numpy(dtype=bool) if GROUND_TRUTH in ok.columns else np.zeros(len(ok), dtype=bool)
    annotators = _seen(ok[ANNOTATOR][~truth])  # a reviewer who set ground truth is no crowd worker
    annotators.index = annotators.index.astype(str)
    annotators = annotators.groupby(level=0).sum()
    labels = _seen(ok[LABEL])
    keys = label_keys(pd.Series(labels.index, dtype=labels.index.dtype))
    examples = _merge_examples({}, ((k, v.strip() if isinstance(v, str) else v) for k, v in zip(keys.tolist(), labels.index) if k is not pd.NA))
    blank = int(labels.to_numpy()[keys.isna().to_numpy()].sum())  # only spaces: no answer
    labels = pd.Series(labels.to_numpy(), index=keys.to_numpy()).groupby(level=0).sum()
    return {
        "rows": len(part),
        "unreadable": int(bad.sum()),
        "unreadable_examples": _unreadable_examples(part[bad]),
        "missing": int(missing.sum()) + blank,
        "skipped": {str(k): int(v) for k, v in part.loc[skipped.to_numpy(), SKIPPED].value_counts().items()} if skipped.any() else {},
        "ground_truth": int(truth.sum()),
        "annotators": annotators,
        "labels": labels,
        "examples": examples,
        "items": heapq.nsmallest(ITEM_EXAMPLES, map(str, ok[ITEM].unique())),
    }


def _unreadable_examples(bad: pd.DataFrame) -> list[str]:
    """The first lines the reader could not parse, as ``file:row: reason``, to say where."""
    if ID not in bad.columns or bad.empty:
        return []
    return heapq.nsmallest(ITEM_EXAMPLES, (f"{rid}: {reason}" for rid, reason in zip(bad[ID].astype(str), bad["_reason"])))


def _seen(values: pd.Series) -> pd.Series:
    """Counts of the values present. A categorical column (a Parquet dictionary) counts its
    unused categories too, and they became classes no annotator gave ('unsure' in the
    dictionary): GLAD spread wrong answers over them and changed labels."""
    counts = values.value_counts(sort=False)
    return counts[counts > 0]


def _merge_examples(a: dict, pairs) -> dict:
    """One value per label key whatever the order partitions merge in (1 and 1.0 share
    the key "1"; the output writes the same one of them at any partitioning)."""
    out = dict(a)
    for k, v in pairs:
        out[k] = min(out.get(k, v), v, key=lambda x: (type(x).__name__, repr(x)))
    return out


def _merge_inventory(a: dict, b: dict) -> dict:
    return {
        "rows": a["rows"] + b["rows"],
        "unreadable": a["unreadable"] + b["unreadable"],
        "unreadable_examples": sorted({*a["unreadable_examples"], *b["unreadable_examples"]})[:ITEM_EXAMPLES],
        "missing": a["missing"] + b["missing"],
        "skipped": {k: a["skipped"].get(k, 0) + b["skipped"].get(k, 0) for k in sorted({*a["skipped"], *b["skipped"]})},
        "ground_truth": a["ground_truth"] + b["ground_truth"],
        "annotators": a["annotators"].add(b["annotators"], fill_value=0),
        "labels": a["labels"].add(b["labels"], fill_value=0),
        "examples": _merge_examples(a["examples"], b["examples"].items()),
        "items": sorted({*a["items"], *b["items"]})[:ITEM_EXAMPLES],
    }


def _code_annotations(part: pd.DataFrame, annotators: pd.Index, classes: Classes) -> pd.DataFrame:
    """Coded answers; a ground-truth answer (Label Studio's mark) keeps its label as ``_t``
    with no annotator code, for :func:`_by_item` to make it the item's gold."""
    ok = (part[ITEM].notna() & part[ANNOTATOR].notna()).to_numpy()
    if "_reason" in part.columns:
        ok = ok & part["_reason"].isna().to_numpy()
    truth = part[GROUND_TRUTH].to_numpy(dtype=bool) if GROUND_TRUTH in part.columns else None
    a = _codes_via_uniques(part[ANNOTATOR], lambda u: annotators.get_indexer(pd.Index(u).astype(str)))
    label = _codes_via_uniques(part[LABEL], lambda u: classes.codes(pd.Series(u, dtype=part[LABEL].dtype)))
    if truth is not None:
        a = np.where(truth, -1, a)
    keep = ok & ((a >= 0) if truth is None else (a >= 0) | truth) & (label >= 0)
    item = part[ITEM][keep]
    out = pd.DataFrame(
        {
            ITEM: _item_text(item).reset_index(drop=True),  # the dtype of every id the stage merges on (gold, the data)
            A_CODE: a[keep].astype(np.int32),
            L_CODE: label[keep].astype(crowd.label_dtype(len(classes))),
        }
    )
    if truth is not None:
        out[TRUTH] = truth[keep]
    return out


def _item_text(items: pd.Series) -> pd.Series:
    """Item ids as the data's ids are written. pandas makes an id column float where one
    value is missing, and ``10.0`` matched no row ``10``: every row was rejected as having
    no annotations. Whole floats are written as integers, and spaces around an id (typed
    into a form, as labels are) are no part of it."""
    text = items.astype(str).str.strip()
    if pd.api.types.is_float_dtype(items.dtype):
        f = items.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(f) & (f == np.floor(f))
        text = text.to_numpy(dtype=object)
        text[whole] = [str(int(v)) for v in f[whole]]
        text = pd.Series(text, index=items.index).astype(str)
    return text


def _data_ids(ids: pd.Series) -> pd.Series:
    """The data's ids as annotation items are matched: without spaces around them, as
    :func:`_item_text` writes the items (an id ``" a"`` matched no annotation of it)."""
    return ids.astype(str).str.strip()


def _codes_via_uniques(values: pd.Series, code_uniques) -> np.ndarray:
    """Codes for many values by coding only the distinct ones (annotators, labels repeat)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.asarray(code_uniques(uniques), dtype=np.int64) if len(uniques) else np.zeros(0, dtype=np.int64)
    return np.where(codes >= 0, mapped[np.maximum(codes, 0)] if len(mapped) else -1, -1)


def _gold_codes(part: pd.DataFrame, column: str, classes: Classes) -> pd.DataFrame:
    codes = classes.codes(part[column])
    keep = codes >= 0
    return pd.DataFrame({ITEM: _data_ids(part[ID])[keep].reset_index(drop=True), GOLD: codes[keep].astype(crowd.label_dtype(len(classes)))})


def _by_item(part: pd.DataFrame) -> pd.DataFrame:
    """Votes of one item together, sorted by item id and annotator, the item column made
    categorical: its codes number the items for every EM round and its categories hold each
    id once, so a kept annotation costs 9 bytes and an item one id, not one per answer."""
    codes, ids = pd.factorize(part[ITEM], sort=True)
    order = np.lexsort((part[A_CODE].to_numpy(), codes))
    out = part[[c for c in (A_CODE, L_CODE, GOLD) if c in part.columns]].take(order).reset_index(drop=True)
    out.insert(0, ITEM, pd.Categorical.from_codes(codes[order], categories=ids))
    if TRUTH in part.columns:
        out[GOLD] = _ground_truth_gold(codes[order], part[TRUTH].to_numpy()[order], out, len(ids))
    return out


def _ground_truth_gold(codes: np.ndarray, truth: np.ndarray, part: pd.DataFrame, n_items: int) -> np.ndarray:
    """Each row's gold code: the data's gold where given, else its item's ground-truth
    answer. Ground truths of one item that disagree make it no gold item (the answers stay
    non-votes, counted by the first round)."""
    label = part[L_CODE].to_numpy().astype(np.int64)
    low = np.full(n_items, np.iinfo(np.int64).max)
    high = np.full(n_items, -1)
    np.minimum.at(low, codes[truth], label[truth])
    np.maximum.at(high, codes[truth], label[truth])
    item_gold = np.where(low == high, high, -1)[codes]
    if GOLD in part.columns:
        given = part[GOLD].to_numpy().astype(np.int64)
        item_gold = np.where(given >= 0, given, item_gold)
    return item_gold.astype(part[L_CODE].dtype)


def _annotator_columns(columns, item: str) -> list:
    """A wide sheet's annotator columns: all but the item and the reader's own (id, raw, _reason)."""
    return [c for c in columns if c not in (item, ID, "raw") and not str(c).startswith("_")]


def _reader_columns(columns, named) -> list[str]:
    """The reader's reason for a line it could not parse, and that line's file:row id to
    name it by (unless the id column is one the annotations use); and a labeling tool's
    marks: why it left an answer out (a cancelled annotation, a rejected assignment), and
    which answers are ground truth."""
    skipped = [c for c in (GROUND_TRUTH, SKIPPED) if c in columns]
    if "_reason" not in columns:
        return skipped
    return [c for c in (ID, "_reason") if c in columns and c not in named] + skipped


def _answers_of_wide(part: pd.DataFrame, item: str) -> pd.DataFrame:
    """A wide sheet's answers as rows (item, annotator, label): an empty cell is no answer,
    not a missing value, and a line the reader could not parse is one unreadable row."""
    annotators = _annotator_columns(part.columns, item)
    reason = _reader_columns(part.columns, (item,))
    long = part[[item, *reason, *annotators]].melt(id_vars=[item, *reason], var_name=ANNOTATOR, value_name=LABEL)
    answered = long[LABEL].notna()
    if reason:
        answered |= long["_reason"].notna() & (long[ANNOTATOR] == annotators[0])
    return long[answered.to_numpy()].rename(columns={item: ITEM}).reset_index(drop=True)


def _item_key(part: pd.DataFrame) -> pd.Series:
    return part[ITEM]


_READ_AS_TEXT = ("csv", "jsonl")  # annotation formats whose item, annotator and label columns are read as text


def read_annotation_source(spec: dict, count_rows: bool = True, text: tuple[str, ...] | Literal["all"] = ()):
    """A Dask frame of annotation rows from a source spec (Label Studio / MTurk included).

    A CSV or JSON-lines file's ``text`` columns (item, annotator, label) are read as text:
    typed by a sample, a label column of 0s and 1s rejected a later "unsure" (or a JSON
    "1" beside 1) as unreadable, and its vote was lost. ``"all"``: every column (a wide
    sheet's answers, a column per annotator).
    """
    fmt = spec.get("format")
    if fmt in ("label_studio", "mturk"):
        from dsbuild.io.labeling import read_labeling_export

        return read_labeling_export(spec)
    from dsbuild.io.sources import read_source

    if fmt in _READ_AS_TEXT and text:
        present = read_source(spec, count_rows=False).frame.columns
        wanted = _annotator_columns(present, "") if text == "all" else [c for c in text if c in present]
        spec = {**spec, "text_columns": list(dict.fromkeys([*spec.get("text_columns", []), *wanted]))}
    return read_source(spec, count_rows=count_rows).frame
