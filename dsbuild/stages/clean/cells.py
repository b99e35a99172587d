"""What the cleaning rules share: the id left alone, blank text as missing, rejected
rows given back the cells they came with, and reasons that name the value."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.kernels.dtypes import blank_text, holding
from dsbuild.records import ID
from dsbuild.stages.base import REJECT, Stage, StageError


def _leaves_the_id(stage: Stage, columns, what: str = "change") -> None:
    """The id names each row (stages key rows by it, rejects are named by it): a rule that
    rewrote it made ids 1.0 (normalize_units) or two rows one id (canonicalize's case)."""
    if ID in columns:
        raise StageError(f"stage {stage.ctx.name!r}: {ID!r} names the rows and is no data; a rule cannot {what} it")


def _blank_as_missing(col: pd.Series) -> pd.Series:
    """Blank text missing, as a CSV reader makes it (Parquet and JSON keep it)."""
    blank = blank_text(col)
    return col.mask(blank) if blank.any() else col


def _may_hold_missing(col: pd.Series) -> pd.Series:
    """The column in a dtype that can hold a missing value: numpy integers become nullable
    ones (``Int64``, as the CSV reader gives), not floats, which printed 3 as 3.0 and lost
    the last digits of ids and counts past 2**53."""
    if pd.api.types.is_integer_dtype(col.dtype) and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
        return col.astype(f"{'UInt' if col.dtype.kind == 'u' else 'Int'}{col.dtype.itemsize * 8}")
    return col


def _as_received(part: pd.DataFrame, columns) -> dict[str, pd.Series]:
    """The cells of ``columns`` as they came, for :func:`_rejects_as_received`: the columns
    themselves (copy on write keeps them as they are), where ``part[columns]`` copied them
    into a new frame, about 1 ms a partition per stage whether it rejected a row or not."""
    return {c: part[c] for c in columns}


def _rejects_as_received(part: pd.DataFrame, received: dict[str, pd.Series], together: bool = False) -> pd.DataFrame:
    """Rows this stage rejected get back the cells they came with (``received``): rejects
    hold removed rows whole, only kept rows carry the stage's changes.

    The marked partition is one frame, so an old cell comes back only where the column's new
    dtype holds it unchanged (``72`` in a float column, not ``thirty`` in an int one); the
    reason names the value that could not. ``together``: the columns are one fact (a value
    and its unit), all come back or none.
    """
    gone = np.flatnonzero(part[REJECT].notna().to_numpy())
    if not len(gone):
        return part
    old = {c: _held(values.iloc[gone], part[c].dtype) for c, values in received.items()}
    if together and not all(fits.all() for fits, _ in old.values()):
        return part
    for column, (fits, values) in old.items():
        if fits.any():
            col = part[column].astype(values.dtype)  # a categorical widened to hold the old values
            col.iloc[gone[fits]] = values.array
            part[column] = col
    return part


def _held(values: pd.Series, dtype) -> tuple[np.ndarray, pd.Series]:
    """(which ``values`` ``dtype`` holds unchanged, those values in it): a number in a float
    column, a missing value where the column can be missing; not ``thirty`` in an int
    column, nor text that would become a number (``'12'`` is not ``12.0``)."""
    if values.dtype == dtype:
        return np.ones(len(values), dtype=bool), values
    missing = values.isna().to_numpy()
    fits = missing & _holds_missing(dtype)
    present = values[~missing]
    try:
        back = present.astype(holding(dtype, present)).to_numpy(dtype=object)
        fits[~missing] = [bool(a == b) for a, b in zip(back, present.to_numpy(dtype=object))]
    except (TypeError, ValueError, OverflowError):
        pass
    held = values[fits]
    return fits, held.astype(holding(dtype, held))


def _holds_missing(dtype) -> bool:
    try:
        return bool(pd.Series([None], dtype=object).astype(dtype).isna().all())
    except (TypeError, ValueError):
        return False


def _details(rule: str, values: pd.Series, mask: np.ndarray) -> np.ndarray:
    """Reasons ``rule=<value>`` for the rows ``mask`` marks (the value cut short, for a
    readable reject), None for the others: made for every row, they cost each partition a
    string per row, rejected or not (a third of canonicalize's time on 400-row partitions)."""
    out = np.full(len(values), None, dtype=object)
    at = np.flatnonzero(mask)
    if len(at):
        text = pd.Series(values.iloc[at].to_numpy(dtype=object), dtype=object).astype("str").str.slice(0, 40)
        out[at] = [f"{rule}={v}" for v in text]
    return out


def _earlier_marks(part: pd.DataFrame, column: str) -> np.ndarray:
    """The cells an earlier stage marked in ``column`` (False where it has none): a second
    impute (impute, outliers with action null, impute) or outliers wrote its own marks over
    the first one's, and the values the first had filled or emptied read as observed."""
    if column not in part.columns:
        return np.zeros(len(part), dtype=bool)
    return part[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _is_time(dtype) -> bool:
    return pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)


def _jsonable(value):
    return value.item() if hasattr(value, "item") else value
