"""``massage``: flip the labels of the rows nearest the decision boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.fairness import (
    LABEL,
    _text,
    massage_changes,
)
from dsbuild.stages.base import (
    METRIC,
    StageError,
    register,
    with_marks,
)
from dsbuild.stages.fairness.base import FairnessStage, RankerOptions
from dsbuild.stages.fairness.cells import (
    CellChooser,
    _borderline_keys,
    _favorable_rows,
    _joint,
)


@register
class Massage(FairnessStage):
    """Relabel the rows nearest the decision boundary until every group has the overall
    favourable rate (Kamiran & Calders' massaging; M = (|D|·|F+| − |F|·|D+|) / n for two
    groups): promote a deprived group's negatives with the highest scores, demote a
    favoured group's positives with the lowest. The label must have two values.
    """

    name = "massage"
    Options = RankerOptions

    def reads_default_features(self) -> bool:
        return True

    def build(self, frame, shapes):
        self.ranker_ = self.fit_ranker(frame, shapes)
        state = {"favorable": self.sample_favorable_, "ranker": self.ranker_}
        chooser = CellChooser(self, self._cell, self._keys)
        self.table_, hists = shapes.fit(frame, chooser.count, chooser.merge_counts, state, label=self.ctx.name)
        self.check_privileged(self.table_)
        fav = self.favorable(self.table_)
        labels = list(self.table_[LABEL].unique())
        others = [v for v in labels if v != fav]
        if len(others) != 1:
            raise StageError(f"stage {self.ctx.name!r}: massaging needs a label with two values, got {sorted(map(str, labels))}")
        state["unfavorable"] = others[0]
        changes = self._checked(massage_changes, self.table_, self.sensitive, fav, self.options.strength)
        changes["group"] = _joint(changes, self.sensitive)
        self.changes_ = changes
        wanted = {}
        for group, change in zip(changes["group"], changes["change"]):
            if change > 0:
                wanted[f"{group}/-"] = int(change)
            elif change < 0:
                wanted[f"{group}/+"] = int(-change)
        self.state_ = chooser.plan(frame, shapes, wanted, hists, state)
        self._chooser = chooser
        return shapes.map(frame, self._apply, shapes.broadcast(self.state_), label=self.ctx.name)

    def _positive(self, part, fav) -> np.ndarray:
        return _favorable_rows(part[self.label], fav)

    def _cell(self, part, state) -> np.ndarray:
        groups = self.groups(part).astype(str)
        sign = np.where(self._positive(part, state["favorable"]), "/+", "/-")
        cells = np.char.add(groups, sign).astype(object)
        cells[part[self.label].isna().to_numpy() | ~self.chosen_rows(part)] = None
        return cells

    def _keys(self, part, state) -> tuple[np.ndarray, np.ndarray]:
        u, fold = self.draws(part, self.options.folds)
        positive = self._positive(part, state["favorable"])
        return _borderline_keys(self.scores(part, state["ranker"], fold), positive), u

    def _apply(self, part, plan):
        part = with_marks(part)
        state = plan["state"]
        promote = np.zeros(len(part), dtype=bool)
        demote = np.zeros(len(part), dtype=bool)
        if len(part):
            _, picked = self._chooser.chosen(part, plan)
            positive = self._positive(part, state["favorable"])
            promote, demote = picked & ~positive, picked & positive
            labels = part[self.label].to_numpy(dtype=object, copy=True)
            labels[promote] = state["favorable"]
            labels[demote] = state["unfavorable"]
            part[self.label] = as_dtype(pd.Series(labels, index=part.index), part[self.label].dtype)
        part[f"{METRIC}promoted"] = promote.astype(np.int64)
        part[f"{METRIC}demoted"] = demote.astype(np.int64)
        return part

    def summary(self) -> dict:
        fav = self.state_["state"]["favorable"]
        c = self.changes_
        before = self.table_.assign(w=self.table_["n"].astype(float))
        # each group's flips as cell counts: the cell a flipped row lands in may have had no row
        # (a group of one row, all positive), so the flips are added as cells of their own
        keys = [*self.sensitive, LABEL]
        moved = c[c["change"] != 0]
        flips = pd.concat([moved[self.sensitive].assign(**{LABEL: label, "n": sign * moved["change"]})
                           for label, sign in ((fav, 1), (self.state_["state"]["unfavorable"], -1))], ignore_index=True)
        after = pd.concat([before[[*keys, "n"]], flips], ignore_index=True)
        after = after.groupby(keys, sort=True, dropna=False)["n"].sum().reset_index()
        after = after[after["n"] > 0].astype({"n": np.int64}).reset_index(drop=True)
        after["w"] = after["n"].astype(float)
        return {
            **self.where_summary(),
            "favorable": _text(fav),
            "model": self.options.model,
            "changes": [{"group": g, "count": int(n), "positives": int(p), "change": int(ch)}
                        for g, n, p, ch in zip(c["group"], c["n"], c["positives"], c["change"])],
            "before": self.parity(before, fav),
            "after": self.parity(after, fav),
        }
