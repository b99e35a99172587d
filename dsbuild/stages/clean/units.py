"""``normalize_units``: values written with units become numbers in one unit."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.units import UnitTable, convert_column, unit_key
from dsbuild.stages.base import MapStage, StageOptions, register, reject
from dsbuild.stages.clean.cells import (
    _as_received,
    _leaves_the_id,
    _rejects_as_received,
)


class UnitRule(StageOptions):
    """How one column's quantities become numbers in one unit."""

    to: str = Field(..., description="canonical unit: min, h, month, kg, cm, C, ... or your own with factors")
    unit_column: str | None = Field(None, description="column holding each row's unit, used when the value has none")
    assume: str | None = Field(None, description="unit of a bare number with no unit column entry (default: `to`)")
    factors: dict[str, float] = Field(default_factory=dict, description="your own units: how many `to` units one of it is (each read in its plural too: year, years)")
    on_error: Literal["reject", "null"] = Field("reject", description="a value that does not parse: reject the row, or make it missing")
    decimal: Literal[".", ","] = Field(".", description="decimal mark in the text: ',' reads 1,80 m and 1.000,5 g")

    @model_validator(mode="after")
    def _units_exist(self):
        table = UnitTable(self.to, self.factors)
        if self.assume is not None and table.problem(self.assume).startswith("ambiguous"):
            raise ValueError(f"assume: {self.assume!r} is minutes or months beside {self.to}; write min or mo")
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
    or ``EUR 12.50`` with ``factors: {$: 1, EUR: 1.08}``) become numbers in one unit.

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
