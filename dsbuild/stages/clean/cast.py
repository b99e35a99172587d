"""``cast``: give columns the types the job declares; values that do not convert are rejected."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.dtypes import blank_text, whole_numbers
from dsbuild.stages.base import MapStage, StageError, StageOptions, register, reject
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
# value's time depends on it alone (US month-first before day-first, as pandas guesses).
DATETIME_FORMATS = (
    "%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p",
    "%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S",
    "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%d %b %Y", "%d-%b-%Y", "%b %d, %Y", "%B %d, %Y", "%d %B %Y",
)


def _to_datetime(col: pd.Series, present: np.ndarray) -> pd.Series:
    """Times in UTC, each value parsed on its own: ISO 8601 in any of its forms, then
    :data:`DATETIME_FORMATS`. pandas' own guess takes its format from a partition's first
    value, so a column of dates and ISO timestamps lost one kind or the other depending on
    which came first in the partition."""
    if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
        return pd.to_datetime(col, errors="coerce", utc=True)
    text = col.astype("string").str.strip()
    out = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    for fmt in DATETIME_FORMATS:
        todo = present & out.isna().to_numpy()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(text[todo], errors="coerce", utc=True, format=fmt)
    return out


class CastOptions(StageOptions):
    schema_: dict[str, CastType] = Field(
        ..., alias="schema", description="column -> int | float | str | bool | datetime | category; datetime reads "
        "ISO 8601 and common month/day orders (US first), each value alone, into UTC")
    on_error: Literal["reject", "null"] = Field("reject", description="a value that does not convert: reject the row, or make it missing")


def cast_column(col: pd.Series, to: str) -> tuple[pd.Series, np.ndarray]:
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
        out = _to_datetime(col, present)
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

    def process(self, part):
        received = _as_received(part, self.options.schema_)
        for column, to in self.options.schema_.items():
            out, failed = cast_column(part[column], to)
            if self.options.on_error == "reject" and failed.any():
                raw = part[column].astype("string").str.slice(0, 40).to_numpy(dtype=object)
                part = reject(part, failed, np.array([f"cast:{column}:{to}={v}" for v in raw], dtype=object))
            part[column] = out
            part[f"_m_cast_failed:{column}"] = failed.astype(np.int64)
        return _rejects_as_received(part, received)
