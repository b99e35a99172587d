"""Rows grouped by the values of some columns, by names that merge across partitions
(the statistics of impute and outliers per group)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _groups(part: pd.DataFrame, by: list[str]) -> tuple[np.ndarray, list[str]]:
    """(code per row, name per code): the row's group as a number, and each group's name.

    Names (``"*"`` without grouping; values joined by ``\x1f``; ``<NA>`` for missing)
    depend on the values only, so statistics keyed by name merge across partitions;
    they are built for the distinct combinations only.
    """
    if not by:
        return np.zeros(len(part), dtype=np.int64), ["*"]
    codes, uniques = pd.factorize(part[by[0]], use_na_sentinel=False)
    names = [_value_name(u) for u in uniques]
    for column in by[1:]:
        more, more_uniques = pd.factorize(part[column], use_na_sentinel=False)
        width = max(len(more_uniques), 1)
        pairs, first = np.unique(codes.astype(np.int64) * width + more, return_inverse=True)
        names = [f"{names[p // width]}\x1f{_value_name(more_uniques[p % width])}" for p in pairs]
        codes = first.reshape(-1)
    return codes.astype(np.int64, copy=False), names


def _value_name(value) -> str:
    return "<NA>" if pd.isna(value) else str(value)


def _per_group(names: list[str], table: dict, default=np.nan, dtype=np.float64) -> np.ndarray:
    """A value per group code, looked up by group name (``default`` for unseen groups)."""
    return np.array([table.get(n, default) for n in names], dtype=dtype)


def _merge_dicts(a: dict, b: dict, merge) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if k in out else v
    return out
