"""Column dtypes that can take values learned elsewhere.

Each partition of a Parquet dictionary column (a pandas categorical) holds its own
categories, so a value learned from other partitions — a new label, a mode, a majority —
cast to them became missing. These widen the categories first.
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
