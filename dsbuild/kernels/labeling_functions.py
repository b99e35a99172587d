"""Labeling functions declared as data: a rule casts its label where its conditions hold.

Conditions are comparisons, value sets and regular expressions, read from a job file
and evaluated with pandas, so nothing from the file is executed. Python users may pass
functions ``frame -> labels`` instead (``None``/NaN abstains).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

COMPARISONS = {
    "==": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}
OPS = (*COMPARISONS, "in", "not_in", "between", "contains", "matches", "is_null", "not_null")


def comparable(col: pd.Series, value):
    """A condition's value as the column holds its values. A job file writes a date or time
    as text (JSON) or as a date (YAML), while a Parquet timestamp column holds Timestamps,
    often with a zone, and a date column holds dates: compared as they came, a date column
    never equalled its date written as text and refused ``<`` with it, and a timestamp
    column refused a date. A time without a zone is read in the column's zone."""
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        if isinstance(value, (str, datetime.date)):
            return in_column_zone(value, col.dtype)
    elif col.dtype == object and isinstance(value, str):
        first = col.dropna().iloc[:1].tolist()
        if first and isinstance(first[0], datetime.date) and not isinstance(first[0], datetime.datetime):
            return datetime.date.fromisoformat(value)
    return value


def in_column_zone(value, dtype) -> pd.Timestamp:
    """A time (text or a date) as a timestamp column of ``dtype`` compares it: one without a
    zone is read in the column's zone, as the column's values are shown, one with a zone is
    converted to it. ``select``, ``ranges`` and the labeling functions read times alike.
    A column without a zone cannot place a time given with one (its values' zone is not
    known): that is refused, where ``ranges`` had dropped the zone and ``select`` failed
    with pandas' "Invalid comparison"."""
    stamp = pd.Timestamp(value)
    tz = getattr(dtype, "tz", None)
    if tz is None:
        if stamp.tzinfo is not None:
            raise TypeError(f"{value} has a zone ({stamp.tzinfo}) and the column's times have none: write it "
                            f"without one ({stamp.tz_localize(None).isoformat()}), as the column's values are")
        return stamp
    return stamp.tz_localize(tz) if stamp.tzinfo is None else stamp.tz_convert(tz)


@dataclass(frozen=True)
class RuleCondition:
    """``column op value``: comparisons, ``in``/``not_in`` a list, ``between`` [lo, hi],
    ``contains`` (regular expression found anywhere), ``matches`` (whole value),
    ``is_null``/``not_null``. A missing value holds only for ``is_null``."""

    column: str
    op: str
    value: Any = None
    case: bool = True

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; ops are {', '.join(OPS)}")
        if self.op in ("in", "not_in") and not isinstance(self.value, (list, tuple)):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "between" and not (isinstance(self.value, (list, tuple)) and len(self.value) == 2):
            raise ValueError("op 'between' needs [low, high]")
        if self.op in ("contains", "matches"):
            try:
                re.compile(str(self.value))
            except re.error as e:
                raise ValueError(f"{self.value!r} is not a regular expression: {e}") from None

    def holds(self, frame: pd.DataFrame) -> np.ndarray:
        col = frame[self.column]
        op, v = self.op, self.value
        present = col.notna().to_numpy()
        if op == "is_null":
            return ~present
        if op == "not_null":
            return present
        try:
            if op in ("in", "not_in", "between"):
                v = [comparable(col, x) for x in v]
            elif op in COMPARISONS:
                v = comparable(col, v)
        except ValueError as e:
            raise ValueError(f"condition on column {self.column!r} ({col.dtype}): {v!r} is not a value of it: {e}") from None
        if op == "in":
            return col.isin(v).to_numpy() & present
        if op == "not_in":
            return ~col.isin(v).to_numpy() & present
        if op in ("contains", "matches"):
            text = col.astype("string")
            flags = 0 if self.case else re.IGNORECASE
            hit = text.str.contains(str(v), regex=True, flags=flags) if op == "contains" else text.str.fullmatch(str(v), flags=flags)
            return hit.fillna(False).to_numpy(dtype=bool)
        try:
            held = (col >= v[0]) & (col <= v[1]) if op == "between" else COMPARISONS[op](col, v)
        except TypeError:  # a number column against '25' (a quoted number in YAML), text against 25
            raise ValueError(f"condition on column {self.column!r} ({col.dtype}): {op} {self.value!r} compares it with "
                             "a value of another kind; write the value as the column holds it (25, not '25')") from None
        return held.fillna(False).to_numpy(dtype=bool) & present


@dataclass(frozen=True)
class LabelingRule:
    """Cast ``label`` on rows where every condition holds; abstain elsewhere."""

    name: str
    label: Any
    conditions: tuple[RuleCondition, ...]

    @classmethod
    def from_spec(cls, spec: dict, position: int = 0) -> LabelingRule:
        """From ``{name, label, column, op, value}`` or ``{name, label, when: [...]}``."""
        if not isinstance(spec, dict):
            raise ValueError(f"rule {position}: expected a mapping or a function, got {spec!r}")
        spec = dict(spec)
        if "label" not in spec:
            raise ValueError(f"rule {position}: needs a 'label' to cast")
        name = str(spec.pop("name", f"rule{position}"))
        label = spec.pop("label")
        when = spec.pop("when", None)
        if when is None:
            when = [spec]
        elif spec:
            raise ValueError(f"rule {name!r}: unknown keys {sorted(spec)} beside 'when'")
        conditions = []
        for cond in when:
            unknown = set(cond) - {"column", "op", "value", "case"}
            if unknown or "column" not in cond or "op" not in cond:
                raise ValueError(f"rule {name!r}: a condition is {{column, op, value[, case]}}, got {cond!r}")
            conditions.append(RuleCondition(**cond))
        return cls(name, label, tuple(conditions))

    def as_spec(self) -> dict:
        """The rule as a job file writes it, which :meth:`from_spec` reads back."""
        return {"name": self.name, "label": self.label, "when": [asdict(c) for c in self.conditions]}

    def columns(self) -> list[str]:
        return [c.column for c in self.conditions]

    def fires(self, frame: pd.DataFrame) -> np.ndarray:
        mask = np.ones(len(frame), dtype=bool)
        for cond in self.conditions:
            mask &= cond.holds(frame)
        return mask


def rule_votes(rule: LabelingRule | Callable, frame: pd.DataFrame) -> np.ndarray:
    """The label each row gets from one rule, None where it abstains."""
    if isinstance(rule, LabelingRule):
        out = np.full(len(frame), None, dtype=object)
        out[rule.fires(frame)] = rule.label
        return out
    values = rule(frame)
    if len(values) != len(frame):
        raise ValueError(f"labeling function {getattr(rule, '__name__', rule)!r} returned {len(values)} labels for {len(frame)} rows")
    values = values if isinstance(values, pd.Series) else pd.Series(list(values) if not hasattr(values, "dtype") else values, index=frame.index)
    return values.astype(object).where(values.notna(), None).to_numpy()


def vote_matrix(rules, frame: pd.DataFrame) -> np.ndarray:
    """``(rows, rules)`` object array of cast labels, None where a rule abstains."""
    if not len(rules):
        return np.empty((len(frame), 0), dtype=object)
    return np.column_stack([rule_votes(rule, frame) for rule in rules])


# -- rules that vote together ------------------------------------------------------------------


def agreement_counts(codes: np.ndarray, n_classes: int) -> dict:
    """Mergeable counts over a ``(rows, rules)`` matrix of class codes (-1: abstains): rows
    each rule fired on (``fired``), and rows each pair fired on with the same label
    (``same``, rules × rules, the diagonal ``fired``)."""
    n_rules = codes.shape[1]
    same = np.zeros((n_rules, n_rules))
    for k in range(n_classes):
        cast = (codes == k).astype(np.float64)
        same += cast.T @ cast
    return {"fired": np.diag(same).copy(), "same": same}


def dependent_pairs(counts: dict, overlap: float) -> list[tuple[int, int, float]]:
    """``(kept, dropped, share)`` for rules that vote together: where the rule that fires
    less (``kept``, the earlier of equals) fires, the other cast the same label on at least
    ``overlap`` of its rows (a copy, or one rule implied by the other). Counted as two
    independent votes there, they are one vote twice, and each vouches for the other's
    accuracy; the kept rule is the more specific."""
    fired, same = counts["fired"], counts["same"]
    out = []
    for i in range(len(fired)):
        for j in range(i + 1, len(fired)):
            small, large = (i, j) if fired[i] <= fired[j] else (j, i)
            if fired[small] > 0 and same[i, j] / fired[small] >= overlap:
                out.append((small, large, float(same[i, j] / fired[small])))
    return out


def drop_dependent(codes: np.ndarray, pairs) -> np.ndarray:
    """The vote matrix with each pair's ``dropped`` vote left out where ``kept`` cast the
    same label (as cast, so a chain A ⊂ B ⊂ C keeps A's vote alone where all three fire)."""
    if not pairs:
        return codes
    out = codes.copy()
    for kept, dropped, _ in pairs:
        out[(codes[:, kept] >= 0) & (codes[:, kept] == codes[:, dropped]), dropped] = -1
    return out
