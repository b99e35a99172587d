"""``disparate_impact_remover``: Feldman et al.'s rank-preserving repair per group."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.fairness import (
    GROUP_JOIN,
    MISSING,
)
from dsbuild.kernels.quantiles import BINS, MAX_DISTINCT, GroupDistribution, repair
from dsbuild.stages.base import (
    StageError,
    register,
    with_marks,
)
from dsbuild.stages.fairness.repairs import FeatureRepairOptions, _FeatureRepair


def _in_kind(values: np.ndarray, column: pd.Series):
    """Repaired values in an integer column's own type, rounded, as oversample's new rows
    are, and as AIF360 keeps a column's type; other columns as float64. The values the
    counts hold exactly are whole already: only a histogram's are rounded. An integer
    feature had come out as float64."""
    if not pd.api.types.is_integer_dtype(column.dtype):
        return values
    return as_dtype(pd.Series(np.round(values), index=column.index), column.dtype)


class RepairOptions(FeatureRepairOptions):
    repair_level: float = Field(1.0, ge=0.0, le=1.0, description="0 leaves features as they are, 1 repairs fully; in between, "
                                "that part of the way in rank among the feature's values, as AIF360 (linearly past max_distinct)")
    max_distinct: int = Field(MAX_DISTINCT, gt=0, description="exact quantiles while a feature has at most this many distinct values")
    histogram_bins: int = Field(BINS, gt=1, description="else a histogram of this many bins: quantile error ≤ (max − min) / bins")


@register
class DisparateImpactRemover(_FeatureRepair):
    """Feldman et al.'s repair: each feature value moves to its quantile of the median of
    the groups' distributions, so the feature no longer tells groups apart while order
    within a group is kept. Tied values are spread over their quantile range by a
    per-record uniform, so a heavily tied value (40 hours a week) is repaired as a range.
    """

    name = "disparate_impact_remover"
    Options = RepairOptions
    needs_label = False

    def _values(self, part, c) -> np.ndarray:
        return pd.to_numeric(part[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def _scan(self, part, state=None):
        fitted = self.fit_rows(part)
        g = self.groups(fitted)
        dists = {c: GroupDistribution.scan(self._values(fitted, c), g, self.options.max_distinct) for c in self.features(part)}
        return dists, self._changed_groups(part)

    def _changed_groups(self, part) -> dict[str, set[str]]:
        """Per feature, the groups of the rows the stage changes (a finite value, every
        group known), which the rows ``fit_on`` names may lack."""
        if not self.options.fit_on:
            return {}
        g = self.groups(part)
        known = np.array([MISSING not in k.split(GROUP_JOIN) for k in g], dtype=bool)
        return {c: set(g[known & np.isfinite(self._values(part, c))]) for c in self.features(part)}

    def _merge_scans(self, a, b):
        return self._merge(a[0], b[0]), {c: a[1].get(c, set()) | b[1].get(c, set()) for c in {*a[1], *b[1]}}

    def _merge(self, a, b):
        return {c: a[c].merge(b[c], self.options.max_distinct) for c in a}

    def _histogram(self, part, edges):
        part = self.fit_rows(part)
        g = self.groups(part)
        return {c: GroupDistribution.histogram(self._values(part, c), g, e) for c, e in edges.items()}

    def build(self, frame, shapes):
        self._features = self.features(frame._meta)
        dists, changed = shapes.fit(frame, self._scan, self._merge_scans, label=f"{self.ctx.name}-scan")
        # a feature past max_distinct has no groups until its histogram pass: its range says it saw values
        self.require_where_rows(int(any(d.groups() or d.lo <= d.hi for d in dists.values())), "fit_on")
        edges = {c: d.histogram_edges(self.options.histogram_bins) for c, d in dists.items() if d.needs_histogram}
        if edges:
            hists = shapes.fit(frame, self._histogram, self._merge, edges, label=f"{self.ctx.name}-hist")
            for c, h in hists.items():
                dists[c] = GroupDistribution(dists[c].lo, dists[c].hi, None, h.edges, h.hist)
        self._require_fitted_groups(dists, changed)
        self.state_ = dists
        return shapes.map(frame, self._apply, shapes.broadcast(dists), label=self.ctx.name)

    def _require_fitted_groups(self, dists, changed) -> None:
        """A group none of the fitted rows has has no quantile function to repair from:
        its rows passed unrepaired, without a word."""
        for c, d in dists.items():
            missing = sorted(changed.get(c, set()) - set(d.groups()))
            if missing:
                raise StageError(
                    f"stage {self.ctx.name!r}: group {missing[0]!r} has {c} values in none of the rows fit_on "
                    f"({self._where_text('fit_on')}) names{f' (nor {missing[1:]})' if len(missing) > 1 else ''}, "
                    f"so there is no distribution to repair its rows from; fit on rows that have it, "
                    f"or merge it into a group they have first")

    def _apply(self, part, dists):
        part = with_marks(part)
        if part.empty:
            return part.astype({c: "float64" for c in dists if not pd.api.types.is_integer_dtype(part[c].dtype)})
        g = self.groups(part)
        spread, _ = self.draws(part)
        for c, d in dists.items():
            known = [k for k in d.groups() if MISSING not in k.split(GROUP_JOIN)]
            repaired = repair(d, self._values(part, c), g, self.options.repair_level, only=known, spread=spread)
            part[c] = _in_kind(repaired, part[c])
        return part

    def summary(self) -> dict:
        return {
            "repair_level": self.options.repair_level,
            "features": {
                c: {"exact": d.exact is not None, "quantile_error": round(d.error, 6), "groups": d.groups()}
                for c, d in self.state_.items()
            },
        }
