"""Labeling stages: many noisy labels per item become one good label.

``aggregate_labels`` reads crowd annotations (item, annotator, label) from a second
source, codes them as small integers, groups them by item once (Dask's shuffle) into
partitions of a few million annotations, keeps them on the workers, and fits the label
model in rounds: each round is an E-step per item and mergeable M-step sums
(``dsbuild.kernels.crowd``), so per round a partition makes one pass over its codes and
only the annotators' confusion sums travel. The per-item result is joined to the data by id.

``labeling_functions`` casts votes from rules declared in the job and combines them with
the same label models; a row's votes live in the row, so no shuffle is needed.
"""

from __future__ import annotations

import functools
import heapq
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, field_serializer, field_validator, model_validator

from dsbuild.kernels import crowd
from dsbuild.kernels.labeling_functions import LabelingRule, rule_votes
from dsbuild.records import ID, record_uniform
from dsbuild.stages.base import (
    METRIC,
    FitApplyStage,
    Stage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)

ITEM, ANNOTATOR, LABEL = "_item", "_annotator", "_label"
ANONYMOUS = "(anonymous)"  # the annotator of every answer when annotations.annotator is null
A_CODE, L_CODE, GOLD = "_a", "_l", "_g"
Method = Literal["majority_vote", "wawa", "dawid_skene", "one_coin_dawid_skene", "glad"]
LOWEST_SHOWN = 20
ITEM_EXAMPLES = 3  # annotation item ids a warning shows
MIN_CONFUSION_BYTES = 512 * 2**20  # Dawid–Skene's confusion matrices, one copy: allowed on any worker


# -- labels as keys -------------------------------------------------------------------------


def label_keys(values: pd.Series) -> pd.Series:
    """Labels as strings that compare equal across readers: 1, 1.0, "1" and "1.0" are one
    class, and so are "cat" and "cat " (a space typed into a form is no new class; one
    alone is no label), and the same text in two Unicode forms."""
    s = values
    if pd.api.types.is_float_dtype(s):
        present = s.dropna()
        if len(present) and bool((present == np.floor(present)).all()):
            s = s.astype("Int64")
    elif pd.api.types.is_object_dtype(s):
        s = s.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v, na_action="ignore")
    s = s.astype("string").str.strip().str.normalize("NFC")  # "café" typed two ways is one label
    s = s.str.replace(_WHOLE_DECIMAL, r"\1", regex=True)  # "1.0" read as text is the class 1, as 1.0 is
    return s.mask(s == "")


_WHOLE_DECIMAL = r"^(-?\d+)\.0+$"


def _sort_keys(keys) -> list[str]:
    keys = list(keys)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


@dataclass(frozen=True)
class Classes:
    """The label set: keys to match annotations, values to write out."""

    keys: tuple[str, ...]
    values: tuple[Any, ...]

    @classmethod
    def declared(cls, labels: list) -> Classes:
        keys = tuple(label_keys(pd.Series(list(labels), dtype=object)).tolist())
        if len(set(keys)) != len(keys):
            raise StageError(f"labels {labels} repeat a class")
        return cls(keys, tuple(labels))

    @classmethod
    def discovered(cls, examples: dict[str, Any], read_as_text: bool = False) -> Classes:
        """The classes the answers hold. Annotation files are read as text, so that a label
        column mixing 1 and "unsure" loses no answer (``read_as_text``); labels read so
        that are all whole numbers, or all true and false (JSON's booleans, a CSV's
        True/False), come out as numbers or booleans again, as a typed reader gives them.
        Whole floats (a Parquet column of classes with a missing answer) come out as integers."""
        keys = tuple(_sort_keys(examples))
        values = [examples[k] for k in keys]
        if values and all(isinstance(v, (float, np.floating)) and float(v).is_integer() for v in values):
            values = [int(v) for v in values]  # classes 0 and 1 that pandas made 0.0 and 1.0 (a NaN, a pivot)
        elif read_as_text and values and all(isinstance(v, str) for v in values):
            if all(re.fullmatch(r"-?[1-9]\d*|0", k) for k in keys):
                values = [int(k) for k in keys]
            elif len({k.casefold() for k in keys}) == len(keys) and {k.casefold() for k in keys} <= {"true", "false"}:
                values = [k.casefold() == "true" for k in keys]
        return cls(keys, tuple(values))

    def codes(self, values: pd.Series) -> np.ndarray:
        """Class code per value; -1 for a missing label or one outside the set."""
        return pd.Index(self.keys).get_indexer(label_keys(values).fillna("\x00<missing>")).astype(np.int64)

    @property
    def dtype(self):
        """A nullable dtype that holds every class, so unlabeled rows stay missing."""
        values = list(self.values)
        if values and all(isinstance(v, (bool, np.bool_)) for v in values):
            return "boolean"
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return "Int64"
        if values and all(isinstance(v, (float, np.floating)) for v in values):
            return "Float64"
        return "string"  # text, or classes of mixed kinds (0, 1 and "unsure") written as text

    def decode(self, codes: np.ndarray) -> pd.Series:
        out = np.empty(len(codes), dtype=object)
        ok = codes >= 0
        values = self.values if self.dtype != "string" else [str(v) for v in self.values]
        out[ok] = np.asarray(values, dtype=object)[codes[ok]]
        out[~ok] = None
        return pd.Series(out, dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.keys)


# -- the label model, method by method, over batches of votes ------------------------------


@dataclass(frozen=True)
class LabelModel:
    """What one method does in its rounds; shared by both stages, picklable for workers."""

    method: str
    n_classes: int
    n_annotators: int
    tol: float = 1e-5
    max_iter: int = 100
    smoothing: float = 0.0
    warm_start: int = 0

    @property
    def iterative(self) -> bool:
        return self.method in ("dawid_skene", "one_coin_dawid_skene", "glad")

    def _ds(self):
        if self.method == "glad":
            return crowd.Glad(self.n_classes, self.n_annotators, tol=self.tol, max_iter=self.max_iter)
        return crowd.DawidSkene(
            self.n_classes, self.n_annotators, one_coin=self.method == "one_coin_dawid_skene", tol=self.tol, max_iter=self.max_iter,
            smoothing=self.smoothing, warm_start=self.warm_start,
        )

    def stats(self, votes: crowd.Votes, state: dict | None) -> dict:
        if self.iterative:
            return self._ds().stats(votes, state)
        return crowd.agreement_stats(votes, crowd.majority_vote(votes)[1])

    def finalize(self, stats: dict, previous: dict | None = None) -> dict:
        if self.iterative:
            return self._ds().finalize(stats, previous)
        return {"skill": crowd.agreement_skill(stats), "votes": stats["votes"]}

    def converged(self, old: dict | None, new: dict) -> bool:
        return self._ds().converged(old, new)

    def posteriors(self, votes: crowd.Votes, state: dict) -> np.ndarray:
        if self.iterative:
            return self._ds().posteriors(votes, state)
        weights = state["skill"] if self.method == "wawa" else None
        return crowd.majority_vote(votes, weights)[1]


def fit_rounds(model: LabelModel, fit_round, shapes_fit) -> tuple[dict, dict, int, bool]:
    """(state, first-round stats, rounds, converged): rounds of ``shapes_fit(round_fn, state)``.

    The first round also carries method-free counts (gold answers, duplicates).
    """
    first = shapes_fit(functools.partial(fit_round, model=model, first=True), None)
    state = model.finalize(first)
    rounds, done = 1, True
    if model.iterative:
        previous = None
        for _ in range(model.max_iter):
            new = model.finalize(shapes_fit(functools.partial(fit_round, model=model, first=False), state), state)
            rounds += 1
            done = model.converged(previous, new)
            previous = state = new
            if done:
                break
    return state, first, rounds, done


def tie_draws(probas: np.ndarray, item_ids, seed: int, stage: str, ties: str) -> np.ndarray | None:
    """Per-item uniform draws that break ties, computed only for tied items."""
    if ties == "first" or len(probas) == 0:
        return None
    best = probas.max(axis=1, keepdims=True)
    tied = ((probas >= best - 1e-12 * np.maximum(1.0, best)).sum(axis=1)) > 1
    draws = np.zeros(len(probas))
    if tied.any():
        draws[tied] = record_uniform(seed, stage, np.asarray(item_ids, dtype=object)[tied])
    return draws


def annotator_table(names, state: dict, first: dict) -> pd.DataFrame:
    votes = first["votes"]
    gold_votes = first["gold_votes"]
    with np.errstate(invalid="ignore", divide="ignore"):
        gold_acc = np.where(gold_votes > 0, first["gold_right"] / np.maximum(gold_votes, 1), np.nan)
    return pd.DataFrame(
        {
            "annotator": pd.Series(list(names), dtype=object).astype(str),
            "votes": votes.astype(np.int64),
            "skill": state["skill"],
            "gold_votes": gold_votes.astype(np.int64),
            "gold_accuracy": gold_acc,
        }
    )


def annotator_summary(table: pd.DataFrame) -> dict:
    skill = table["skill"].dropna()
    shown = table.sort_values(["skill", "annotator"], na_position="first").head(LOWEST_SHOWN)
    return {
        "count": int(len(table)),
        "single_answer": int((table["votes"] == 1).sum()),
        "skill_quantiles": {str(q): round(float(skill.quantile(q)), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)} if len(skill) else {},
        "lowest_skill": [
            {k: (None if isinstance(v, float) and np.isnan(v) else (round(v, 4) if isinstance(v, float) else v)) for k, v in row.items()}
            for row in shown.astype(object).to_dict("records")
        ],
        "with_gold": int((table["gold_votes"] > 0).sum()),
    }


def _write_annotators(table: pd.DataFrame, path: str) -> None:
    import fsspec

    with fsspec.open(path, "wb") as f:
        table.to_parquet(f, index=False)


# -- aggregate_labels ------------------------------------------------------------------


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


class AggregateLabelsOptions(StageOptions):
    annotations: AnnotationSource = Field(..., description="annotation rows: a source spec plus item/annotator/label column names")
    method: Method = Field("dawid_skene", description="majority_vote | wawa | dawid_skene | one_coin_dawid_skene | glad")
    labels: list[Any] | None = Field(None, description="the label set; other labels are counted and left out (default: every label seen)")
    output: str | None = Field(None, description="column for the label (default: the job's label column, else 'label')")
    gold: str | None = Field(None, description="data column with known labels: they score annotators and are kept")
    tol: float = Field(1e-5, ge=0, description="stop when the bound per annotation rises less than this (crowd-kit's rule)")
    max_iter: int = Field(100, gt=0)
    smoothing: float = Field(4.0, ge=0, description="dawid_skene: a Dirichlet prior on each annotator's confusion matrix, this "
                             "many pseudo-answers per true class (on average: in proportion to its share of the items), half spread "
                             "over the classes and half on the right one, so "
                             "an annotator with few answers is not taken as certain; 0: crowd-kit's unsmoothed estimate")
    warm_start: int = Field(5, ge=0, description="dawid_skene: its first rounds are one-coin's (one skill per annotator), "
                            "which finds spammers and adversaries before the confusion matrices are free: from majority vote "
                            "a rare class took every item some noisy answers gave it; 0: majority vote's start, as crowd-kit")
    ties: Literal["random", "first"] = Field("random", description="a tie goes to a seeded draw per item, or to the first class")
    no_annotations: Literal["reject", "keep"] = Field("reject", description="rows no annotator labeled")
    min_confidence: float = Field(0.0, ge=0, le=1, description="reject rows whose label's posterior is lower")
    min_annotator_votes: int = Field(1, ge=1, description="leave out annotators with fewer answers")
    annotators_output: str | None = Field(None, description="write per-annotator quality here as Parquet")
    partition_annotations: int = Field(
        2_000_000, gt=0,
        description="annotations per partition for the EM rounds: fewer, larger tasks make a round cheap, "
        "smaller ones need less worker memory while grouping (about 1 GB at 2.5 M) and spread over more workers",
    )

    @field_validator("annotations", mode="before")
    @classmethod
    def _frame_alone(cls, value):
        if hasattr(value, "columns") and not isinstance(value, dict):
            return {"frame": value}
        return value

    @model_validator(mode="after")
    def _smoothing_is_dawid_skenes(self):
        """Only Dawid–Skene reads ``smoothing`` and ``warm_start``: given with another
        method, they had no effect and no word said so."""
        for name in ("smoothing", "warm_start"):
            if name in self.model_fields_set and self.method != "dawid_skene":
                raise ValueError(f"{name} applies to method dawid_skene only, not {self.method}; leave it out")
        return self


@dataclass(frozen=True)
class VoteCoder:
    """Turns one item-grouped partition of coded annotations into ``Votes``."""

    n_annotators: int
    n_classes: int
    seed: int
    stage: str
    ties: str

    def votes(self, part: pd.DataFrame) -> tuple[crowd.Votes, pd.Index]:
        """Votes and the item id per item code (the categorical item column of ``_by_item``)."""
        item = part[ITEM]
        codes, ids = item.cat.codes.to_numpy(), item.cat.categories
        gold = None
        if GOLD in part.columns:
            gold = np.full(len(ids), -1, dtype=np.int64)
            gold[codes] = part[GOLD].to_numpy()  # every vote of an item carries the item's gold code
        votes = crowd.Votes(codes, part[A_CODE].to_numpy(), part[L_CODE].to_numpy(), len(ids), self.n_annotators, self.n_classes, gold)
        return votes, ids


def _annotation_round(part: pd.DataFrame, state, *, coder: VoteCoder, model: LabelModel, first: bool) -> dict:
    votes, _ = coder.votes(part)
    out = model.stats(votes, state)
    if first:
        out = {**out, **crowd.gold_stats(votes)}
        out["duplicates"] = float(part.duplicated([ITEM, A_CODE]).sum())
        out["items_total"] = float(votes.n_items)
        out["gold_items"] = float(votes.gold_mask.sum())
    return out


def _item_results(part: pd.DataFrame, state, *, coder: VoteCoder, model: LabelModel) -> pd.DataFrame:
    votes, items = coder.votes(part)
    probas = model.posteriors(votes, state)
    draws = tie_draws(probas, items, coder.seed, coder.stage, coder.ties)
    codes = crowd.most_probable(probas, draws)
    return pd.DataFrame(
        {
            ITEM: pd.Series(np.asarray(items), dtype=object).astype(str),
            "_code": codes,
            "_confidence": probas[np.arange(len(codes)), codes] if len(codes) else np.zeros(0),
            "_n": np.bincount(votes.item, minlength=votes.n_items).astype(np.int64),
        }
    )


def _inventory(part: pd.DataFrame, _state) -> dict:
    """What the raw annotations hold: readable rows, annotators, labels seen (mergeable).

    Counts are taken on the raw values and only the distinct ones are turned into keys.
    """
    bad = part["_reason"].notna() if "_reason" in part.columns else pd.Series(False, index=part.index)
    missing = ~bad & (part[ITEM].isna() | part[ANNOTATOR].isna() | part[LABEL].isna())
    ok = part[~bad & ~missing]
    annotators = _seen(ok[ANNOTATOR])
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


def _examples(examples) -> str:
    return f" ({'; '.join(examples)})" if examples else ""


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
        "annotators": a["annotators"].add(b["annotators"], fill_value=0),
        "labels": a["labels"].add(b["labels"], fill_value=0),
        "examples": _merge_examples(a["examples"], b["examples"].items()),
        "items": sorted({*a["items"], *b["items"]})[:ITEM_EXAMPLES],
    }


def _code_annotations(part: pd.DataFrame, annotators: pd.Index, classes: Classes) -> pd.DataFrame:
    ok = (part[ITEM].notna() & part[ANNOTATOR].notna()).to_numpy()
    if "_reason" in part.columns:
        ok = ok & part["_reason"].isna().to_numpy()
    a = _codes_via_uniques(part[ANNOTATOR], lambda u: annotators.get_indexer(pd.Index(u).astype(str)))
    label = _codes_via_uniques(part[LABEL], lambda u: classes.codes(pd.Series(u, dtype=part[LABEL].dtype)))
    keep = ok & (a >= 0) & (label >= 0)
    item = part[ITEM][keep]
    return pd.DataFrame(
        {
            ITEM: _item_text(item).reset_index(drop=True),  # the dtype of every id the stage merges on (gold, the data)
            A_CODE: a[keep].astype(np.int32),
            L_CODE: label[keep].astype(crowd.label_dtype(len(classes))),
        }
    )


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
    return out


def _confusion_budget() -> int:
    """Bytes one copy of Dawid–Skene's confusion matrices may take: an eighth of the
    smallest worker's memory limit (a round holds several copies), and at least
    MIN_CONFUSION_BYTES where the workers' limits are not known."""
    try:
        from distributed import default_client

        workers = default_client().scheduler_info()["workers"].values()
    except (ImportError, ValueError):
        return MIN_CONFUSION_BYTES
    limits = [w["memory_limit"] for w in workers if w.get("memory_limit")]
    return max(MIN_CONFUSION_BYTES, min(limits) // 8) if limits else MIN_CONFUSION_BYTES


@register
class AggregateLabels(Stage):
    """One label per item from many noisy annotations, with its posterior confidence.

    Annotator quality (skill, answers, accuracy on gold items) goes to the manifest, and
    to ``annotators_output`` when given. Nothing about the annotations crashes the stage:
    unreadable rows, missing values, labels outside ``labels``, duplicate answers and
    one-answer annotators are counted in the summary; data rows without an annotation
    are rejected (``no-annotations``) or kept unlabeled.
    """

    name = "aggregate_labels"
    shape = "group+fit_apply"
    Options = AggregateLabelsOptions

    def _output(self) -> str:
        return self.options.output or self.ctx.roles.label or "label"

    def check(self, meta):
        if self.options.gold:
            self.require_columns(meta, [self.options.gold], what="gold column")
        if self.options.annotations.annotator is None and self.options.method != "majority_vote":
            raise StageError(f"stage {self.ctx.name!r}: {self.options.method} weighs each annotator by their answers, and "
                             "annotator: null gives none: use method: majority_vote, or name the annotator column")
        if self.options.method in ("one_coin_dawid_skene", "glad") and self.options.labels is not None and len(self.options.labels) < 2:
            raise StageError(f"stage {self.ctx.name!r}: {self.options.method} needs at least two labels")
        spec = self.options.annotations
        if spec.frame is None:  # a file: it exists and has the named columns (validate says so before a run)
            from dsbuild.io.sources import SourceError

            try:
                columns = spec.read(count_rows=False).columns
            except SourceError as e:
                raise StageError(f"stage {self.ctx.name!r}: annotations: {e}") from None
            self._check_annotation_columns(columns)

    def _check_annotation_columns(self, columns) -> None:
        spec = self.options.annotations
        shown = [c for c in columns if c != ID and not str(c).startswith("_")]
        missing = [c for c in ((spec.item,) if spec.wide else spec.named()) if c not in columns]
        if missing:
            anonymous = missing[0] == spec.annotator and len(shown) == 2  # item, label: nobody is named
            raise StageError(
                f"stage {self.ctx.name!r}: annotation column {missing[0]!r} is not in the annotations; "
                f"columns are {shown} (set annotations.item / annotator / label"
                + (", or wide: true for a column per annotator)" if len(shown) > 3 and not spec.wide else ")")
                + ("; answers without annotators: annotator: null, with method: majority_vote" if anonymous else "")
            )
        if spec.wide and not _annotator_columns(columns, spec.item):
            raise StageError(f"stage {self.ctx.name!r}: wide annotations need a column per annotator beside {spec.item!r}; "
                             f"columns are {shown}")

    # the annotations, read and renamed -----------------------------------------------
    def _annotations(self, npartitions: int):
        import dask.dataframe as dd

        spec = self.options.annotations
        frame = spec.frame
        if frame is None:
            frame = spec.read()
        elif isinstance(frame, pd.DataFrame):
            frame = dd.from_pandas(frame, npartitions=max(1, npartitions), sort=False)
        self._check_annotation_columns(frame.columns)
        if spec.wide:
            return frame.map_partitions(_answers_of_wide, spec.item, meta=_answers_of_wide(frame._meta, spec.item))
        if spec.annotator is None:  # one anonymous annotator, whose repeated answers count as votes of their own
            frame = frame.assign(**{ANNOTATOR: ANONYMOUS})
        names = {spec.item: ITEM, spec.annotator or ANNOTATOR: ANNOTATOR, spec.label: LABEL}
        return frame[list(names) + _reader_columns(frame.columns, names)].rename(columns=names)

    def build(self, frame, shapes):
        o = self.options
        raw = self._annotations(frame.npartitions)
        inventory = shapes.fit(raw, _inventory, _merge_inventory, label=f"{self.ctx.name}-inventory")
        spec = o.annotations
        classes = Classes.declared(o.labels) if o.labels is not None else Classes.discovered(
            {k: inventory["examples"][k] for k in inventory["labels"].index},
            read_as_text=spec.frame is None and spec.source_spec().get("format") in _READ_AS_TEXT,
        )
        if inventory["rows"] == 0:
            raise StageError(f"stage {self.ctx.name!r}: the annotations hold no rows")
        if len(classes) == 0:
            raise StageError(f"stage {self.ctx.name!r}: the annotations hold no usable label")
        self._check_two_classes(classes)
        counts = inventory["annotators"]
        counts = counts[counts >= o.min_annotator_votes]
        if len(counts) == 0 and len(inventory["annotators"]):
            raise StageError(f"stage {self.ctx.name!r}: min_annotator_votes {o.min_annotator_votes} leaves no annotator "
                             f"(the most active gave {int(inventory['annotators'].max()):,} answers), so every row would "
                             "be rejected as having none")
        annotators = pd.Index(sorted(counts.index))
        self._check_confusion_size(len(annotators), len(classes))
        coded = shapes.map(raw, _code_annotations, annotators, classes, meta=_code_annotations(raw._meta, annotators, classes))
        if o.gold:
            gold = shapes.map(frame[[ID, o.gold]], _gold_codes, o.gold, classes, meta=_gold_codes(frame._meta[[ID, o.gold]], o.gold, classes))
            coded = coded.merge(gold, on=ITEM, how="left")
            coded[GOLD] = coded[GOLD].fillna(-1).astype(crowd.label_dtype(len(classes)))
        wanted = max(1, -(-int(inventory["rows"]) // o.partition_annotations))
        if wanted < coded.npartitions:
            coded = coded.repartition(npartitions=wanted)
        grouped = shapes.group(coded, _item_key, _by_item, label=f"{self.ctx.name}-by-item")
        grouped = grouped.persist()

        model = LabelModel(o.method, len(classes), len(annotators), o.tol, o.max_iter, o.smoothing, o.warm_start)
        coder = VoteCoder(len(annotators), len(classes), self.ctx.seed, self.ctx.name, o.ties)
        round_fn = functools.partial(_annotation_round, coder=coder)

        def run_round(fn, state):
            return shapes.fit(grouped, fn, crowd.merge_stats, state, label=self.ctx.name)

        state, first, rounds, converged = fit_rounds(model, round_fn, run_round)
        self.state_, self.rounds_, self.classes_ = state, rounds, classes
        table = annotator_table(annotators, state, first)
        if o.annotators_output:
            _write_annotators(table, o.annotators_output)
        self._summary = self._describe(inventory, classes, counts, first, state, rounds, table)
        if model.iterative:
            self._summary["converged"] = converged

        results = shapes.map(
            grouped, functools.partial(_item_results, coder=coder, model=model), shapes.broadcast(state),
            meta=_item_results(grouped._meta, state, coder=coder, model=model),
        )
        left = frame.assign(**{ITEM: frame[ID].map_partitions(_data_ids, meta=(ID, str))})
        joined = left.merge(results, on=ITEM, how="left")
        finish = FinishLabels(self._output(), classes, o.gold, o.no_annotations, o.min_confidence)
        return shapes.map(joined, finish, meta=finish(joined._meta.copy()), label=self.ctx.name)

    def _check_confusion_size(self, n_annotators: int, n_classes: int) -> None:
        """Dawid–Skene keeps a classes × classes confusion matrix per annotator, and a round
        holds several copies of them (each partition's sums, the merged sums, the state sent
        to every task): 1,000 annotators × 100 classes peaked at 595 MB in one process. Free-text
        answers (a class per spelling) from thousands of annotators would kill the workers
        mid-run; said before, with the ways out."""
        size = n_annotators * n_classes * n_classes * 8
        if self.options.method == "dawid_skene" and size > _confusion_budget():
            raise StageError(f"stage {self.ctx.name!r}: dawid_skene would keep a {n_classes:,} × {n_classes:,} confusion "
                             f"matrix for each of {n_annotators:,} annotators, {size / 2**30:.1f} GiB, several times over "
                             "in every round, more than an eighth of a worker's memory: declare the label set (labels: "
                             "[...]), raise min_annotator_votes, use one_coin_dawid_skene or glad (one number per "
                             "annotator), or workers with more memory")

    def _check_two_classes(self, classes: Classes) -> None:
        """One-coin Dawid–Skene and GLAD spread a wrong answer over the other classes, so
        they need two; annotations that all give one answer (a slice of a binary task)
        stopped the run with the kernel's traceback, naming neither stage nor a way out."""
        method = self.options.method
        if method in ("one_coin_dawid_skene", "glad") and len(classes) < 2:
            raise StageError(f"stage {self.ctx.name!r}: every annotation answers {classes.values[0]!r}, and {method} needs at "
                             "least two labels: declare the label set (labels: [...]) or use dawid_skene or majority_vote")

    def _describe(self, inventory, classes, counts, first, state, rounds, table) -> dict:
        o = self.options
        labels_seen = inventory["labels"]
        outside = labels_seen[~labels_seen.index.isin(classes.keys)]
        below = inventory["annotators"][inventory["annotators"] < o.min_annotator_votes]
        used = float(first["votes"].sum())
        out = {
            "method": o.method,
            "labels": [_jsonable(v) for v in classes.values],
            "rounds": rounds,
            "annotations": {
                "rows": int(inventory["rows"]),
                "used": int(used),
                "unreadable": int(inventory["unreadable"]),
                "unreadable_examples": inventory["unreadable_examples"],
                "missing_value": int(inventory["missing"]),
                "outside_labels": int(outside.sum()),
                "outside_label_examples": [str(k) for k in outside.sort_values(ascending=False).index[:10]],
                "from_annotators_below_min_votes": int(below.sum()),
                "duplicate_answers": int(first["duplicates"]),
            },
            "items_annotated": int(first["items_total"]),
            "item_examples": inventory["items"],
            "gold_items_annotated": int(first["gold_items"]),
            "annotators": annotator_summary(table),
        }
        if "prior" in state:
            out["prior"] = {str(k): round(float(p), 6) for k, p in zip(classes.keys, state["prior"])}
            answers = labels_seen.reindex(list(classes.keys), fill_value=0)
            out["answer_shares"] = {str(k): round(float(n) / max(float(answers.sum()), 1.0), 6) for k, n in answers.items()}
            out["elbo_per_annotation"] = float(state["elbo"])
        return out

    def summary(self) -> dict:
        return getattr(self, "_summary", {})

    def result_warnings(self, entry: dict) -> list[str]:
        """Annotations whose items are not the data's ids match nothing, and every row
        would go to rejects as no-annotations without a word on why. Labels that differ
        only in case (free-text answers) are classes of their own, which splits votes."""
        notes = _case_variants(self.ctx.name, entry.get("summary", {}).get("labels", []))
        notes += _annotation_notes(self.ctx.name, entry.get("summary", {}).get("annotations", {}), self.options.annotations.annotator is None)
        notes += self._gold_notes(entry)
        notes += _collapse_notes(self.ctx.name, entry.get("summary", {}))
        if entry.get("summary", {}).get("converged") is False:
            notes.append(f"stage {self.ctx.name!r}: {self.options.method} did not converge in max_iter "
                         f"{self.options.max_iter} rounds (tol {self.options.tol}); the labels are the last round's: raise max_iter")
        items = entry.get("summary", {}).get("items_annotated", 0)
        matched = int(entry["metrics"].get("annotated", 0))
        if not items or matched >= items:
            return notes
        examples = ", ".join(entry["summary"].get("item_examples", []))
        if matched == 0:
            return notes + [f"stage {self.ctx.name!r}: none of the {items:,} annotated items is a row of the data "
                            f"(annotation items: {examples}, …). Items must be the data's ids: its id column "
                            "(columns.id) or file:row for files without one."]
        return notes + [f"stage {self.ctx.name!r}: {items - matched:,} of the {items:,} annotated items are not rows "
                        "of the data (ids are compared as written, case included, spaces around them not); their answers still count towards "
                        "each annotator's quality."]

    def _gold_notes(self, entry: dict) -> list[str]:
        """Gold values the label set does not hold (True against answers 0 and 1, 'Cat'
        against 'cat') were left out without a word: the run looked as if it had gold."""
        outside = int(entry["metrics"].get("gold_outside_labels", 0))
        if not outside:
            return []
        used = int(entry["metrics"].get("gold_items", 0))
        return [f"stage {self.ctx.name!r}: {outside:,} rows' gold values in {self.options.gold!r} are not among the labels "
                f"{entry.get('summary', {}).get('labels', [])} and are not used ({used:,} are); write them as the "
                "annotations write their labels (a boolean gold against answers 0 and 1 matches none)"]


def _collapse_notes(stage: str, summary: dict) -> list[str]:
    """A label model can settle with (nearly) every item in one class that the answers do
    not favour so: one-coin Dawid–Skene does, as crowd-kit's does, on a binary crowd with
    one prolific annotator who always gives the same answer (every tumour '0', which 64%
    of the answers gave; accuracy 0.37), where that is the model's best fit. The labels
    are then the model's, not the crowd's."""
    prior, answers = summary.get("prior", {}), summary.get("answer_shares", {})
    if not prior or len(prior) < 2:
        return []
    top = max(prior, key=prior.get)
    if prior[top] < 0.98 or answers.get(top, 1.0) > 0.8:
        return []
    return [f"stage {stage!r}: {summary.get('method')} put {prior[top]:.0%} of the items in {top!r}, which {answers[top]:.0%} "
            "of the answers give: the model collapsed onto one class; compare with majority_vote or dawid_skene"]


def _annotation_notes(stage: str, counts: dict, anonymous: bool = False) -> list[str]:
    """Answers that were not counted, or counted twice, change the labels without a word
    in the output: the rows they came from cannot go to rejects (they are not the data's).
    Anonymous answers all repeat one annotator: that is no repeat. Rows without an item,
    annotator or label were counted in the manifest alone: an export whose annotator
    column was empty for a third of its rows lost those answers without a word."""
    notes = []
    if counts.get("rows") and not counts.get("used"):
        notes.append(f"stage {stage!r}: none of the {counts['rows']:,} annotation rows is a vote (unreadable "
                     f"{counts.get('unreadable', 0):,}, without a value {counts.get('missing_value', 0):,}, outside the labels "
                     f"{counts.get('outside_labels', 0):,}: {counts.get('outside_label_examples', [])[:3]})"
                     + _examples(counts.get("unreadable_examples")))
    else:
        if counts.get("unreadable"):
            notes.append(f"stage {stage!r}: {counts['unreadable']:,} annotation rows could not be read and are not counted"
                         + _examples(counts.get("unreadable_examples")))
        if counts.get("missing_value"):
            notes.append(f"stage {stage!r}: {counts['missing_value']:,} of the {counts['rows']:,} annotation rows have no item, "
                         "annotator or label (an empty cell, or only spaces) and are not counted")
        if counts.get("outside_labels"):
            notes.append(f"stage {stage!r}: {counts['outside_labels']:,} of the {counts['rows']:,} answers give a label outside "
                         f"'labels' and are not counted ({', '.join(map(repr, counts.get('outside_label_examples', [])[:5]))}); "
                         "the other answers alone label their items: check 'labels' for a misspelt class")
    if counts.get("duplicate_answers") and not anonymous:
        notes.append(f"stage {stage!r}: {counts['duplicate_answers']:,} answers repeat an answer of the same annotator to "
                     "the same item and count as votes of their own (as in crowd-kit); drop repeated answers before "
                     "this stage for one vote per annotator and item")
    return notes


def _case_variants(stage: str, labels: list) -> list[str]:
    groups: dict[str, list[str]] = {}
    for label in map(str, labels):
        groups.setdefault(label.casefold(), []).append(label)
    variants = [g for g in groups.values() if len(g) > 1]
    if not variants:
        return []
    shown = "; ".join(" and ".join(repr(v) for v in g) for g in variants[:3])
    return [f"stage {stage!r}: labels {shown} differ only in case and are counted as different classes; "
            "if each pair is one class, make the annotations' spelling one before this stage"]


def write_labels(part: pd.DataFrame, out: str, classes, codes: np.ndarray, confidence: np.ndarray, keep_old: bool) -> None:
    """The chosen label (code -1: none) and its confidence into ``out`` and
    ``<out>_confidence``; rows without a label keep ``out``'s old value if asked."""
    labeled = codes >= 0
    values = classes.decode(codes)
    values.index = part.index
    if out in part.columns and keep_old:
        values = values.astype(object).where(labeled, part[out].astype(object))
    part[out] = values
    part[f"{out}_confidence"] = np.where(labeled, confidence, np.nan)


@dataclass(frozen=True)
class FinishLabels:
    """Writes the joined per-item result into the data rows (label, confidence, count)."""

    output: str
    classes: Classes
    gold: str | None
    no_annotations: str
    min_confidence: float

    def __call__(self, part: pd.DataFrame) -> pd.DataFrame:
        part = with_marks(part)
        out = self.output
        codes = part["_code"].fillna(-1).to_numpy(dtype=np.int64)
        confidence = part["_confidence"].astype("float64").to_numpy(na_value=np.nan)
        count = part["_n"].fillna(0).to_numpy(dtype=np.int64)
        if self.gold:
            known = self.classes.codes(part[self.gold])
            codes = np.where(known >= 0, known, codes)
            confidence = np.where(known >= 0, 1.0, confidence)
            part[f"{METRIC}gold_items"] = (known >= 0).astype(np.int64)
            given = label_keys(part[self.gold]).notna().to_numpy()
            part[f"{METRIC}gold_outside_labels"] = (given & (known < 0)).astype(np.int64)
        labeled = codes >= 0
        write_labels(part, out, self.classes, codes, confidence, keep_old=self.no_annotations == "keep")
        part[f"{out}_annotations"] = count
        part[f"{METRIC}annotated"] = (count > 0).astype(np.int64)
        part[f"{METRIC}no_annotations"] = (~labeled).astype(np.int64)
        if self.no_annotations == "reject":
            part = reject(part, ~labeled, "no-annotations")
        if self.min_confidence > 0:
            low = labeled & (np.nan_to_num(confidence) < self.min_confidence)
            part[f"{METRIC}low_confidence"] = low.astype(np.int64)
            part = reject(part, low, np.array([f"low-confidence={c:.3f}" for c in np.nan_to_num(confidence)], dtype=object))
        return part.drop(columns=[ITEM, "_code", "_confidence", "_n"])


def _annotator_columns(columns, item: str) -> list:
    """A wide sheet's annotator columns: all but the item and the reader's own (id, raw, _reason)."""
    return [c for c in columns if c not in (item, ID, "raw") and not str(c).startswith("_")]


def _reader_columns(columns, named) -> list[str]:
    """The reader's reason for a line it could not parse, and that line's file:row id to
    name it by (unless the id column is one the annotations use)."""
    if "_reason" not in columns:
        return []
    return [c for c in (ID, "_reason") if c in columns and c not in named]


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


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v


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


# -- labeling_functions -----------------------------------------------------------------


class LabelingFunctionsOptions(StageOptions):
    rules: list[Any] = Field(..., min_length=1, description="rules as data ({name, label, column, op, value} or {name, label, when: [...]}); Python callables allowed")
    method: Literal["wawa", "majority_vote"] = Field(
        "wawa", description="how votes combine: wawa (each rule weighed by its agreement with the majority) | majority_vote")
    labels: list[Any] | None = Field(None, description="the label set (default: every label a rule can cast)")
    output: str | None = Field(None, description="column for the label (default: the job's label column, else 'label')")
    gold: str | None = Field(None, description="data column with known labels: they score the rules and are kept")
    tol: float = Field(1e-5, ge=0)
    max_iter: int = Field(100, gt=0)
    ties: Literal["random", "first"] = "random"
    no_votes: Literal["reject", "keep"] = Field("reject", description="rows no rule voted on")
    min_confidence: float = Field(0.0, ge=0, le=1)

    @field_validator("method", mode="before")
    @classmethod
    def _votes_not_answers(cls, method):
        """The crowd models learn each annotator's confusion from the answers it gives; a
        rule casts one label where it fires and abstains elsewhere, so its confusion row is
        the same for every true class, and every row got the prior's class (on Adult, all
        2,837 rows '<=50K', for 0.78 accuracy against majority vote's 0.88). A label model
        that reads abstentions (as Snorkel's does) is not built."""
        if method in ("dawid_skene", "one_coin_dawid_skene", "glad"):
            raise ValueError(f"{method} models annotators who answer every item they see; a labeling function abstains "
                             "where it does not fire, which that model cannot use (it gives every row the commonest "
                             "class): use wawa or majority_vote")
        return method

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value):
        return [v if callable(v) or isinstance(v, LabelingRule) else LabelingRule.from_spec(v, i) for i, v in enumerate(value or [])]

    @field_serializer("rules")
    def _rules_as_written(self, rules):
        """Data rules as a job file writes them: a stage built in Python is dumped into its
        job, which validates the options again, and the dataclass's own form
        (``{name, label, conditions}``) was refused there."""
        return [r.as_spec() if isinstance(r, LabelingRule) else r for r in rules]


@dataclass(frozen=True)
class RuleVoter:
    """Casts every rule's vote on a partition, as ``Votes`` over its rows."""

    rules: tuple
    classes: Classes
    gold: str | None
    seed: int
    stage: str
    ties: str
    names: tuple[str, ...] = field(default=())

    def votes(self, part: pd.DataFrame) -> crowd.Votes:
        matrix = np.column_stack([self.classes.codes(pd.Series(rule_votes(rule, part), index=part.index)) for rule in self.rules]) if len(part) else np.zeros((0, len(self.rules)), dtype=np.int64)
        item, annotator = np.nonzero(matrix >= 0)
        gold = self.classes.codes(part[self.gold]) if self.gold else None
        return crowd.Votes(item, annotator, matrix[item, annotator], len(part), len(self.rules), len(self.classes), gold)


def _rule_round(part: pd.DataFrame, state, *, voter: RuleVoter, model: LabelModel, first: bool) -> dict:
    votes = voter.votes(part)
    out = model.stats(votes, state)
    if first:
        out = {**out, **crowd.gold_stats(votes)}
        covered = np.bincount(votes.item, minlength=votes.n_items) > 0
        out.update(rows=float(len(part)), covered=float(covered.sum()), conflicts=float(_conflicts(votes)), duplicates=0.0,
                   items_total=float(covered.sum()), gold_items=float(votes.gold_mask.sum()))
    return out


def _conflicts(votes: crowd.Votes) -> int:
    """Rows where the rules that fired disagree."""
    scores = crowd.vote_scores(votes)
    return int(((scores > 0).sum(axis=1) > 1).sum())


@register
class LabelingFunctions(FitApplyStage):
    """Programmatic labels: rules vote, and each rule's vote is weighed by its agreement with
    the majority (Wawa; or one vote each). Dawid–Skene and its kin are refused here: they
    read a rule's abstentions as nothing, and gave every row the commonest class.

    Rules are data (comparisons, value sets, regular expressions on text), so nothing
    from a job file is executed; Python jobs may pass functions ``part -> labels`` (None
    abstains). Per rule coverage and estimated skill go to the manifest.
    """

    name = "labeling_functions"
    Options = LabelingFunctionsOptions

    def _output(self) -> str:
        return self.options.output or self.ctx.roles.label or "label"

    def _classes(self) -> Classes:
        o = self.options
        if o.labels is not None:
            return Classes.declared(o.labels)
        cast = [r.label for r in o.rules if isinstance(r, LabelingRule)]
        if len(cast) < len(o.rules):
            raise StageError(f"stage {self.ctx.name!r}: with function rules, declare the label set in 'labels'")
        examples = dict(zip(label_keys(pd.Series(cast, dtype=object)).tolist(), cast))
        return Classes.discovered(examples)

    def check(self, meta):
        o = self.options
        columns = [c for r in o.rules if isinstance(r, LabelingRule) for c in r.columns()]
        self.require_columns(meta, columns + ([o.gold] if o.gold else []))
        for rule in (r for r in o.rules if isinstance(r, LabelingRule)):  # on the empty frame: a value of the wrong
            try:                                                              # kind fails here, not in every task
                rule.fires(meta)
            except ValueError as e:
                raise StageError(f"stage {self.ctx.name!r}: rule {rule.name!r}: {e}") from None
        classes = self._classes()
        cast = [r.label for r in o.rules if isinstance(r, LabelingRule)]
        outside = [v for v, c in zip(cast, classes.codes(pd.Series(cast, dtype=object))) if c < 0]
        if outside:
            raise StageError(f"stage {self.ctx.name!r}: rules cast {outside[0]!r}, which is not in labels {list(classes.values)}")

    def build(self, frame, shapes):
        o = self.options
        classes = self._classes()
        names = tuple(getattr(r, "name", None) or getattr(r, "__name__", f"rule{i}") for i, r in enumerate(o.rules))
        voter = RuleVoter(tuple(o.rules), classes, o.gold, self.ctx.seed, self.ctx.name, o.ties, names)
        model = LabelModel(o.method, len(classes), len(o.rules), o.tol, o.max_iter)

        def run_round(fn, state):
            return shapes.fit(frame, fn, crowd.merge_stats, state, label=self.ctx.name)

        state, first, rounds, _ = fit_rounds(model, functools.partial(_rule_round, voter=voter), run_round)
        self.state_, self.rounds_, self.classes_ = state, rounds, classes
        table = annotator_table(names, state, first).rename(columns={"annotator": "rule", "votes": "fired"})
        self._summary = {
            "method": o.method,
            "labels": [_jsonable(v) for v in classes.values],
            "rounds": rounds,
            "rows": int(first["rows"]),
            "covered": int(first["covered"]),
            "conflicting": int(first["conflicts"]),
            "rules": [
                {k: (None if isinstance(v, float) and np.isnan(v) else (round(v, 4) if isinstance(v, float) else v)) for k, v in row.items()}
                for row in table.astype(object).to_dict("records")
            ],
        }
        if "prior" in state:
            self._summary["prior"] = {str(k): round(float(p), 6) for k, p in zip(classes.keys, state["prior"])}
        return shapes.map(frame, self._apply_rules, voter, model, shapes.broadcast(state), label=self.ctx.name)

    def _apply_rules(self, part: pd.DataFrame, voter: RuleVoter, model: LabelModel, state: dict) -> pd.DataFrame:
        o = self.options
        part = with_marks(part)
        votes = voter.votes(part)
        probas = model.posteriors(votes, state)
        codes = crowd.most_probable(probas, tie_draws(probas, part[ID].to_numpy(dtype=object), voter.seed, voter.stage, voter.ties))
        fired = np.bincount(votes.item, minlength=votes.n_items)
        labeled = (fired > 0) | votes.gold_mask
        codes = np.where(labeled, codes, -1)
        confidence = probas[np.arange(len(codes)), np.maximum(codes, 0)] if len(codes) else np.zeros(0)
        out = self._output()
        write_labels(part, out, voter.classes, codes, confidence, keep_old=o.no_votes == "keep")
        part[f"{out}_votes"] = fired.astype(np.int64)
        part[f"{METRIC}no_votes"] = (~labeled).astype(np.int64)
        if o.no_votes == "reject":
            part = reject(part, ~labeled, "no-votes")
        if o.min_confidence > 0:
            low = labeled & (confidence < o.min_confidence)
            part = reject(part, low, np.array([f"low-confidence={c:.3f}" for c in confidence], dtype=object))
        return part

    def summary(self) -> dict:
        return getattr(self, "_summary", {})
