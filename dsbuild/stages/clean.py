"""Cleaning stages: keep the columns and rows you want, fix types, reject broken images,
and fix noisy values (units, ranges, missing values, spellings, outliers, dependencies)."""

from __future__ import annotations

import datetime
import difflib
import functools
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from dsbuild.kernels.canonical import SynonymTable, canonicalize
from dsbuild.kernels.constraints import (
    COUNT,
    FunctionalDependency,
    majority_table,
    missing_value,
    pair_counts,
    repair,
)
from dsbuild.kernels.decode import image_problem
from dsbuild.kernels.dtypes import blank_text, holding, one_value_per_text, whole_numbers
from dsbuild.kernels.labeling_functions import comparable, in_column_zone
from dsbuild.kernels.robust import Distribution, ValueCounts, iqr_fences, robust_scale
from dsbuild.kernels.units import UnitTable, convert_column, unit_key
from dsbuild.records import (
    ID,
    IMAGE_FORMATS,
    image_bytes,
    missing_image_reason,
    sniff_image_format,
)
from dsbuild.stages.base import (
    GONE,
    REJECT,
    FitApplyStage,
    MapStage,
    Stage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.conditions import OPS_HELP, Condition, is_number_column

# -- select -----------------------------------------------------------------------------


class SelectOptions(StageOptions):
    columns: list[str] | None = Field(None, description="columns to keep (id is always kept)")
    drop: list[str] = Field(default_factory=list, description="columns to drop")
    where: list[Condition] = Field(default_factory=list, description=f"row tests, {OPS_HELP}; a row failing one is rejected")


@register
class Select(MapStage):
    """Keep chosen columns and the rows that pass every condition; others go to rejects."""

    name = "select"
    Options = SelectOptions

    def check(self, meta):
        o = self.options
        self.require_columns(meta, [*(o.columns or []), *o.drop, *(c.column for c in o.where)])
        for cond in o.where:  # a comparison the column's type cannot make is named with the stage's place
            cond.holds(meta[cond.column])
        if ID in o.drop:
            raise StageError(f"stage {self.ctx.name!r}: {ID!r} names the rows (rejects, the manifest and later stages "
                             "key rows by it) and is always kept; it cannot be dropped")

    def process(self, part):
        for cond in self.options.where:
            part = reject(part, ~cond.holds(part[cond.column]), f"filter:{cond}")
        gone = list(self.options.drop)
        if self.options.columns is not None:
            keep = {ID, *self.options.columns}
            gone += [c for c in part.columns if c not in keep and not c.startswith("_") and c not in gone]
            order = [ID, *dict.fromkeys(c for c in self.options.columns if c != ID)]  # a name listed twice is one column
            part = part[order + [c for c in part.columns if c not in order]]
        return part.rename(columns={c: f"{GONE}{c}" for c in gone})  # the rows rejected here keep them


# -- cast -------------------------------------------------------------------------------

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


# -- validate_images --------------------------------------------------------------------


_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}


class ValidateImagesOptions(StageOptions):
    max_pixels: int = Field(50_000_000, gt=0, description="reject images with more pixels (decompression bombs)")
    min_side: int = Field(1, ge=1, description="reject images whose height or width is smaller")
    formats: list[str] | None = Field(
        None, description=f"allowed formats ({', '.join(IMAGE_FORMATS)}; jpg and tif too, any case), "
        "read from the bytes; default any OpenCV reads")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, names: list[str] | None) -> list[str] | None:
        """Names as the bytes are sniffed (``jpg`` is ``jpeg``): an unknown one is a typo,
        which would otherwise reject every image."""
        return None if names is None else [_image_format(name) for name in names]


def _image_format(name: str) -> str:
    key = str(name).strip().lower().lstrip(".")
    key = _FORMAT_ALIASES.get(key, key)
    if key not in IMAGE_FORMATS:
        close = difflib.get_close_matches(key, IMAGE_FORMATS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown image format {name!r}{hint}; known: {', '.join(IMAGE_FORMATS)}")
    return key


@register
class ValidateImages(MapStage):
    """Decode every image; undecodable, truncated, empty or oversized ones, and JPEGs
    whose scan data libjpeg finds damaged (``corrupt-scan=<its warning>``), go to rejects.

    Fills ``<image>_height``, ``<image>_width``, ``<image>_channels`` from the decoded
    pixels, so later stages can trust them. ``formats`` is checked on the format sniffed
    from the bytes, so it holds for every source (a Parquet or Hugging Face image column
    has no ``<image>_format`` beside it); others are ``format-not-allowed:<format>``.
    """

    name = "validate_images"
    Options = ValidateImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image_column

    def check(self, meta):
        self.require_image_column(meta)

    def process(self, part):
        col = self._column()
        o = self.options
        n = len(part)
        reasons = np.full(n, None, dtype=object)
        height = np.zeros(n, dtype=np.int64)
        width = np.zeros(n, dtype=np.int64)
        channels = np.zeros(n, dtype=np.int64)
        for i, cell in enumerate(part[col].to_numpy(dtype=object)):
            data = image_bytes(cell)
            reason, pixels = image_problem(data, o.max_pixels, o.min_side) if data is not None else (missing_image_reason(cell), None)
            if reason is None and o.formats is not None and (fmt := sniff_image_format(data)) not in o.formats:
                reason = f"format-not-allowed:{fmt}"
            if reason is None:
                height[i], width[i] = pixels.shape[:2]
                channels[i] = 1 if pixels.ndim == 2 else pixels.shape[2]
            reasons[i] = reason
        bad = np.array([r is not None for r in reasons], dtype=bool)
        part = reject(part, bad, reasons)
        sizes = [f"{col}_height", f"{col}_width", f"{col}_channels"]
        received = _as_received(part, [c for c in sizes if c in part.columns])
        for name, values in zip(sizes, (height, width, channels)):
            # nullable, as the image sources give sizes: a rejected image's size is not 0
            part[name] = pd.array(np.where(bad, 0, values), dtype="Int64")
            part.loc[bad, name] = pd.NA
        return _rejects_as_received(part, received)


# -- shared by the cleaning rules below -------------------------------------------------


def _leaves_the_id(stage: Stage, columns, what: str = "change") -> None:
    """The id names each row (stages key rows by it, rejects are named by it): a rule that
    rewrote it made ids 1.0 (normalize_units) or two rows one id (canonicalize's case)."""
    if ID in columns:
        raise StageError(f"stage {stage.ctx.name!r}: {ID!r} names the rows and is no data; a rule cannot {what} it")


def _blank_as_missing(col: pd.Series) -> pd.Series:
    """Blank text missing, as a CSV reader makes it (Parquet and JSON keep it)."""
    blank = blank_text(col)
    return col.mask(blank) if blank.any() else col


def _may_hold_missing(col: pd.Series) -> pd.Series:
    """The column in a dtype that can hold a missing value: numpy integers become nullable
    ones (``Int64``, as the CSV reader gives), not floats, which printed 3 as 3.0 and lost
    the last digits of ids and counts past 2**53."""
    if pd.api.types.is_integer_dtype(col.dtype) and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        return col.astype(f"{'UInt' if col.dtype.kind == 'u' else 'Int'}{col.dtype.itemsize * 8}")
    return col


def _as_received(part: pd.DataFrame, columns) -> dict[str, pd.Series]:
    """The cells of ``columns`` as they came, for :func:`_rejects_as_received`: the columns
    themselves (copy on write keeps them as they are), where ``part[columns]`` copied them
    into a new frame, about 1 ms a partition per stage whether it rejected a row or not."""
    return {c: part[c] for c in columns}


def _rejects_as_received(part: pd.DataFrame, received: dict[str, pd.Series], together: bool = False) -> pd.DataFrame:
    """Rows this stage rejected get back the cells they came with (``received``): rejects
    hold removed rows whole, only kept rows carry the stage's changes.

    The marked partition is one frame, so an old cell comes back only where the column's new
    dtype holds it unchanged (``72`` in a float column, not ``thirty`` in an int one); the
    reason names the value that could not. ``together``: the columns are one fact (a value
    and its unit), all come back or none.
    """
    gone = np.flatnonzero(part[REJECT].notna().to_numpy())
    if not len(gone):
        return part
    old = {c: _held(values.iloc[gone], part[c].dtype) for c, values in received.items()}
    if together and not all(fits.all() for fits, _ in old.values()):
        return part
    for column, (fits, values) in old.items():
        if fits.any():
            col = part[column].astype(values.dtype)  # a categorical widened to hold the old values
            col.iloc[gone[fits]] = values.array
            part[column] = col
    return part


def _held(values: pd.Series, dtype) -> tuple[np.ndarray, pd.Series]:
    """(which ``values`` ``dtype`` holds unchanged, those values in it): a number in a float
    column, a missing value where the column can be missing; not ``thirty`` in an int
    column, nor text that would become a number (``'12'`` is not ``12.0``)."""
    if values.dtype == dtype:
        return np.ones(len(values), dtype=bool), values
    missing = values.isna().to_numpy()
    fits = missing & _holds_missing(dtype)
    present = values[~missing]
    try:
        back = present.astype(holding(dtype, present)).to_numpy(dtype=object)
        fits[~missing] = [bool(a == b) for a, b in zip(back, present.to_numpy(dtype=object))]
    except (TypeError, ValueError, OverflowError):
        pass
    held = values[fits]
    return fits, held.astype(holding(dtype, held))


def _holds_missing(dtype) -> bool:
    try:
        return bool(pd.Series([None], dtype=object).astype(dtype).isna().all())
    except (TypeError, ValueError):
        return False


def _details(rule: str, values: pd.Series, mask: np.ndarray) -> np.ndarray:
    """Reasons ``rule=<value>`` for the rows ``mask`` marks (the value cut short, for a
    readable reject), None for the others: made for every row, they cost each partition a
    string per row, rejected or not (a third of canonicalize's time on 400-row partitions)."""
    out = np.full(len(values), None, dtype=object)
    at = np.flatnonzero(mask)
    if len(at):
        text = pd.Series(values.iloc[at].to_numpy(dtype=object), dtype=object).astype("str").str.slice(0, 40)
        out[at] = [f"{rule}={v}" for v in text]
    return out


def _groups(part: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, list[str]]:
    """(code per row, name per code): the row's group as a number, and each group's name.

    Names (``"*"`` without grouping; values joined by ``\x1f``; ``<NA>`` for missing)
    depend on the values only, so statistics keyed by name merge across partitions;
    they are built for the distinct combinations only.
    """
    if not by:
        return np.zeros(len(part), dtype=np.int64), ["*"]
    codes, uniques = pd.factorize(part[by[0]], use_na_sentinel=False)
    names = [_value_name(u) for u in uniques]
    for column in by[1:]:
        more, more_uniques = pd.factorize(part[column], use_na_sentinel=False)
        width = max(len(more_uniques), 1)
        pairs, first = np.unique(codes.astype(np.int64) * width + more, return_inverse=True)
        names = [f"{names[p // width]}\x1f{_value_name(more_uniques[p % width])}" for p in pairs]
        codes = first.reshape(-1)
    return codes.astype(np.int64, copy=False), names


def _value_name(value) -> str:
    return "<NA>" if pd.isna(value) else str(value)


def _per_group(names: list[str], table: dict, default=np.nan, dtype=np.float64) -> np.ndarray:
    """A value per group code, looked up by group name (``default`` for unseen groups)."""
    return np.array([table.get(n, default) for n in names], dtype=dtype)


def _merge_dicts(a: dict, b: dict, merge) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if k in out else v
    return out


# -- normalize_units --------------------------------------------------------------------


class UnitRule(StageOptions):
    """How one column's quantities become numbers in one unit."""

    to: str = Field(..., description="canonical unit: min, h, kg, cm, C, ... or your own with factors")
    unit_column: str | None = Field(None, description="column holding each row's unit, used when the value has none")
    assume: str | None = Field(None, description="unit of a bare number with no unit column entry (default: `to`)")
    factors: dict[str, float] = Field(default_factory=dict, description="your own units: how many `to` units one of it is (each read in its plural too: year, years)")
    on_error: Literal["reject", "null"] = Field("reject", description="a value that does not parse: reject the row, or make it missing")
    decimal: Literal[".", ","] = Field(".", description="decimal mark in the text: ',' reads 1,80 m and 1.000,5 g")

    @model_validator(mode="after")
    def _units_exist(self):
        table = UnitTable(self.to, self.factors)
        if self.assume is not None and not table.has(self.assume):
            raise ValueError(f"assume: unit {self.assume!r} is not a {table.dimension or self.to} unit")
        return self

    def table(self) -> UnitTable:
        return UnitTable(self.to, self.factors)


class NormalizeUnitsOptions(StageOptions):
    columns: dict[str, UnitRule] = Field(..., description="column -> {to, unit_column, assume, factors, on_error}")

    @model_validator(mode="after")
    def _one_unit_per_unit_column(self):
        """A unit column that says ``to`` afterwards cannot say two units."""
        targets: dict[str, tuple[str, str]] = {}
        for column, rule in self.columns.items():
            if rule.unit_column is None:
                continue
            other = targets.setdefault(rule.unit_column, (column, rule.to))
            if unit_key(other[1]) != unit_key(rule.to):
                raise ValueError(f"{other[0]!r} (to {other[1]}) and {column!r} (to {rule.to}) share unit_column "
                                 f"{rule.unit_column!r}, which can say only one unit after the stage")
        return self


@register
class NormalizeUnits(MapStage):
    """Values written with units (``90 min``, ``1.5h``, ``72°F``, ``5'11``, ``45%``, ``$12.50``
    with ``factors: {$: 1}``) become numbers in one unit.

    The unit comes from the value itself, else from ``unit_column``, else ``assume``.
    The column becomes float64 in the ``to`` unit and ``unit_column`` (if any) says
    ``to`` for every converted row. Blank text is missing, as a CSV reader makes it.
    Counters: ``converted:<col>`` (cells whose unit differed), ``unit_error:<col>``;
    rejects read ``units:<col>=<problem>:<value>`` (``no-number:n/a kg``,
    ``ambiguous-numbers:5 11``) and keep a number the value column held.
    """

    name = "normalize_units"
    Options = NormalizeUnitsOptions

    def check(self, meta):
        cols = self.options.columns
        self.require_columns(meta, cols)
        self.require_columns(meta, [r.unit_column for r in cols.values() if r.unit_column], what="unit_column")
        _leaves_the_id(self, [*cols, *(r.unit_column for r in cols.values())], "convert")

    def process(self, part):
        columns = self.options.columns
        received = part.copy(deep=False)  # the cells as they came (copy on write: nothing is copied)
        for column, rule in columns.items():
            units = received[rule.unit_column] if rule.unit_column else None  # as it came, not as a rule rewrote it
            values, changed, problem = convert_column(part[column], rule.table(), units, rule.assume, rule.decimal)
            bad = pd.notna(problem)
            if rule.on_error == "reject" and bad.any():
                part = reject(part, bad, _unit_reasons(column, problem, part[column], bad))
            part[column] = values
            if rule.unit_column:
                converted = part[rule.unit_column].astype("str").mask(~bad & ~np.isnan(values), rule.to)
                part[rule.unit_column] = converted
            part[f"_m_converted:{column}"] = changed.astype(np.int64)
            part[f"_m_unit_error:{column}"] = bad.astype(np.int64)
        for column, rule in columns.items():  # a value and its unit: both as received, or neither
            with_unit = [column, rule.unit_column] if rule.unit_column else [column]
            part = _rejects_as_received(part, _as_received(received, with_unit), together=True)
        return part


def _unit_reasons(column: str, problem: np.ndarray, values: pd.Series, bad: np.ndarray) -> np.ndarray:
    """``units:<col>=<problem>:<value>`` for the bad rows: a float column cannot hold the
    text that failed, so the reason does."""
    reasons = np.full(len(values), None, dtype=object)
    text = values[bad].astype("str").str.slice(0, 40)
    reasons[bad] = [f"units:{column}={p}:{v}" for p, v in zip(problem[bad], text)]
    return reasons


# -- ranges -----------------------------------------------------------------------------


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
                times = " (give its bounds as times: min: 2021-03-02)" if _is_time(meta[column].dtype) else " (cast it first)"
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
                # a bound with a fraction makes the column float before the clip: a nullable
                # integer column cannot hold the bound, and refused it
                clipped = (col if whole else col.astype(np.float64)).clip(lower=rule.min, upper=rule.max)
                part[column] = clipped.astype(col.dtype) if whole else clipped
            else:
                part[column] = _may_hold_missing(col).mask(outside)
            part[f"_m_out_of_range:{column}"] = outside.astype(np.int64)
        return _rejects_as_received(part, received)


# -- impute -----------------------------------------------------------------------------

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
                "global": pick(whole) if whole is not None else None,
                "groups": {g: pick(d) for g, d in per_group.items()} if rule.by else {},
                "error": "exact" if exact or rule.strategy == "mean" else f"relative error <= {self.options.alpha:g} of the value at rank floor(q*(n-1))",
            }
        return fills

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


def _earlier_marks(part: pd.DataFrame, column: str) -> np.ndarray:
    """The cells an earlier stage marked in ``column`` (False where it has none): a second
    impute (impute, outliers with action null, impute) wrote its own marks over the first
    one's, and the values the first had filled read as observed."""
    if column not in part.columns:
        return np.zeros(len(part), dtype=bool)
    return part[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _is_time(dtype) -> bool:
    return pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)


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


def _jsonable(value):
    return value.item() if hasattr(value, "item") else value


# -- canonicalize -----------------------------------------------------------------------


class CanonicalRule(StageOptions):
    """One column's canonical spellings and what to do with a value the table lacks."""

    vocabulary: list[str] = Field(default_factory=list, description="the canonical values")
    synonyms: dict[str, list[str]] = Field(default_factory=dict, description="canonical value -> other spellings")
    case: Literal["keep", "fold", "lower", "upper", "title"] = Field("keep", description="case of values the table lacks")
    trim: bool = Field(True, description="strip both ends and make every run of spaces, tabs and line breaks inside one "
                       "space (false for running text whose lines and paragraphs matter)")
    nfkc: bool = Field(True, description="Unicode NFKC: full-width letters, ligatures (ﬁ) and compatibility forms folded, accents written apart (e + ´) composed")
    unknown: Literal["keep", "null", "reject"] = Field("keep", description="a value outside vocabulary and synonyms")

    @model_validator(mode="after")
    def _unambiguous(self):
        self.table()
        return self

    def table(self) -> SynonymTable:
        return SynonymTable(self.vocabulary, self.synonyms)


class CanonicalizeOptions(StageOptions):
    columns: dict[str, CanonicalRule] = Field(..., description="column -> {vocabulary, synonyms, case, unknown}")


@register
class Canonicalize(MapStage):
    """Strings trimmed, NFKC-normalised and mapped through a synonym table (M, male → Male).

    Matching ignores case, width and spacing. A blank cell is missing (null), as a CSV
    reader makes it. Counters ``canonicalized:<col>`` (cells changed) and ``unknown:<col>``
    (values outside a given vocabulary/synonyms, which are kept, made missing or rejected
    as ``unknown-value:<col>=<value>``, as they came).
    """

    name = "canonicalize"
    Options = CanonicalizeOptions

    def check(self, meta):
        self.require_columns(meta, self.options.columns)
        _leaves_the_id(self, self.options.columns, "respell")
        for column in self.options.columns:
            dtype = meta[column].dtype
            if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
                # it had turned 1 into "1" and 1.5 into "1.5", a column of numbers into text
                raise StageError(f"stage {self.ctx.name!r}: canonicalize respells text, and {column!r} holds {dtype} "
                                 f"values; check its allowed values with ranges: {{{column}: {{allowed: [...]}}}}, or "
                                 f"cast it to str first if its codes are names")

    def process(self, part):
        received = _as_received(part, self.options.columns)
        for column, rule in self.options.columns.items():
            raw = part[column]
            out, changed, unknown = canonicalize(raw, rule.table(), trim=rule.trim, nfkc=rule.nfkc, case=rule.case)
            if rule.unknown == "reject":
                part = reject(part, unknown, _details(f"unknown-value:{column}", raw, unknown))
            elif rule.unknown == "null":
                out = out.mask(unknown)
                changed = changed | unknown
            # a categorical (a Parquet dictionary column) stays one, with the canonical spellings
            part[column] = out.astype("category") if isinstance(raw.dtype, pd.CategoricalDtype) else out
            part[f"_m_canonicalized:{column}"] = changed.astype(np.int64)
            part[f"_m_unknown:{column}"] = unknown.astype(np.int64)
        return _rejects_as_received(part, received)


# -- outliers ---------------------------------------------------------------------------


class OutlierRule(StageOptions):
    method: Literal["mad", "iqr"] = Field("mad", description="robust z-score (median/MAD) or Tukey's IQR fences")
    threshold: float | None = Field(None, gt=0, description="|robust z| above this (default 3.5), or IQR multiple k (default 1.5)")
    action: Literal["flag", "null", "reject"] = Field("flag", description="mark in <col>_outlier, make missing, or reject")

    def limit(self) -> float:
        return self.threshold if self.threshold is not None else (3.5 if self.method == "mad" else 1.5)


class OutliersOptions(StageOptions):
    columns: dict[str, OutlierRule] = Field(..., description="column -> {method: mad | iqr, threshold, action}")
    by: list[str] = Field(default_factory=list, description="compute the statistics per group of these columns")
    per_class: bool = Field(False, description="also group by the label column (columns.label)")
    max_distinct: int = Field(50_000, gt=0, description="exact statistics up to this many distinct values, a sketch beyond")
    alpha: float = Field(0.005, gt=0, lt=1, description="the sketch's relative error bound")


@register
class Outliers(FitApplyStage):
    """Values far from their column's (or group's) centre: flagged, made missing or rejected.

    ``mad``: robust z = (x − median) / (1.4826·MAD), falling back to 1.2533·mean absolute
    deviation when the MAD is 0; ``|z| > threshold`` is an outlier. ``iqr``: outside
    ``[Q1 − k·IQR, Q3 + k·IQR]``. Statistics are exact from mergeable value counts, or
    from a sketch with relative error ``alpha`` (a second pass then measures deviations
    from the sketched median). Adds ``<col>_outlier`` (bool); counter ``outlier:<col>``;
    rejects read ``outlier:<col>=<value>``.
    """

    name = "outliers"
    Options = OutliersOptions

    def _by(self) -> list[str]:
        label = [self.ctx.roles.label] if self.options.per_class else []
        return [*self.options.by, *[c for c in label if c not in self.options.by]]

    def check(self, meta):
        if self.options.per_class and not self.ctx.roles.label:
            raise StageError(f"stage {self.ctx.name!r}: per_class needs columns.label in the job")
        self.require_columns(meta, self.options.columns)
        self.require_columns(meta, self._by(), what="group column (by)")
        _leaves_the_id(self, [c for c, r in self.options.columns.items() if r.action == "null"], "empty")
        for column in self.options.columns:
            if not is_number_column(meta[column].dtype):
                raise StageError(f"stage {self.ctx.name!r}: outliers of {column!r} need a numeric column, it is {meta[column].dtype}")

    def _distributions(self, part, column, center=None) -> dict:
        """Per group name: the distribution of the column, or of ``|x - median|``."""
        codes, names = _groups(part, self._by())
        x = part[column].to_numpy(dtype=np.float64, na_value=np.nan)
        if center is not None:
            x = np.abs(x - _per_group(names, {g: s["median"] for g, s in center.items()})[codes])
        found = Distribution.by_group(codes, pd.Series(x), self.options.max_distinct, self.options.alpha)
        return {names[g]: d for g, d in found.items()}

    def partial(self, part, state):
        return {column: self._distributions(part, column) for column in self.options.columns}

    def partial_deviations(self, part, state):
        return {
            column: self._distributions(part, column, state[column])
            for column, rule in self.options.columns.items()
            if rule.method == "mad" and any(not s["exact"] for s in state[column].values())
        }

    def combine(self, a, b):
        return _merge_dicts(a, b, lambda x, y: _merge_dicts(x, y, lambda p, q: p.merge(q)))

    def finalize(self, stats, state):
        out = {}
        for column, rule in self.options.columns.items():
            out[column] = {}
            for g, dist in stats.get(column, {}).items():
                s = {"n": dist.n, "exact": dist.exact, "median": dist.median()}
                if rule.method == "iqr":
                    s["low"], s["high"] = iqr_fences(dist.quantile(0.25), dist.quantile(0.75), rule.limit())
                elif dist.exact:
                    dev = dist.counts.deviations(s["median"])
                    s["scale"] = robust_scale(dev.median(), dev.mean())
                out[column][g] = s
        return out

    def finalize_deviations(self, stats, state):
        for column, groups in stats.items():
            for g, dev in groups.items():
                state[column][g]["scale"] = robust_scale(dev.median(), dev.mean() if dev.n else 0.0)
        return state

    def build(self, frame, shapes):
        stats = shapes.fit(frame, self.partial, self.combine, label=self.ctx.name)
        state = self.finalize(stats, None)
        if any(rule.method == "mad" and not all(s["exact"] for s in state[c].values()) for c, rule in self.options.columns.items()):
            deviations = shapes.fit(frame, self.partial_deviations, self.combine, state, label=f"{self.ctx.name}-dev")
            state = self.finalize_deviations(deviations, state)
        self.state_ = state
        return shapes.map(frame, self._apply, shapes.broadcast(state), label=self.ctx.name)

    def apply(self, part, state):
        codes, names = _groups(part, self._by())
        received = _as_received(part, self.options.columns)
        for column, rule in self.options.columns.items():
            col = part[column]
            x = col.to_numpy(dtype=np.float64, na_value=np.nan)
            stats = state[column]
            if rule.method == "iqr":
                low = _per_group(names, {g: s["low"] for g, s in stats.items()})[codes]
                high = _per_group(names, {g: s["high"] for g, s in stats.items()})[codes]
                outlier = (x < low) | (x > high)
            else:
                center = _per_group(names, {g: s["median"] for g, s in stats.items()})[codes]
                scale = _per_group(names, {g: s["scale"] for g, s in stats.items()})[codes]
                with np.errstate(invalid="ignore", divide="ignore"):
                    z = (x - center) / scale
                outlier = (scale > 0) & (np.abs(z) > rule.limit())
            if rule.action == "reject":
                part = reject(part, outlier, _details(f"outlier:{column}", col, outlier))
            elif rule.action == "null":
                part[column] = _may_hold_missing(col).mask(outlier)
            part[f"{column}_outlier"] = outlier
            part[f"_m_outlier:{column}"] = outlier.astype(np.int64)
        return _rejects_as_received(part, received)

    def summary(self):
        state = getattr(self, "state_", None) or {}
        return {
            column: {
                g: {k: _jsonable(v) for k, v in s.items()} | {"error": "exact" if s["exact"] else f"relative error <= {self.options.alpha:g} of the value at rank floor(q*(n-1))"}
                for g, s in groups.items()
            }
            for column, groups in state.items()
        }

    def result_warnings(self, entry: dict) -> list[str]:
        """Tukey's fences have no width where half a column's values or more are one value
        (capital gains: 92 % zeros); every other value is then an outlier, and with
        ``action: reject`` those rows leave without a hint that the rule, not the data, is odd."""
        notes = []
        for column, groups in self.summary().items():
            flat = sorted(g for g, s in groups.items() if s.get("low") is not None and s["low"] == s["high"])
            if flat:
                where = "" if flat == ["*"] else f" in {len(flat)} of its {len(groups)} groups"
                notes.append(
                    f"stage {self.ctx.name!r}: {column!r} has an interquartile range of 0{where} (half its values "
                    f"or more are {groups[flat[0]]['median']}), so Tukey's fences mark every other value an outlier "
                    f"({entry['metrics'].get(f'outlier:{column}', 0):,.0f} rows). method: mad falls back to the mean "
                    "absolute deviation for such a column.")
        return notes


# -- constraints ------------------------------------------------------------------------


class ConstraintsOptions(StageOptions):
    rules: list[str] = Field(..., min_length=1, description="functional dependencies, e.g. 'zip -> city' or 'zip, state -> city'")
    action: Literal["repair", "reject"] = Field("repair", description="set violating cells to the majority value, or reject their rows")
    min_share: float = Field(0.5, ge=0, lt=1, description="repair only when the majority value's share of its group is above this")

    @model_validator(mode="after")
    def _parse(self):
        for text in self.rules:
            FunctionalDependency.parse(text)
        return self

    def dependencies(self) -> list[FunctionalDependency]:
        return [FunctionalDependency.parse(t) for t in self.rules]


@register
class Constraints(Stage):
    """Functional dependencies (``education -> education-num``) checked and repaired.

    For each rule every partition is shrunk to counts of its distinct (determinant,
    dependent) combinations; those counts are shuffled on the determinant so each
    group's counts from all partitions meet, and the groups that disagree come back as a
    small table (group → majority value) that a last map applies to the full rows. A
    dependent value that disagrees with its group's clear majority is a violation.
    ``repair`` replaces it by the majority value and keeps the old value in
    ``<col>_repaired_from`` (missing where untouched; the first rule to repair a cell
    wins), so an auditor can see and undo each repair with the rows it came from;
    ``reject`` sends the row to rejects as ``fd:<rule>=<majority value>``. A group
    without a clear majority is not repaired. Counters per rule: ``fd_violation:<rule>``
    (cells disagreeing with a clear majority), ``repaired:<rule>``, ``unresolved:<rule>``
    (cells in groups with no clear majority). Two passes over the input: a chain.

    Where the distinct combinations are few (up to ``PAIRS_IN_ONE_TASK``, as for a code and
    its name), the partitions' counts are merged by a tree instead of the shuffle.
    """

    name = "constraints"
    shape = "chain"
    Options = ConstraintsOptions

    def check(self, meta):
        for fd in self.options.dependencies():
            self.require_columns(meta, [*fd.determinant, *fd.dependent], what=f"column of rule '{fd}'")
            if self.options.action == "repair":
                _leaves_the_id(self, fd.dependent, "repair")

    def build(self, frame, shapes):
        self.tables_ = {}
        for fd in self.options.dependencies():
            label = f"{self.ctx.name}-{fd}"
            table = self._conflicts(frame, shapes, fd, label)
            self.tables_[str(fd)] = table
            frame = shapes.map(frame, functools.partial(self._enforce, fd=fd), shapes.broadcast(table), label=label)
        return frame

    def _conflicts(self, frame, shapes, fd: FunctionalDependency, label: str) -> pd.DataFrame:
        """The rule's :func:`majority_table`, from all partitions' counts.

        The counts are merged by a tree while they stay few: the shuffle cost a fixed
        share of every pair of partitions, and made the rule 10 of the 21 s of worker CPU
        of the Adult clean job on 80 partitions (0.9 of 3.2 s on 16). More combinations
        than ``PAIRS_IN_ONE_TASK`` (a determinant that is nearly an id) are shuffled on the
        determinant, at the cost of counting them once more.
        """
        majority = functools.partial(majority_table, fd=fd, min_share=self.options.min_share)
        merged = shapes.fit(frame, functools.partial(_few_pair_counts, fd=fd), functools.partial(_merge_pair_counts, fd=fd),
                            label=f"{label}-pairs")
        if merged is not None:
            return majority(merged)
        pairs = shapes.map(frame, functools.partial(pair_counts, fd=fd), label=f"{label}-pairs")
        conflicts = shapes.group(pairs, functools.partial(_determinant_key, columns=list(fd.determinant)), majority,
                                 label=f"{label}-groups")
        return shapes.fit(conflicts, _as_is, _concat, label=f"{label}-collect")

    def _enforce(self, part: pd.DataFrame, table: pd.DataFrame, fd: FunctionalDependency) -> pd.DataFrame:
        part = with_marks(part)
        violation = np.zeros(len(part), dtype=np.int64)
        repaired = np.zeros(len(part), dtype=np.int64)
        unresolved = np.zeros(len(part), dtype=np.int64)
        for column in fd.dependent:
            result = repair(part, table, fd, column)
            violation += result.repaired
            unresolved += result.unresolved
            if self.options.action == "reject":
                reasons = np.full(len(part), None, dtype=object)
                at = np.flatnonzero(result.repaired)
                reasons[at] = [f"fd:{fd}={m}" for m in result.majority.iloc[at]]
                part = reject(part, result.repaired, reasons)
                continue
            from_col = f"{column}_repaired_from"
            old = part[column].astype(result.majority.dtype)
            earlier = part[from_col] if from_col in part.columns else pd.Series(missing_value(old.dtype), index=part.index, dtype=old.dtype)
            part[from_col] = earlier.where(earlier.notna() | ~result.repaired, old)
            part[column] = result.values
            repaired += result.repaired
        part[f"_m_fd_violation:{fd}"] = violation
        part[f"_m_repaired:{fd}"] = repaired
        part[f"_m_unresolved:{fd}"] = unresolved
        return part

    def result_warnings(self, entry: dict) -> list[str]:
        """A rule that is no dependency of the data (``occupation -> workclass`` on Adult)
        still finds a majority in most groups, and repaired a fifth of the rows to it
        without a word; a dependency with a few entry errors disagrees with few rows."""
        notes = super().result_warnings(entry)
        rows, metrics = entry.get("in", 0), entry.get("metrics", {})
        for fd in self.options.dependencies():
            violations, unresolved = metrics.get(f"fd_violation:{fd}", 0), metrics.get(f"unresolved:{fd}", 0)
            if rows and violations + unresolved > CONSTRAINT_DOUBT * rows:
                done = "rejected" if self.options.action == "reject" else "repaired"
                notes.append(
                    f"stage {self.ctx.name!r}: rule '{fd}' disagrees with {violations + unresolved:,.0f} of {rows:,} rows "
                    f"({(violations + unresolved) / rows:.0%}: {violations:,.0f} {done}, {unresolved:,.0f} in groups without "
                    f"a clear majority); the data may not follow it: check the rule and its direction (a -> b: each a "
                    "has one b)")
        return notes

    def summary(self):
        out = {}
        for rule, table in getattr(self, "tables_", {}).items():
            clear = [c for c in table.columns if c.startswith("_clear:")]
            out[rule] = {
                "conflicted_groups": len(table),
                "groups_with_clear_majority": int(table[clear].all(axis=1).sum()) if clear else 0,
            }
        return out


CONSTRAINT_DOUBT = 0.10  # a rule more than this share of the rows disagree with is doubted (Adult: wrong rules 9-48 %)
PAIRS_IN_ONE_TASK = 200_000  # distinct (determinant, dependent) combinations merged in one task, not shuffled


def _few_pair_counts(part: pd.DataFrame, state, fd: FunctionalDependency) -> pd.DataFrame | None:
    """A partition's :func:`pair_counts`, or None where they are too many to merge in one task."""
    pairs = pair_counts(part, fd)
    return pairs if len(pairs) <= PAIRS_IN_ONE_TASK else None


def _merge_pair_counts(a: pd.DataFrame | None, b: pd.DataFrame | None, fd: FunctionalDependency) -> pd.DataFrame | None:
    """Two partitions' counts added by combination; None once they are too many (or were)."""
    if a is None or b is None:
        return None
    both = pd.concat([a, b], ignore_index=True)
    columns = [*fd.determinant, *fd.dependent]
    merged = both.groupby(columns, dropna=False, sort=False, observed=True)[COUNT].sum().reset_index()
    return merged if len(merged) <= PAIRS_IN_ONE_TASK else None


def _determinant_key(part: pd.DataFrame, columns: list[str]) -> pd.Series:
    return pd.util.hash_pandas_object(part[columns], index=False)


def _as_is(part: pd.DataFrame, state) -> pd.DataFrame:
    return part


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([a, b], ignore_index=True)
