"""``resample``: uniform or preferential sampling to the cell sizes that make group and label
independent.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.fairness import (
    LABEL,
    _text,
    cell_text,
    resample_targets,
)
from dsbuild.records import ID, child_id, copy_kind
from dsbuild.stages.base import (
    ADDED,
    REJECT,
    StageError,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.fairness.base import FairnessStage, RankerOptions, _one_label_groups
from dsbuild.stages.fairness.cells import (
    CellChooser,
    _borderline_keys,
    _favorable_rows,
    _isna,
    _joint,
)


def _label_text(values) -> np.ndarray:
    return np.array([None if _isna(v) else _text(v) for v in values], dtype=object)


SAMPLED_OUT = "sampled-out-of-cell"  # reject rule; the detail after '=' is the cell, as the summary's cells name it


class ResampleOptions(RankerOptions):
    method: Literal["uniform", "preferential"] = Field(
        "uniform", description="uniform: random rows; preferential: borderline rows first, by the ranker's score"
    )


@register
class Resample(FairnessStage):
    """Kamiran & Calders sampling to the cell sizes that make group and label independent.

    An oversized cell loses rows (to rejects, reason ``sampled-out-of-cell=<group>/<label>``,
    the cell's name as the summary gives it; a part holding ``/`` is quoted, ``"a/b"/c``), an
    undersized one gains copies (ids ``parent#rs<k>``): every row ``⌊d / n⌋`` copies and
    ``d mod n`` rows one more. ``uniform`` picks rows at random (seeded per record);
    ``preferential`` picks the rows nearest the decision boundary first: positives with
    the lowest score, negatives with the highest.
    """

    name = "resample"
    adds_rows = True
    Options = ResampleOptions

    def reads_default_features(self) -> bool:
        return self.options.method == "preferential"

    def build(self, frame, shapes):
        self.ranker_ = None
        state = None
        if self.options.method == "preferential":
            self.ranker_ = self.fit_ranker(frame, shapes)
            state = {"favorable": self.sample_favorable_, "ranker": self.ranker_}
        chooser = CellChooser(self, self._cell, self._keys)
        self.table_, hists = shapes.fit(frame, chooser.count, chooser.merge_counts, state, label=self.ctx.name)
        self.check_privileged(self.table_)
        self.check_favorable(self.table_)
        self.require_where_rows(int(self.table_["n"].sum()))
        targets = self._checked(resample_targets, self.table_, self.sensitive, self.options.strength)
        targets["cell"] = cell_text(_joint(targets, self.sensitive), np.array([_text(y) for y in targets[LABEL]], dtype=object))
        self.targets_ = targets
        wanted, action, base = {}, {}, {}
        for cell, n, target in zip(targets["cell"], targets["n"], targets["target"]):
            if n > target:
                wanted[cell], action[cell] = int(n - target), -1
            elif n < target:
                wanted[cell], action[cell], base[cell] = int((target - n) % n), 1, int((target - n) // n)
        plan = chooser.plan(frame, shapes, wanted, hists, state)
        plan["action"] = np.array([action.get(c, 0) for c in plan["index"]], dtype=np.int64)
        plan["base"] = np.array([base.get(c, 0) for c in plan["index"]], dtype=np.int64)
        self.state_ = plan
        self._chooser = chooser
        return shapes.map(frame, self._apply, shapes.broadcast(plan), label=self.ctx.name)

    def _cell(self, part, state) -> np.ndarray:
        """Each row's (group, label) cell; None for a row without a label or outside ``where``."""
        labels = _label_text(part[self.label].to_numpy())
        cells = cell_text(self.groups(part), labels)
        cells[pd.isna(labels) | ~self.chosen_rows(part)] = None
        return cells

    def _keys(self, part, state) -> tuple[np.ndarray, np.ndarray]:
        u, fold = self.draws(part, self.options.folds)
        if state is None:
            return u, u
        positive = _favorable_rows(part[self.label], state["favorable"])
        return _borderline_keys(self.scores(part, state["ranker"], fold), positive), u

    def _apply(self, part, plan):
        part = with_marks(part)
        if part.empty or not len(plan["index"]):  # no cells: no counted row has a label
            return part
        codes, picked = self._chooser.chosen(part, plan)
        at = np.maximum(codes, 0)
        action = np.where(codes >= 0, plan["action"][at], 0)
        remove = (action < 0) & picked
        copies = np.where(action > 0, plan["base"][at] + picked, 0)
        cells = np.asarray(plan["index"], dtype=object)
        reasons = np.array([f"{SAMPLED_OUT}={cells[c]}" if r else None for c, r in zip(at, remove)], dtype=object)
        part = reject(part, remove, reasons)
        if copies.sum() == 0:
            return part
        rows = np.repeat(np.arange(len(part)), copies)
        k = np.concatenate([np.arange(1, c + 1) for c in copies if c > 0])
        added = part.iloc[rows].copy()
        kind = copy_kind(self.ctx.name, "rs")
        added[ID] = [child_id(p, kind, int(j)) for p, j in zip(added[ID].astype(str), k)]
        added[ADDED] = True
        added[REJECT] = None
        return pd.concat([part, added])

    def summary(self) -> dict:
        t = self.targets_
        out = {
            **self.where_summary(),
            "method": self.options.method,
            "cells": [
                {"cell": c, "count": int(n), "target": int(tg), "expected": round(float(e), 3)}
                for c, n, tg, e in zip(t["cell"], t["n"], t["target"], t["expected"])
            ],
        }
        try:
            fav = self.favorable(self.table_)
        except StageError:
            return out
        counts = self.table_.assign(w=self.table_["n"].astype(float))
        after = t.assign(n=t["target"], w=t["target"].astype(float))[[*self.sensitive, LABEL, "n", "w"]]
        out.update(favorable=_text(fav), before=self.parity(counts, fav), after=self.parity(after, fav))
        return out

    def result_warnings(self, entry: dict) -> list[str]:
        return super().result_warnings(entry) + _one_label_groups(self.ctx.name, entry.get("summary") or {}, "samples")
