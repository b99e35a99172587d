"""Row tests written as data, ``{column: age, op: ">=", value: 18}``: what ``select`` keeps,
and which rows ``augment``, ``oversample`` and ``synthesize`` make rows from (``where``)."""

from __future__ import annotations

import operator
import re
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import model_validator

from dsbuild.kernels.labeling_functions import comparable
from dsbuild.stages.base import StageError, StageOptions

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null", "matches", "contains"]
OPS_HELP = ("{column, op, value}; op is one of == != < <= > >= in not_in (a list) is_null not_null (no value), "
            "matches (a regular expression the whole value matches) or contains (one found anywhere in it)")


class Condition(StageOptions):
    """One row test, written as data: ``{column: age, op: ">=", value: 18}``; ``matches``
    a regular expression the whole value matches (``Prof.*``), ``contains`` one found
    anywhere in it (``^Prof`` or ``Prof``)."""

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
        if self.op in ("matches", "contains"):
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
        if op == "matches":
            return col.astype("string").str.fullmatch(str(v)).fillna(False).to_numpy(dtype=bool)
        if op == "contains":
            return col.astype("string").str.contains(str(v), regex=True).fillna(False).to_numpy(dtype=bool)
        try:
            if op in ("in", "not_in"):
                found = col.isin([_comparable(col, x) for x in v]).to_numpy()
                return found if op == "in" else ~found & col.notna().to_numpy()
            result = _COMPARE[op](col, _comparable(col, v))
        except (TypeError, ValueError) as e:
            raise StageError(f"cannot compare column {self.column!r} ({col.dtype}) {op} {v!r}: {e}") from None
        return result.fillna(False).to_numpy(dtype=bool) & col.notna().to_numpy()

    def describe(self) -> str:
        """``split == 'train'``: the test as a reader writes it, for messages."""
        return f"{self.column} {self.op}" + ("" if self.value is None else f" {self.value!r}")

    def __str__(self) -> str:
        """``age:ge:18`` — no ``=`` inside, which would split the rule from its detail."""
        op = _OP_NAMES.get(self.op, self.op)
        if self.value is None:
            return f"{self.column}:{op}"
        value = ",".join(map(str, self.value)) if isinstance(self.value, (list, tuple)) else self.value
        return f"{self.column}:{op}:{value}"


_OP_NAMES = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _comparable(col: pd.Series, value):
    """A condition's value as the column holds its values (see :func:`comparable`); text
    is never compared with a number, nor a number with text, which would only ever be
    unequal (a column of ages read as text because one says "twenty")."""
    if is_number_column(col.dtype) and isinstance(value, str):
        raise TypeError("a number column is not compared with text")
    if _is_number(value) and pd.api.types.is_string_dtype(col.dtype) and not col.dtype == object:
        raise TypeError(f"a text column is not compared with a number; write the value as text ('{value}'), "
                        f"or cast the column first (cast: {{schema: {{{col.name}: float}}}})")
    return comparable(col, value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def is_number_column(dtype) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def all_hold(conditions: list[Condition], part: pd.DataFrame) -> np.ndarray:
    """True where a row passes every condition (every row, with none)."""
    ok = np.ones(len(part), dtype=bool)
    for cond in conditions:
        ok &= cond.holds(part[cond.column])
    return ok


def rows_holding(conditions: list[Condition], part: pd.DataFrame) -> pd.DataFrame:
    """The partition's rows that pass every condition; the partition itself, uncopied, with none."""
    return part[all_hold(conditions, part)] if conditions else part
