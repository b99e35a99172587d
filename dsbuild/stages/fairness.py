"""Fairness stages: audit a data set for unfairness and mitigate it, exactly and at scale.

Every statistic is mergeable — group × label counts, moments, per-group value counts or
histograms — so results do not depend on partitioning and no data is collected. Groups
come from the job's ``sensitive`` columns; a numeric one is cut into bins by the job's
``columns.bins`` or the stage's ``bins`` option (``bins: {age: [25]}`` gives the groups
``<25`` and ``>=25``, German credit's age split). Several sensitive columns also give
their intersection.

- ``fairness_audit``: counts, base rates, SPD and DI per group and intersection; with a
  ``model``, demographic parity and equalized odds of its out-of-fold predictions.
- ``reweigh``: Kamiran & Calders weights W(s, y) = P(s)·P(y) / P(s, y), multiplied into
  the weight column.
- ``resample``: uniform or preferential sampling to the cell sizes that make group and
  label independent; copies get ids ``parent#rs<k>``, removed rows go to rejects.
- ``massage``: flip the labels of the rows nearest the decision boundary.

The three mitigations take ``strength`` λ: each group's favourable rate moves λ of the
way to the overall rate (0: no change, 1: Kamiran & Calders, above 1: past parity, for
a model that learns part of the bias back from correlated features).
- ``correlation_remover``: fairlearn's CorrelationRemover from merged moments.
- ``disparate_impact_remover``: Feldman et al.'s rank-preserving repair per group.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dsbuild.kernels import selection
from dsbuild.kernels.correlation import CorrelationRemover, Moments
from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.fairness import (
    GROUP_JOIN,
    LABEL,
    MISSING,
    _text,
    cell_text,
    contingency,
    equalized_odds,
    factorize,
    favorable_value,
    group_codes,
    group_text,
    joint_text,
    massage_changes,
    merge_tables,
    parity,
    resample_targets,
    reweighing,
    tidy,
    usable_weights,
    weight_values,
)
from dsbuild.kernels.quantiles import BINS, MAX_DISTINCT, GroupDistribution, repair
from dsbuild.kernels.ranker import MODELS, OutOfFoldRanker
from dsbuild.records import ID, child_id, copy_kind, record_seeds
from dsbuild.stages.base import (
    ADDED,
    METRIC,
    REJECT,
    FitApplyStage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.conditions import Condition, all_hold, rows_holding

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
CLEANING_FIRST = ("exact_dedup", "sanitize", "label_issues")  # label_issues drops rows or changes their labels
PRED = "_pred"


# -- ordering ---------------------------------------------------------------------------


def _cleans(name: str) -> bool:
    return name in CLEANING_FIRST or name.startswith("near_dedup")


def order_warnings_for_job(stages) -> list[str]:
    """Every warning of :meth:`FairnessStage.order_warnings` over a whole job."""
    return [note for i, s in enumerate(stages) for note in s.order_warnings(stages[:i], stages[i + 1 :])]


def _order_message(fair: str, clean: str) -> str:
    return (
        f"stage {fair!r} runs before {clean!r}: its weights, labels and group counts would be "
        f"computed on rows that {clean!r} then removes (duplicates inflate their groups, "
        f"poisoned rows move labels and scores), so they would be wrong for the output. "
        f"Move {fair!r} after {clean!r}."
    )


# -- options shared by every fairness stage ---------------------------------------------


class GroupOptions(StageOptions):
    """What every fairness stage reads: how the sensitive columns make groups."""

    bins: dict[str, list[float]] = Field(
        default_factory=dict,
        description="cut points for numeric sensitive columns: {age: [25]} gives groups <25 and >=25",
    )

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins):
        return increasing_bins(bins)


class FairnessOptions(GroupOptions):
    """The stages that read the label: which value is favourable, and the reference group."""

    favorable: Any = Field(None, description="the favourable label value (default: True or 1 for a boolean or 0/1 label)")
    privileged: dict[str, Any] = Field(
        default_factory=dict,
        description="reference group per sensitive column, e.g. {sex: Male}; default: the group with the highest base rate",
    )


def increasing_bins(bins: dict[str, list[float]]) -> dict[str, list[float]]:
    for col, edges in bins.items():
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"bins for {col!r} must be a non-empty increasing list, got {edges}")
    return bins


class MitigationOptions(FairnessOptions):
    where: list[Condition] = Field(
        default_factory=list, description="rows to count and change, e.g. [{column: split, op: ==, value: train}]: "
        "the stage's counts (and ranker) come from those rows alone and only they change; other rows pass as they are")
    strength: float = Field(
        1.0, ge=0.0,
        description="how far each group's favourable rate moves towards the overall rate: 0 not at all, "
        "1 to independence of group and label (Kamiran & Calders), above 1 past it, which a model trained "
        "on the output may need to reach parity in its predictions",
    )


class RankerOptions(MitigationOptions):
    model: ModelName = Field("logistic_regression", description=f"the ranker: one of {sorted(MODELS)}")
    sample_rows: int = Field(200_000, gt=10, description="rows the ranker is fitted on (a seeded uniform sample)")
    folds: int = Field(5, ge=2, le=20, description="out-of-fold scoring: one model per fold")


class FairnessStage(FitApplyStage):
    """Wiring every fairness stage shares: roles, groups, counts, the ranker."""

    Options = FairnessOptions
    needs_label: bool = True
    reads_weights = True

    def result_warnings(self, entry: dict) -> list[str]:
        """A stage that counted no labelled row (an unlabelled batch, or the label role
        naming an empty column) changed nothing and said nothing: its rows passed with
        weight 1, unsampled, unmassaged."""
        notes = super().result_warnings(entry)
        table = getattr(self, "table_", None)
        where = getattr(self.options, "where", None)  # the audit has none: it counts every row
        if table is not None and entry.get("in", 0) > 0 and not where and int(table["n"].sum()) == 0:
            notes.append(f"stage {self.ctx.name!r}: no row has a label ({self.label!r} is missing in all {entry['in']:,}), "
                         "so it had nothing to count and changed nothing; check columns.label")
        return notes

    def order_warnings(self, earlier, later) -> list[str]:
        """Weights, labels and group counts computed before duplicates and poisoned rows
        are removed describe rows that will not be in the output: duplicates inflate
        their groups, poisoned rows pull labels and borderline scores (MLClean's finding
        that cleaning steps depend on each other)."""
        return [_order_message(self.ctx.name, s.ctx.name) for s in later if _cleans(s.name)]

    # roles ----------------------------------------------------------------------------
    @property
    def sensitive(self) -> list[str]:
        return list(self.ctx.roles.sensitive)

    @property
    def label(self) -> str:
        return self.ctx.roles.label

    @property
    def bins(self) -> dict[str, list[float]]:
        """Cut points per numeric sensitive column: the job's, each replaced by the stage's own."""
        return {**{c: list(edges) for c, edges in self.ctx.roles.bins}, **self.options.bins}

    def check(self, meta: pd.DataFrame) -> None:
        if not self.sensitive:
            raise StageError(f"stage {self.ctx.name!r} needs sensitive columns: set columns.sensitive in the job")
        if self.needs_label and not self.label:
            raise StageError(f"stage {self.ctx.name!r} needs a label: set columns.label in the job")
        self.require_columns(meta, self.sensitive, what="sensitive column")
        if self.needs_label:
            self.require_columns(meta, [self.label], what="label column")
        for col in self.bins:
            if col not in self.sensitive:
                raise StageError(f"stage {self.ctx.name!r}: bins name {col!r}, which is not a sensitive column {self.sensitive}")
            if not pd.api.types.is_numeric_dtype(meta[col]):
                raise StageError(f"stage {self.ctx.name!r}: bins need a numeric column; {col!r} is {meta[col].dtype}")
        for col in getattr(self.options, "privileged", {}):
            if col not in self.sensitive:
                raise StageError(f"stage {self.ctx.name!r}: privileged names {col!r}, which is not a sensitive column {self.sensitive}")
        self.check_where(meta, getattr(self.options, "where", []))

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """A numeric sensitive column without cut points makes each of its values a group:
        right for codes (0/1), wrong for an age, whose 70 one-year groups leave most cells
        too small to weigh or resample."""
        return [
            f"stage {self.ctx.name!r}: sensitive column {c!r} is numeric ({meta[c].dtype}) and has no bins, "
            f"so each of its values is a group of its own. Cut it into groups with columns.bins "
            f"(e.g. {{{c}: [25]}}), or cast it to category if its values are codes."
            for c in self._unbinned_numeric(meta)
        ] + self._feature_warnings(meta)

    def _feature_warnings(self, meta: pd.DataFrame) -> list[str]:
        return self.index_column_warnings(meta) if self.reads_default_features() else []

    def reads_default_features(self) -> bool:
        """Whether the stage reads the job's features (its ranker's, or the ones it repairs)."""
        return False

    def _unbinned_numeric(self, meta: pd.DataFrame) -> list[str]:
        return [c for c in self.sensitive if c not in self.bins and pd.api.types.is_numeric_dtype(meta[c])
                and not pd.api.types.is_bool_dtype(meta[c])]

    # groups and counts ------------------------------------------------------------------
    def chosen_rows(self, part: pd.DataFrame) -> np.ndarray:
        """The rows a mitigation counts and changes: ``where``'s, or every row."""
        return all_hold(getattr(self.options, "where", []), part)

    def counted(self, part: pd.DataFrame) -> pd.DataFrame:
        """The partition's rows a mitigation counts (no copy without ``where``)."""
        return rows_holding(getattr(self.options, "where", []), part)

    def where_summary(self) -> dict:
        """``{"where": "split == train"}`` when the stage counted and changed only those rows."""
        where = getattr(self.options, "where", [])
        return {"where": " and ".join(c.describe() for c in where)} if where else {}

    def groups(self, part: pd.DataFrame) -> np.ndarray:
        """Each row's group: the intersection of its groups in every sensitive column."""
        return joint_text([group_text(part[c], self.bins.get(c)) for c in self.sensitive])

    def table(self, part: pd.DataFrame, extra=None) -> pd.DataFrame:
        return contingency(part, self.sensitive, self.label, self.ctx.roles.weight, self.bins, extra)

    def count(self, part: pd.DataFrame, state=None) -> pd.DataFrame:
        return self.table(part)

    def table_statistic(self) -> tuple:
        """What :meth:`table` counts, as :meth:`Shapes.fit` names a statistic: stages that
        count the same columns the same way over the same rows share one pass."""
        bins = tuple(sorted((c, tuple(edges)) for c, edges in self.bins.items()))
        return ("contingency", tuple(self.sensitive), self.label, self.ctx.roles.weight, bins)

    def check_privileged(self, table: pd.DataFrame) -> None:
        """A ``privileged`` group no counted row has (``male`` for ``Male``, ``25`` for the
        bin ``>=25``) would quietly leave the reference to the highest base rate."""
        if table.empty:
            return
        for col, value in self.options.privileged.items():
            groups = sorted({str(g) for g in table[col]} - {MISSING})
            if _text(value) not in groups:
                raise StageError(f"stage {self.ctx.name!r}: privileged {col}: {value!r} is not a group of {col!r}; "
                                 f"its groups are {groups[:20]}")

    def check_favorable(self, table: pd.DataFrame) -> None:
        """A ``favorable`` the job names is one of the labels, also in the stages whose
        weights and cells do not need it (reweigh, uniform resample): there a typo
        (``>50k``) ran without a word and only dropped the before/after figures."""
        if self.options.favorable is not None and not table.empty:
            self.favorable(table)

    def favorable(self, table: pd.DataFrame):
        try:
            return favorable_value(list(table[LABEL].unique()), self.options.favorable)
        except ValueError as e:
            raise StageError(f"stage {self.ctx.name!r}: {e}") from None

    def parity(self, table: pd.DataFrame, favorable, outcome: str = LABEL) -> dict:
        privileged = {c: _text(v) for c, v in self.options.privileged.items()}
        return _jsonable(parity(table, self.sensitive, favorable, privileged, outcome))

    # per-record draws -------------------------------------------------------------------
    def draws(self, part: pd.DataFrame, folds: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(uniform, fold) per row, functions of (seed, stage, id) alone."""
        seeds = record_seeds(self.ctx.seed, self.ctx.name, part[ID].astype(str).tolist()) if len(part) else np.zeros(0, np.uint64)
        u = (seeds >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return u, (seeds % np.uint64(max(folds, 1))).astype(np.int64)

    # the ranker -------------------------------------------------------------------------
    def ranker_columns(self, meta: pd.DataFrame) -> tuple[list[str], list[str]]:
        features = [c for c in self.ctx.roles.feature_columns(meta) if c not in self.sensitive and c != self.label]
        numeric = [c for c in features if pd.api.types.is_numeric_dtype(meta[c]) and not pd.api.types.is_bool_dtype(meta[c])]
        categorical = [c for c in features if c not in numeric] + [f"_s:{c}" for c in self.sensitive]
        return numeric, categorical

    def ranker_frame(self, part: pd.DataFrame) -> pd.DataFrame:
        numeric, categorical = self._ranker_cols
        cols = {c: part[c] for c in numeric}
        for c in categorical:
            src = c[3:] if c.startswith("_s:") else c
            cols[c] = group_text(part[src], self.bins.get(src)) if c.startswith("_s:") else part[c]
        return pd.DataFrame(cols, index=part.index)

    def _sample(self, part: pd.DataFrame, state=None) -> pd.DataFrame:
        """The ranker's rows: labelled, chosen, and of a usable weight where the rows have
        one (the weight goes along, as ``_w``, for the model's ``sample_weight``)."""
        weight = self.ctx.roles.weight
        keep = part[self.label].notna().to_numpy() & self.chosen_rows(part)
        if weight in part.columns:
            keep &= usable_weights(weight_values(part[weight]))
        part = part[keep]
        u, fold = self.draws(part, self.options.folds)
        x = self.ranker_frame(part).assign(**{LABEL: part[self.label].to_numpy(), "_u": u, "_fold": fold})
        if weight in part.columns:
            x["_w"] = weight_values(part[weight])
        return x.nsmallest(self.options.sample_rows, "_u")

    def _merge_samples(self, a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([a, b]).nsmallest(self.options.sample_rows, "_u")

    def fit_ranker(self, frame, shapes) -> OutOfFoldRanker:
        o = self.options
        self._ranker_cols = self.ranker_columns(frame._meta)
        sample = shapes.fit(frame, self._sample, self._merge_samples, label=f"{self.ctx.name}-sample")
        self.require_where_rows(len(sample))
        favorable = self.sample_favorable_ = self.favorable(pd.DataFrame({LABEL: sample[LABEL]}))
        y = np.array([v == favorable for v in sample[LABEL]], dtype=bool)
        numeric, categorical = self._ranker_cols
        try:
            weights = sample["_w"].to_numpy() if "_w" in sample.columns else None
            return OutOfFoldRanker(o.model, numeric, categorical, o.folds, self.ctx.seed).fit(sample, y, sample["_fold"].to_numpy(), weights)
        except ValueError as e:
            raise StageError(f"stage {self.ctx.name!r}: {e}") from None

    def scores(self, part: pd.DataFrame, ranker: OutOfFoldRanker, fold: np.ndarray | None = None) -> np.ndarray:
        if fold is None:
            _, fold = self.draws(part, self.options.folds)
        return ranker.score(self.ranker_frame(part), fold)

    def _pass_through(self, part: pd.DataFrame, state=None) -> pd.DataFrame:
        return with_marks(part)

    def _checked(self, kernel, *args):
        """A mitigation kernel whose ValueError (a strength too large) names the stage."""
        try:
            return kernel(*args)
        except ValueError as e:
            raise StageError(f"stage {self.ctx.name!r}: {e}") from None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else round(float(x), 6)
    return x


def _label_text(values) -> np.ndarray:
    return np.array([None if _isna(v) else _text(v) for v in values], dtype=object)


def _favorable_rows(values, favorable) -> np.ndarray:
    """Whether each row's label is the favourable one; a missing label (``pd.NA`` of a
    nullable boolean or integer column, whose ``==`` has no truth value) is not."""
    return np.array([not _isna(v) and v == favorable for v in values], dtype=bool)


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _reason_text(text: str) -> str:
    """Cell names in reject reasons may not contain '=' (it separates rule from detail)."""
    return text.replace("<=", "≤").replace(">=", "≥").replace("=", ":")


# -- fairness_audit ---------------------------------------------------------------------

class AuditOptions(FairnessOptions):
    model: ModelName | None = Field(None, description="also audit this model's out-of-fold predictions")
    sample_rows: int = Field(200_000, gt=10, description="rows the model is fitted on (a seeded uniform sample)")
    folds: int = Field(5, ge=2, le=20, description="out-of-fold predictions: one model per fold")
    by: list[str] = Field(default_factory=list, description="also audit the rows of each value of these columns apart, "
                          "e.g. [split]: the training, validation and test rows' own figures")


BY = "_by:"


@register
class FairnessAudit(FairnessStage):
    """Per group and intersection: counts, base rates, SPD and DI, into the manifest.

    With ``model``, also the demographic parity and equalized odds differences of that
    model's out-of-fold predictions. With ``by``, the same figures for each value of those
    columns (each split), from the same pass. Rows pass through unchanged.
    """

    name = "fairness_audit"
    Options = AuditOptions

    @property
    def passes_rows_through(self) -> bool:
        return True

    def reads_default_features(self) -> bool:
        return self.options.model is not None

    def build(self, frame, shapes):
        """Without a model the counts are the table a ``reweigh`` over the same rows counts
        too, so they are fitted as that statistic: built with the same Shapes (as the
        pipeline builds a job), the reweigh reads them instead of passing over the rows
        again."""
        self.ranker_ = self.fit_ranker(frame, shapes) if self.options.model else None
        statistic = self.table_statistic() if self.ranker_ is None and not self.options.by else None
        self.table_ = shapes.fit(frame, self._count_with_predictions, merge_tables, label=self.ctx.name, statistic=statistic)
        self.check_privileged(self.table_)
        return shapes.pass_through(frame, self._pass_through, label=self.ctx.name)

    def check(self, meta):
        super().check(meta)
        self.require_columns(meta, self.options.by, what="by column")

    def _count_with_predictions(self, part, state=None):
        extra = {f"{BY}{c}": _by_text(part[c]) for c in self.options.by}
        if self.ranker_ is not None:
            extra[PRED] = np.where(self.scores(part, self.ranker_) >= 0.5, "favorable", "unfavorable")
        return self.table(part, extra=extra or None)

    def summary(self) -> dict:
        by = [f"{BY}{c}" for c in self.options.by]
        t = tidy(self.table_.drop(columns=by)) if by else self.table_
        fav = self.favorable(t)
        out = {"favorable": _text(fav), **self._audit(t, fav)}
        if by:
            out["by"] = {
                c: {str(v): self._audit(tidy(rows.drop(columns=by)), fav) for v, rows in self.table_.groupby(f"{BY}{c}", sort=True)}
                for c in self.options.by
            }
        return out

    def _audit(self, t: pd.DataFrame, fav) -> dict:
        out = {"rows": int(t["n"].sum()), "data": self.parity(t, fav)}
        if self.ranker_ is not None:
            t = t.assign(**{PRED: np.where(t[PRED] == "favorable", fav, None)})
            out["model"] = {
                "name": self.options.model,
                "sample_rows": int(self.ranker_.n_samples_),
                "predictions": self.parity(t, fav, outcome=PRED),
                "equalized_odds": _jsonable(equalized_odds(t, self.sensitive, fav, PRED)),
            }
        return out


def _by_text(col: pd.Series) -> np.ndarray:
    """A ``by`` column's values as text, named as sensitive groups are (19, not 19.0); a
    missing one is a value of its own, so its rows still count in the whole."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    names = np.array([_text(v) for v in uniques] + [MISSING], dtype=object)
    return names[codes]  # the sentinel -1 picks MISSING


# -- reweigh ----------------------------------------------------------------------------


@register
class Reweigh(FairnessStage):
    """Kamiran & Calders reweighing into the weight column, times any weight already there.

    With ``strength`` λ the weights give each group the favourable rate r_g + λ·(r − r_g)
    and keep each group's total weight. With ``where``, the counts come from those rows
    alone (the training split: no test label moves a training weight).
    """

    name = "reweigh"
    Options = MitigationOptions
    writes_weights = True

    def statistic(self):
        return None if self.options.where else self.table_statistic()  # the audit counts every row

    def partial(self, part, state):
        return self.table(self.counted(part))

    def combine(self, a, b):
        return merge_tables(a, b)

    def finalize(self, table, state):
        self.table_ = table
        self.require_where_rows(int(table["n"].sum()))
        self.check_privileged(table)
        self.check_favorable(table)
        return self._checked(reweighing, table, self.sensitive, self.options.strength)

    def apply(self, part, factors):
        weight = self.ctx.roles.weight
        chosen = self.chosen_rows(part)
        factor = np.where(chosen, _cell_lookup(part, factors, self.sensitive, self.label, self.bins, "factor", 1.0), 1.0)
        if weight not in part.columns:
            part[weight] = factor
            return part
        old = weight_values(part[weight])
        part = _without_unusable_weights(part, weight, old, chosen)
        part[weight] = old * factor
        return part

    def summary(self) -> dict:
        t, factors = self.table_, self.state_
        out = {**self.where_summary(), "weight_column": self.ctx.roles.weight, "factors": [
            {**{c: str(r[c]) for c in self.sensitive}, "label": _text(r[LABEL]), "count": int(r["n"]), "factor": round(float(r["factor"]), 6)}
            for _, r in factors.iterrows()
        ]}
        try:
            fav = self.favorable(t)
        except StageError:
            return out
        after = factors.assign(w=factors["w"] * factors["factor"])
        out.update(favorable=_text(fav), before=self.parity(t, fav), after=self.parity(after, fav))
        return out

    def result_warnings(self, entry: dict) -> list[str]:
        return super().result_warnings(entry) + _one_label_groups(self.ctx.name, entry.get("summary") or {}, "weights")


def _without_unusable_weights(part, weight, old, chosen) -> pd.DataFrame:
    """Rows reweigh would give a weight no trainer takes (missing, infinite or negative
    before, so after too) are rejected with the value: the counts already left them out."""
    bad = chosen & ~usable_weights(old)
    if not bad.any():
        return part
    return reject(with_marks(part), bad, np.array([f"weight:{weight}={v}" for v in old], dtype=object))


def _cell_lookup(part, table, sensitive, label, bins, column, default) -> np.ndarray:
    """``table[column]`` for each row's (groups, label) cell, by integer codes, not by text.

    The table is laid out once over the partition's own codes, so each row costs one
    multiply-add per key and one gather; a cell the table lacks gets ``default``.
    """
    local = [group_codes(part[c], bins.get(c)) for c in sensitive]
    codes, values = factorize(part[label])
    codes[codes < 0] = len(values)  # no label: a slot of its own, never in the table
    local.append((codes, values))
    sizes = [len(names) + (k == len(sensitive)) for k, (_, names) in enumerate(local)]
    cell, found = np.zeros(len(table), dtype=np.int64), np.ones(len(table), dtype=bool)
    for col, (_, names), size in zip([*sensitive, LABEL], local, sizes):
        at = pd.Index(names, dtype=object).get_indexer(pd.Index(table[col], dtype=object))
        found &= at >= 0
        cell = cell * size + np.maximum(at, 0)
    dense = np.full(int(np.prod(sizes)), default, dtype=np.float64)
    dense[cell[found]] = table[column].to_numpy(dtype=np.float64)[found]
    row = local[0][0].copy()
    for (codes, _), size in zip(local[1:], sizes[1:]):
        row *= size
        row += codes
    return dense[row]


# -- choosing borderline or random rows per cell ----------------------------------------


class CellChooser:
    """The wiring around :mod:`dsbuild.kernels.selection` for stages that pick rows per cell.

    Pass 1 counts rows per (group, label) and histograms each cell's keys; the stage then
    says how many rows it wants from each cell; pass 2 gathers only the keys in each
    cell's boundary bucket. The result picks exactly those rows, for any partitioning.
    ``cell_of(part, state)`` names each row's cell (None: no cell); ``keys_of(part,
    state)`` gives (key in [0, 1], tie-break) per row, smallest chosen first.
    """

    def __init__(self, stage: FairnessStage, cell_of, keys_of):
        self.stage = stage
        self.cell_of = cell_of
        self.keys_of = keys_of

    def count(self, part, state=None):
        cells = self.cell_of(part, state)
        keys, _ = self.keys_of(part, state)
        present = np.array([c is not None for c in cells], dtype=bool)
        codes, names = pd.factorize(pd.Series(cells[present], dtype=object))
        hist = selection.key_histogram(codes, keys[present], len(names))
        table = self.stage.table(self.stage.counted(part))
        return table, {str(n): hist[i] for i, n in enumerate(names)}

    @staticmethod
    def merge_counts(a, b):
        hist = dict(a[1])
        for k, h in b[1].items():
            hist[k] = hist[k] + h if k in hist else h
        return merge_tables(a[0], b[0]), hist

    def plan(self, frame, shapes, wanted: dict[str, int], hists: dict[str, np.ndarray], state) -> dict:
        cells = sorted(hists)
        index = pd.Index(cells, dtype=object)
        hist = np.stack([hists[c] for c in cells]) if cells else np.zeros((0, selection.BUCKETS), np.int64)
        want = np.array([wanted.get(c, 0) for c in cells], dtype=np.int64)
        bucket, inside = selection.boundaries(hist, want)
        edge = {"index": index, "bucket": bucket, "state": state}
        candidates = shapes.fit(frame, self._boundary, selection.merge_boundary_keys, edge, label=f"{self.stage.ctx.name}-edge")
        key_limit, tie_limit = selection.thresholds(candidates, inside)
        return {**edge, "key": key_limit, "tie": tie_limit}

    def _boundary(self, part, edge):
        codes, keys, ties = self._coded(part, edge)
        return selection.boundary_keys(codes, keys, ties, edge["bucket"])

    def _coded(self, part, plan):
        cells = self.cell_of(part, plan["state"])
        codes = plan["index"].get_indexer(pd.Index(np.where([c is None for c in cells], "\x00", cells), dtype=object))
        keys, ties = self.keys_of(part, plan["state"])
        return codes, keys, ties

    def chosen(self, part, plan) -> tuple[np.ndarray, np.ndarray]:
        """(cell code per row, whether the row is among its cell's wanted rows)."""
        codes, keys, ties = self._coded(part, plan)
        return codes, selection.chosen(codes, keys, ties, plan["bucket"], plan["key"], plan["tie"])


def _borderline_keys(score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Nearest the boundary first: positives with the lowest score, negatives the highest."""
    return np.where(positive, score, 1.0 - score)


# -- resample ---------------------------------------------------------------------------


class ResampleOptions(RankerOptions):
    method: Literal["uniform", "preferential"] = Field(
        "uniform", description="uniform: random rows; preferential: borderline rows first, by the ranker's score"
    )


@register
class Resample(FairnessStage):
    """Kamiran & Calders sampling to the cell sizes that make group and label independent.

    An oversized cell loses rows (to rejects, reason ``resample:<group>/<label>``; a part
    holding ``/`` is quoted, ``"a/b"/c``), an
    undersized one gains copies (ids ``parent#rs<k>``): every row ``⌊d / n⌋`` copies and
    ``d mod n`` rows one more. ``uniform`` picks rows at random (seeded per record);
    ``preferential`` picks the rows nearest the decision boundary first: positives with
    the lowest score, negatives with the highest.
    """

    name = "resample"
    adds_rows = True
    Options = ResampleOptions

    def reads_default_features(self) -> bool:
        return self.options.method == "preferential"

    def build(self, frame, shapes):
        self.ranker_ = None
        state = None
        if self.options.method == "preferential":
            self.ranker_ = self.fit_ranker(frame, shapes)
            state = {"favorable": self.sample_favorable_, "ranker": self.ranker_}
        chooser = CellChooser(self, self._cell, self._keys)
        self.table_, hists = shapes.fit(frame, chooser.count, chooser.merge_counts, state, label=self.ctx.name)
        self.check_privileged(self.table_)
        self.check_favorable(self.table_)
        self.require_where_rows(int(self.table_["n"].sum()))
        targets = self._checked(resample_targets, self.table_, self.sensitive, self.options.strength)
        targets["cell"] = cell_text(_joint(targets, self.sensitive), np.array([_text(y) for y in targets[LABEL]], dtype=object))
        self.targets_ = targets
        wanted, action, base = {}, {}, {}
        for cell, n, target in zip(targets["cell"], targets["n"], targets["target"]):
            if n > target:
                wanted[cell], action[cell] = int(n - target), -1
            elif n < target:
                wanted[cell], action[cell], base[cell] = int((target - n) % n), 1, int((target - n) // n)
        plan = chooser.plan(frame, shapes, wanted, hists, state)
        plan["action"] = np.array([action.get(c, 0) for c in plan["index"]], dtype=np.int64)
        plan["base"] = np.array([base.get(c, 0) for c in plan["index"]], dtype=np.int64)
        self.state_ = plan
        self._chooser = chooser
        return shapes.map(frame, self._apply, shapes.broadcast(plan), label=self.ctx.name)

    def _cell(self, part, state) -> np.ndarray:
        """Each row's (group, label) cell; None for a row without a label or outside ``where``."""
        labels = _label_text(part[self.label].to_numpy())
        cells = cell_text(self.groups(part), labels)
        cells[pd.isna(labels) | ~self.chosen_rows(part)] = None
        return cells

    def _keys(self, part, state) -> tuple[np.ndarray, np.ndarray]:
        u, fold = self.draws(part, self.options.folds)
        if state is None:
            return u, u
        positive = _favorable_rows(part[self.label], state["favorable"])
        return _borderline_keys(self.scores(part, state["ranker"], fold), positive), u

    def _apply(self, part, plan):
        part = with_marks(part)
        if part.empty or not len(plan["index"]):  # no cells: no counted row has a label
            return part
        codes, picked = self._chooser.chosen(part, plan)
        at = np.maximum(codes, 0)
        action = np.where(codes >= 0, plan["action"][at], 0)
        remove = (action < 0) & picked
        copies = np.where(action > 0, plan["base"][at] + picked, 0)
        cells = np.asarray(plan["index"], dtype=object)
        reasons = np.array([f"resample:{_reason_text(cells[c])}" if r else None for c, r in zip(at, remove)], dtype=object)
        part = reject(part, remove, reasons)
        if copies.sum() == 0:
            return part
        rows = np.repeat(np.arange(len(part)), copies)
        k = np.concatenate([np.arange(1, c + 1) for c in copies if c > 0])
        added = part.iloc[rows].copy()
        kind = copy_kind(self.ctx.name, "rs")
        added[ID] = [child_id(p, kind, int(j)) for p, j in zip(added[ID].astype(str), k)]
        added[ADDED] = True
        added[REJECT] = None
        return pd.concat([part, added])

    def summary(self) -> dict:
        t = self.targets_
        out = {
            **self.where_summary(),
            "method": self.options.method,
            "cells": [
                {"cell": c, "count": int(n), "target": int(tg), "expected": round(float(e), 3)}
                for c, n, tg, e in zip(t["cell"], t["n"], t["target"], t["expected"])
            ],
        }
        try:
            fav = self.favorable(self.table_)
        except StageError:
            return out
        counts = self.table_.assign(w=self.table_["n"].astype(float))
        after = t.assign(n=t["target"], w=t["target"].astype(float))[[*self.sensitive, LABEL, "n", "w"]]
        out.update(favorable=_text(fav), before=self.parity(counts, fav), after=self.parity(after, fav))
        return out

    def result_warnings(self, entry: dict) -> list[str]:
        return super().result_warnings(entry) + _one_label_groups(self.ctx.name, entry.get("summary") or {}, "samples")


def _one_label_groups(stage: str, summary: dict, means: str) -> list[str]:
    """Groups whose rows all carry one label: weights (or samples) per group and label move
    a group's favourable rate only between its own labels, so such a group keeps its rate,
    0 or 1, whatever the strength, and the view keeps its disparity without a word (German
    credit by personal_status × housing: disparate impact 0.17 → 0.70, not 1)."""
    notes = []
    for view, v in (summary.get("after") or {}).items():
        groups = v.get("groups") or {}
        stuck = {g: x["base_rate"] for g, x in groups.items() if x.get("base_rate") in (0, 1)}
        if not stuck or len(stuck) == len(groups):
            continue
        named = ", ".join(f"{g} ({'all' if rate == 1 else 'none'} favourable)" for g, rate in list(stuck.items())[:5])
        more = f" and {len(stuck) - 5} more" if len(stuck) > 5 else ""
        di = v.get("di")
        stays = f"at {di:.3g}" if isinstance(di, (int, float)) else "as it was"
        notes.append(f"stage {stage!r}: by {view}, {len(stuck)} group(s) hold rows of one label only: {named}{more}; {means} "
                     f"per group and label cannot move their favourable rate, so the disparate impact stays {stays}; "
                     "bin or merge such groups, or give them rows of both labels")
    return notes


def _joint(table: pd.DataFrame, sensitive) -> np.ndarray:
    return joint_text([table[c].to_numpy(dtype=object) for c in sensitive])


# -- massage ----------------------------------------------------------------------------


@register
class Massage(FairnessStage):
    """Relabel the rows nearest the decision boundary until every group has the overall
    favourable rate (Kamiran & Calders' massaging; M = (|D|·|F+| − |F|·|D+|) / n for two
    groups): promote a deprived group's negatives with the highest scores, demote a
    favoured group's positives with the lowest. The label must have two values.
    """

    name = "massage"
    Options = RankerOptions

    def reads_default_features(self) -> bool:
        return True

    def build(self, frame, shapes):
        self.ranker_ = self.fit_ranker(frame, shapes)
        state = {"favorable": self.sample_favorable_, "ranker": self.ranker_}
        chooser = CellChooser(self, self._cell, self._keys)
        self.table_, hists = shapes.fit(frame, chooser.count, chooser.merge_counts, state, label=self.ctx.name)
        self.check_privileged(self.table_)
        fav = self.favorable(self.table_)
        labels = list(self.table_[LABEL].unique())
        others = [v for v in labels if v != fav]
        if len(others) != 1:
            raise StageError(f"stage {self.ctx.name!r}: massaging needs a label with two values, got {sorted(map(str, labels))}")
        state["unfavorable"] = others[0]
        changes = self._checked(massage_changes, self.table_, self.sensitive, fav, self.options.strength)
        changes["group"] = _joint(changes, self.sensitive)
        self.changes_ = changes
        wanted = {}
        for group, change in zip(changes["group"], changes["change"]):
            if change > 0:
                wanted[f"{group}/-"] = int(change)
            elif change < 0:
                wanted[f"{group}/+"] = int(-change)
        self.state_ = chooser.plan(frame, shapes, wanted, hists, state)
        self._chooser = chooser
        return shapes.map(frame, self._apply, shapes.broadcast(self.state_), label=self.ctx.name)

    def _positive(self, part, fav) -> np.ndarray:
        return _favorable_rows(part[self.label], fav)

    def _cell(self, part, state) -> np.ndarray:
        groups = self.groups(part).astype(str)
        sign = np.where(self._positive(part, state["favorable"]), "/+", "/-")
        cells = np.char.add(groups, sign).astype(object)
        cells[part[self.label].isna().to_numpy() | ~self.chosen_rows(part)] = None
        return cells

    def _keys(self, part, state) -> tuple[np.ndarray, np.ndarray]:
        u, fold = self.draws(part, self.options.folds)
        positive = self._positive(part, state["favorable"])
        return _borderline_keys(self.scores(part, state["ranker"], fold), positive), u

    def _apply(self, part, plan):
        part = with_marks(part)
        state = plan["state"]
        promote = np.zeros(len(part), dtype=bool)
        demote = np.zeros(len(part), dtype=bool)
        if len(part):
            _, picked = self._chooser.chosen(part, plan)
            positive = self._positive(part, state["favorable"])
            promote, demote = picked & ~positive, picked & positive
            labels = part[self.label].to_numpy(dtype=object, copy=True)
            labels[promote] = state["favorable"]
            labels[demote] = state["unfavorable"]
            part[self.label] = as_dtype(pd.Series(labels, index=part.index), part[self.label].dtype)
        part[f"{METRIC}promoted"] = promote.astype(np.int64)
        part[f"{METRIC}demoted"] = demote.astype(np.int64)
        return part

    def summary(self) -> dict:
        fav = self.state_["state"]["favorable"]
        c = self.changes_
        before = self.table_.assign(w=self.table_["n"].astype(float))
        # each group's flips as cell counts: the cell a flipped row lands in may have had no row
        # (a group of one row, all positive), so the flips are added as cells of their own
        keys = [*self.sensitive, LABEL]
        moved = c[c["change"] != 0]
        flips = pd.concat([moved[self.sensitive].assign(**{LABEL: label, "n": sign * moved["change"]})
                           for label, sign in ((fav, 1), (self.state_["state"]["unfavorable"], -1))], ignore_index=True)
        after = pd.concat([before[[*keys, "n"]], flips], ignore_index=True)
        after = after.groupby(keys, sort=True, dropna=False)["n"].sum().reset_index()
        after = after[after["n"] > 0].astype({"n": np.int64}).reset_index(drop=True)
        after["w"] = after["n"].astype(float)
        return {
            **self.where_summary(),
            "favorable": _text(fav),
            "model": self.options.model,
            "changes": [{"group": g, "count": int(n), "positives": int(p), "change": int(ch)}
                        for g, n, p, ch in zip(c["group"], c["n"], c["positives"], c["change"])],
            "before": self.parity(before, fav),
            "after": self.parity(after, fav),
        }


# -- correlation_remover ----------------------------------------------------------------


class FeatureRepairOptions(GroupOptions):  # no label: favorable and privileged would do nothing
    columns: list[str] | None = Field(None, description="features to change (default: the job's numeric features)")
    fit_on: list[Condition] = Field(
        default_factory=list, description="rows to fit on, e.g. [{column: split, op: ==, value: train}]: every row is "
        "changed, as a scaler fitted on the training split transforms the test split")


class CorrelationOptions(FeatureRepairOptions):
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="as in fairlearn: 1 removes all correlation, 0 none")


class _FeatureRepair(FairnessStage):
    """Stages that change the numeric features (not the sensitive columns or the label),
    fitted on the rows ``fit_on`` names (default all) and applied to every row."""

    needs_label = False

    def reads_default_features(self) -> bool:
        return self.options.columns is None

    def features(self, meta) -> list[str]:
        cols = self.options.columns if self.options.columns is not None else self.ctx.roles.feature_columns(meta)
        return [c for c in cols if c not in self.sensitive and c != self.label]

    def fit_rows(self, part: pd.DataFrame) -> pd.DataFrame:
        return rows_holding(self.options.fit_on, part)

    def check(self, meta):
        super().check(meta)
        self.check_where(meta, self.options.fit_on)
        # a named column the stage would leave out, or none at all, changed nothing (or, for
        # columns: [], every feature) without a word
        for c in self.options.columns or []:
            if c in self.sensitive or c == self.label:
                role = "a sensitive column" if c in self.sensitive else "the label"
                raise StageError(f"stage {self.ctx.name!r}: columns names {c!r}, {role}; the stage changes features, "
                                 "never the groups or the label")
        if not self.features(meta):
            raise StageError(f"stage {self.ctx.name!r}: no features to change; name numeric columns in its columns "
                             "(or the job's columns.features)")
        self.require_columns(meta, self.features(meta), what="feature column")
        bad = [c for c in self.features(meta) if not pd.api.types.is_numeric_dtype(meta[c])]
        if bad:
            raise StageError(f"stage {self.ctx.name!r}: features must be numeric; {bad[0]!r} is {meta[bad[0]].dtype}")


@register
class CorrelationRemoverStage(_FeatureRepair):
    """fairlearn's CorrelationRemover, fitted from moments merged across partitions.

    Categorical (or binned) sensitive columns enter as indicators of their groups, one
    level left out; numeric ones as they are. The sensitive columns stay in the data
    (later stages and the audit still need them); only the features change. Rows with a
    missing or infinite feature, or a missing sensitive value, are left as they are and
    not used to fit.
    """

    name = "correlation_remover"
    Options = CorrelationOptions
    needs_label = False

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        return self._feature_warnings(meta)  # a numeric sensitive column without bins enters as a number, as in fairlearn

    def _design(self, part, levels: dict[str, list[str]] | None):
        """(levels, matrix [indicators, numeric sensitive, features], complete-row mask),
        written into one preallocated matrix: the features are copied once. A row missing
        a group is incomplete, as one missing a number is: ``<NA>`` is no level to fit."""
        numeric_s = self._unbinned_numeric(part)
        cats = [c for c in self.sensitive if c not in numeric_s]
        coded = {c: group_codes(part[c], self.bins.get(c)) for c in cats}
        if levels is None:
            levels = {c: sorted({names[i] for i in np.unique(codes)} - {MISSING}) for c, (codes, names) in coded.items()}
        no_group = np.zeros(len(part), dtype=bool)
        for codes, names in coded.values():
            no_group |= codes == len(names) - 1  # group_codes names the missing last
        numeric = [*numeric_s, *self.features(part)]
        width = sum(len(levels[c]) for c in cats) + len(numeric)
        x = np.zeros((len(part), width), dtype=np.float64)
        rows, at = np.arange(len(part)), 0
        for c in cats:
            codes, names = coded[c]
            column = pd.Index(levels[c], dtype=object).get_indexer(pd.Index(names, dtype=object))[codes]
            x[rows[column >= 0], at + column[column >= 0]] = 1.0
            at += len(levels[c])
        if numeric:
            x[:, at:] = part[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        return levels, x, np.isfinite(x[:, at:]).all(axis=1) & ~no_group  # an infinite value is as unusable as a missing one

    def partial(self, part, state):
        levels, x, ok = self._design(self.fit_rows(part), None)
        return levels, Moments.of(x if ok.all() else x[ok]), self._changed_groups(part)

    def _changed_groups(self, part) -> dict[str, set[str]]:
        """The groups of the rows the stage changes (complete ones), which the rows
        ``fit_on`` names may lack; without ``fit_on`` every such row is fitted."""
        if not self.options.fit_on:
            return {}
        numeric_s = self._unbinned_numeric(part)
        coded = {c: group_codes(part[c], self.bins.get(c)) for c in self.sensitive if c not in numeric_s}
        complete = np.ones(len(part), dtype=bool)
        for c in [*numeric_s, *self.features(part)]:  # a column at a time: no second copy of the features
            complete &= np.isfinite(part[c].to_numpy(dtype=np.float64, na_value=np.nan))
        for codes, names in coded.values():
            complete &= codes != len(names) - 1
        return {c: {names[i] for i in np.unique(codes[complete])} for c, (codes, names) in coded.items()}

    def combine(self, a, b):
        levels = {c: sorted(set(a[0][c]) | set(b[0][c])) for c in a[0]}
        changed = {c: a[2].get(c, set()) | b[2].get(c, set()) for c in {*a[2], *b[2]}}
        return levels, _pad(a[:2], levels).merge(_pad(b[:2], levels)), changed

    def finalize(self, stats, state):
        """Leave one level of each categorical column out, so the indicators have full rank."""
        levels, moments, changed = stats
        self.require_where_rows(int(moments.n), "fit_on")
        self._require_fitted_groups(levels, moments, changed)
        kept = {c: lv[:-1] for c, lv in levels.items()}
        index, at = [], 0
        for lv in levels.values():
            index += list(range(at, at + len(lv) - 1))
            at += len(lv)
        index += list(range(at, moments.mean.shape[0]))
        sub = Moments(moments.n, moments.mean[index], moments.cross[np.ix_(index, index)])
        self.left_out_ = {c: lv[-1] for c, lv in levels.items() if lv}
        self.moments_ = sub
        self.n_sensitive_ = sum(len(v) for v in kept.values()) + len(self._numeric_s)
        return {"levels": kept, "remover": CorrelationRemover(self.options.alpha).fit(sub, self.n_sensitive_)}

    def _require_fitted_groups(self, levels, moments, changed) -> None:
        """A group no fitted row has gets no indicator of its own: its rows were shifted
        as the left-out level's, another group's, without a word. fairlearn, given the
        indicators of every row, fits it a zero coefficient, which is no better: nothing
        was learnt about it, so it is refused."""
        at = 0
        for c, lv in levels.items():
            fitted = {name for name, mean in zip(lv, moments.mean[at:at + len(lv)]) if mean > 0}
            at += len(lv)
            missing = sorted(changed.get(c, set()) - fitted)
            if missing:
                raise StageError(
                    f"stage {self.ctx.name!r}: {c} group {missing[0]!r} is in none of the rows fit_on "
                    f"({self._where_text('fit_on')}) names{f' (nor {missing[1:]})' if len(missing) > 1 else ''}, "
                    f"so the fit learnt nothing about it and its rows would be shifted as another group's; "
                    f"fit on rows that have it, or merge it into a group they have first")

    def build(self, frame, shapes):
        self._numeric_s = self._unbinned_numeric(frame._meta)
        self._features = self.features(frame._meta)
        return super().build(frame, shapes)

    def apply(self, part, state):
        if part.empty:
            return part.astype({c: "float64" for c in self.features(part)})
        _, x, ok = self._design(part, state["levels"])
        k = self.n_sensitive_
        if ok.all():
            out = state["remover"].transform(x[:, :k], x[:, k:])
        else:
            out = x[:, k:].copy()
            out[ok] = state["remover"].transform(x[ok, :k], x[ok, k:])
        part[self.features(part)] = out
        return part

    def summary(self) -> dict:
        m, k = self.moments_, self.n_sensitive_
        sd = np.sqrt(np.clip(np.diag(m.cross), 0, None))
        sd[sd == 0] = 1.0
        corr = m.cross[:k, k:] / np.outer(sd[:k], sd[k:])
        feats = self._features
        remover = self.state_["remover"]
        after = _correlation_after(m, k, remover.beta_, self.options.alpha, sd[:k])
        return {
            "alpha": self.options.alpha,
            "rows_fitted": int(m.n),
            "sensitive_levels_left_out": self.left_out_,
            "max_abs_correlation_before": {f: round(float(np.abs(corr[:, i]).max()), 6) if k else 0.0 for i, f in enumerate(feats)},
            "max_abs_correlation_after": {f: round(float(np.abs(after[:, i]).max()), 6) if k else 0.0 for i, f in enumerate(feats)},
            "beta": np.round(remover.beta_, 8).tolist(),
        }


def _correlation_after(m: Moments, k: int, beta: np.ndarray, alpha: float, sd_sensitive: np.ndarray) -> np.ndarray:
    """The fitted rows' correlations of the sensitive columns with the changed features.

    The output ``z − α·S_c β`` keeps (1 − α) of each covariance, and its spread shrinks
    too: with ``C_ss β = C_sz``, its cross product is ``C_zz − (2α − α²)·β' C_ss β``; so
    the correlation is not (1 − α) of the one before, as the manifest had said."""
    explained = np.einsum("ij,ik,kj->j", beta, m.cross[:k, :k], beta)
    spread = np.sqrt(np.clip(np.diag(m.cross)[k:] - (2 * alpha - alpha * alpha) * explained, 0, None))
    spread[spread == 0] = 1.0
    return (1 - alpha) * m.cross[:k, k:] / np.outer(sd_sensitive, spread)


def _in_kind(values: np.ndarray, column: pd.Series):
    """Repaired values in an integer column's own type, rounded, as oversample's new rows
    are, and as AIF360 keeps a column's type; other columns as float64. The values the
    counts hold exactly are whole already: only a histogram's are rounded. An integer
    feature had come out as float64."""
    if not pd.api.types.is_integer_dtype(column.dtype):
        return values
    return as_dtype(pd.Series(np.round(values), index=column.index), column.dtype)


def _pad(stat, levels: dict[str, list[str]]) -> Moments:
    """Moments re-indexed to the merged levels; an unseen level is a column of zeros."""
    own, m = stat
    if own == levels:
        return m
    index, at = [], 0
    size = sum(len(v) for v in levels.values())
    for c, lv in levels.items():
        pos = {name: i for i, name in enumerate(lv)}
        index += [at + pos[name] for name in own[c]]
        at += len(lv)
    rest = m.mean.shape[0] - sum(len(v) for v in own.values())
    index += list(range(size, size + rest))
    total = size + rest
    mean = np.zeros(total)
    cross = np.zeros((total, total))
    mean[index] = m.mean
    cross[np.ix_(index, index)] = m.cross
    return Moments(m.n, mean, cross)


# -- disparate_impact_remover -----------------------------------------------------------


class RepairOptions(FeatureRepairOptions):
    repair_level: float = Field(1.0, ge=0.0, le=1.0, description="0 leaves features as they are, 1 repairs fully; in between, "
                                "that part of the way in rank among the feature's values, as AIF360 (linearly past max_distinct)")
    max_distinct: int = Field(MAX_DISTINCT, gt=0, description="exact quantiles while a feature has at most this many distinct values")
    histogram_bins: int = Field(BINS, gt=1, description="else a histogram of this many bins: quantile error ≤ (max − min) / bins")


@register
class DisparateImpactRemover(_FeatureRepair):
    """Feldman et al.'s repair: each feature value moves to its quantile of the median of
    the groups' distributions, so the feature no longer tells groups apart while order
    within a group is kept. Tied values are spread over their quantile range by a
    per-record uniform, so a heavily tied value (40 hours a week) is repaired as a range.
    """

    name = "disparate_impact_remover"
    Options = RepairOptions
    needs_label = False

    def _values(self, part, c) -> np.ndarray:
        return pd.to_numeric(part[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def _scan(self, part, state=None):
        fitted = self.fit_rows(part)
        g = self.groups(fitted)
        dists = {c: GroupDistribution.scan(self._values(fitted, c), g, self.options.max_distinct) for c in self.features(part)}
        return dists, self._changed_groups(part)

    def _changed_groups(self, part) -> dict[str, set[str]]:
        """Per feature, the groups of the rows the stage changes (a finite value, every
        group known), which the rows ``fit_on`` names may lack."""
        if not self.options.fit_on:
            return {}
        g = self.groups(part)
        known = np.array([MISSING not in k.split(GROUP_JOIN) for k in g], dtype=bool)
        return {c: set(g[known & np.isfinite(self._values(part, c))]) for c in self.features(part)}

    def _merge_scans(self, a, b):
        return self._merge(a[0], b[0]), {c: a[1].get(c, set()) | b[1].get(c, set()) for c in {*a[1], *b[1]}}

    def _merge(self, a, b):
        return {c: a[c].merge(b[c], self.options.max_distinct) for c in a}

    def _histogram(self, part, edges):
        part = self.fit_rows(part)
        g = self.groups(part)
        return {c: GroupDistribution.histogram(self._values(part, c), g, e) for c, e in edges.items()}

    def build(self, frame, shapes):
        self._features = self.features(frame._meta)
        dists, changed = shapes.fit(frame, self._scan, self._merge_scans, label=f"{self.ctx.name}-scan")
        # a feature past max_distinct has no groups until its histogram pass: its range says it saw values
        self.require_where_rows(int(any(d.groups() or d.lo <= d.hi for d in dists.values())), "fit_on")
        edges = {c: d.histogram_edges(self.options.histogram_bins) for c, d in dists.items() if d.needs_histogram}
        if edges:
            hists = shapes.fit(frame, self._histogram, self._merge, edges, label=f"{self.ctx.name}-hist")
            for c, h in hists.items():
                dists[c] = GroupDistribution(dists[c].lo, dists[c].hi, None, h.edges, h.hist)
        self._require_fitted_groups(dists, changed)
        self.state_ = dists
        return shapes.map(frame, self._apply, shapes.broadcast(dists), label=self.ctx.name)

    def _require_fitted_groups(self, dists, changed) -> None:
        """A group none of the fitted rows has has no quantile function to repair from:
        its rows passed unrepaired, without a word."""
        for c, d in dists.items():
            missing = sorted(changed.get(c, set()) - set(d.groups()))
            if missing:
                raise StageError(
                    f"stage {self.ctx.name!r}: group {missing[0]!r} has {c} values in none of the rows fit_on "
                    f"({self._where_text('fit_on')}) names{f' (nor {missing[1:]})' if len(missing) > 1 else ''}, "
                    f"so there is no distribution to repair its rows from; fit on rows that have it, "
                    f"or merge it into a group they have first")

    def _apply(self, part, dists):
        part = with_marks(part)
        if part.empty:
            return part.astype({c: "float64" for c in dists if not pd.api.types.is_integer_dtype(part[c].dtype)})
        g = self.groups(part)
        spread, _ = self.draws(part)
        for c, d in dists.items():
            known = [k for k in d.groups() if MISSING not in k.split(GROUP_JOIN)]
            repaired = repair(d, self._values(part, c), g, self.options.repair_level, only=known, spread=spread)
            part[c] = _in_kind(repaired, part[c])
        return part

    def summary(self) -> dict:
        return {
            "repair_level": self.options.repair_level,
            "features": {
                c: {"exact": d.exact is not None, "quantile_error": round(d.error, 6), "groups": d.groups()}
                for c, d in self.state_.items()
            },
        }
