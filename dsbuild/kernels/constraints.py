"""Functional dependencies (``zip -> city``): find the rows that break one, repair by majority.

The repair is the minimal one HoloClean's simplest signal gives: in each group of rows
that agree on the determinant, a dependent value that disagrees with a clear majority
is replaced by the majority value. A group without a clear majority is left alone and
reported as unresolved, because any choice would be a guess. Rows with a missing
determinant or dependent take no part.

The caller must pass *all* rows of a determinant group together (the stage shuffles on
the determinant first); within that, the result does not depend on row order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FunctionalDependency:
    determinant: tuple[str, ...]
    dependent: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FunctionalDependency:
        """``"zip -> city"`` or ``"zip, state -> city, county"``."""
        sides = text.split("->")
        if len(sides) != 2:
            raise ValueError(f"{text!r} is not a dependency; write it as 'a, b -> c'")
        left, right = (tuple(c.strip() for c in re.split(r",", side) if c.strip()) for side in sides)
        if not left or not right:
            raise ValueError(f"{text!r} needs columns on both sides of '->'")
        overlap = set(left) & set(right)
        if overlap:
            raise ValueError(f"{text!r}: {sorted(overlap)} is on both sides")
        return cls(left, right)

    def __str__(self) -> str:
        return f"{','.join(self.determinant)}->{','.join(self.dependent)}"


@dataclass
class Repair:
    """One dependent column after repair, and which of its cells changed or stayed unsure."""

    values: pd.Series
    repaired: np.ndarray
    unresolved: np.ndarray
    majority_share: np.ndarray


def group_codes(frame: pd.DataFrame, columns) -> np.ndarray:
    """A code per row for its determinant group; -1 when a determinant value is missing."""
    codes = frame.groupby(list(columns), sort=False, dropna=True).ngroup()
    return codes.fillna(-1).to_numpy(dtype=np.int64)


def repair_by_majority(groups: np.ndarray, values: pd.Series, min_share: float = 0.5) -> Repair:
    """Replace values that disagree with their group's majority (share > ``min_share``).

    Ties for the most frequent value are never resolved; ``majority_share`` is each
    row's group winner's share (NaN where the row takes no part).
    """
    n = len(values)
    vcodes, uniques = pd.factorize(values, sort=True, use_na_sentinel=True)
    ok = (groups >= 0) & (vcodes >= 0)
    repaired = np.zeros(n, dtype=bool)
    unresolved = np.zeros(n, dtype=bool)
    share = np.full(n, np.nan)
    if not ok.any():
        return Repair(values, repaired, unresolved, share)
    nv = max(len(uniques), 1)
    pair_keys, pair_counts = np.unique(groups[ok] * nv + vcodes[ok], return_counts=True)
    pg, pv = pair_keys // nv, pair_keys % nv
    order = np.lexsort((pv, -pair_counts, pg))
    pg, pv, pc = pg[order], pv[order], pair_counts[order]
    first = np.r_[True, pg[1:] != pg[:-1]]
    n_groups = int(groups.max()) + 1
    total = np.bincount(pg, weights=pc, minlength=n_groups)
    distinct = np.bincount(pg, minlength=n_groups)
    best_value = np.full(n_groups, -1, dtype=np.int64)
    best_count = np.zeros(n_groups, dtype=np.int64)
    best_value[pg[first]] = pv[first]
    best_count[pg[first]] = pc[first]
    runner_up = np.zeros(n_groups, dtype=np.int64)
    second = np.r_[False, ~first[1:] & first[:-1]]
    runner_up[pg[second]] = pc[second]
    with np.errstate(invalid="ignore", divide="ignore"):
        group_share = best_count / total
    clear = (group_share > min_share) & (best_count > runner_up)
    g = groups[ok]
    conflicted = distinct[g] > 1
    disagrees = vcodes[ok] != best_value[g]
    repaired[ok] = conflicted & clear[g] & disagrees
    unresolved[ok] = conflicted & ~clear[g]
    share[ok] = group_share[g]
    out = values.copy()
    if repaired.any():
        out.iloc[np.flatnonzero(repaired)] = uniques.take(best_value[groups[repaired]])
    return Repair(out, repaired, unresolved, share)
