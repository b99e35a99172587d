"""The source's rows marked for the ledger: each row's id (the job's id column, else
file:row), the reject mark, rows without an id or repeating an earlier one rejected, and
the ids of rows a stage adds."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd

from dsbuild.io.sources import RAW
from dsbuild.kernels.dtypes import blank_text
from dsbuild.records import ID, REASON, STAGE
from dsbuild.stages.base import ADDED, REJECT, StageError
from dsbuild.stages.shapes import compute


def _marked_source(source, id_column: str | None):
    """The source's rows with their ids and the reject mark, in one task per partition."""
    frame = source.frame
    if id_column and id_column != ID and id_column not in frame.columns:
        raise StageError(f"columns.id: {id_column!r} is not a column of the source; columns are {list(frame.columns)}")
    own = [c for c in frame.columns if c in (REASON, STAGE) or (c == "raw" and RAW in frame.columns)]  # raw: a text source's line
    if own:
        raise StageError(f"the source has a column {own[0]!r}, a name the rejects output uses for its own (why, where and "
                         "as what text a row was rejected); rename it before dsbuild reads it (a CSV's column_names, "
                         "pandas' rename)")
    if id_column and id_column != ID and source.schema is not None and ID in source.schema.names:
        raise StageError(f"the source has a column {ID!r} and columns.id names {id_column!r}: the output's id column would "
                         f"replace its values; set columns.id: {ID}, or rename the source's {ID!r}")
    return _ids_marked(frame, id_column)


def _ids_marked(frame, id_column: str | None):
    """:func:`_with_known_ids` on every partition of ``frame``."""
    return frame.map_partitions(_with_known_ids, id_column, meta=_with_known_ids(frame._meta.copy(), id_column),
                                token="dsbuild-ids", enforce_metadata=False)


def _ids_alone(source, id_column: str | None):
    """The source's ids and reject marks, read without its other columns where the format
    can skip them (Parquet: the check then reads a column of ids, not a column of images);
    else None. Such a reader rejects no row, so the marks are the same as the whole read's."""
    if source.read_columns is None:
        return None
    return _ids_marked(source.read_columns([id_column] if id_column and id_column != ID else [ID]), id_column)


def _with_repeated_ids_rejected(marked, ids=None):
    """The data's own ids, checked to name one row each: every row but the first of an id
    goes to rejects as ``id:repeated``. Stages key rows by id (near-duplicate clusters,
    keepers, crowd labels), and two rows under one id were taken as one: near_dedup_text
    joined two clusters through a shared id and kept no copy of one of them.

    Ids made from file:row are unique as made; this runs only where the data gives them.
    It costs a pass over the source that counts 64-bit hashes of the ids (a shuffle of
    integers), and, where a hash repeats, one more that fetches only those rows to compare
    their ids exactly. The first row is the first in the source's order (partition, then
    row), whatever the partitioning. ``ids``: the same partitions' ids and marks alone,
    where the source can read them so.
    """
    ids = marked if ids is None else ids
    places = ids.map_partitions(_id_places, meta=_id_places(ids._meta), token="dsbuild-id-places")
    counts = places.groupby("_hash", sort=False)["_at"].count(split_out=max(1, marked.npartitions // 4))
    (hashes,) = compute(counts[counts > 1].index)
    if len(hashes) == 0:
        return marked
    suspects = dask.delayed(pd.Index(hashes), pure=True)
    rows = places.map_partitions(_hashed_as, suspects, meta=places._meta, token="dsbuild-id-suspects")
    (rows,) = compute(rows)  # only the rows whose id's hash repeats
    counts = rows.groupby(ID)["_at"].agg(["count", "min"])
    first = counts.loc[counts["count"] > 1, "min"]
    if first.empty:  # hashes that collided, ids that did not
        return marked
    return marked.map_partitions(_reject_repeats, dask.delayed(first, pure=True), meta=marked._meta, token="dsbuild-id-repeats")


def _id_places(part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    """Each unrejected row's id, its hash, and its place in the source (partition, row) as
    one sortable number."""
    number = partition_info["number"] if partition_info else 0
    ok = np.flatnonzero(part[REJECT].isna().to_numpy())
    ids = part[ID].astype("string").iloc[ok]
    return pd.DataFrame({
        ID: ids.to_numpy(), "_hash": pd.util.hash_pandas_object(ids, index=False).to_numpy().view(np.int64),
        "_at": (np.int64(number) << 32) + ok.astype(np.int64),
    })


def _hashed_as(places: pd.DataFrame, hashes: pd.Index) -> pd.DataFrame:
    return places[places["_hash"].isin(hashes)]


def _reject_repeats(part: pd.DataFrame, first: pd.Series, partition_info=None) -> pd.DataFrame:
    places = _id_places(part, partition_info)
    keeper = first.reindex(places[ID], fill_value=-1).to_numpy()
    again = (keeper >= 0) & (keeper != places["_at"].to_numpy())
    if not again.any():
        return part
    mark = part[REJECT].to_numpy(dtype=object).copy()
    mark[places["_at"].to_numpy()[again] & 0xFFFFFFFF] = "id:repeated"
    return part.assign(**{REJECT: mark})


def _added_rows_named(part: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """A row a stage added carries its own id (``parent#smote0``) in the job's id column
    too, where that column holds text: it kept its parent's value, so the column named
    two rows alike, and the output read as a source again rejected one as a repeat. A
    column of numbers cannot hold such an id: it is left empty there."""
    if id_column not in part.columns:
        return part
    added = part[ADDED].fillna(False).to_numpy(dtype=bool) if ADDED in part.columns else np.zeros(len(part), bool)
    column = part[id_column].copy()
    if pd.api.types.is_string_dtype(column.dtype) or column.dtype == object:
        column[added] = part[ID][added].astype(str).to_numpy()
    else:
        column = column.astype("Int64") if pd.api.types.is_integer_dtype(column.dtype) else column  # room for a missing value
        column[added] = None
    return part.assign(**{id_column: column})


def _with_known_ids(part: pd.DataFrame, id_column: str | None) -> pd.DataFrame:
    """The partition with its ids (``columns.id``'s values, if the job names a column) and
    the reject mark. A row without an id is rejected as ``id:missing`` (a duplicate's
    keeper is chosen by id); it keeps its file:row as its id, as a row the reader rejected
    does, so the rejects name where each came from."""
    named = part[ID].astype("string")
    if id_column and id_column != ID:
        # a row the reader rejected, or one without a value, keeps its file:row: it can be found
        named = part[id_column].astype("string")
        named = named.mask(blank_text(named))  # a blank id names no row, as a CSV reader makes it missing
        part = part.assign(**{ID: named.fillna(part[ID].astype("string"))})
    else:
        named = named.mask(blank_text(named))
    if REJECT not in part.columns:
        part = part.assign(**{REJECT: pd.Series([None] * len(part), dtype=object, index=part.index)})
    missing = named.isna().to_numpy() & part[REJECT].isna().to_numpy()
    if missing.any():
        part = part.assign(**{REJECT: part[REJECT].mask(missing, "id:missing")})
    return part
