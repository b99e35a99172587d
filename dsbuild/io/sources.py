"""Sources: files (Parquet, CSV, JSONL, a folder of images) or bundled samples → Dask frame.

Every source gives an ``id`` column: the data's own ``id`` column if it has one, else
``<file>:<row>`` with the file relative to the source root and the 0-based data row.
Rows that cannot be parsed (a CSV line with too many fields, a malformed JSON line, a
value that does not fit its column's type) are not dropped: they come out marked with a
reason and their raw text, and the pipeline sends them to rejects under stage
``source``. Paths go through fsspec, so ``s3://`` and ``gs://`` work where the user has
that filesystem installed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.utils import read_block
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dsbuild.io import quoted as quoting
from dsbuild.records import ID, image_series, image_size, sniff_image_format
from dsbuild.stages.base import REJECT

RAW = "_raw"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class SourceError(ValueError):
    """A source cannot be read as a whole (no files, unreadable file, schemas that clash)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_PARTITION_BYTES = 64 * 2**20
# Text sources are typed from this much of their first file, whatever their blocksize:
# types that followed the blocksize made a job's output change with its partitioning.
TYPE_SAMPLE_BYTES = 4 * 2**20
BLOB_PARTITION_BYTES = 16 * 2**20
BLOB_ROW_BYTES = 8 * 2**10


class ParquetSource(_Spec):
    format: Literal["parquet"]
    path: str | list[str] = Field(..., description="file, folder or glob")
    columns: list[str] | None = None
    merge_schemas: bool = Field(
        False, description="files with different columns (a column added to later exports): read the union of "
        "their columns, null where a file lacks one; off, such files are an error")
    rows_per_partition: int = Field(1_000_000, gt=0)
    bytes_per_partition: int | None = Field(
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


class CsvSource(_Spec):
    format: Literal["csv"]
    path: str | list[str]
    sep: str | None = Field(None, min_length=1, max_length=1, description="field separator; default a tab for .tsv "
                            "files, else the one of , ; tab | that splits the first lines alike")
    header: bool = True
    column_names: list[str] | None = Field(None, description="names when the file has no header")
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"])
    skip_initial_space: bool = True
    blocksize: int = Field(64 * 2**20, gt=0, description="bytes per partition of an uncompressed file")
    infer_bytes: int = Field(TYPE_SAMPLE_BYTES, gt=0, description="bytes from the start of the first file that decide the columns' types")
    encoding: str = "utf8"
    decimal: str = Field(".", min_length=1, max_length=1, description="decimal mark of numbers: ',' for 3,50 (then sep is usually ';')")
    newlines_in_values: bool | None = Field(
        None, description="quoted values may span lines (reviews, addresses): a file is cut into blocks only between "
        "records, found by one more pass over it. Default: when a value in the first infer_bytes does")

    @model_validator(mode="after")
    def _decimal_is_not_sep(self):
        if self.decimal == self.sep:
            raise ValueError(f"decimal {self.decimal!r} is also the separator; set sep (e.g. ';') or decimal")
        return self


class JsonlSource(_Spec):
    format: Literal["jsonl"]
    path: str | list[str]
    blocksize: int = Field(64 * 2**20, gt=0)
    infer_bytes: int = Field(TYPE_SAMPLE_BYTES, gt=0, description="bytes from the start of the first file that decide the columns' types")


class ImagesSource(_Spec):
    format: Literal["images"]
    path: str
    labels: Literal["auto", "folders", "none"] = Field(
        "auto", description="label from the class subfolder; auto: when every image sits in one"
    )
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    files_per_partition: int = Field(256, gt=0)


class SampleSource(_Spec):
    format: Literal["sample"]
    name: Literal["digits", "breast_cancer", "adult", "adult_test", "german_credit"]
    partitions: int = Field(4, gt=0)


class FrameSource(_Spec):
    """A pandas or Dask DataFrame built in Python: ``source={"format": "frame", "frame": df}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    format: Literal["frame"]
    frame: Any = Field(..., exclude=True, description="a pandas or Dask DataFrame (Python jobs only)")
    name: str = Field("frame", min_length=1, description="names the rows, name:row, and the input in the manifest")
    rows_per_partition: int = Field(1_000_000, gt=0, description="rows per partition of a pandas frame")

    @field_validator("frame")
    @classmethod
    def _a_frame(cls, value):
        if not isinstance(value, (pd.DataFrame, dd.DataFrame)):
            raise ValueError(f"frame must be a pandas or Dask DataFrame, got {type(value).__name__}")
        return value


SourceSpec = Annotated[
    Union[ParquetSource, CsvSource, JsonlSource, ImagesSource, SampleSource, FrameSource],
    Field(discriminator="format"),
]


@dataclass
class Source:
    """A lazy frame plus what the manifest says about where it came from."""

    frame: dd.DataFrame
    files: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    # The files' Arrow types, where the reader knows them: pandas holds dates, decimals,
    # lists and structs as objects, and the sink writes them back in these types.
    schema: pa.Schema | None = None

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for f in sorted(self.files, key=lambda f: f["path"]):
            h.update(json.dumps(f, sort_keys=True, default=str).encode())
        return h.hexdigest()


def read_source(spec, count_rows: bool = True) -> Source:
    """Read any source spec (a model or a plain dict) into a :class:`Source`.

    ``count_rows=False`` skips the pass that numbers rows in split text files: the
    frame's schema is right but its ids are not (for ``dsbuild validate``).
    """
    if isinstance(spec, dict):
        from pydantic import TypeAdapter

        spec = TypeAdapter(SourceSpec).validate_python(spec)
    reader = {
        "parquet": _read_parquet,
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "images": _read_images,
        "sample": _read_sample,
        "frame": _read_frame,
    }[spec.format]
    return reader(spec, count_rows) if spec.format in ("csv", "jsonl", "sample") else reader(spec)


# -- files ------------------------------------------------------------------------------


def _expand(
    path: str | list[str], suffixes: tuple[str, ...], ignore: tuple[str, ...] = (".", "_")
) -> tuple[fsspec.AbstractFileSystem, str, list[str], list[dict]]:
    """(filesystem, root, files, left out) for a file, folder, glob or list; root names ids.

    In a folder, a file is left out when a name on its path below the folder starts with
    one of ``ignore``: hidden files and folders (``.ipynb_checkpoints``, macOS's ``._``
    copies) and, for tables, what writers keep beside their output (Spark's
    ``_temporary``), as Arrow datasets do. Each is listed, with why, for the manifest."""
    paths = [path] if isinstance(path, str) else list(path)
    fs, _, _ = fsspec.get_fs_token_paths(paths[0])
    files: list[str] = []
    left_out: list[dict] = []
    roots = []
    for p in paths:
        stripped = fs._strip_protocol(p)
        if fs.isdir(stripped):
            roots.append(stripped)
            for f in fs.find(stripped):
                if not f.lower().endswith(suffixes):
                    continue
                names = posixpath.relpath(f, stripped).split("/")
                hidden = next((n for n in names if n.startswith(ignore)), None)
                if hidden is None:
                    files.append(f)
                else:
                    kind = "hidden files and folders" if hidden[0] == "." else "a writer's own files"
                    left_out.append({"path": f, "why": f"{hidden!r} starts with {hidden[0]!r}: {kind} are not read"})
        elif any(ch in p for ch in "*?["):
            matched = fs.glob(stripped)
            roots.append(posixpath.dirname(stripped.split("*")[0].split("?")[0].split("[")[0]))
            files.extend(m for m in matched if fs.isfile(m))
        elif fs.isfile(stripped):
            roots.append(posixpath.dirname(stripped))
            files.append(stripped)
        else:
            raise SourceError(f"source path {p!r} does not exist")
    if not files:
        hint = f" (not read: {left_out[0]['path']}: {left_out[0]['why']})" if left_out else ""
        raise SourceError(f"source path {path!r} holds no files ending in {', '.join(suffixes)}{hint}")
    root = posixpath.commonpath(roots) if roots else ""
    return fs, root, sorted(set(files)), left_out


def _relative(path: str, root: str) -> str:
    rel = posixpath.relpath(path, root) if root else path
    return posixpath.basename(path) if rel.startswith("..") else rel


def _file_record(fs, path: str) -> dict:
    info = fs.info(path)
    return {"path": path, "size": info.get("size"), "mtime": str(info.get("mtime") or info.get("LastModified") or "")}


# -- parquet ----------------------------------------------------------------------------


def _read_parquet(spec: ParquetSource) -> Source:
    fs, root, files, skipped = _expand(spec.path, (".parquet", ".pq", ".parq"))
    hive = _hive_partitions(files, root, spec.path)
    schema = None
    pieces = []
    records = []
    for path in files:
        record = _file_record(fs, path)
        if record["size"] == 0:
            skipped.append({**record, "why": "empty file (0 bytes): no rows to read"})
            continue
        try:
            with fs.open(path, "rb") as f:
                file = pq.ParquetFile(f)
                meta, file_schema = file.metadata, file.schema_arrow
        except (pa.ArrowInvalid, OSError) as e:
            raise SourceError(f"{path}: not a readable Parquet file: {e}") from None
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
                pieces.append((path, rel, tuple(groups), start, hive.values[path]))
                start += rows_in_piece
                groups, rows_in_piece, bytes_in_piece = [], 0, 0
            groups.append(g)
            rows_in_piece += n
            bytes_in_piece += size
        pieces.append((path, rel, tuple(groups), start, hive.values[path]))
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
    meta = _with_id(to_pandas(schema.empty_table()))
    frame = dd.from_map(
        _ParquetPiece(fs, schema), pieces, meta=meta, divisions=None, label="read-parquet", enforce_metadata=False
    )
    return Source(frame, records, skipped, schema)


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


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _hive_partitions(files: list[str], root: str, path) -> _Hive:
    """A column per ``key=value`` folder below the source's folder, whole numbers as int64
    and the rest as text (URL-escaped as Spark writes them), as readers of such datasets
    give them back; pandas' and Arrow's readers would otherwise have dropped them silently."""
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
    text = {f: {k: (None if v == _HIVE_NULL else unquote(v)) for k, v in kv} for f, kv in found.items()}
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

    def __call__(self, piece) -> pd.DataFrame:
        path, rel, groups, start, folder_values = piece
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
        return _with_id(to_pandas(table), rel, start)


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(), pa.binary(): pd.ArrowDtype(pa.binary()), pa.large_binary(): pd.ArrowDtype(pa.large_binary()),
}


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas keeping integers and booleans nullable, so a missing value never
    turns a column into floats or objects and every partition has the same dtypes."""
    return _readable_pandas_metadata(table).to_pandas(types_mapper=_NULLABLE.get)


def _readable_pandas_metadata(table: pa.Table) -> pa.Table:
    """The table without the dtypes its pandas metadata names but pandas cannot read back.

    pandas writes an Arrow-backed column's dtype into the file as text, and for nested
    types (``struct<bbox: list<...>>[pyarrow]``) it cannot parse that text again: reading
    such a file failed with "data type not understood". Those columns come as Arrow
    converts them (dicts and lists), like the same columns of a file pandas did not write.
    """
    meta = table.schema.pandas_metadata
    unreadable = [c for c in (meta or {}).get("columns", []) if str(c.get("numpy_type")).endswith("[pyarrow]") and not _parses(c["numpy_type"])]
    if not unreadable:
        return table
    for column in unreadable:
        column["numpy_type"] = "object"
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta).encode()})


def _parses(dtype: str) -> bool:
    try:
        pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return True


def row_ids(rel: str, start: int, n: int) -> pd.Series:
    """``rel:start`` … ``rel:start+n-1``, built in Arrow (millions of rows a second)."""
    numbers = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pd.Series(pc.binary_join_element_wise(f"{rel}:", numbers, ""), dtype=pd.StringDtype()).array


def _with_id(df: pd.DataFrame, rel: str = "", start: int = 0, ids=None) -> pd.DataFrame:
    """Give the frame a string ``id`` first: its own column if present, else file:row
    (``ids`` when rows are not numbered consecutively)."""
    if ID in df.columns:
        ids = df[ID].astype("string")
        df = df.drop(columns=[ID])
    elif ids is None:
        ids = row_ids(rel, start, len(df))
    df.insert(0, ID, ids)
    return df.reset_index(drop=True)


# -- text formats: CSV and JSON lines ----------------------------------------------------


def _text_blocks(
    fs, files: list[str], root: str, blocksize: int, count_rows: bool = True, whole=(), quoted: bool = False
) -> tuple[list[tuple], list[dict]]:
    """(path, rel, start, length, first_row) per block, newline-aligned, rows counted.

    Compressed files, and the files in ``whole``, are one block each. Rows per block are
    counted by a parallel pass over the blocks first (cheap: only newlines are counted),
    so that every row gets its true row number whatever the block boundaries.

    ``quoted``: values may hold newlines, so a block is cut at newlines outside quotes
    (``io.quoted``) and rows are numbered by those; each block carries the quote states
    at its two ends as a sixth item.
    """
    if quoted:
        return _quoted_blocks(fs, files, root, blocksize)
    records, spans = [], []
    for path in files:
        record = _file_record(fs, path)
        records.append(record)
        compressed = fsspec.utils.infer_compression(path) is not None
        size = record["size"] or 0
        if compressed or size <= blocksize or path in whole:
            spans.append((path, _relative(path, root), 0, None))
        else:
            for start in range(0, size, blocksize):
                spans.append((path, _relative(path, root), start, blocksize))
    counts = [0] * len(spans)
    split = [i for i, s in enumerate(spans) if s[3] is not None]
    if split and count_rows:
        counted = dask.compute(*[dask.delayed(_count_lines)(fs, *spans[i][::2], spans[i][3]) for i in split])
        for i, n in zip(split, counted):
            counts[i] = n
    blocks, line = [], 0
    for i, (path, rel, start, length) in enumerate(spans):
        if start == 0:
            line = 0
        blocks.append((path, rel, start, length, line))
        line += counts[i]
    return blocks, records


def _quoted_blocks(fs, files: list[str], root: str, blocksize: int) -> tuple[list[tuple], list[dict]]:
    records, spans = [], []
    for path in files:
        record = _file_record(fs, path)
        records.append(record)
        size = record["size"] or 0
        if fsspec.utils.infer_compression(path) is not None or size <= blocksize:
            spans.append((path, _relative(path, root), 0, None))
        else:
            spans.extend((path, _relative(path, root), start, blocksize) for start in range(0, size, blocksize))
    split = [s for s in spans if s[3] is not None]
    counted = iter(dask.compute(*[dask.delayed(_range_counts)(fs, path, start, length) for path, _, start, length in split]))
    blocks, inside, passed = [], 0, 0
    for i, (path, rel, start, length) in enumerate(spans):
        if length is None:
            blocks.append((path, rel, start, None, 0, (0, 0)))
            continue
        if start == 0:
            inside, passed = 0, 0
        odd, if_outside, if_inside = next(counted)
        # the block's first record is the line after the first newline outside quotes in
        # its range, so its number counts every such newline before it (none for a file's first)
        blocks.append((path, rel, start, length, passed + 1 if start else 0, (inside, inside ^ odd)))
        passed += if_inside if inside else if_outside
        inside ^= odd
    return blocks, records


def _range_counts(fs, path: str, start: int, length: int) -> tuple[int, int, int]:
    with fs.open(path, "rb") as f:
        f.seek(start)
        return quoting.range_counts(f.read(length))


def _count_lines(fs, path: str, start: int, length: int) -> int:
    return _read_text_block(fs, path, start, length).count(b"\n")


def _read_text_block(fs, path: str, start: int, length: int | None) -> bytes:
    with fs.open(path, "rb", compression="infer") as f:
        if length is None:
            data = f.read()
            return data if data.endswith(b"\n") or not data else data + b"\n"
        data = read_block(f, start, length, delimiter=b"\n")
    return data if data.endswith(b"\n") or not data else data + b"\n"


def _read_csv(spec: CsvSource, count_rows: bool = True) -> Source:
    fs, root, files, skipped = _expand(spec.path, (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.xz", ".tsv", ".tsv.gz", ".tab", ".txt"))
    sample = _read_text_block(fs, files[0], 0, spec.infer_bytes)
    if spec.sep is None:
        spec = spec.model_copy(update={"sep": _sniff_sep(files[0], sample, spec)})
    names = _csv_header(fs, files[0], spec)
    for path in files[1:]:
        other = _csv_header(fs, path, spec)
        if other != names:
            raise SourceError(f"{path}: header {other} differs from {files[0]}: {names}")
    schema, spans_lines = _csv_infer_schema(sample, names, spec)
    quoted = spans_lines if spec.newlines_in_values is None else spec.newlines_in_values
    blocks, records = _text_blocks(fs, files, root, spec.blocksize, count_rows, quoted=quoted)
    reader = _CsvBlock(fs, spec, names, schema, quoted)
    frame = dd.from_map(reader, blocks, meta=reader._empty(), divisions=None, label="read-csv", enforce_metadata=False)
    return Source(frame, records, skipped, schema)


_SEPARATORS = ",;\t|"


def _sniff_sep(path: str, sample: bytes, spec: CsvSource) -> str:
    """A tab for .tsv and .tab files; else the separator that splits the first lines (a
    header and its records) into the same number of fields, more than one, as the
    standard library's sniffer finds it; a comma if none does. A European export
    (``Apfel;3,50``) is read as it was written without a job saying so."""
    if re.search(r"\.(tsv|tab)(\.[a-z0-9]+)?$", path.lower()):
        return "\t"
    fallback = "," if spec.decimal != "," else ";"
    try:
        text = sample[: quoting.records_end(sample[: 64 * 1024])].decode(spec.encoding)
        return csv.Sniffer().sniff(text, delimiters=_SEPARATORS.replace(spec.decimal, "")).delimiter
    except (csv.Error, UnicodeDecodeError, LookupError):
        return fallback


def _csv_header(fs, path: str, spec: CsvSource) -> list[str]:
    if not spec.header:
        if not spec.column_names:
            raise SourceError(f"{path}: header: false needs column_names")
        names = list(spec.column_names)
    else:
        with fs.open(path, "rb", compression="infer") as f:
            line = f.readline()
        try:
            first = line.decode(spec.encoding).rstrip("\r\n").lstrip("\ufeff")  # a byte-order mark is no name
        except UnicodeDecodeError:
            raise SourceError(_not_text(line, spec)) from None
        if not first:
            raise SourceError(f"{path}: empty file, no header line")
        names = list(spec.column_names) if spec.column_names else [n.strip().strip('"') for n in first.split(spec.sep)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"{path}: column {twice[0]!r} is named more than once in {names}; "
                          "give every column its own name (column_names)")
    return names


def _csv_options(spec: CsvSource, names: list[str], types: dict | None, skip_header: bool, bad: list):
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if skip_header else 0, encoding=spec.encoding, use_threads=False)

    def on_invalid(row):
        bad.append(row)
        return "skip"

    # Arrow reads a block in chunks cut at newlines unless told values may span them (which
    # costs nothing measurable in one thread); dsbuild cuts files into blocks itself
    parse = pacsv.ParseOptions(delimiter=spec.sep, invalid_row_handler=on_invalid, newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        null_values=spec.null_values, strings_can_be_null=True, quoted_strings_can_be_null=True, column_types=types or {},
        decimal_point=spec.decimal,
    )
    return read, parse, convert


def _csv_infer_schema(sample: bytes, names: list[str], spec: CsvSource) -> tuple[pa.Schema, bool]:
    """The columns' types from a few MB, and whether a value there spans lines."""
    # Drop a possibly cut last record (it may be a quoted value cut between its lines).
    cut = sample[: quoting.records_end(sample)] or sample
    if spec.skip_initial_space:
        cut = _strip_after_separators(cut, spec.sep)
    table = pacsv.read_csv(io.BytesIO(cut), *_csv_options(spec, names, None, spec.header, []))
    if any(pa.types.is_binary(f.type) for f in table.schema):  # Arrow's type for text that does not decode
        raise SourceError(_not_text(cut, spec))
    fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type) for f in table.schema]
    return pa.schema(fields), _has_newline_value(table)


def _has_newline_value(table: pa.Table) -> bool:
    return any(
        pc.any(pc.match_substring(col, "\n")).as_py()
        for col in table.columns
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type)
    )


def _not_text(sample: bytes, spec: CsvSource) -> str:
    """The first line of ``spec.path`` that is not ``spec.encoding`` text, and the way out."""
    for number, line in enumerate(sample.split(b"\n"), start=1):
        try:
            line.decode(spec.encoding)
        except UnicodeDecodeError as e:
            return (f"{spec.path}: line {number} is not {spec.encoding} text ({line[max(e.start - 20, 0):e.end + 20]!r}); "
                    "set source.encoding to the file's, e.g. latin-1 or cp1252")
    return f"{spec.path}: not {spec.encoding} text; set source.encoding to the file's, e.g. latin-1 or cp1252"


def _strip_after_separators(data: bytes, sep: str) -> bytes:
    """Spaces after each separator removed (UCI's ``39, State-gov, ...``), but not inside
    quotes, where they are the value's own (``"Smith, J"``): the text between quotes
    alternates outside, inside (a doubled quote inside is an empty outside piece)."""
    s = sep.encode()
    if s + b" " not in data:
        return data
    if b'"' not in data:
        return data.replace(s + b" ", s).replace(s + b" ", s)
    pieces = data.split(b'"')
    pieces[::2] = [p.replace(s + b" ", s).replace(s + b" ", s) for p in pieces[::2]]
    return b'"'.join(pieces)


class _CsvBlock:
    def __init__(self, fs, spec: CsvSource, names: list[str], schema: pa.Schema, quoted: bool = False):
        self.fs, self.spec, self.names, self.schema, self.quoted = fs, spec, names, schema, quoted

    def _empty(self) -> pd.DataFrame:
        df = _with_id(to_pandas(self.schema.empty_table()))
        return _mark_bad(df)

    def __call__(self, block) -> pd.DataFrame:
        path, rel, start, length, first_line, *quote_states = block
        if quote_states and length is not None:
            with self.fs.open(path, "rb") as f:
                data = quoting.read_records(f, start, length, *quote_states[0])
            data = data if data.endswith(b"\n") or not data else data + b"\n"
        else:
            data = _read_text_block(self.fs, path, start, length)
        if self.spec.skip_initial_space:
            data = _strip_after_separators(data, self.spec.sep)
        header_here = self.spec.header and start == 0
        # Ids are file:row, the row's data line in the file: the block's first line plus
        # the line of the row's record in the block (Arrow counts records, skipping empty
        # lines). Where values span lines, a record's line is its number among the pieces
        # between newlines outside quotes.
        offset = first_line - (1 if self.spec.header and start != 0 else 0)
        bad: list = []
        try:
            table, typed = pacsv.read_csv(io.BytesIO(data), *self._options(header_here, bad)), True
        except pa.ArrowInvalid:  # a value does not fit its column's type, or is not text
            bad = []
            table, typed = pacsv.read_csv(io.BytesIO(data), *self._options(header_here, bad, {n: pa.binary() for n in self.names})), False
        spans_lines = self.quoted or (b'"' in data and _has_newline_value(table))
        if spans_lines and not self.quoted and length is not None:
            raise self._spans_lines(path, start)
        line_of = _record_lines(data, header_here, spans_lines)
        if typed:
            df = to_pandas(table)
            rows, bad_rows = _place_invalid(bad, len(df), header_here) if bad else (None, [])
        else:
            df, rows, bad_rows = self._typed_by_hand(table, bad, data, header_here, line_of, spans_lines)
        if line_of is not None and rows is None:
            rows = range(len(df))
        line = (lambda r: r) if line_of is None else line_of.__getitem__
        ids = None if rows is None else pd.array([f"{rel}:{offset + line(r)}" for r in rows], dtype="string")
        df = _with_id(df, rel, offset, ids)
        out = _mark_bad(df)
        if bad_rows:
            extra = pd.DataFrame({ID: pd.array([f"{rel}:{offset + line(r)}" for r, _, _ in bad_rows], dtype="string")})
            out = _mark_bad(pd.concat([out, _typed_nulls(extra, self._empty())], ignore_index=True))
            out.loc[len(df):, REJECT] = [why for _, _, why in bad_rows]
            out.loc[len(df):, RAW] = [text for _, text, _ in bad_rows]
        return out

    def _options(self, header_here: bool, bad: list, types: dict | None = None):
        types = types or dict(zip(self.schema.names, self.schema.types))
        return _csv_options(self.spec, self.names, types, header_here, bad)

    def _spans_lines(self, path: str, start: int) -> SourceError:
        """A quoted value spans lines past the sample that decided how to cut the file: this
        block was cut inside a value, and its rows would be wrong."""
        return SourceError(
            f"{path}: a quoted value spans lines in the block at byte {start:,}, past the first {self.spec.infer_bytes:,} "
            "bytes that decided how to cut the file; set source.newlines_in_values: true")

    def _typed_by_hand(self, table: pa.Table, bad: list, data: bytes, header_here: bool, line_of: np.ndarray | None,
                       spans_lines: bool):
        """The block read as bytes (``table``): convert per column, and reject the rows whose
        values do not fit, naming the column and value."""
        rows, bad_rows = _place_invalid(bad, table.num_rows, header_here)
        rows = np.asarray(rows)
        reasons = np.full(table.num_rows, None, dtype=object)
        out = {}
        for f in self.schema:
            text = col = _decoded(table.column(f.name), reasons, f.name)
            if pa.types.is_floating(f.type) and self.spec.decimal != ".":
                col = col.str.replace(self.spec.decimal, ".", regex=False)
            try:
                converted = to_pandas(pa.table({f.name: pa.array(col, type=pa.string()).cast(f.type)}))[f.name]
                out[f.name] = converted
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            num = pd.to_numeric(col, errors="coerce") if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)) else None
            failed = col.notna() & (num.isna() if num is not None else True)
            if pa.types.is_integer(f.type):
                failed |= num.notna() & (num != np.floor(num))
            for i in np.flatnonzero(failed.to_numpy()):
                if reasons[i] is None:
                    reasons[i] = f"type:{f.name}={text.iat[i]}"
            good = num.where(~failed) if num is not None else pd.Series(None, index=col.index)
            out[f.name] = to_pandas(pa.table({f.name: pa.array(good, type=f.type, from_pandas=True)}))[f.name].set_axis(col.index)
        df = pd.DataFrame(out, index=pd.RangeIndex(table.num_rows))
        keep = np.array([r is None for r in reasons], dtype=bool)
        lines = (quoting.lines(data) if spans_lines else data.split(b"\n"))[:-1]
        for i in np.flatnonzero(~keep):
            row = int(rows[i])
            at = (1 if header_here else 0) + (row if line_of is None else int(line_of[row]))
            text = lines[at].decode(self.spec.encoding, "replace") if at < len(lines) else ""
            bad_rows.append((row, text, reasons[i]))
        return df[keep].reset_index(drop=True), [int(r) for r in rows[keep]], bad_rows


def _decoded(column: pa.ChunkedArray, reasons: np.ndarray, name: str) -> pd.Series:
    """Bytes as text (Arrow has transcoded them to UTF-8 and checks it in one cast); where
    a value is not text, it is missing, and its row, if not rejected yet, gets the reason
    ``encoding:<column>``."""
    try:
        return column.cast(pa.string()).to_pandas()
    except pa.ArrowInvalid:
        pass
    text = np.full(len(column), None, dtype=object)
    for i, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            text[i] = value.decode("utf8")
        except UnicodeDecodeError:
            if reasons[i] is None:
                reasons[i] = f"encoding:{name}"
    return pd.Series(text, dtype=object)


def _place_invalid(bad: list, n_parsed: int, header_here: bool) -> tuple[list[int] | None, list[tuple]]:
    """Rows Arrow skipped as invalid: each parsed row's number and (number, text, reason)
    for each skipped one. Arrow numbers records from 1, the header included and empty
    lines not; one it cannot place goes after the parsed rows."""
    skip = 1 if header_here else 0
    placed = [b.number - 1 - skip if b.number is not None else None for b in bad]
    known = set(placed)
    free = [r for r in range(n_parsed + len(bad)) if r not in known]
    rows, unknown = free[:n_parsed], iter(free[n_parsed:])
    placed = [p if p is not None else next(unknown) for p in placed]
    reasons = [(p, b.text, f"csv:fields=expected {b.expected_columns}, got {b.actual_columns}") for p, b in zip(placed, bad)]
    return rows, reasons


def _record_lines(data: bytes, header_here: bool, quoted: bool = False) -> np.ndarray | None:
    """The data line of each record Arrow reads from the block, or None when they are the
    same (no empty line). Without it a row's id moved with the block boundaries: rows after
    an empty line were numbered by record in their block but by line across blocks.
    ``quoted``: lines are the pieces between newlines outside quotes."""
    if not (b"\n\n" in data or b"\n\r\n" in data or data.startswith((b"\n", b"\r\n"))):
        return None
    lines = (quoting.lines(data) if quoted else data.split(b"\n"))[:-1]
    first = 1 if header_here else 0
    return np.array([i - first for i in range(first, len(lines)) if lines[i].rstrip(b"\r")], dtype=np.int64)


def _mark_bad(df: pd.DataFrame) -> pd.DataFrame:
    """Give the frame the reject and raw-text columns every text block carries."""
    if REJECT not in df.columns:
        df[REJECT] = pd.Series([None] * len(df), dtype=object, index=df.index)
    if RAW not in df.columns:
        df[RAW] = pd.Series([None] * len(df), dtype=object, index=df.index)
    return df


def _typed_nulls(extra: pd.DataFrame, empty: pd.DataFrame) -> pd.DataFrame:
    """Rows of nulls with the frame's dtypes (for rows that failed to parse)."""
    n = len(extra)
    cols = {}
    for c in empty.columns:
        if c == ID:
            cols[c] = extra[ID].to_numpy()
        else:
            cols[c] = pd.Series([None] * n, dtype=empty[c].dtype)
    return pd.DataFrame(cols)


def _read_jsonl(spec: JsonlSource, count_rows: bool = True) -> Source:
    """JSON lines; a file that is one JSON array of objects (what many tools export as
    ``.json``) is read too, whole, as one partition: an array cannot be split."""
    fs, root, files, skipped = _expand(spec.path, (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz"))
    arrays = {f for f in files if _is_json_array(fs, f)}
    sample = _read_text_block(fs, files[0], 0, spec.infer_bytes)
    if files[0] in arrays:
        rows = _array_prefix(sample, 1000)
    else:
        rows = [value for _, value, _ in itertools.islice(_JsonBlock.items(sample, files[0], 0), 1000)]
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        raise SourceError(f"{files[0]}: no JSON object in the first lines")
    schema = _json_schema(rows)
    blocks, records = _text_blocks(fs, files, root, spec.blocksize, count_rows, whole=arrays)
    reader = _JsonBlock(fs, schema)
    frame = dd.from_map(reader, blocks, meta=reader.empty(), divisions=None, label="read-jsonl", enforce_metadata=False)
    return Source(frame, records, skipped, schema)


def _is_json_array(fs, path: str) -> bool:
    """A ``.json`` file whose text starts with ``[`` (JSON lines files are not opened)."""
    if not _may_be_array(path):
        return False
    with fs.open(path, "rb", compression="infer") as f:
        return _starts_array(f.read(256))


def _may_be_array(path: str) -> bool:
    return path.endswith((".json", ".json.gz"))


def _starts_array(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _json_array(data: bytes, path: str) -> list:
    """The elements of a file holding one JSON array."""
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except ValueError as e:
        raise SourceError(f"{path}: starts as a JSON array but does not parse as one: {e}") from None
    if not isinstance(items, list):
        raise SourceError(f"{path}: starts with '[' but is not a JSON array")
    return items


def _array_prefix(sample: bytes, limit: int) -> list:
    """The first elements of a JSON array, from the start of its file: the driver types the
    columns from them, and only the task that reads the file parses it whole."""
    text = sample.decode("utf-8-sig", "ignore")
    decoder, out, at = json.JSONDecoder(), [], text.find("[") + 1
    while len(out) < limit:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            break
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:  # cut by the sample's end; a file that is not JSON fails in its task
            break
        out.append(value)
    return out


def _raw_text(raw) -> str:
    """A rejected record's text: its line, or its array element written back as JSON."""
    return raw.decode("utf8", "replace") if isinstance(raw, bytes) else json.dumps(raw, ensure_ascii=False)


def _json_schema(rows: list[dict]) -> pa.Schema:
    """Each field takes the type most of the sample's values have; a value of another
    type later is rejected with the field named, rather than turning the column to text."""
    names: dict[str, list] = {}
    for row in rows:
        for k, v in row.items():
            names.setdefault(k, []).append(v)
    fields = []
    for name, values in names.items():
        kinds: dict[str, list] = {}
        for v in values:
            if v is not None:
                kind = "float" if isinstance(v, float) else type(v).__name__
                kinds.setdefault(kind, []).append(v)
        if "int" in kinds and "float" in kinds:
            kinds["float"] += kinds.pop("int")
        if not kinds:
            fields.append(pa.field(name, pa.string()))
            continue
        common = max(kinds.values(), key=len)
        try:
            fields.append(pa.field(name, pa.array(common).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


class _JsonBlock:
    def __init__(self, fs, schema: pa.Schema):
        self.fs, self.schema = fs, schema

    def empty(self) -> pd.DataFrame:
        return _mark_bad(_with_id(to_pandas(self.schema.empty_table())))

    @staticmethod
    def items(data: bytes, path: str, start: int):
        """(line or array index, value, raw): the block's JSON lines (raw: the line), or
        the elements of a file that is one JSON array (always a block of its own; raw:
        the element). A line that is not JSON has the value ``_UNPARSED``."""
        if start == 0 and _may_be_array(path) and _starts_array(data):
            for i, item in enumerate(_json_array(data, path)):
                yield i, item, item
            return
        for i, line in enumerate(data.split(b"\n")[:-1]):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                value = _UNPARSED
            yield i, value, line

    def __call__(self, block) -> pd.DataFrame:
        path, rel, start, length, first_line = block
        data = _read_text_block(self.fs, path, start, length)
        raws: dict[int, Any] = {}
        good, good_rows, bad = [], [], []
        for i, obj, raw in self.items(data, path, start):
            raws[i] = raw
            if not isinstance(obj, dict):
                bad.append((i, _raw_text(raw), "json:ValueError" if obj is not _UNPARSED else "json:JSONDecodeError"))
                continue
            unknown = set(obj) - set(self.schema.names)
            if unknown:
                bad.append((i, _raw_text(raw), f"json:unknown-field={sorted(unknown)[0]}"))
                continue
            good.append(obj)
            good_rows.append(i)
        typed, typed_rows = [], []
        for obj, i in zip(good, good_rows):
            try:
                pa.Table.from_pylist([obj], schema=self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                field_name = next((k for k in obj if not _fits(obj[k], self.schema.field(k).type)), "?")
                bad.append((i, _raw_text(raws[i]), f"type:{field_name}={obj.get(field_name)!r}"[:120]))
                continue
            typed.append(obj)
            typed_rows.append(i)
        df = to_pandas(pa.Table.from_pylist(typed, schema=self.schema) if typed else self.schema.empty_table())
        df = _with_id(df, ids=pd.array([f"{rel}:{first_line + i}" for i in typed_rows], dtype="string"))
        out = _mark_bad(df)
        if bad:
            extra = pd.DataFrame({ID: pd.array([f"{rel}:{first_line + i}" for i, _, _ in bad], dtype="string")})
            out = pd.concat([out, _mark_bad(_typed_nulls(extra, self.empty()))], ignore_index=True)
            out.loc[len(df):, REJECT] = [why for _, _, why in bad]
            out.loc[len(df):, RAW] = [text for _, text, _ in bad]
        return out


_UNPARSED = object()


def _fits(value, typ: pa.DataType) -> bool:
    try:
        pa.array([value], type=typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return False


# -- images -----------------------------------------------------------------------------


def _read_images(spec: ImagesSource) -> Source:
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in spec.extensions)
    fs, _, files, skipped = _expand(spec.path, suffixes, ignore=(".",))  # '_DSC0001.JPG' is a photo
    root = fs._strip_protocol(spec.path).rstrip("/")
    rels = [_relative(f, root) for f in files]
    in_folders = all("/" in r for r in rels)
    if spec.labels == "folders" and not in_folders:
        flat = next(r for r in rels if "/" not in r)
        raise SourceError(f"{spec.path}: labels: folders, but {flat!r} is not in a class subfolder")
    with_labels = spec.labels == "folders" or (spec.labels == "auto" and in_folders)
    records = [_file_record(fs, f) for f in files]
    chunks = [
        list(zip(files[i : i + spec.files_per_partition], rels[i : i + spec.files_per_partition]))
        for i in range(0, len(files), spec.files_per_partition)
    ]
    reader = _ImageFiles(fs, with_labels)
    return Source(dd.from_map(reader, chunks, meta=reader(None), divisions=None, label="read-images", enforce_metadata=False), records, skipped)


class _ImageFiles:
    def __init__(self, fs, with_labels: bool):
        self.fs, self.with_labels = fs, with_labels

    def __call__(self, chunk) -> pd.DataFrame:
        chunk = chunk or []
        blobs = []
        for path, _ in chunk:
            with self.fs.open(path, "rb") as f:
                blobs.append(f.read())
        df = images_frame([rel for _, rel in chunk], blobs, [path for path, _ in chunk])
        if self.with_labels:
            df["label"] = pd.array([rel.split("/")[0] for _, rel in chunk], dtype="string")
        return df


def images_frame(ids: list[str], blobs: list[bytes], paths: list[str] | None = None) -> pd.DataFrame:
    """The standard image columns: bytes with format, height and width beside them."""
    sizes = [image_size(b) for b in blobs]
    return pd.DataFrame(
        {
            ID: pd.array(ids, dtype="string"),
            "image": image_series(blobs),
            "image_format": pd.array([sniff_image_format(b) for b in blobs], dtype="string"),
            "image_height": pd.array([s[0] if s else None for s in sizes], dtype="Int64"),
            "image_width": pd.array([s[1] if s else None for s in sizes], dtype="Int64"),
            **({"path": pd.array(paths, dtype="string")} if paths is not None else {}),
        }
    )


# -- bundled samples --------------------------------------------------------------------

_BUNDLED_CSV = {"adult": "adult.csv.gz", "adult_test": "adult_test.csv.gz", "german_credit": "german_credit.csv.gz"}


def bundled_path(name: str) -> str:
    from importlib.resources import files

    return str(files("dsbuild.io") / "data" / _BUNDLED_CSV[name])


def _read_sample(spec: SampleSource, count_rows: bool = True) -> Source:
    if spec.name in _BUNDLED_CSV:
        path = bundled_path(spec.name)
        return _read_csv(CsvSource(format="csv", path=path), count_rows)
    loader = _SklearnSample(spec.name)
    n = loader.rows()
    bounds = np.linspace(0, n, min(spec.partitions, n) + 1).astype(int)
    ranges = list(zip(bounds[:-1], bounds[1:]))
    frame = dd.from_map(loader, ranges, meta=loader((0, 0)), divisions=None, label=f"sample-{spec.name}", enforce_metadata=False)
    return Source(frame, [{"path": f"sklearn:{spec.name}", "size": n, "mtime": ""}])


def _read_frame(spec: FrameSource) -> Source:
    """Ids are the frame's ``id`` column, else ``name:row`` by the row's position in the
    whole frame, whatever its partitions. A meaningful index (named, or not 0..n-1) is kept
    as a column, as ``to_parquet`` keeps it."""
    frame = spec.frame
    if isinstance(frame, pd.DataFrame):
        if frame.index.name is not None or not frame.index.equals(pd.RangeIndex(len(frame))):
            frame = frame.reset_index()
        rows = len(frame)
        starts = list(range(0, rows, spec.rows_per_partition)) or [0]
        frame = _scattered([frame.iloc[s : s + spec.rows_per_partition] for s in starts], frame.iloc[:0])
    else:
        if frame.known_divisions and frame.index.name is not None:
            frame = frame.reset_index()
        starts = None
        rows = None
    if ID not in frame.columns and starts is None:
        lengths = frame.map_partitions(len, meta=(None, "int64")).compute().tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        rows = int(sum(lengths))
    meta = _with_id(frame._meta.copy(), spec.name, 0)
    named = frame.map_partitions(_FrameRows(spec.name, starts), meta=meta, enforce_metadata=False, align_dataframes=False)
    return Source(named, [{"path": f"frame:{spec.name}", "size": rows, "mtime": dask.base.tokenize(spec.frame)}])


def _scattered(parts: list[pd.DataFrame], meta: pd.DataFrame):
    """The parts as a Dask frame: sent to the workers once, where a distributed client is
    current (in the graph, they would travel with every compute of the job)."""
    try:
        from distributed import default_client

        parts = default_client().scatter(parts, hash=False)
    except (ImportError, ValueError):
        pass
    return dd.from_delayed([dask.delayed(p) for p in parts], meta=meta, verify_meta=False)


class _FrameRows:
    def __init__(self, name: str, starts: list[int] | None):
        self.name, self.starts = name, starts

    def __call__(self, part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
        start = self.starts[partition_info["number"]] if self.starts is not None and partition_info else 0
        return _with_id(part.copy(), self.name, start)


class _SklearnSample:
    """scikit-learn's bundled data sets: digits as PNG images with labels, breast_cancer."""

    def __init__(self, name: str):
        self.name = name

    def rows(self) -> int:
        return len(self._load().target)

    def _load(self):
        from sklearn import datasets

        return datasets.load_digits() if self.name == "digits" else datasets.load_breast_cancer()

    def __call__(self, bounds) -> pd.DataFrame:
        lo, hi = bounds
        data = self._load()
        idx = range(lo, hi)
        ids = [f"{self.name}:{i}" for i in idx]
        if self.name == "digits":
            from dsbuild.kernels.decode import encode_image

            pixels = (data.images[lo:hi] * (255.0 / 16.0)).round().astype(np.uint8)
            df = images_frame(ids, [encode_image(p, "png") for p in pixels])
            df["label"] = pd.array([str(t) for t in data.target[lo:hi]], dtype="string")
            return df
        df = pd.DataFrame(data.data[lo:hi], columns=[str(c) for c in data.feature_names])
        df.insert(0, ID, pd.array(ids, dtype="string"))
        df["diagnosis"] = pd.array([str(data.target_names[t]) for t in data.target[lo:hi]], dtype="string")
        return df
