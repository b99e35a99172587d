"""``impute``: missing values filled with a column's (or group's) median, mean, mode or a constant."""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.dtypes import holding, one_value_per_text
from dsbuild.kernels.robust import Distribution, ValueCounts
from dsbuild.stages.base import FitApplyStage, StageError, StageOptions, register
from dsbuild.stages.clean.cells import (
    _blank_as_missing,
    _earlier_marks,
    _is_time,
    _jsonable,
    _leaves_the_id,
    _may_hold_missing,
)
from dsbuild.stages.clean.groups import _groups, _merge_dicts
from dsbuild.stages.conditions import is_number_column

Strategy = Literal["median", "mean", "mode", "constant"]


class ImputeRule(StageOptions):
    strategy: Strategy = "median"
    by: list[str] | None = Field(None, description="fill from the row's group (e.g. [sex]); default: the stage's `by`")
    value: Any = Field(None, description="the fill value for strategy constant")

    @model_validator(mode="after")
    def _constant_has_value(self):
        if (self.strategy == "constant") != (self.value is not None):
            raise ValueError("strategy constant needs a value, and only it takes one")
        return self


class ImputeOptions(StageOptions):
    columns: dict[str, Strategy | ImputeRule] = Field(..., description="column -> median | mean | mode | {strategy, by, value}")
    by: list[str] = Field(default_factory=list, description="group columns for every rule that names none")
    max_distinct: int = Field(50_000, gt=0, description="exact medians up to this many distinct values, a sketch beyond")
    alpha: float = Field(0.005, gt=0, lt=1, description="the sketch's relative error bound")

    def rules(self) -> dict[str, ImputeRule]:
        out = {}
        for column, rule in self.columns.items():
            rule = ImputeRule(strategy=rule) if isinstance(rule, str) else rule
            out[column] = rule if rule.by is not None else rule.model_copy(update={"by": list(self.by)})
        return out


MODE_MAX_DISTINCT = 1_000_000  # distinct values a mode counts; ~100 MB of text counts


@register
class Impute(FitApplyStage):
    """Fill missing values with the median, mean or mode of the column, or of the row's group.

    Statistics are mergeable value counts (exact; a median equals numpy's) and become a
    log-bucket sketch with relative error ``alpha`` when a column has more than
    ``max_distinct`` values; the summary says which. A mode is refused over more than
    ``MODE_MAX_DISTINCT`` distinct values (counted exactly, they would all meet in one task). A group never seen with a value
    falls back to the whole column. A column keeps its type: a mode fills with a value the
    column holds, a mean or median of an integer column is rounded, and one of timestamps or
    durations is a time in the column's unit and zone (counted as whole numbers of its unit).
    Adds ``<col>_imputed`` (bool); counter ``imputed:<col>``.
    """

    name = "impute"
    Options = ImputeOptions

    def check(self, meta):
        rules = self.options.rules()
        self.require_columns(meta, rules)
        _leaves_the_id(self, rules, "fill")
        self.require_columns(meta, sorted({c for r in rules.values() for c in r.by}), what="group column (by)")
        for column, rule in rules.items():
            if rule.strategy == "constant":
                self._check_constant(column, rule.value, meta[column].dtype)
            if rule.strategy in ("median", "mean") and not (is_number_column(meta[column].dtype) or _is_time(meta[column].dtype)):
                raise StageError(
                    f"stage {self.ctx.name!r}: {rule.strategy} of {column!r} needs a numeric column or times, "
                    f"it is {meta[column].dtype} (use mode)"
                )
        self.times_ = {c: meta[c].dtype for c, r in rules.items() if r.strategy in ("median", "mean") and _is_time(meta[c].dtype)}

    def _check_constant(self, column: str, value, dtype) -> None:
        """A fill the column cannot hold failed the run in a worker (could not convert string
        to float: 'unknown'), and 2.5 in an integer column was rounded to 2 without a word."""
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
        if is_number_column(dtype) and not pd.api.types.is_bool_dtype(dtype):
            if not number:
                problem = "a number"
            elif pd.api.types.is_integer_dtype(dtype) and not float(value).is_integer():
                problem = "a whole number"
            else:
                return
        elif isinstance(dtype, pd.StringDtype) and not isinstance(value, str):
            problem = "text (quote it)"
        else:
            return
        raise StageError(f"stage {self.ctx.name!r}: constant {value!r} for {column!r} needs to be {problem}: "
                         f"the column is {dtype}")

    def partial(self, part, state):
        o = self.options
        out = {}
        for column, rule in o.rules().items():
            if rule.strategy == "constant":
                continue
            codes, names = _groups(part, rule.by)
            if rule.strategy == "mode":
                values = _blank_as_missing(part[column])  # a blank cell is missing, not the commonest value
                found = ValueCounts.by_group(codes, values)
                if not is_number_column(part[column].dtype):
                    found = _Mode.by_group(found, values)
            else:
                found = Distribution.by_group(codes, _time_as_number(part[column]), o.max_distinct, o.alpha)
            out[column] = {names[g]: d for g, d in found.items()}
        return out

    def combine(self, a, b):
        merged = _merge_dicts(a, b, lambda x, y: _merge_dicts(x, y, lambda p, q: p.merge(q)))
        for column, rule in self.options.rules().items():
            if rule.strategy == "mode":
                self._check_mode_counts(column, merged.get(column, {}))
        return merged

    def _check_mode_counts(self, column: str, per_group: dict) -> None:
        """A mode counts every distinct value exactly, and the counts meet in one task: on
        a column whose values rarely repeat (amounts, ids, free text) that is the column
        itself, and its mode an arbitrary value. Checked as counts merge, so memory stays
        bounded, and on the total, so the answer does not depend on the partitioning."""
        for group, counts in per_group.items():
            distinct = (counts.counts if isinstance(counts, _Mode) else counts).distinct
            if distinct > MODE_MAX_DISTINCT:
                where = "" if group == "*" else f" in group {group.replace(chr(31), ', ')!r}"
                raise StageError(f"stage {self.ctx.name!r}: the mode of {column!r}{where} is over more than "
                                 f"{MODE_MAX_DISTINCT:,} distinct values, which would all be held to count them, and "
                                 "its most common value is nearly arbitrary there: use median or mean for a number, "
                                 "or a constant")

    def finalize(self, stats, state):
        fills = {}
        for column, rule in self.options.rules().items():
            if rule.strategy == "mode":  # also here: one partition is never combined
                self._check_mode_counts(column, stats.get(column, {}))
            if rule.strategy == "constant":
                fills[column] = {"global": rule.value, "groups": {}, "error": "exact"}
                continue
            per_group = stats.get(column, {})
            whole = None
            for g in sorted(per_group):
                whole = per_group[g] if whole is None else whole.merge(per_group[g])
            pick = {"median": lambda d: d.median(), "mean": lambda d: d.mean(), "mode": lambda d: d.mode()}[rule.strategy]
            if column in getattr(self, "times_", {}):
                pick = functools.partial(_picked_time, pick, self.times_[column])
            exact = all(getattr(d, "exact", True) for d in per_group.values()) and getattr(whole, "exact", True)
            fills[column] = {
                "global": self._finite(column, rule, "*", pick(whole)) if whole is not None else None,
                "groups": {g: self._finite(column, rule, g, pick(d)) for g, d in per_group.items()} if rule.by else {},
                "error": "exact" if exact or rule.strategy == "mean" else f"relative error <= {self.options.alpha:g} of the value at rank floor(q*(n-1))",
            }
        return fills

    def _finite(self, column: str, rule: ImputeRule, group: str, value):
        """``value``, unless a mean or median of numbers that is infinite or NaN: the column
        holds infinities (a division by zero upstream), and their mean filled missing cells
        with inf, or with NaN (inf - inf) that left them missing marked imputed."""
        if rule.strategy == "mode" or column in getattr(self, "times_", {}) or value is None or np.isfinite(float(value)):
            return value
        where = "" if group == "*" else f" in group {group.replace(chr(31), ', ')!r}"
        raise StageError(f"stage {self.ctx.name!r}: the {rule.strategy} of {column!r}{where} is {float(value)}: the column "
                         "holds infinite values; reject or clip them first (ranges: {" + column + ": {min: ..., max: ...}}), "
                         "or fill with a median or a constant")

    def apply(self, part, fills):
        for column, rule in self.options.rules().items():
            fill = fills[column]
            col = _may_hold_missing(part[column]) if is_number_column(part[column].dtype) else _blank_as_missing(part[column])
            rows = np.flatnonzero(col.isna().to_numpy())
            if len(rows):
                if fill["groups"]:
                    codes, names = _groups(part, rule.by)
                    choices, which = _objects([fill["groups"].get(n, fill["global"]) for n in names]), codes[rows]
                else:
                    choices, which = _objects([fill["global"]]), np.zeros(len(rows), dtype=np.int64)
                known = np.array([np.ndim(v) > 0 or not pd.isna(v) for v in choices], dtype=bool)[which]
                rows, values = rows[known], choices[which[known]]
                if is_number_column(col.dtype):
                    values = values.astype(np.float64)
                    if pd.api.types.is_integer_dtype(col.dtype):
                        values = np.round(values)
                    elif pd.api.types.is_float_dtype(col.dtype):  # float32: pandas refuses a float64 it would round
                        values = values.astype(getattr(col.dtype, "numpy_dtype", col.dtype))
                if len(rows):
                    col = col.astype(holding(col.dtype, values))  # a copy (copy on write)
                    col.iloc[rows] = values
            can = np.zeros(len(part), dtype=bool)
            can[rows] = True
            part[column] = col
            part[f"{column}_imputed"] = can | _earlier_marks(part, f"{column}_imputed")
            part[f"_m_imputed:{column}"] = can.astype(np.int64)
        return part

    def summary(self):
        state = getattr(self, "state_", None) or {}
        return {
            column: {
                "strategy": rule.strategy,
                "by": rule.by,
                "value": _jsonable(state.get(column, {}).get("global")),
                "groups": len(state.get(column, {}).get("groups", {})),
                "error": state.get(column, {}).get("error"),
            }
            for column, rule in self.options.rules().items()
        }

    def result_warnings(self, entry: dict) -> list[str]:
        """A column with no value at all (every cell missing: a reader's na_values, or a
        ranges rule that emptied it) has no median or mode, and impute filled nothing
        without a word: the column stayed empty in a job meant to fill it."""
        notes = super().result_warnings(entry)
        state = getattr(self, "state_", None) or {}
        for column, rule in self.options.rules().items():
            if entry.get("in", 0) and rule.strategy != "constant" and column in state and state[column]["global"] is None:
                notes.append(f"stage {self.ctx.name!r}: {column!r} has no value to take a {rule.strategy} of (every cell "
                             "is missing), so its cells stay missing; check what emptied it, or fill it with a constant")
        return notes


def _time_as_number(col: pd.Series) -> pd.Series:
    """A time column (timestamps with or without a zone, durations) as whole numbers of its
    unit, which medians and means take exactly, as pandas' own median of times; any other
    column as it is."""
    if not _is_time(col.dtype):
        return col
    return pd.Series(pd.array(col.array.asi8, dtype="Int64"), index=col.index).mask(col.isna())


def _picked_time(pick, dtype, distribution):
    return _number_as_time(pick(distribution), dtype)


def _number_as_time(number, dtype):
    """A number of the time column's unit (see :func:`_time_as_number`) as its value: a
    Timestamp in the column's zone, or a Timedelta."""
    if number is None or pd.isna(number):
        return None
    unit = np.datetime_data(getattr(dtype, "base", dtype))[0] if not hasattr(dtype, "unit") else dtype.unit
    if pd.api.types.is_timedelta64_dtype(dtype):
        return pd.Timedelta(round(number), unit=unit)
    return pd.Timestamp(round(number), unit=unit, tz=getattr(dtype, "tz", None))


def _objects(values: list) -> np.ndarray:
    """A 1-d object array of ``values``, also when they are lists or arrays (an embedding's
    mode), which ``np.array`` would stack into a 2-d one."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


class _Mode:
    """A column's value counts for its mode, with one value of each counted text.

    Counts are kept by each value's text, which lets values of any type merge across
    partitions; the fill is the value itself, so a boolean, date or decimal column is
    filled with a boolean, date or decimal, not with its text.
    """

    def __init__(self, counts: ValueCounts, values: dict):
        self.counts, self.values = counts, values

    @classmethod
    def by_group(cls, found: dict[int, ValueCounts], column: pd.Series) -> dict[int, _Mode]:
        if isinstance(column.dtype, pd.StringDtype):  # text is its own key: no value to look up (1 ms a partition)
            return {g: cls(vc, {t: t for t in vc.values}) for g, vc in found.items()}
        value_of = one_value_per_text(column)  # keyed as ValueCounts keys what is not a number
        return {g: cls(vc, {t: value_of[t] for t in vc.values}) for g, vc in found.items()}

    def merge(self, other: _Mode) -> _Mode:
        return _Mode(self.counts.merge(other.counts), {**self.values, **other.values})

    def mode(self):
        text = self.counts.mode()
        return self.values.get(text, text)
