"""Columns that take values learned elsewhere, in the column's own type.

Each partition of a Parquet dictionary column (a pandas categorical) holds its own
categories, so a value learned from other partitions — a new label, a mode, a majority —
cast to them became missing: :func:`holding` widens the categories first. Statistics that
count values by their text, to merge any type, fill with the value itself, not its text:
:func:`one_value_per_text`.
"""

from __future__ import annotations

import pandas as pd


def holding(dtype, values) -> object:
    """``dtype``, or for a categorical the same with the categories ``values`` need."""
    if isinstance(dtype, pd.CategoricalDtype):
        extra = pd.Index(pd.Series(values).dropna().unique()).difference(dtype.categories, sort=False)
        if len(extra):
            return pd.CategoricalDtype(dtype.categories.append(extra), dtype.ordered)
    return dtype


def as_dtype(values: pd.Series, dtype) -> pd.Series:
    """``values`` cast to a column's ``dtype``, widened by :func:`holding`."""
    return values.astype(holding(dtype, values))


def one_value_per_text(values: pd.Series) -> dict[str, object]:
    """The first value of each text (``str(value)``) among the present ``values``; keyed by
    text, so lists and dicts, which pandas cannot deduplicate, are kept too."""
    present = values.dropna()
    text = present.astype(str)
    first = ~text.duplicated().to_numpy()
    return dict(zip(text[first], present[first].tolist()))
