"""What every fairness stage shares: where it must stand in a job (after the cleaning stages),
the options that make groups of the sensitive columns, and :class:`FairnessStage`'s wiring:
roles, groups, counts, per-record draws and the ranker.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dsbuild.kernels.fairness import (
    LABEL,
    MISSING,
    _text,
    contingency,
    favorable_value,
    group_text,
    joint_text,
    parity,
    usable_weights,
    weight_values,
)
from dsbuild.kernels.ranker import MODELS, OutOfFoldRanker
from dsbuild.records import ID, record_seeds
from dsbuild.stages.base import (
    FitApplyStage,
    StageError,
    StageOptions,
    with_marks,
)
from dsbuild.stages.conditions import Condition, all_hold, rows_holding

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]


CLEANING_FIRST = ("exact_dedup", "sanitize", "label_issues")  # label_issues drops rows or changes their labels


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
        summary = entry.get("summary") or {}
        return notes + _small_group_notes(self.ctx.name, summary.get("after") or summary.get("data") or {})

    def order_warnings(self, earlier, later) -> list[str]:
        """Weights, labels and group counts computed before duplicates and poisoned rows
        are removed describe rows that will not be in the output: duplicates inflate
        their groups, poisoned rows pull labels and borderline scores (MLClean's finding
        that cleaning steps depend on each other). An audit changes no row: before the
        cleaning it describes the rows as they came, the "before" of a before-and-after."""
        cleaning = [] if self.passes_rows_through else [s for s in later if _cleans(s.name)]
        return [_order_message(self.ctx.name, s.ctx.name) for s in cleaning] + super().order_warnings(earlier, later)

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


MIN_GROUP_ROWS = 30  # fewer rows than this in a group that decides a view's disparate impact is said


def _small_group_notes(stage: str, views: dict) -> list[str]:
    """A view's disparate impact is its lowest group's rate over the reference's (the
    highest); where either group is a handful of rows the headline is that handful's luck,
    which the figure hides: German credit by personal status × age, after massage, 0.68,
    because one row under 25 of status A91 is favourable (rate 1) and is the reference."""
    notes = []
    for view, v in views.items():
        groups, reference = v.get("groups") or {}, v.get("reference")
        others = {g: x["di"] for g, x in groups.items() if g != reference and isinstance(x.get("di"), (int, float))}
        if reference not in groups or not others:
            continue
        small = [g for g in dict.fromkeys([min(others, key=others.get), reference]) if groups[g]["count"] < MIN_GROUP_ROWS]
        if small:
            named = " and ".join(f"{g!r} ({groups[g]['count']} row(s), favourable rate {groups[g]['base_rate']:.3g})" for g in small)
            notes.append(f"stage {stage!r}: by {view}, the disparate impact {v['di']:.3g} rests on {named}: a rate of fewer "
                         f"than {MIN_GROUP_ROWS} rows is moved by a row or two; read the groups' counts in the summary, or bin "
                         "or merge small groups")
    return notes


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
