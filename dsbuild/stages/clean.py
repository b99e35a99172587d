"""Cleaning stages: keep the columns and rows you want, fix types, reject broken images."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.decode import image_problem
from dsbuild.records import ID
from dsbuild.stages.base import MapStage, StageError, StageOptions, register, reject

# -- select -----------------------------------------------------------------------------

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null", "matches"]


class Condition(StageOptions):
    """One row test, written as data: ``{column: age, op: ">=", value: 18}``."""

    column: str
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self):
        if self.op in ("in", "not_in") and not isinstance(self.value, (list, tuple)):
            raise ValueError(f"op {self.op!r} needs a list value, got {self.value!r}")
        if self.op in ("is_null", "not_null") and self.value is not None:
            raise ValueError(f"op {self.op!r} takes no value")
        if self.op not in ("is_null", "not_null") and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        if self.op == "matches":
            try:
                re.compile(str(self.value))
            except re.error as e:
                raise ValueError(f"value {self.value!r} is not a regular expression: {e}") from None
        return self

    def holds(self, col: pd.Series) -> np.ndarray:
        """True where the row passes; a missing value passes only ``is_null``."""
        op, v = self.op, self.value
        if op == "is_null":
            return col.isna().to_numpy()
        if op == "not_null":
            return col.notna().to_numpy()
        if op == "in":
            return col.isin(list(v)).to_numpy()
        if op == "not_in":
            return (~col.isin(list(v)) & col.notna()).to_numpy()
        if op == "matches":
            return col.astype("string").str.fullmatch(str(v)).fillna(False).to_numpy(dtype=bool)
        try:
            result = {
                "==": col == v, "!=": col != v, "<": col < v,
                "<=": col <= v, ">": col > v, ">=": col >= v,
            }[op]
        except TypeError as e:
            raise StageError(f"select: cannot compare column {self.column!r} ({col.dtype}) {op} {v!r}: {e}") from None
        return result.fillna(False).to_numpy(dtype=bool) & col.notna().to_numpy()

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value}" if self.value is not None else f"{self.column}:{self.op}"


class SelectOptions(StageOptions):
    columns: list[str] | None = Field(None, description="columns to keep (id is always kept)")
    drop: list[str] = Field(default_factory=list, description="columns to drop")
    where: list[Condition] = Field(default_factory=list, description="row tests; a row failing one is rejected")


@register
class Select(MapStage):
    """Keep chosen columns and the rows that pass every condition; others go to rejects."""

    name = "select"
    Options = SelectOptions

    def check(self, meta):
        o = self.options
        self.require_columns(meta, [*(o.columns or []), *o.drop, *(c.column for c in o.where)])

    def process(self, part):
        for cond in self.options.where:
            part = reject(part, ~cond.holds(part[cond.column]), f"filter:{cond}")
        if self.options.columns is not None:
            keep = [ID, *[c for c in self.options.columns if c != ID]]
            part = part[keep + [c for c in part.columns if c.startswith("_")]]
        return part.drop(columns=self.options.drop)


# -- cast -------------------------------------------------------------------------------

CastType = Literal["int", "float", "str", "bool", "datetime", "category"]
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class CastOptions(StageOptions):
    schema_: dict[str, CastType] = Field(..., alias="schema", description="column -> int | float | str | bool | datetime | category")
    on_error: Literal["reject", "null"] = Field("reject", description="a value that does not convert: reject the row, or make it missing")


def cast_column(col: pd.Series, to: str) -> tuple[pd.Series, np.ndarray]:
    """(converted, failed) where failed marks values present before and missing after."""
    present = col.notna().to_numpy()
    if to in ("int", "float"):
        num = pd.to_numeric(col, errors="coerce")
        if to == "int":
            whole = num.isna() | (num == np.floor(num))
            num = num.where(whole)
            out = num.astype("Int64")
        else:
            out = num.astype("float64")
    elif to == "str":
        out = col.astype("string")
    elif to == "bool":
        if pd.api.types.is_bool_dtype(col):
            out = col.astype("boolean")
        else:
            text = col.astype("string").str.strip().str.lower()
            out = pd.Series(pd.NA, index=col.index, dtype="boolean")
            out[text.isin(_TRUE).fillna(False)] = True
            out[text.isin(_FALSE).fillna(False)] = False
    elif to == "datetime":
        out = pd.to_datetime(col, errors="coerce", utc=True)
    elif to == "category":
        out = col.astype("string")
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

    def process(self, part):
        for column, to in self.options.schema_.items():
            out, failed = cast_column(part[column], to)
            if self.options.on_error == "reject" and failed.any():
                raw = part[column].astype("string").str.slice(0, 40).to_numpy(dtype=object)
                part = reject(part, failed, np.array([f"cast:{column}:{to}={v}" for v in raw], dtype=object))
            part[column] = out
            part[f"_m_cast_failed:{column}"] = failed.astype(np.int64)
        return part


# -- validate_images --------------------------------------------------------------------


class ValidateImagesOptions(StageOptions):
    max_pixels: int = Field(50_000_000, gt=0, description="reject images with more pixels (decompression bombs)")
    min_side: int = Field(1, ge=1, description="reject images whose height or width is smaller")
    formats: list[str] | None = Field(None, description="allowed formats (png, jpeg, webp, ...); default any OpenCV reads")


@register
class ValidateImages(MapStage):
    """Decode every image; undecodable, truncated, empty or oversized ones go to rejects.

    Fills ``<image>_height``, ``<image>_width``, ``<image>_channels`` from the decoded
    pixels, so later stages can trust them.
    """

    name = "validate_images"
    Options = ValidateImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image or "image"

    def check(self, meta):
        self.require_columns(meta, [self._column()], what="image column (columns.image)")

    def process(self, part):
        col = self._column()
        o = self.options
        n = len(part)
        reasons = np.full(n, None, dtype=object)
        height = np.zeros(n, dtype=np.int64)
        width = np.zeros(n, dtype=np.int64)
        channels = np.zeros(n, dtype=np.int64)
        fmt_col = f"{col}_format"
        for i, data in enumerate(part[col].to_numpy()):
            reason, pixels = image_problem(data, o.max_pixels, o.min_side)
            if reason is None and o.formats is not None and fmt_col in part.columns:
                fmt = part[fmt_col].iat[i]
                if fmt not in o.formats:
                    reason = f"format-not-allowed:{fmt}"
            if reason is None:
                height[i], width[i] = pixels.shape[:2]
                channels[i] = 1 if pixels.ndim == 2 else pixels.shape[2]
            reasons[i] = reason
        bad = np.array([r is not None for r in reasons], dtype=bool)
        part = reject(part, bad, reasons)
        part[f"{col}_height"] = height
        part[f"{col}_width"] = width
        part[f"{col}_channels"] = channels
        return part
