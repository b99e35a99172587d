"""``ranges``: values outside a column's range or allowed set, clipped, emptied or rejected."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.labeling_functions import comparable, in_column_zone
from dsbuild.stages.base import MapStage, StageError, StageOptions, register, reject
from dsbuild.stages.clean.cells import (
    _as_received,
    _blank_as_missing,
    _details,
    _is_time,
    _leaves_the_id,
    _may_hold_missing,
    _rejects_as_received,
)
from dsbuild.stages.conditions import is_number_column

# a number (.nan allowed every value without a word), else a time: ISO text, or a date as YAML reads 2021-03-02
Bound = Annotated[float, Field(allow_inf_nan=False)] | datetime.datetime | datetime.date


class RangeRule(StageOptions):
    """Allowed values of one column: ``min``/``max`` (inclusive) or an ``allowed`` set.
    Bounds are numbers, or times for a column of timestamps (``2021-03-02``, ISO text)."""

    min: Bound | None = Field(None, union_mode="left_to_right")
    max: Bound | None = Field(None, union_mode="left_to_right")
    allowed: list[Any] | None = None
    action: Literal["reject", "clip", "null"] = Field("reject", description="what to do with a value outside")

    @model_validator(mode="after")
    def _sensible(self):
        bounded = self.min is not None or self.max is not None
        if not bounded and self.allowed is None:
            raise ValueError("give min, max or allowed")
        if bounded and self.allowed is not None:
            raise ValueError("give min/max or allowed, not both")
        kinds = {isinstance(b, datetime.date) for b in (self.min, self.max) if b is not None}
        if len(kinds) > 1:
            raise ValueError(f"min {self.min} and max {self.max}: one is a time, the other a number")
        if self.min is not None and self.max is not None and _bound(self.min) > _bound(self.max):
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.action == "clip" and not bounded:
            raise ValueError("clip needs min or max; an allowed set cannot be clipped to")
        return self

    @property
    def times(self) -> bool:
        return isinstance(self.min if self.min is not None else self.max, datetime.date)

    def bounds(self, col: pd.Series) -> tuple:
        """(min, max) as the column compares them: times in the column's zone (a bound
        without one is read in it, as the column's own values are shown); dates for a
        column of dates (Parquet's date32, which pandas holds as objects)."""
        if not self.times:
            return self.min, self.max
        read = _date_bound if col.dtype == object else lambda b, c: in_column_zone(b, c.dtype)
        try:
            return tuple(None if b is None else read(b, col) for b in (self.min, self.max))
        except TypeError as e:
            raise StageError(f"rule for {col.name!r}: {e}") from None

    def allowed_as(self, col: pd.Series) -> list:
        """The allowed values as the column holds its values, as ``select``'s ``in`` reads
        them: a job file writes a date as text, which no date or timestamp equalled, so
        every row of such a column was outside the set."""
        try:
            return [comparable(col, v) for v in self.allowed]
        except (TypeError, ValueError) as e:
            raise StageError(f"allowed values of {col.name!r} ({col.dtype}) are not all its values' kind: {e}") from None

    def inside(self, col: pd.Series) -> np.ndarray:
        """True where the value is allowed or missing (a missing value is impute's job)."""
        if self.allowed is not None:
            ok = col.isin(self.allowed_as(col)).to_numpy()
        else:
            low, high = self.bounds(col)
            values = col if self.times else col.to_numpy(dtype=np.float64, na_value=np.nan)
            ok = np.ones(len(col), dtype=bool)
            if low is not None:
                ok &= ~np.asarray(values < low, dtype=bool)
            if high is not None:
                ok &= ~np.asarray(values > high, dtype=bool)
        return ok | _blank_as_missing(col).isna().to_numpy()


def _clip_dates(col: pd.Series, low, high) -> pd.Series:
    """A column of dates (objects) clipped: pandas' clip compares its missing values too."""
    if low is not None:
        col = col.mask(np.asarray(col < low, dtype=bool), low)
    if high is not None:
        col = col.mask(np.asarray(col > high, dtype=bool), high)
    return col


def _date_bound(b: datetime.date, col: pd.Series) -> datetime.date:
    """A bound of a column of dates: a date (``2021-03-02``, which the options read as
    midnight), not a time of day nor a time in a zone, which a date cannot be compared
    with; a column of objects that are not dates takes no time bounds."""
    held = col.dropna().iloc[:1].tolist()
    if held and (not isinstance(held[0], datetime.date) or isinstance(held[0], datetime.datetime)):
        raise TypeError(f"the column holds {type(held[0]).__name__} values, not dates or timestamps (cast it to datetime first)")
    if isinstance(b, datetime.datetime) and (b.tzinfo is not None or b.time() != datetime.time()):
        raise TypeError(f"{b.isoformat()} is a time (of day, or in a zone), and the column holds dates: give a date "
                        f"({b.date().isoformat()})")
    return b.date() if isinstance(b, datetime.datetime) else b


def _bound(b):
    """A bound as min and max compare: a time without a zone as if in UTC (the column's
    own zone is not known yet), so a bound with one and a bound without compare."""
    if not isinstance(b, datetime.date):
        return b
    t = pd.Timestamp(b)
    return t.tz_localize("UTC") if t.tz is None else t


class RangesOptions(StageOptions):
    columns: dict[str, RangeRule] = Field(..., description="column -> {min, max | allowed, action: reject | clip | null}")


@register
class Ranges(MapStage):
    """Values outside a column's allowed range or set are clipped, made missing or rejected.

    Counter ``out_of_range:<col>`` counts cells outside (each one changed, unless
    rejected); rejects read ``range:<col>=<value>``.
    """

    name = "ranges"
    Options = RangesOptions

    def check(self, meta):
        self.require_columns(meta, self.options.columns)
        _leaves_the_id(self, [c for c, r in self.options.columns.items() if r.action != "reject"], "clip or empty")
        for column, rule in self.options.columns.items():
            if rule.allowed is not None:
                self._check_allowed(column, rule.allowed, meta[column].dtype)
                try:
                    rule.allowed_as(meta[column])
                except StageError as e:
                    raise StageError(f"stage {self.ctx.name!r}: {e}") from None
            dates = meta[column].dtype == object  # may hold dates: Parquet's date32
            if rule.allowed is None and rule.times and not (pd.api.types.is_datetime64_any_dtype(meta[column].dtype) or dates):
                raise StageError(f"stage {self.ctx.name!r}: rule for {column!r} has times as bounds but the column is "
                                 f"{meta[column].dtype}, not timestamps (cast it to datetime first)")
            if rule.allowed is None and rule.times:
                try:
                    rule.bounds(meta[column])
                except StageError as e:
                    raise StageError(f"stage {self.ctx.name!r}: {e}") from None
            if rule.allowed is None and not rule.times and not is_number_column(meta[column].dtype):
                times = " (give its bounds as times: min: 2021-03-02)" if _is_time(meta[column].dtype) else (
                    " (cast it to float first; or, if its values carry units, 42 years or 40h, normalize_units reads them)")
                raise StageError(
                    f"stage {self.ctx.name!r}: rule for {column!r} has min/max but the column is "
                    f"{meta[column].dtype}, not numeric{times}"
                )

    def _check_allowed(self, column: str, allowed: list, dtype) -> None:
        """Text in the set of a number column (or numbers in a text column's) is never equal to
        a value: every row was outside, and rejected or emptied without a word."""
        numbers = [v for v in allowed if isinstance(v, (int, float)) and not isinstance(v, bool)]
        texts = [v for v in allowed if isinstance(v, str)]
        if is_number_column(dtype) and not pd.api.types.is_bool_dtype(dtype) and texts:
            wrong, kind = texts, "text"
        elif isinstance(dtype, pd.StringDtype) and numbers:
            wrong, kind = numbers, "numbers"
        else:
            return
        raise StageError(f"stage {self.ctx.name!r}: allowed values of {column!r} are {kind} ({wrong[0]!r}) but the "
                         f"column is {dtype}: no value would be allowed; write them as the column holds them, or cast it first")

    def process(self, part):
        received = _as_received(part, self.options.columns)
        for column, rule in self.options.columns.items():
            col = part[column]
            outside = ~rule.inside(col)
            if rule.action == "reject":
                part = reject(part, outside, _details(f"range:{column}", col, outside))
            elif rule.action == "clip" and rule.times:
                low, high = rule.bounds(col)
                part[column] = col.clip(lower=low, upper=high) if col.dtype != object else _clip_dates(col, low, high)
            elif rule.action == "clip":
                whole = all(b is None or float(b).is_integer() for b in (rule.min, rule.max))
                holds = whole or pd.api.types.is_float_dtype(col.dtype)  # a float32 column stays one
                # a bound with a fraction makes an integer column float before the clip: a
                # nullable integer column cannot hold the bound, and refused it
                clipped = (col if holds else col.astype(np.float64)).clip(lower=rule.min, upper=rule.max)
                part[column] = clipped.astype(col.dtype) if holds else clipped
            else:
                part[column] = _may_hold_missing(col).mask(outside)
            part[f"_m_out_of_range:{column}"] = outside.astype(np.int64)
        return _rejects_as_received(part, received)

    def result_warnings(self, entry: dict) -> list[str]:
        """A rule most rows break is more likely wrong than the data: on Adult, ``allowed:
        [United States, ...]`` (the column writes United-States) rejected 96 % of the rows
        without a word, as would a bound in another unit."""
        notes = super().result_warnings(entry)
        rows = entry.get("in", 0)
        for column, rule in self.options.columns.items():
            outside = entry.get("metrics", {}).get(f"out_of_range:{column}", 0)
            if rows and outside > RANGE_DOUBT * rows:
                done = {"reject": "rejected", "clip": "clipped", "null": "emptied"}[rule.action]
                what = "allowed values as the column writes them" if rule.allowed is not None else "bounds and their unit"
                notes.append(f"stage {self.ctx.name!r}: {outside:,.0f} of {rows:,} rows ({outside / rows:.0%}) are outside "
                             f"the rule for {column!r} and were {done}: check its {what}")
        return notes


RANGE_DOUBT = 0.5  # a rule that more than this share of the rows break is doubted in a warning
