"""The finish's shards: small staged files merged or encoded, by tasks on the cluster,
each shard written once even when its task runs again."""

from __future__ import annotations

import posixpath

import dask
import pyarrow as pa
import pyarrow.parquet as pq

from dsbuild.io.sink.files import (
    _is_staged,
    _read_staged,
    _write_batches,
    _write_table,
    _write_whole,
)
from dsbuild.io.sink.places import _task_folder


def _written_once(fs, done: str, write, inputs: list[str], root: str | None = None) -> dict:
    """``write()``'s shard record, made once even if the task runs again: its inputs are
    removed once the shard is written (the disk holds each row once), so a task that Dask
    retried after that (its worker died before it reported) found them gone and failed
    the run. The record is kept at ``done`` before any input goes."""
    import pickle

    if fs.exists(done):
        with fs.open(done, "rb") as f:
            record = pickle.load(f)
    else:
        record = write()
        _write_whole(fs, done, pickle.dumps(record), root)
    for path in inputs:
        if fs.exists(path):
            fs.rm(path)
    return record


def _encode(fs, path: str, target: str, compression, metadata: dict, fills: dict, done: str, root: str | None = None) -> dict:
    """A staged file alone in its shard, written as the Parquet a direct write makes."""

    def write():
        table = _fill_dictionaries(_read_staged(fs, path), fills).replace_schema_metadata(metadata)
        return _write_table(fs, table, target, compression)

    return _written_once(fs, done, write, [path], root)


def _merge(fs, paths: list[str], target: str, schema: pa.Schema, compression, fills: dict, done: str, root: str | None = None) -> dict:
    """Small files into one shard, a row group at a time: a shard may be larger than a
    worker can hold (256 MiB of 4 MiB files on a 400 MiB worker was killed, 4 times)."""

    def tables():
        for p in paths:
            if _is_staged(p):
                yield _fill_dictionaries(_conform(_read_staged(fs, p), schema), fills)
                continue
            with fs.open(p, "rb") as f:
                reader = pq.ParquetFile(f)
                for g in range(reader.num_row_groups):
                    yield _fill_dictionaries(_conform(reader.read_row_group(g), schema), fills)

    return _written_once(fs, done, lambda: _write_batches(fs, schema, tables(), target, compression), paths, root)


# A task of the finish writes shards until they hold this many bytes (in memory) or this
# many shards: a task per shard made the finish of a partition_by output, 2,000 shards of
# ~100 rows, 2,000 tasks whose scheduling and graph cost more than their writes.
_TASK_BYTES = 64 * 2**20
_TASK_SHARDS = 64


def _written_shards(fs, shards: list, memory: list[int], root: str | None) -> list[dict]:
    """Every shard's record: the ones still to write (``(target, function, args)``) written
    by tasks that each take a run of neighbours up to ``_TASK_BYTES`` or ``_TASK_SHARDS``; a
    large shard has a task of its own, so large merges still run side by side."""
    batches, size = [], 0
    for i, shard in enumerate(shards):
        if isinstance(shard, dict):
            continue
        if not batches or size + memory[i] > _TASK_BYTES or len(batches[-1]) >= _TASK_SHARDS:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += memory[i]
    jobs = [dask.delayed([shards[i] for i in batch], traverse=False) for batch in batches]  # holds no collection to look for
    written = dask.compute(*[dask.delayed(_write_shards)(fs, batch, root) for batch in jobs])
    out = list(shards)
    for batch, records in zip(batches, written):
        for i, record in zip(batch, records):
            out[i] = record
    return out


def _write_shards(fs, jobs: list[tuple], root: str | None) -> list[dict]:
    """Shards one after the other, each in its folder (made here: a partition_by output has
    one per group, and the driver made 2,000 of them one by one; not once the run's
    temporary folder ``root`` is gone, see :func:`_task_folder`)."""
    out = []
    for target, function, args in jobs:
        _task_folder(fs, posixpath.dirname(target), root)
        out.append(function(fs, *args, root))
    return out


def _dictionary_fills(staged: list[dict]) -> dict:
    """A value for each dictionary column that some file has and another lacks.

    A shard whose categorical column holds only nulls has an empty dictionary, which
    pandas reads as categories of dtype object where the other shards' are str; Dask then
    cannot concatenate the shards ("dtype of categories must be the same"). Such a shard
    is written with one value that the output holds elsewhere, used by no row, so the
    categories of the whole output stay the ones its rows have.
    """
    fills = {}
    for f in staged:
        for name, value in f.get("dictionary", {}).items():
            if value is not None:
                fills.setdefault(name, value)
    return {name: value for name, value in fills.items() if any(_lacks(f, {name: value}) for f in staged)}


def _lacks(f: dict, fills: dict) -> bool:
    return any(f.get("dictionary", {}).get(name) is None for name in fills)


def _fill_dictionaries(table: pa.Table, fills: dict) -> pa.Table:
    for name, value in fills.items():
        if name not in table.column_names or not pa.types.is_dictionary(table.schema.field(name).type):
            continue
        column = table[name]
        if all(len(c.dictionary) for c in column.chunks):
            continue
        values = pa.array([value], column.type.value_type)
        chunks = [c if len(c.dictionary) else pa.DictionaryArray.from_arrays(c.indices, values) for c in column.chunks]
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), pa.chunked_array(chunks, column.type))
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            if col.type != f.type:
                col = col.cast(f.type) if not pa.types.is_string(f.type) else _as_text(col)
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.table(cols, schema=schema)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())])
