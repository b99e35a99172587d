"""``constraints``: functional dependencies (``zip -> city``) checked and repaired by majority."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.constraints import (
    COUNT,
    FunctionalDependency,
    majority_table,
    missing_value,
    pair_counts,
    repair,
)
from dsbuild.stages.base import Stage, StageOptions, register, reject, with_marks
from dsbuild.stages.clean.cells import _leaves_the_id


class ConstraintsOptions(StageOptions):
    rules: list[str] = Field(..., min_length=1, description="functional dependencies, e.g. 'zip -> city' or 'zip, state -> city'")
    action: Literal["repair", "reject"] = Field("repair", description="set violating cells to the majority value, or reject their rows")
    min_share: float = Field(0.5, ge=0, lt=1, description="repair only when the majority value's share of its group is above this")

    @model_validator(mode="after")
    def _parse(self):
        for text in self.rules:
            FunctionalDependency.parse(text)
        return self

    def dependencies(self) -> list[FunctionalDependency]:
        return [FunctionalDependency.parse(t) for t in self.rules]


@register
class Constraints(Stage):
    """Functional dependencies (``education -> education-num``) checked and repaired.

    For each rule every partition is shrunk to counts of its distinct (determinant,
    dependent) combinations; those counts are shuffled on the determinant so each
    group's counts from all partitions meet, and the groups that disagree come back as a
    small table (group → majority value) that a last map applies to the full rows. A
    dependent value that disagrees with its group's clear majority is a violation.
    ``repair`` replaces it by the majority value and keeps the old value in
    ``<col>_repaired_from`` (missing where untouched; the first rule to repair a cell
    wins), so an auditor can see and undo each repair with the rows it came from;
    ``reject`` sends the row to rejects as ``fd:<rule>=<majority value>``. A group
    without a clear majority is not repaired. Counters per rule: ``fd_violation:<rule>``
    (cells disagreeing with a clear majority), ``repaired:<rule>``, ``unresolved:<rule>``
    (cells in groups with no clear majority). Two passes over the input: a chain.

    Where the distinct combinations are few (up to ``PAIRS_IN_ONE_TASK``, as for a code and
    its name), the partitions' counts are merged by a tree instead of the shuffle.
    """

    name = "constraints"
    shape = "chain"
    Options = ConstraintsOptions

    def check(self, meta):
        for fd in self.options.dependencies():
            self.require_columns(meta, [*fd.determinant, *fd.dependent], what=f"column of rule '{fd}'")
            if self.options.action == "repair":
                _leaves_the_id(self, fd.dependent, "repair")

    def build(self, frame, shapes):
        self.tables_ = {}
        for fd in self.options.dependencies():
            label = f"{self.ctx.name}-{fd}"
            table = self._conflicts(frame, shapes, fd, label)
            self.tables_[str(fd)] = table
            frame = shapes.map(frame, functools.partial(self._enforce, fd=fd), shapes.broadcast(table), label=label)
        return frame

    def _conflicts(self, frame, shapes, fd: FunctionalDependency, label: str) -> pd.DataFrame:
        """The rule's :func:`majority_table`, from all partitions' counts.

        The counts are merged by a tree while they stay few: the shuffle cost a fixed
        share of every pair of partitions, and made the rule 10 of the 21 s of worker CPU
        of the Adult clean job on 80 partitions (0.9 of 3.2 s on 16). More combinations
        than ``PAIRS_IN_ONE_TASK`` (a determinant that is nearly an id) are shuffled on the
        determinant, at the cost of counting them once more.
        """
        majority = functools.partial(majority_table, fd=fd, min_share=self.options.min_share)
        merged = shapes.fit(frame, functools.partial(_few_pair_counts, fd=fd), functools.partial(_merge_pair_counts, fd=fd),
                            label=f"{label}-pairs")
        if merged is not None:
            return majority(merged)
        pairs = shapes.map(frame, functools.partial(pair_counts, fd=fd), label=f"{label}-pairs")
        conflicts = shapes.group(pairs, functools.partial(_determinant_key, columns=list(fd.determinant)), majority,
                                 label=f"{label}-groups")
        return shapes.fit(conflicts, _as_is, _concat, label=f"{label}-collect")

    def _enforce(self, part: pd.DataFrame, table: pd.DataFrame, fd: FunctionalDependency) -> pd.DataFrame:
        part = with_marks(part)
        violation = np.zeros(len(part), dtype=np.int64)
        repaired = np.zeros(len(part), dtype=np.int64)
        unresolved = np.zeros(len(part), dtype=np.int64)
        for column in fd.dependent:
            result = repair(part, table, fd, column)
            violation += result.repaired
            unresolved += result.unresolved
            if self.options.action == "reject":
                reasons = np.full(len(part), None, dtype=object)
                at = np.flatnonzero(result.repaired)
                reasons[at] = [f"fd:{fd}={m}" for m in result.majority.iloc[at]]
                part = reject(part, result.repaired, reasons)
                continue
            from_col = f"{column}_repaired_from"
            old = part[column].astype(result.majority.dtype)
            earlier = part[from_col] if from_col in part.columns else pd.Series(missing_value(old.dtype), index=part.index, dtype=old.dtype)
            part[from_col] = earlier.where(earlier.notna() | ~result.repaired, old)
            part[column] = result.values
            repaired += result.repaired
        part[f"_m_fd_violation:{fd}"] = violation
        part[f"_m_repaired:{fd}"] = repaired
        part[f"_m_unresolved:{fd}"] = unresolved
        return part

    def result_warnings(self, entry: dict) -> list[str]:
        """A rule that is no dependency of the data (``occupation -> workclass`` on Adult)
        still finds a majority in most groups, and repaired a fifth of the rows to it
        without a word; a dependency with a few entry errors disagrees with few rows."""
        notes = super().result_warnings(entry)
        rows, metrics = entry.get("in", 0), entry.get("metrics", {})
        for fd in self.options.dependencies():
            violations, unresolved = metrics.get(f"fd_violation:{fd}", 0), metrics.get(f"unresolved:{fd}", 0)
            if rows and violations + unresolved > CONSTRAINT_DOUBT * rows:
                done = "rejected" if self.options.action == "reject" else "repaired"
                notes.append(
                    f"stage {self.ctx.name!r}: rule '{fd}' disagrees with {violations + unresolved:,.0f} of {rows:,} rows "
                    f"({(violations + unresolved) / rows:.0%}: {violations:,.0f} {done}, {unresolved:,.0f} in groups without "
                    f"a clear majority); the data may not follow it: check the rule and its direction (a -> b: each a "
                    "has one b)")
        return notes

    def summary(self):
        out = {}
        for rule, table in getattr(self, "tables_", {}).items():
            clear = [c for c in table.columns if c.startswith("_clear:")]
            out[rule] = {
                "conflicted_groups": len(table),
                "groups_with_clear_majority": int(table[clear].all(axis=1).sum()) if clear else 0,
            }
        return out


CONSTRAINT_DOUBT = 0.10  # a rule more than this share of the rows disagree with is doubted (Adult: wrong rules 9-48 %)
PAIRS_IN_ONE_TASK = 200_000  # distinct (determinant, dependent) combinations merged in one task, not shuffled


def _few_pair_counts(part: pd.DataFrame, state, fd: FunctionalDependency) -> pd.DataFrame | None:
    """A partition's :func:`pair_counts`, or None where they are too many to merge in one task."""
    pairs = pair_counts(part, fd)
    return pairs if len(pairs) <= PAIRS_IN_ONE_TASK else None


def _merge_pair_counts(a: pd.DataFrame | None, b: pd.DataFrame | None, fd: FunctionalDependency) -> pd.DataFrame | None:
    """Two partitions' counts added by combination; None once they are too many (or were)."""
    if a is None or b is None:
        return None
    both = pd.concat([a, b], ignore_index=True)
    columns = [*fd.determinant, *fd.dependent]
    merged = both.groupby(columns, dropna=False, sort=False, observed=True)[COUNT].sum().reset_index()
    return merged if len(merged) <= PAIRS_IN_ONE_TASK else None


def _determinant_key(part: pd.DataFrame, columns: list[str]) -> pd.Series:
    return pd.util.hash_pandas_object(part[columns], index=False)


def _as_is(part: pd.DataFrame, state) -> pd.DataFrame:
    return part


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([a, b], ignore_index=True)
