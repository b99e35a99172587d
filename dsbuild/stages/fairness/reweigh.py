"""``reweigh``: Kamiran & Calders weights W(s, y) = P(s)·P(y) / P(s, y), multiplied into the
weight column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.kernels.fairness import (
    LABEL,
    _text,
    factorize,
    group_codes,
    merge_tables,
    reweighing,
    usable_weights,
    weight_values,
)
from dsbuild.stages.base import (
    StageError,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.fairness.base import (
    FairnessStage,
    MitigationOptions,
    _one_label_groups,
)


@register
class Reweigh(FairnessStage):
    """Kamiran & Calders reweighing into the weight column, times any weight already there.

    With ``strength`` λ the weights give each group the favourable rate r_g + λ·(r − r_g)
    and keep each group's total weight. With ``where``, the counts come from those rows
    alone (the training split: no test label moves a training weight).
    """

    name = "reweigh"
    Options = MitigationOptions
    writes_weights = True

    def statistic(self):
        return None if self.options.where else self.table_statistic()  # the audit counts every row

    def partial(self, part, state):
        return self.table(self.counted(part))

    def combine(self, a, b):
        return merge_tables(a, b)

    def finalize(self, table, state):
        self.table_ = table
        self.require_where_rows(int(table["n"].sum()))
        self.check_privileged(table)
        self.check_favorable(table)
        return self._checked(reweighing, table, self.sensitive, self.options.strength)

    def apply(self, part, factors):
        weight = self.ctx.roles.weight
        chosen = self.chosen_rows(part)
        factor = np.where(chosen, _cell_lookup(part, factors, self.sensitive, self.label, self.bins, "factor", 1.0), 1.0)
        if weight not in part.columns:
            part[weight] = factor
            return part
        old = weight_values(part[weight])
        part = _without_unusable_weights(part, weight, old, chosen)
        part[weight] = old * factor
        return part

    def summary(self) -> dict:
        t, factors = self.table_, self.state_
        out = {**self.where_summary(), "weight_column": self.ctx.roles.weight, "factors": [
            {**{c: str(r[c]) for c in self.sensitive}, "label": _text(r[LABEL]), "count": int(r["n"]), "factor": round(float(r["factor"]), 6)}
            for _, r in factors.iterrows()
        ]}
        try:
            fav = self.favorable(t)
        except StageError:
            return out
        after = factors.assign(w=factors["w"] * factors["factor"])
        out.update(favorable=_text(fav), before=self.parity(t, fav), after=self.parity(after, fav))
        return out

    def result_warnings(self, entry: dict) -> list[str]:
        return super().result_warnings(entry) + _one_label_groups(self.ctx.name, entry.get("summary") or {}, "weights")


def _without_unusable_weights(part, weight, old, chosen) -> pd.DataFrame:
    """Rows reweigh would give a weight no trainer takes (missing, infinite or negative
    before, so after too) are rejected with the value: the counts already left them out."""
    bad = chosen & ~usable_weights(old)
    if not bad.any():
        return part
    return reject(with_marks(part), bad, np.array([f"weight:{weight}={v}" for v in old], dtype=object))


def _cell_lookup(part, table, sensitive, label, bins, column, default) -> np.ndarray:
    """``table[column]`` for each row's (groups, label) cell, by integer codes, not by text.

    The table is laid out once over the partition's own codes, so each row costs one
    multiply-add per key and one gather; a cell the table lacks gets ``default``.
    """
    local = [group_codes(part[c], bins.get(c)) for c in sensitive]
    codes, values = factorize(part[label])
    codes[codes < 0] = len(values)  # no label: a slot of its own, never in the table
    local.append((codes, values))
    sizes = [len(names) + (k == len(sensitive)) for k, (_, names) in enumerate(local)]
    cell, found = np.zeros(len(table), dtype=np.int64), np.ones(len(table), dtype=bool)
    for col, (_, names), size in zip([*sensitive, LABEL], local, sizes):
        at = pd.Index(names, dtype=object).get_indexer(pd.Index(table[col], dtype=object))
        found &= at >= 0
        cell = cell * size + np.maximum(at, 0)
    dense = np.full(int(np.prod(sizes)), default, dtype=np.float64)
    dense[cell[found]] = table[column].to_numpy(dtype=np.float64)[found]
    row = local[0][0].copy()
    for (codes, _), size in zip(local[1:], sizes[1:]):
        row *= size
        row += codes
    return dense[row]
