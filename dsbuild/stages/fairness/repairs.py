"""What the stages that change the numeric features share: which features, and the rows
``fit_on`` fits them on.
"""

from __future__ import annotations

import pandas as pd
from pydantic import Field

from dsbuild.stages.base import (
    StageError,
)
from dsbuild.stages.conditions import Condition, rows_holding
from dsbuild.stages.fairness.base import FairnessStage, GroupOptions


class FeatureRepairOptions(GroupOptions):  # no label: favorable and privileged would do nothing
    columns: list[str] | None = Field(None, description="features to change (default: the job's numeric features)")
    fit_on: list[Condition] = Field(
        default_factory=list, description="rows to fit on, e.g. [{column: split, op: ==, value: train}]: every row is "
        "changed, as a scaler fitted on the training split transforms the test split")


class _FeatureRepair(FairnessStage):
    """Stages that change the numeric features (not the sensitive columns or the label),
    fitted on the rows ``fit_on`` names (default all) and applied to every row."""

    needs_label = False

    def reads_default_features(self) -> bool:
        return self.options.columns is None

    def features(self, meta) -> list[str]:
        cols = self.options.columns if self.options.columns is not None else self.ctx.roles.feature_columns(meta)
        return [c for c in cols if c not in self.sensitive and c != self.label]

    def fit_rows(self, part: pd.DataFrame) -> pd.DataFrame:
        return rows_holding(self.options.fit_on, part)

    def check(self, meta):
        super().check(meta)
        self.check_where(meta, self.options.fit_on)
        # a named column the stage would leave out, or none at all, changed nothing (or, for
        # columns: [], every feature) without a word
        for c in self.options.columns or []:
            if c in self.sensitive or c == self.label:
                role = "a sensitive column" if c in self.sensitive else "the label"
                raise StageError(f"stage {self.ctx.name!r}: columns names {c!r}, {role}; the stage changes features, "
                                 "never the groups or the label")
        if not self.features(meta):
            raise StageError(f"stage {self.ctx.name!r}: no features to change; name numeric columns in its columns "
                             "(or the job's columns.features)")
        self.require_columns(meta, self.features(meta), what="feature column")
        bad = [c for c in self.features(meta) if not pd.api.types.is_numeric_dtype(meta[c])]
        if bad:
            raise StageError(f"stage {self.ctx.name!r}: features must be numeric; {bad[0]!r} is {meta[bad[0]].dtype}")
