"""``labeling_functions``: rules declared in the job vote, and the votes combine as a crowd's
do (Wawa or one vote each); a row's votes live in the row, so no shuffle is needed.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_serializer, field_validator

from dsbuild.kernels import crowd
from dsbuild.kernels.labeling_functions import LabelingRule, agreement_counts, dependent_pairs, drop_dependent, rule_votes
from dsbuild.records import ID
from dsbuild.stages.base import (
    METRIC,
    FitApplyStage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.label.classes import Classes, label_keys
from dsbuild.stages.label.model import (
    LabelModel,
    _jsonable,
    annotator_table,
    fit_rounds,
    tie_draws,
    write_labels,
)


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
    min_confidence: float = Field(0.0, ge=0, le=1, description="reject rows whose confidence is lower; a row's confidence is "
                                  "the probability that its label is right, from each rule's accuracy estimated by its "
                                  "agreement with the other rules (rules taken as independent, a dependent pair as one)")
    dependent: float | None = Field(0.99, gt=0, le=1, description="two rules are one vote where the rule that fires less "
                                    "fires, if the other casts the same label on at least this share of its rows (a copy, "
                                    "or one rule implied by the other); null: every rule an independent vote")

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
    dependent: tuple[tuple[int, int, float], ...] = ()  # (kept, dropped, share): see dependent_pairs

    def codes(self, part: pd.DataFrame) -> np.ndarray:
        """``(rows, rules)`` class codes of every rule's vote, -1 where it abstains."""
        if not len(part):
            return np.zeros((0, len(self.rules)), dtype=np.int64)
        return np.column_stack([self.classes.codes(pd.Series(rule_votes(rule, part), index=part.index)) for rule in self.rules])

    def votes(self, part: pd.DataFrame, counted: bool = True) -> crowd.Votes:
        """The votes counted (a dependent pair's one vote where both fired), or every vote cast."""
        matrix = self.codes(part)
        if counted:
            matrix = drop_dependent(matrix, self.dependent)
        item, annotator = np.nonzero(matrix >= 0)
        gold = self.classes.codes(part[self.gold]) if self.gold else None
        return crowd.Votes(item, annotator, matrix[item, annotator], len(part), len(self.rules), len(self.classes), gold)


def _rule_agreement(part: pd.DataFrame, _state, *, voter: RuleVoter) -> dict:
    return agreement_counts(voter.codes(part), len(voter.classes))


def _rule_round(part: pd.DataFrame, state, *, voter: RuleVoter, model: LabelModel, first: bool) -> dict:
    votes = voter.votes(part)
    out = model.stats(votes, state)
    if first:
        cast = voter.votes(part, counted=False) if voter.dependent else None
        out = {**out, **crowd.gold_stats(votes), **crowd.others_agreement_stats(votes, cast, voter.dependent)}
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

        dependent, fired = (), None
        if o.dependent is not None and len(o.rules) > 1:
            counts = run_round(functools.partial(_rule_agreement, voter=voter), None)
            dependent, fired = tuple(dependent_pairs(counts, o.dependent)), counts["fired"]
            voter = dataclasses.replace(voter, dependent=dependent)
        state, first, rounds, _ = fit_rounds(model, functools.partial(_rule_round, voter=voter), run_round)
        self.state_, self.rounds_, self.classes_ = state, rounds, classes
        self.accuracy_ = crowd.rule_accuracy(first, len(classes))
        table = annotator_table(names, state, first).rename(columns={"annotator": "rule", "votes": "counted"})
        table.insert(1, "fired", (fired if fired is not None else first["votes"]).astype(np.int64))
        table.insert(4, "accuracy", self.accuracy_)
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
            "dependent": [{"kept": names[kept], "dropped": names[dropped], "share": round(share, 4)} for kept, dropped, share in dependent],
        }
        if "prior" in state:
            self._summary["prior"] = {str(k): round(float(p), 6) for k, p in zip(classes.keys, state["prior"])}
        return shapes.map(frame, self._apply_rules, voter, model, shapes.broadcast({**state, "accuracy": self.accuracy_}), label=self.ctx.name)

    def _apply_rules(self, part: pd.DataFrame, voter: RuleVoter, model: LabelModel, state: dict) -> pd.DataFrame:
        o = self.options
        part = with_marks(part)
        votes = voter.votes(part)
        probas = model.posteriors(votes, state)
        codes = crowd.most_probable(probas, tie_draws(probas, part[ID].to_numpy(dtype=object), voter.seed, voter.stage, voter.ties))
        fired = np.bincount(votes.item, minlength=votes.n_items)
        labeled = (fired > 0) | votes.gold_mask
        codes = np.where(labeled, codes, -1)
        # the label's probability, not its share of the votes (1.0 where one rule fired alone)
        posteriors = crowd.independent_posteriors(votes, state["accuracy"])
        confidence = posteriors[np.arange(len(codes)), np.maximum(codes, 0)] if len(codes) else np.zeros(0)
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

    def result_warnings(self, entry: dict) -> list[str]:
        """Rules that vote together were counted as one vote where both fired: said, since
        a rule that looked like an independent vote counted less."""
        notes = super().result_warnings(entry)
        pairs = entry.get("summary", {}).get("dependent", [])
        if not pairs:
            return notes
        shown = "; ".join(f"{p['dropped']!r} where {p['kept']!r} fires ({p['share']:.0%} of its rows)" for p in pairs[:5])
        return notes + [f"stage {self.ctx.name!r}: {len(pairs)} pairs of rules cast the same label on the same rows and count as "
                f"one vote there, the more specific rule's: {shown}{'; …' if len(pairs) > 5 else ''} (dependent: "
                f"{self.options.dependent}; null counts every rule)"]
