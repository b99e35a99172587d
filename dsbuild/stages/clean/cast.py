"""``cast``: give columns the types the job declares; values that do not convert are rejected."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.dtypes import blank_text, whole_numbers
from dsbuild.stages.base import MapStage, StageError, StageOptions, register, reject, with_marks
from dsbuild.stages.clean.cells import (
    _as_received,
    _leaves_the_id,
    _rejects_as_received,
)
from dsbuild.stages.conditions import is_number_column

CastType = Literal["int", "float", "str", "bool", "datetime", "category"]
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


# Tried in order on what ISO 8601 does not parse: the first that fits a value wins, so a
# value's time depends on it and the column's day/month order alone (month first, as pandas
# guesses, unless the column's values or the job say day first: see date_order).
MONTH_FIRST = ("%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p")
DAY_FIRST = ("%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S")
DATETIME_FORMATS = (
    "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S",
    "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%d %b %Y", "%d-%b-%Y", "%b %d, %Y", "%B %d, %Y", "%d %B %Y",
)
_SLASHED = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/\d{4}\b")


def date_orders(col: pd.Series) -> list[int]:
    """[values only month first reads (04/13/2024), values only day first reads
    (13/04/2024)] among a column's slashed dates: a partition's share of the counts that
    decide the column's order, which add up across partitions."""
    text = pd.Series(col.dropna().unique()).astype("string")
    found = text.str.extract(_SLASHED).dropna().astype(int) if len(text) else pd.DataFrame(columns=[0, 1])
    first, second = found[0].to_numpy(), found[1].to_numpy()
    return [int(((first <= 12) & (second > 12)).sum()), int(((first > 12) & (second <= 12)).sum())]


def date_order(counts: list[int], day_first: bool | None) -> str:
    """``month``, ``day``, or ``mixed`` (the column writes both: a date read either way
    cannot be told)."""
    if day_first is not None:
        return "day" if day_first else "month"
    month_only, day_only = counts
    return "mixed" if month_only and day_only else "day" if day_only else "month"


def _ambiguous_dates(text: pd.Series) -> np.ndarray:
    """Slashed dates that read as two days (03/04/2024, not 03/03/2024)."""
    found = text.str.extract(_SLASHED)
    first, second = pd.to_numeric(found[0]), pd.to_numeric(found[1])
    return ((first <= 12) & (second <= 12) & (first != second)).fillna(False).to_numpy(dtype=bool)


def _to_datetime(col: pd.Series, present: np.ndarray, order: str = "month") -> pd.Series:
    """Times in UTC, each value parsed on its own: ISO 8601 in any of its forms, then the
    slashed dates in the column's ``order`` alone (:func:`date_order`; ``mixed``: either,
    but one that reads as two days is left missing), then :data:`DATETIME_FORMATS`.
    pandas' own guess takes its format from a partition's first value, so a column of
    dates and ISO timestamps lost one kind or the other depending on which came first in
    the partition; and read each alone, 03/04/2024 was 4 March beside 13/04/2024's 13 April."""
    if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
        return pd.to_datetime(col, errors="coerce", utc=True)
    text = col.astype("string").str.strip()
    out = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    slashed = {"day": DAY_FIRST, "month": MONTH_FIRST, "mixed": MONTH_FIRST + DAY_FIRST}[order]
    if order == "mixed":
        present = present & ~_ambiguous_dates(text)
    for fmt in slashed + DATETIME_FORMATS:
        todo = present & out.isna().to_numpy()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(text[todo], errors="coerce", utc=True, format=fmt)
    return out


class CastOptions(StageOptions):
    schema_: dict[str, CastType] = Field(
        ..., alias="schema", description="column -> int | float | str | bool | datetime | category; datetime reads "
        "ISO 8601 and common day/month orders (in the column's one order: day_first), into UTC")
    on_error: Literal["reject", "null"] = Field("reject", description="a value that does not convert: reject the row, or make it missing")
    day_first: bool | None = Field(
        None, description="how a datetime 03/04/2024 reads: true 3 April, false 4 March; default: from the column's "
        "values (day first where some read only so, 13/04/2024, and none only month first; where both occur, a date "
        "that reads as two days does not convert)")


def cast_column(col: pd.Series, to: str, order: str = "month") -> tuple[pd.Series, np.ndarray]:
    """(converted, failed) where failed marks values present before and missing after.
    Blank text is missing, as a CSV reader makes it (Parquet and JSON keep it)."""
    present = col.notna().to_numpy()
    if to not in ("str", "category"):
        present = present & ~blank_text(col)
    if to in ("int", "float"):
        num = pd.to_numeric(col, errors="coerce")
        if to == "int":  # exactly, not through float64 (2**53 + 1); not inf nor 1e30, which failed the run converting
            out = num.astype("Int64") if pd.api.types.is_integer_dtype(num.dtype) else whole_numbers(col).astype("Int64")
        else:
            out = num.astype("float64")
    elif to == "str":
        out = col.astype("string")
    elif to == "bool":
        if pd.api.types.is_bool_dtype(col):
            out = col.astype("boolean")
        elif pd.api.types.is_numeric_dtype(col):  # 1.0 and 0.0 (a flag with gaps, as pandas keeps one) are not text
            num = col.to_numpy(dtype=np.float64, na_value=np.nan)
            out = pd.Series(pd.NA, index=col.index, dtype="boolean")
            out[num == 1] = True
            out[num == 0] = False
        else:
            text = col.astype("string").str.strip().str.lower()
            out = pd.Series(pd.NA, index=col.index, dtype="boolean")
            out[text.isin(_TRUE).fillna(False)] = True
            out[text.isin(_FALSE).fillna(False)] = False
    elif to == "datetime":
        out = _to_datetime(col, present, order)
    elif to == "category":
        out = col.astype("category")  # each partition its own categories, as a Parquet dictionary column
    else:  # pragma: no cover - the options model allows no other value
        raise StageError(f"cast: unknown type {to!r}")
    failed = present & out.isna().to_numpy()
    return out, failed


@register
class Cast(MapStage):
    """Give columns the types the job declares; values that do not convert are rejected."""

    name = "cast"
    Options = CastOptions

    def check(self, meta):
        self.require_columns(meta, self.options.schema_)
        _leaves_the_id(self, self.options.schema_, "cast")
        for column, to in self.options.schema_.items():
            dtype = meta[column].dtype
            if to == "datetime" and is_number_column(dtype) and not pd.api.types.is_bool_dtype(dtype):
                raise StageError(
                    f"stage {self.ctx.name!r}: cast of {column!r} to datetime: the column is {dtype}, and numbers are "
                    "no dates (1 became 1970-01-01 00:00:00.000000001); cast it to str first if it holds dates as text")

    def retyped_columns(self) -> list[str]:
        return list(self.options.schema_)

    def __init__(self, options=None, **settings):
        super().__init__(options, **settings)
        if self._dated():  # datetimes whose day/month order the data decides are counted (a fit) first
            self.shape = "fit_apply"

    def _dated(self) -> list[str]:
        o = self.options
        return [c for c, to in o.schema_.items() if to == "datetime"] if o.day_first is None else []

    def build(self, frame, shapes):
        if not self._dated():
            return super().build(frame, shapes)
        counts = shapes.fit(frame, self._date_orders, _add_counts, label=self.ctx.name)
        self.state_ = {column: date_order(counts[column], None) for column in self._dated()}
        return shapes.map(frame, self._cast_in_order, shapes.broadcast(self.state_), label=self.ctx.name)

    def summary(self) -> dict:
        """Each datetime column's day/month order, as the data decided it."""
        return {"date_order": self.state_} if getattr(self, "state_", None) else {}

    def _date_orders(self, part: pd.DataFrame, state=None) -> dict[str, list[int]]:
        return {column: date_orders(part[column]) for column in self._dated()}

    def _cast_in_order(self, part: pd.DataFrame, orders: dict[str, str]) -> pd.DataFrame:
        return self.process(with_marks(part), orders)

    def process(self, part, orders: dict[str, str] | None = None):
        received = _as_received(part, self.options.schema_)
        for column, to in self.options.schema_.items():
            order = (orders or {}).get(column) or date_order([0, 0], self.options.day_first)
            out, failed = cast_column(part[column], to, order)
            if self.options.on_error == "reject" and failed.any():
                raw = part[column].astype("string").str.slice(0, 40)
                why = np.where(_ambiguous_dates(raw.str.strip()), " (day or month first? the column writes both)", "") \
                    if order == "mixed" else np.full(len(raw), "")
                part = reject(part, failed, np.array([f"cast:{column}:{to}={v}{w}" for v, w in zip(raw, why)], dtype=object))
            part[column] = out
            part[f"_m_cast_failed:{column}"] = failed.astype(np.int64)
        return _rejects_as_received(part, received)


def _add_counts(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    return {column: [x + y for x, y in zip(a[column], b[column])] for column in a}
