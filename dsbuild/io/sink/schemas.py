"""The output's one schema, from the schemas its files were written with."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pyarrow.parquet as pq

from dsbuild.io.sink.arrow import _holds_null_type
from dsbuild.io.sink.files import _is_staged
from dsbuild.records import REASON


def _file_schema(fs, path: str) -> pa.Schema:
    """A staged or Parquet file's schema as written, metadata and all."""
    with fs.open(path, "rb") as f:
        return pa.ipc.open_file(f).schema if _is_staged(path) else pq.read_schema(f)


def _pandas_metadata(written: pa.Schema, normalized: pa.Schema, schema: pa.Schema) -> dict:
    """The pandas metadata every shard carries, so ``pd.read_parquet`` gives the same
    dtypes (nullable integers, booleans, text) whichever shards were merged or renamed:
    the first file's, for the columns it holds with the output's type (merged shards
    had none, renamed ones their own, so the dtypes changed with the partitioning)."""
    raw = (written.metadata or {}).get(b"pandas")
    if raw is None:
        return {}
    doc = json.loads(raw)
    same = {f.name for f in schema if f.name in normalized.names and normalized.field(f.name).type == f.type}
    doc["columns"] = [c for c in doc.get("columns", []) if c.get("name") in same]
    return {b"pandas": json.dumps(doc).encode()}


def _stored_schemas(fs, staged: list[dict]) -> list[pa.Schema]:
    """Each file's schema as Parquet stores it, from the record its writing task made, each
    distinct one converted once: opening every file to read it cost a partition_by output's
    finish 1.6-1.8 s per 2,000 files. A record without one (a checkpoint an older version
    wrote) has its file read."""
    stored: dict[str, pa.Schema] = {}
    out = []
    for f in staged:
        text = f.get("schema")
        if not isinstance(text, str):  # None, or NaN from a frame of records
            out.append(_read_schema(fs, f["path"]))
            continue
        if text not in stored:
            stored[text] = _as_parquet_stores(pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))))
        out.append(stored[text])
    return out


def _read_schema(fs, path: str) -> pa.Schema:
    """A staged file's schema as Parquet stores it, or a Parquet file's."""
    with fs.open(path, "rb") as f:
        if not _is_staged(path):
            return pq.read_schema(f).remove_metadata()
        schema = pa.ipc.open_file(f).schema
    return _as_parquet_stores(schema)


def _as_parquet_stores(schema: pa.Schema) -> pa.Schema:
    """``schema`` as a Parquet file of it reads back, so shards' schemas unify as if every
    file had been written as Parquet."""
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    return pq.read_schema(pa.BufferReader(buffer.getvalue())).remove_metadata()


def _unify(schemas: list[pa.Schema], cast_conflicts_to_string: bool, placeholders: list[pa.Schema] = ()) -> pa.Schema:
    """One schema for all files: nulls take the type seen elsewhere; a true conflict
    (int here, text there) becomes text in rejects, and is an error in kept data.

    ``placeholders`` (the schemas of the frames' zero-row placeholders) only name the
    columns and types that no file has: files' own types win, so that no file is
    rewritten for a placeholder's wider dictionary index, say.
    """
    fields: dict[str, pa.DataType] = {}
    order: list[str] = []
    for schema in placeholders:
        for f in schema:
            if f.name not in order:
                order.append(f.name)
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f.type
                if f.name not in order:
                    order.append(f.name)
                continue
            have = fields[f.name]
            if have == f.type or pa.types.is_null(f.type):
                continue
            if pa.types.is_null(have):
                fields[f.name] = f.type
                continue
            try:
                fields[f.name] = pa.unify_schemas(
                    [pa.schema([pa.field(f.name, have)]), pa.schema([pa.field(f.name, f.type)])],
                    promote_options="permissive",
                ).field(f.name).type
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                if not cast_conflicts_to_string:
                    raise TypeError(f"column {f.name!r} is {have} in one shard and {f.type} in another") from None
                fields[f.name] = pa.string()
    for schema in placeholders:
        for f in schema:
            if _holds_null_type(fields.get(f.name, pa.null())):
                fields[f.name] = f.type
    if REASON in order:
        order = [n for n in order if n not in (REASON, "stage")] + [REASON, "stage"]
    return pa.schema([pa.field(n, pa.string() if _holds_null_type(fields[n]) else fields[n]) for n in order])
