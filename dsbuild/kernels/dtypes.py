"""Columns that take values learned elsewhere, in the column's own type.

Each partition of a Parquet dictionary column (a pandas categorical) holds its own
categories, so a value learned from other partitions — a new label, a mode, a majority —
cast to them became missing: :func:`holding` widens the categories first. Statistics that
count values by their text, to merge any type, fill with the value itself, not its text:
:func:`one_value_per_text`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def blank_text(col: pd.Series) -> np.ndarray:
    """Which cells are text of nothing but spaces (``""``, ``"  "``): missing, as a CSV
    reader makes a blank cell, where Parquet and JSON keep them. An object column may hold
    lists or arrays (embeddings): only its text can be blank."""
    if col.dtype == object:
        return np.fromiter((isinstance(v, str) and not v.strip() for v in col), dtype=bool, count=len(col))
    if isinstance(col.array, pd.arrays.ArrowStringArray):
        # Arrow's trim, which .str.strip runs for such a column, on its array as it is:
        # through astype and .str, 0.7 ms per column and partition, whatever its size
        trimmed = pc.utf8_trim_whitespace(pa.array(col.array))
        return pc.fill_null(pc.equal(trimmed, ""), False).to_numpy(zero_copy_only=False)
    if pd.api.types.is_string_dtype(col.dtype) or isinstance(col.dtype, pd.CategoricalDtype):
        return col.astype("string").str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    return np.zeros(len(col), dtype=bool)


def whole_numbers(col: pd.Series, limits: np.iinfo = np.iinfo(np.int64)) -> pd.Series:
    """Each value of ``col`` (text or numbers) as the integer it is, within ``limits``, or
    None (object): ``3.0`` and ``1e3`` are whole, ``inf``, ``2.5`` and ``1e30`` (for int64)
    are not. float64 is exact below 2**53; the rest are read one by one from their text,
    so that 2**53 + 1 is not rounded."""
    num = pd.to_numeric(col, errors="coerce")
    x = num.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        small = np.abs(x) < 2**53
        whole = small & (x == np.floor(x)) & (x >= limits.min) & (x <= limits.max)
    out = pd.Series(None, index=col.index, dtype=object)
    out[whole] = x[whole].astype(np.int64).astype(object)
    for i in np.flatnonzero(~small & col.notna().to_numpy()):
        out.iat[i] = _whole_number(col.iat[i], limits)
    return out


def _whole_number(value, limits: np.iinfo) -> int | None:
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        try:
            x = float(text)
        except ValueError:
            return None
        if not x.is_integer():
            return None
        number = int(x)
    return number if limits.min <= number <= limits.max else None


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


CONTAINERS = (np.ndarray, list, tuple, dict)  # what pandas can neither hash nor count


def as_text(values: pd.Series) -> pd.Series:
    """Each value's text, the key that statistics count values of any type by: ``str``,
    but lists, arrays and dicts (embeddings, structs) as :func:`canonical_text` (numpy
    prints a long array with its middle left out: two embeddings could read the same)."""
    present = values.dropna()
    if values.dtype != object or present.empty or not isinstance(present.iloc[0], CONTAINERS):
        return values.astype(str)
    return values.map(canonical_text, na_action="ignore")


def canonical_text(value) -> object:
    """A nested value as JSON text that equal values share: arrays as lists, dicts with
    sorted keys. Other values are left as they are."""
    if not isinstance(value, CONTAINERS):
        return value
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), default=repr)


def _plain(value):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def one_value_per_text(values: pd.Series, text: pd.Series | None = None) -> dict[str, object]:
    """The first value of each text (:func:`as_text`) among the present ``values``; keyed
    by text, so lists and dicts, which pandas cannot deduplicate, are kept too. ``text``:
    the present values' texts, when the caller has them already."""
    present = values.dropna()
    text = as_text(present) if text is None else text
    first = ~text.duplicated().to_numpy()
    return dict(zip(text[first], present[first].tolist()))
