"""Functional dependencies (``zip -> city``): find the rows that break one, repair by majority.

The repair is the minimal one HoloClean's simplest signal gives: in each group of rows
that agree on the determinant, a dependent value that disagrees with a clear majority
is replaced by the majority value. A group without a clear majority is left alone and
reported as unresolved, because any choice would be a guess. Rows with a missing
determinant or dependent take no part.

Only counts travel: :func:`pair_counts` shrinks a partition to its distinct
(determinant, dependent) combinations with their row counts; counts of one determinant
group from every partition, brought together, give :func:`majority_table` (the
conflicted groups only, with their majority); :func:`repair` applies that small table
to any partition. Counts add, so the result does not depend on partitioning or order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsbuild.kernels.dtypes import holding


def _comparison_hint(text: str) -> str:
    """Where a rule compares (``amount >= 0``, ``start < end``), the stage that does: a user
    who took constraints for row checks was told only how to write a dependency."""
    if not re.search(r"[<>]|!=", text):
        return ""
    return ("; constraints repairs dependencies (each a, b has one c). A bound on a column is ranges' "
            "({columns: {amount: {min: 0}}}), a test of a column against a value select's where")


@dataclass(frozen=True)
class FunctionalDependency:
    determinant: tuple[str, ...]
    dependent: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FunctionalDependency:
        """``"zip -> city"`` or ``"zip, state -> city, county"``."""
        sides = text.split("->")
        if len(sides) != 2:
            raise ValueError(f"{text!r} is not a dependency; write it as 'a, b -> c'" + _comparison_hint(text))
        left, right = (tuple(c.strip() for c in re.split(r",", side) if c.strip()) for side in sides)
        if not left or not right:
            raise ValueError(f"{text!r} needs columns on both sides of '->'")
        overlap = set(left) & set(right)
        if overlap:
            raise ValueError(f"{text!r}: {sorted(overlap)} is on both sides")
        return cls(left, right)

    def __str__(self) -> str:
        return f"{','.join(self.determinant)}->{','.join(self.dependent)}"


COUNT = "_n"
MAJORITY = "_majority:"
CLEAR = "_clear:"
CONFLICTED = "_conflicted:"


@dataclass
class Repair:
    """One dependent column after repair, and which of its cells changed or stayed unsure."""

    values: pd.Series
    repaired: np.ndarray
    unresolved: np.ndarray
    majority: pd.Series


def pair_counts(frame: pd.DataFrame, fd: FunctionalDependency) -> pd.DataFrame:
    """Distinct (determinant, dependents) combinations and how many rows hold each.

    Rows with a missing determinant value are left out; a missing dependent stays in
    (it counts for no dependent value but the others).
    """
    columns = [*fd.determinant, *fd.dependent]
    counts = frame.groupby(columns, dropna=False, sort=False, observed=True).size()
    out = counts.reset_index(name=COUNT)
    known = out[list(fd.determinant)].notna().all(axis=1).to_numpy()
    return out if known.all() else out[known].reset_index(drop=True)


def majority_table(pairs: pd.DataFrame, fd: FunctionalDependency, min_share: float = 0.5) -> pd.DataFrame:
    """The determinant groups that disagree on some dependent, from *all* their counts.

    One row per such group: the determinant values and, per dependent ``d``,
    ``_majority:d`` (the most frequent value), ``_clear:d`` (its share is above
    ``min_share`` and no other value ties it) and ``_conflicted:d`` (the group holds
    more than one value of ``d``). Ties are never resolved.
    """
    det = list(fd.determinant)
    tables = [_majority_of(pairs, det, dep, min_share) for dep in fd.dependent]
    out = tables[0]
    for more in tables[1:]:
        out = out.merge(more, on=det, how="outer")
    for dep in fd.dependent:
        out[CONFLICTED + dep] = out[CONFLICTED + dep].astype("boolean").fillna(False).astype(bool)
        out[CLEAR + dep] = out[CLEAR + dep].astype("boolean").fillna(False).astype(bool)
    return out.reset_index(drop=True)


def _majority_of(pairs: pd.DataFrame, det: list[str], dep: str, min_share: float) -> pd.DataFrame:
    pairs = pairs[pairs[dep].notna().to_numpy()]
    summed = pairs.groupby([*det, dep], sort=False, observed=True)[COUNT].sum().reset_index()
    group = summed.groupby(det, sort=False, observed=True).ngroup().to_numpy()
    value, _ = pd.factorize(summed[dep], sort=True)
    count = summed[COUNT].to_numpy(dtype=np.int64)
    order = np.lexsort((value, -count, group))
    group, count = group[order], count[order]
    first = np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, dtype=bool)
    n_groups = int(group.max()) + 1 if len(group) else 0
    total = np.bincount(group, weights=count, minlength=n_groups)
    distinct = np.bincount(group, minlength=n_groups)
    best = np.zeros(n_groups, dtype=np.int64)
    best[group[first]] = count[first]
    runner_up = np.zeros(n_groups, dtype=np.int64)
    second = np.r_[False, ~first[1:] & first[:-1]] if len(group) else first
    runner_up[group[second]] = count[second]
    with np.errstate(invalid="ignore", divide="ignore"):
        clear = (best / total > min_share) & (best > runner_up)
    winners = order[first]
    conflicted = distinct[group[first]] > 1
    out = summed.iloc[winners[conflicted]][det].reset_index(drop=True)
    out[MAJORITY + dep] = summed[dep].iloc[winners[conflicted]].to_numpy()
    out[CLEAR + dep] = clear[group[first]][conflicted]
    out[CONFLICTED + dep] = True
    return out


def table_positions(frame: pd.DataFrame, table: pd.DataFrame, columns) -> np.ndarray:
    """Each row's position in ``table`` by its determinant values; -1 when absent or missing."""
    columns = list(columns)
    if table.empty or frame.empty:
        return np.full(len(frame), -1, dtype=np.int64)
    codes, uniques = _distinct_rows(frame, columns)
    if len(columns) == 1:
        index = pd.Index(table[columns[0]])
        found = index.get_indexer(uniques[columns[0]])
    else:
        index = pd.MultiIndex.from_frame(table[columns])
        found = index.get_indexer(pd.MultiIndex.from_frame(uniques))
    return np.r_[found, -1][codes].astype(np.int64)


def _distinct_rows(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """(code per row, -1 if a value is missing; the distinct rows) without hashing whole rows twice."""
    codes, uniques = pd.factorize(frame[columns[0]])
    values = [pd.Series(uniques)]
    for column in columns[1:]:
        more, more_uniques = pd.factorize(frame[column])
        width = len(more_uniques) + 1
        combined = np.where((codes < 0) | (more < 0), -1, codes.astype(np.int64) * width + more)
        keys, inverse = np.unique(combined, return_inverse=True)
        if len(keys) and keys[0] == -1:
            keys, inverse = keys[1:], inverse - 1
        values = [v.iloc[keys // width].reset_index(drop=True) for v in values] + [
            pd.Series(more_uniques).iloc[keys % width].reset_index(drop=True)
        ]
        codes = inverse.reshape(-1)
    return codes.astype(np.int64), pd.DataFrame(dict(zip(columns, values)))


def repair(frame: pd.DataFrame, table: pd.DataFrame, fd: FunctionalDependency, dep: str) -> Repair:
    """Apply a :func:`majority_table` to one dependent column of any set of rows."""
    col = frame[dep]
    n = len(frame)
    pos = table_positions(frame, table, fd.determinant)
    at = np.flatnonzero(pos >= 0)
    if len(at):
        col = col.astype(holding(col.dtype, table[MAJORITY + dep].iloc[pos[at]]))
    repaired = np.zeros(n, dtype=bool)
    unresolved = np.zeros(n, dtype=bool)
    held = _nullable(col.dtype)
    majority = pd.Series(missing_value(held), index=frame.index, dtype=held)
    if not len(at):
        return Repair(col, repaired, unresolved, majority)
    rows = table.iloc[pos[at]]
    present = col.iloc[at].notna().to_numpy()
    conflicted = rows[CONFLICTED + dep].to_numpy(dtype=bool) & present
    clear = rows[CLEAR + dep].to_numpy(dtype=bool)
    unresolved[at[conflicted & ~clear]] = True
    candidates = at[conflicted & clear]
    winner = pd.Series(rows[MAJORITY + dep].to_numpy()[conflicted & clear]).astype(col.dtype)
    differs = (col.iloc[candidates].reset_index(drop=True) != winner).to_numpy(dtype=bool, na_value=False)
    changed = candidates[differs]
    repaired[changed] = True
    majority.iloc[candidates] = winner.to_numpy()
    values = col
    if len(changed):
        values = col.copy()
        values.iloc[changed] = winner[differs].to_numpy()
    return Repair(values, repaired, unresolved, majority)


def missing_value(dtype):
    """The missing value a column of ``dtype`` is filled with: NaN for numpy floats,
    which refuse pandas' NA."""
    numpy_float = not isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_float_dtype(dtype)
    return np.nan if numpy_float else pd.NA


def _nullable(dtype):
    """A dtype like ``dtype`` that can also hold a missing value. An object column stays
    one: pandas calls it a string dtype, but it may hold dates, decimals or lists."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "Int64"
    if pd.api.types.is_float_dtype(dtype):
        return np.float64
    return "str" if pd.api.types.is_string_dtype(dtype) and dtype != object else dtype
