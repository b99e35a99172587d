"""Parquet files and folders (partition folders become columns); row groups become partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from dsbuild.io.sources.common import (
    BLOB_PARTITION_BYTES,
    BLOB_ROW_BYTES,
    DEFAULT_PARTITION_BYTES,
    Source,
    SourceError,
    _expand,
    _file_record,
    _relative,
    _Spec,
    _with_id,
    to_pandas,
)
from dsbuild.records import ID
from dsbuild.sizes import Bytes

if TYPE_CHECKING:
    import dask.dataframe as dd


class ParquetSource(_Spec):
    format: Literal["parquet"]
    path: str | list[str] = Field(..., description="file, folder or glob")
    columns: list[str] | None = None
    merge_schemas: bool = Field(
        False, description="files with different columns (a column added to later exports): read the union of "
        "their columns, null where a file lacks one; off, such files are an error")
    rows_per_partition: int = Field(1_000_000, gt=0)
    bytes_per_partition: Bytes | None = Field(
        None, gt=0, description="uncompressed bytes per partition, from the row groups' metadata; "
        f"default {DEFAULT_PARTITION_BYTES // 2**20} MiB, or {BLOB_PARTITION_BYTES // 2**20} MiB when rows average "
        f"over {BLOB_ROW_BYTES // 2**10} KiB (encoded images, documents); a worker holds a few partitions at once, "
        "so keep it well under its memory limit")

    def partition_bytes(self, row_bytes: float) -> int:
        """Tabular rows are cheap per byte; an encoded image costs ~100x more CPU per byte
        to decode and encode, so 64 MiB of JPEGs (~900 at 512 px) made tasks so long that
        10 k images gave 2 workers an idle tail. 16 MiB holds ~230, as an images folder's
        256 files per partition."""
        if self.bytes_per_partition is not None:
            return self.bytes_per_partition
        return BLOB_PARTITION_BYTES if row_bytes > BLOB_ROW_BYTES else DEFAULT_PARTITION_BYTES


def _what_it_is(fs, path: str) -> str | None:
    """What a file given as Parquet is, from its first bytes, and the source that reads it:
    a CSV or JSON export named in a Parquet job got Arrow's "Parquet magic bytes not found
    in footer. Either the file is corrupted or this is not a parquet file"."""
    with fs.open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith((b"PAR1", b"\x1f\x8b", b"PK\x03\x04")):
        return None  # a Parquet file cut short, or compressed: Arrow's words
    try:
        text = (head[: head.rfind(b"\n") + 1] or head).decode("utf8").lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError:
        return None
    if not text or "\x00" in text:
        return None
    if text.startswith(("{", "[")):
        return "it is JSON text: use format: jsonl"
    return "it is text (CSV or delimited text?): use format: csv"


def _read_parquet(spec: ParquetSource) -> Source:
    fs, root, files, skipped = _expand(spec.path, (".parquet", ".pq", ".parq"))
    hive = _hive_partitions(files, root, spec.path)
    schema = None
    pieces = []
    records = []
    for path in files:
        record = _file_record(fs, path)
        if record["size"] == 0:
            skipped.append({**record, "why": "empty file (0 bytes): no rows to read", "kind": "empty"})
            continue
        try:
            with fs.open(path, "rb") as f:
                file = pq.ParquetFile(f)
                meta, file_schema = file.metadata, file.schema_arrow
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{path}: not a readable Parquet file: {_what_it_is(fs, path) or e}") from None
        file_schema = _without_row_labels(file_schema)
        clash = [k for k in hive.names if k in file_schema.names]
        if clash:
            raise SourceError(f"{path}: column {clash[0]!r} is also a partition folder's name ({clash[0]}=...); "
                              "rename one of them")
        if spec.columns:
            missing = [c for c in spec.columns if c not in file_schema.names and c not in hive.names]
            if missing and not spec.merge_schemas:
                raise SourceError(f"{path}: no column {missing[0]!r}; columns are {file_schema.names + hive.names}")
            file_schema = pa.schema([file_schema.field(c) for c in spec.columns if c in file_schema.names])
        schema = file_schema if schema is None else _common_schema(schema, file_schema, path, files[0], spec.merge_schemas)
        records.append(record)
        rel = _relative(path, root)
        start, groups = 0, []
        rows_in_piece = bytes_in_piece = 0
        budget = spec.partition_bytes(sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / max(1, meta.num_rows))
        for g in range(meta.num_row_groups):
            n, size = meta.row_group(g).num_rows, meta.row_group(g).total_byte_size
            if groups and (rows_in_piece + n > spec.rows_per_partition or bytes_in_piece + size > budget):
                pieces.append((path, rel, tuple(groups), start, hive.values[path],
                               _cuts(rows_in_piece, bytes_in_piece, budget, spec.rows_per_partition)))
                start += rows_in_piece
                groups, rows_in_piece, bytes_in_piece = [], 0, 0
            groups.append(g)
            rows_in_piece += n
            bytes_in_piece += size
        pieces.append((path, rel, tuple(groups), start, hive.values[path],
                       _cuts(rows_in_piece, bytes_in_piece, budget, spec.rows_per_partition)))
    if schema is None:
        raise SourceError(f"source {spec.path!r}: every Parquet file is empty")
    for field_ in hive.fields:
        if not spec.columns or field_.name in spec.columns:
            schema = schema.append(field_)
    if spec.columns:
        absent = [c for c in spec.columns if c not in schema.names]
        if absent:
            raise SourceError(f"source {spec.path!r}: no file has column {absent[0]!r}")
        schema = pa.schema([schema.field(c) for c in spec.columns], metadata=schema.metadata)

    def read(columns: list[str] | None = None) -> dd.DataFrame:
        import dask.dataframe as dd

        read_schema = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        meta = _with_id(to_pandas(read_schema.empty_table()))
        reader = _ParquetPiece(fs, read_schema)
        if all(len(piece[5]) == 2 for piece in pieces):
            return dd.from_map(reader, pieces, meta=meta, divisions=None, label="read-parquet", enforce_metadata=False)
        return dd.from_delayed(_sliced_reads(reader, pieces), meta=meta, divisions=None, verify_meta=False)

    return Source(read(), records, skipped, schema, ids_given=ID in schema.names, read_columns=read, filesystem=fs)


def _cuts(rows: int, size: int, budget: int, rows_per_partition: int) -> tuple[int, ...]:
    """Where the partitions of a piece begin and end, in its rows: (0, rows), or, for a
    row group over twice the partition's bytes or rows, even slices of it. A row group is
    read whole (reading part of one decodes all of it), so a file pandas wrote in one row
    group was one partition, one worker's work, whatever bytes_per_partition said: 50,000
    texts peaked that worker at 490 MiB, the other idle."""
    if size <= 2 * budget and rows <= 2 * rows_per_partition:
        return (0, rows)
    k = min(rows, max(-(-size // budget), -(-rows // rows_per_partition)))
    return tuple(rows * i // k for i in range(k + 1))


def _sliced_reads(reader: _ParquetPiece, pieces: list[tuple]) -> list:
    """A delayed frame per partition: a split piece is read by ONE task, and its slices
    are tasks on that table, so the rows after it spread over the workers, each with the
    ids and order of the rows it would have had read whole."""
    import dask

    parts = []
    for piece in pieces:
        cuts = piece[5]
        if len(cuts) == 2:
            parts.append(dask.delayed(reader, pure=True)(piece))
            continue
        table = dask.delayed(reader.table, pure=True)(piece)
        parts += [dask.delayed(reader.rows, pure=True)(table, piece, a, b) for a, b in zip(cuts, cuts[1:])]
    return parts


def _without_row_labels(schema: pa.Schema) -> pa.Schema:
    """The file's columns but pandas' unnamed index (``__index_level_0__``, which pandas
    writes for a frame filtered or sorted): row labels, not data, which every stage would
    have taken as a numeric feature. A named index is a column (see ``to_pandas``)."""
    labels = [i for i, name in enumerate(schema.names) if re.fullmatch(r"__index_level_\d+__", name)]
    for i in reversed(labels):
        schema = schema.remove(i)
    return schema


def _common_schema(first: pa.Schema, other: pa.Schema, path: str, first_path: str, merge: bool = False) -> pa.Schema:
    """The first file's columns, each in a type that holds the values of both files; with
    ``merge``, also the other file's columns the first lacks, after them.

    Files written apart differ in types that lose no value: a column entirely null in one
    file (pandas writes it as type null), a dictionary's index width (pandas picks it by
    the number of categories), string or large_string, integer widths, integers in one
    file and floats in another (where pandas met a missing value), a decimal's precision,
    a timestamp's unit. Such files once failed as a clash; types that cannot hold each
    other's values (text and numbers, times with and without a zone) still do.
    """
    extra = [n for n in other.names if n not in first.names]
    if extra and not merge:
        raise SourceError(f"{path}: column {extra[0]!r} is not in {first_path}; set merge_schemas: true to read "
                          "the union of the files' columns, or read the files as separate sources")
    fields = []
    for f in first:
        if f.name not in other.names:
            if not merge:
                raise SourceError(f"{path}: column {f.name!r} (in {first_path}) is missing; set merge_schemas: true "
                                  "to read it as null there")
            fields.append(f)
            continue
        t = other.field(f.name).type
        if t == f.type:
            fields.append(f)
            continue
        try:
            common = pa.unify_schemas([pa.schema([f]), pa.schema([other.field(f.name)])], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SourceError(
                f"{path}: column {f.name!r} has type {t}, but {f.type} in {first_path}; "
                "cast it or read the files as separate sources"
            ) from None
        fields.append(common.field(0))
    fields += [other.field(n) for n in extra]
    return pa.schema(fields, metadata=first.metadata)


@dataclass
class _Hive:
    """Partition columns written as folder names (``year=2024/country=NO/part-0.parquet``,
    as Spark, Hive, pandas and Arrow write them): their fields, and each file's values."""

    fields: list[pa.Field]
    values: dict[str, tuple]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # a missing value's folder, as Hive and Spark name it


def _hive_partitions(files: list[str], root: str, path) -> _Hive:
    """A column per ``key=value`` folder below the source's folder, whole numbers as int64
    and the rest as text (URL-escaped as Spark writes them), as pandas, Arrow and Spark
    give them back (the files themselves do not hold these columns)."""
    from urllib.parse import unquote

    found = {}
    for f in files:
        folders = _relative(f, root).split("/")[:-1] if isinstance(path, str) else []
        found[f] = [tuple(d.split("=", 1)) for d in folders if "=" in d]
    keys = {tuple(k for k, _ in kv) for kv in found.values()}
    if keys == {()}:
        return _Hive([], {f: () for f in files})
    if len(keys) > 1:
        a, b = sorted(keys)[:2]
        raise SourceError(f"{path}: files sit under different partition folders ({'/'.join(a) or 'none'} and "
                          f"{'/'.join(b) or 'none'}); read them as separate sources")
    names = list(next(iter(keys)))
    text = {f: {k: (None if v == HIVE_NULL else unquote(v)) for k, v in kv} for f, kv in found.items()}
    fields, values = [], {f: [] for f in files}
    for name in names:
        seen = [t[name] for t in text.values() if t[name] is not None]
        whole = all(v.lstrip("-").isdigit() for v in seen)
        fields.append(pa.field(name, pa.int64() if whole and seen else pa.string()))
        for f in files:
            v = text[f][name]
            values[f].append((name, int(v) if whole and v is not None else v))
    return _Hive(fields, {f: tuple(v) for f, v in values.items()})


class _ParquetPiece:
    def __init__(self, fs, schema):
        self.fs, self.schema = fs, schema

    def __dask_tokenize__(self):
        return ("dsbuild-parquet-piece", type(self.fs).__name__, self.fs.storage_options, self.schema.to_string())

    def __call__(self, piece) -> pd.DataFrame:
        return self.rows(self.table(piece), piece, 0, None)

    def rows(self, table: pa.Table, piece, begin: int, end: int | None) -> pd.DataFrame:
        """Rows ``begin:end`` of the piece's ``table`` as a frame, numbered from the piece's start."""
        sliced = table.slice(begin, None if end is None else end - begin)
        return _with_id(to_pandas(sliced), piece[1], piece[3] + begin)

    def table(self, piece) -> pa.Table:
        path, rel, groups, start, folder_values, _ = piece
        with self.fs.open(path, "rb") as f:
            file = pq.ParquetFile(f)
            present = [c for c in self.schema.names if c in file.schema_arrow.names]
            table = file.read_row_groups(list(groups), columns=present) if groups else self.schema.empty_table()
        folder_values = dict(folder_values)
        for name in self.schema.names:  # from the file's folders; or a column this file lacks (merge_schemas): null
            if name not in table.column_names:
                field_ = self.schema.field(name)
                value = pa.scalar(folder_values.get(name), type=field_.type)
                table = table.append_column(field_, pa.repeat(value, table.num_rows))
        if table.schema != self.schema:  # the file's own types (see _common_schema), or its column order
            table = table.select(self.schema.names).cast(self.schema)
        return table
