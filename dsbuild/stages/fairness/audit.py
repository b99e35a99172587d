"""``fairness_audit``: counts, base rates, SPD and DI per group and intersection, and with a
``model`` the parity of its out-of-fold predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.fairness import (
    MIN_SKILL,
    MISSING,
    _text,
    equalized_odds,
    merge_tables,
    prediction_skill,
    skill,
    tidy,
)
from dsbuild.stages.base import (
    register,
)
from dsbuild.stages.fairness.base import (
    FairnessOptions,
    FairnessStage,
    ModelName,
    _jsonable,
    _small_group_notes,
)

PRED = "_pred"


class AuditOptions(FairnessOptions):
    model: ModelName | None = Field(None, description="also audit this model's out-of-fold predictions")
    sample_rows: int = Field(200_000, gt=10, description="rows the model is fitted on (a seeded uniform sample)")
    folds: int = Field(5, ge=2, le=20, description="out-of-fold predictions: one model per fold")
    by: list[str] = Field(default_factory=list, description="also audit the rows of each value of these columns apart, "
                          "e.g. [split]: the training, validation and test rows' own figures")


BY = "_by:"


@register
class FairnessAudit(FairnessStage):
    """Per group and intersection: counts, base rates, SPD and DI, into the manifest.

    With ``model``, also the demographic parity and equalized odds differences of that
    model's out-of-fold predictions. With ``by``, the same figures for each value of those
    columns (each split), from the same pass. Rows pass through unchanged.
    """

    name = "fairness_audit"
    Options = AuditOptions

    @property
    def passes_rows_through(self) -> bool:
        return True

    def reads_default_features(self) -> bool:
        return self.options.model is not None

    def build(self, frame, shapes):
        """Without a model the counts are the table a ``reweigh`` over the same rows counts
        too, so they are fitted as that statistic: built with the same Shapes (as the
        pipeline builds a job), the reweigh reads them instead of passing over the rows
        again."""
        self.ranker_ = self.fit_ranker(frame, shapes) if self.options.model else None
        statistic = self.table_statistic() if self.ranker_ is None and not self.options.by else None
        self.table_ = shapes.fit(frame, self._count_with_predictions, merge_tables, label=self.ctx.name, statistic=statistic)
        self.check_privileged(self.table_)
        return shapes.pass_through(frame, self._pass_through, label=self.ctx.name)

    def check(self, meta):
        super().check(meta)
        self.require_columns(meta, self.options.by, what="by column")

    def result_warnings(self, entry: dict) -> list[str]:
        """A model that predicts nearly one outcome for everyone has near-equal rates in every
        group: its parity figures read as fair when it learned nothing (German credit's
        numeric columns: accuracy 0.706 where the favourable rate is 0.700)."""
        notes = super().result_warnings(entry) + self._small_by_group_notes(entry.get("summary") or {})
        model = (entry.get("summary") or {}).get("model")
        if not model or model.get("balanced_accuracy") is None or skill(model["balanced_accuracy"], 0.5) >= MIN_SKILL:
            return notes
        return notes + [
            f"stage {self.ctx.name!r}: its {model['name']} tells the labels apart little better than chance (out-of-fold "
            f"balanced accuracy {model['balanced_accuracy']:.3f}, chance 0.5; accuracy {model['accuracy']:.3f}), so its "
            "parity figures describe a model that predicts much the same for every row, not a fair one. Give it features "
            "that predict the label (columns.features; text and category columns are one-hot encoded)"]

    def _small_by_group_notes(self, summary: dict) -> list[str]:
        """``by``'s figures are each value's rows alone, a share of the whole: Adult's test
        split (15 %) by sex × race has groups of 16 rows where the whole has 109, and its
        disparate impact is their luck, which the whole's note did not say."""
        notes = []
        for column, values in (summary.get("by") or {}).items():
            for value, audit in values.items():
                views = {f"{view} (rows where {column} = {value})": v for view, v in (audit.get("data") or {}).items()}
                notes += _small_group_notes(self.ctx.name, views)
        return notes

    def _count_with_predictions(self, part, state=None):
        extra = {f"{BY}{c}": _by_text(part[c]) for c in self.options.by}
        if self.ranker_ is not None:
            extra[PRED] = np.where(self.scores(part, self.ranker_) >= 0.5, "favorable", "unfavorable")
        return self.table(part, extra=extra or None)

    def summary(self) -> dict:
        by = [f"{BY}{c}" for c in self.options.by]
        t = tidy(self.table_.drop(columns=by)) if by else self.table_
        fav = self.favorable(t)
        out = {"favorable": _text(fav), **self._audit(t, fav)}
        if by:
            out["by"] = {
                c: {str(v): self._audit(tidy(rows.drop(columns=by)), fav) for v, rows in self.table_.groupby(f"{BY}{c}", sort=True)}
                for c in self.options.by
            }
        return out

    def _audit(self, t: pd.DataFrame, fav) -> dict:
        out = {"rows": int(t["n"].sum()), "data": self.parity(t, fav)}
        if self.ranker_ is not None:
            t = t.assign(**{PRED: np.where(t[PRED] == "favorable", fav, None)})
            out["model"] = {
                "name": self.options.model,
                "sample_rows": int(self.ranker_.n_samples_),
                **_jsonable(prediction_skill(t, fav, PRED)),
                "predictions": self.parity(t, fav, outcome=PRED),
                "equalized_odds": _jsonable(equalized_odds(t, self.sensitive, fav, PRED)),
            }
        return out


def _by_text(col: pd.Series) -> np.ndarray:
    """A ``by`` column's values as text, named as sensitive groups are (19, not 19.0); a
    missing one is a value of its own, so its rows still count in the whole."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    names = np.array([_text(v) for v in uniques] + [MISSING], dtype=object)
    return names[codes]  # the sentinel -1 picks MISSING
