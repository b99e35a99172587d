"""``aggregate_labels``: one label per item from crowd annotations, fitted in rounds on the
workers, and what the run says about the answers it could not use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from dsbuild.kernels import crowd
from dsbuild.records import ID
from dsbuild.stages.base import (
    METRIC,
    Stage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.label.annotations import (
    _READ_AS_TEXT,
    A_CODE,
    ANNOTATOR,
    ANONYMOUS,
    GOLD,
    ITEM,
    L_CODE,
    LABEL,
    AnnotationSource,
    _annotator_columns,
    _answers_of_wide,
    _by_item,
    _code_annotations,
    _data_ids,
    _gold_codes,
    _inventory,
    _item_key,
    _merge_inventory,
    _reader_columns,
)
from dsbuild.stages.label.classes import Classes, label_keys
from dsbuild.stages.label.model import (
    LabelModel,
    _jsonable,
    annotator_summary,
    annotator_table,
    fit_rounds,
    tie_draws,
    write_labels,
)

Method = Literal["majority_vote", "wawa", "dawid_skene", "one_coin_dawid_skene", "glad"]

MIN_CONFUSION_BYTES = 512 * 2**20  # Dawid–Skene's confusion matrices, one copy: allowed on any worker


class AggregateLabelsOptions(StageOptions):
    annotations: AnnotationSource = Field(..., description="annotation rows: a source spec plus item/annotator/label column names")
    method: Method = Field("dawid_skene", description="majority_vote | wawa | dawid_skene | one_coin_dawid_skene | glad")
    labels: list[Any] | None = Field(None, description="the label set; other labels are counted and left out (default: every label seen)")
    output: str | None = Field(None, description="column for the label (default: the job's label column, else 'label')")
    gold: str | None = Field(None, description="data column with known labels: they score annotators and are kept")
    tol: float = Field(1e-5, ge=0, description="stop when the bound per annotation moves less than this, either way (crowd-kit stops when it rises less)")
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
    min_confidence: float = Field(0.0, ge=0, le=1, description="reject rows whose label's posterior is lower (majority_vote "
                                  "and wawa: the share of the item's votes its label got, 1.0 for an item with one answer)")
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
        """Votes and the item id per item code (the categorical item column of ``_by_item``).
        A ground-truth answer (annotator code -1) is its item's gold, not a vote."""
        item = part[ITEM]
        codes, ids = item.cat.codes.to_numpy(), item.cat.categories
        gold = None
        if GOLD in part.columns:
            gold = np.full(len(ids), -1, dtype=np.int64)
            gold[codes] = part[GOLD].to_numpy()  # every answer of an item carries the item's gold code
        annotator, label = part[A_CODE].to_numpy(), part[L_CODE].to_numpy()
        if len(annotator) and annotator.min() < 0:
            cast = annotator >= 0
            codes, annotator, label = codes[cast], annotator[cast], label[cast]
        votes = crowd.Votes(codes, annotator, label, len(ids), self.n_annotators, self.n_classes, gold)
        return votes, ids


def _annotation_round(part: pd.DataFrame, state, *, coder: VoteCoder, model: LabelModel, first: bool) -> dict:
    votes, _ = coder.votes(part)
    out = model.stats(votes, state)
    if first:
        out = {**out, **crowd.gold_stats(votes)}
        cast = part[A_CODE].to_numpy() >= 0
        out["duplicates"] = float(part[cast].duplicated([ITEM, A_CODE]).sum())
        out["items_total"] = float(votes.n_items)
        out["gold_items"] = float(votes.gold_mask.sum())
        reviewed = np.zeros(votes.n_items, dtype=bool)
        reviewed[part[ITEM].cat.codes.to_numpy()[~cast]] = True
        out["ground_truth_conflicts"] = float((reviewed & ~votes.gold_mask).sum())
    return out


def _item_results(part: pd.DataFrame, state, *, coder: VoteCoder, model: LabelModel) -> pd.DataFrame:
    votes, items = coder.votes(part)
    probas = model.posteriors(votes, state)
    draws = tie_draws(probas, items, coder.seed, coder.stage, coder.ties)
    codes = crowd.most_probable(probas, draws)
    confidence = probas[np.arange(len(codes)), codes] if len(codes) else np.zeros(0)
    answered = np.bincount(votes.item, minlength=votes.n_items) > 0
    if not answered.all():  # only ground truths that disagree: no label, not the prior's guess
        unknown = ~answered & ~votes.gold_mask
        codes, confidence = np.where(unknown, -1, codes), np.where(unknown, np.nan, confidence)
    return pd.DataFrame(
        {
            ITEM: pd.Series(np.asarray(items), dtype=object).astype(str),
            "_code": codes,
            "_confidence": confidence,
            "_n": np.bincount(part[ITEM].cat.codes.to_numpy(), minlength=votes.n_items).astype(np.int64),  # ground truths too
        }
    )


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

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """Majority vote's and Wawa's confidence is a share of the votes, not a posterior:
        an item one annotator answered has 1.0, so min_confidence keeps the items with the
        least evidence (as in labeling_functions)."""
        o = self.options
        if o.min_confidence <= 0 or o.method not in ("majority_vote", "wawa"):
            return []
        return [f"stage {self.ctx.name!r}: with {o.method}, min_confidence {o.min_confidence} compares the share of an item's "
                "votes its label got, not a probability: an item one annotator answered has confidence 1.0 and always passes, "
                f"while items whose annotators disagree are rejected; filter on {self._output()}_annotations for evidence, or "
                "use dawid_skene, whose confidence is a posterior"]

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
            self._summary.update(_unsettled(state) if not converged else {})

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
                "skipped": inventory["skipped"],
                "outside_labels": int(outside.sum()),
                "outside_label_examples": [str(k) for k in outside.sort_values(ascending=False).index[:10]],
                "from_annotators_below_min_votes": int(below.sum()),
                "duplicate_answers": int(first["duplicates"]),
                "ground_truth": int(inventory["ground_truth"]),
                "ground_truth_conflicts": int(first["ground_truth_conflicts"]),
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
            notes.append(self._unconverged_note(entry["summary"]))
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

    def _unconverged_note(self, summary: dict) -> str:
        """Says what had not settled when max_iter ran out: the bound alone, while no label
        changed in the last rounds (the labels stand; confidences still move), or labels."""
        o = self.options
        head = f"stage {self.ctx.name!r}: {o.method} did not converge in max_iter {o.max_iter} rounds (tol {o.tol}"
        if "elbo_change" in summary:
            change = summary["elbo_change"]
            head += f"; the bound per annotation still {'rose' if change > 0 else 'fell'} by {abs(change):.2g} in the last round"
        changes, rounds = summary.get("label_changes"), summary.get("watched_rounds", 0)
        if changes is None or not rounds:
            return head + "); the labels are the last round's: raise max_iter"
        if changes == 0:
            return (head + f"), but no item's label changed in the {rounds} rounds before the last, so the labels are likely "
                    f"final; their confidences still moved by up to {summary['confidence_shift']:.2g} a round: raise max_iter "
                    "for settled confidences")
        return head + f"); {changes:,} label changes in the {rounds} rounds before the last: the labels are the last round's: raise max_iter"

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


def _unsettled(state: dict) -> dict:
    """What the last rounds of a model that ran out of rounds still moved, for the summary."""
    out = {"elbo_change": float(state["elbo_change"])} if "elbo_change" in state else {}
    if "label_changes" in state:
        out.update(watched_rounds=int(state["watched_rounds"]), label_changes=int(state["label_changes"]),
                   confidence_shift=round(float(state["confidence_shift"]), 6))
    return out


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
    if counts.get("ground_truth_conflicts"):
        notes.append(f"stage {stage!r}: {counts['ground_truth_conflicts']:,} items have ground-truth answers that disagree, "
                     "so none of them is used: their other answers alone label them; keep one ground truth per task in the "
                     "labeling tool")
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


def _write_annotators(table: pd.DataFrame, path: str) -> None:
    import fsspec

    with fsspec.open(path, "wb") as f:
        table.to_parquet(f, index=False)


def _examples(examples) -> str:
    return f" ({'; '.join(examples)})" if examples else ""
