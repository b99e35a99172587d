"""``outliers``: values far from their column's or group's centre, flagged, emptied or rejected."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.robust import Distribution, iqr_fences, robust_scale
from dsbuild.stages.base import (
    FitApplyStage,
    StageError,
    StageOptions,
    register,
    reject,
)
from dsbuild.stages.clean.cells import (
    _as_received,
    _details,
    _earlier_marks,
    _jsonable,
    _leaves_the_id,
    _may_hold_missing,
    _rejects_as_received,
)
from dsbuild.stages.clean.groups import _groups, _merge_dicts, _per_group
from dsbuild.stages.conditions import is_number_column


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
            part[f"{column}_outlier"] = outlier | _earlier_marks(part, f"{column}_outlier")
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
