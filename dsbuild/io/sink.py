"""The sink: sharded Parquet written by the workers, finished by a small driver step.

Each partition writes its own files (split so none exceeds the shard limits) into a
temporary folder; after the one compute, small neighbouring files are merged into
shards near the target size, files are numbered in order, schemas are unified (rejects
from different stages may disagree on a column's type) and the folder is moved into
place. A reader never sees a half-written output: ``_SUCCESS`` is written last, inside
the temporary folder, before the move.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import uuid

import dask
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dsbuild.records import REASON

SUCCESS = "_SUCCESS"


class OutputExists(FileExistsError):
    pass


class Sink:
    """Where one run's output goes, and the temporary folder it is built in."""

    def __init__(self, path: str, *, shard_rows: int, shard_bytes: int, compression: str, overwrite: bool = False):
        self.fs, _, (self.path,) = fsspec.get_fs_token_paths(path)
        self.path = self.path.rstrip("/")
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.compression = None if compression == "none" else compression
        self.overwrite = overwrite
        self.tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:12]}"

    def check_target(self) -> None:
        """Refuse to replace a non-empty folder unless asked; checked before any work."""
        if self.fs.exists(self.path) and not self.overwrite:
            if self.fs.isfile(self.path) or self.fs.ls(self.path):
                raise OutputExists(f"{self.path} exists and is not empty; pass --overwrite (overwrite=True) to replace it")

    def staging(self, kind: str, group: str) -> str:
        return posixpath.join(self.tmp, "_staging", kind, group)

    def write_partition(self, part: pd.DataFrame, folder: str, index: int) -> list[dict]:
        """Write one partition as one or more files under the shard limits (runs on a worker)."""
        table = pa.Table.from_pandas(part, preserve_index=False)
        self.fs.makedirs(folder, exist_ok=True)
        out = []
        for k, chunk in enumerate(_chunks(table, self.shard_rows, self.shard_bytes)):
            path = posixpath.join(folder, f"{index:06d}-{k:04d}.parquet")
            out.append(_write_table(self.fs, chunk, path, self.compression))
        return out

    def finish(self, kind: str, staged: list[dict], cast_conflicts_to_string: bool) -> tuple[list[dict], pa.Schema | None]:
        """Merge small files, unify schemas, number shards ``part-00000.parquet``.

        ``staged`` is in output order. Rewrites run as tasks on the cluster; files that
        need no change are only renamed.
        """
        staged = [f for f in staged if f["rows"] > 0] or staged[:1]
        if not staged:
            return [], None
        schema = _unify([_read_schema(self.fs, f["path"]) for f in staged], cast_conflicts_to_string)
        groups, current = [], []
        for f in staged:
            if current and (
                sum(g["rows"] for g in current) + f["rows"] > self.shard_rows
                or sum(g["memory"] for g in current) + f["memory"] > self.shard_bytes
            ):
                groups.append(current)
                current = []
            current.append(f)
        if current:
            groups.append(current)
        folder = posixpath.join(self.tmp, kind)
        self.fs.makedirs(folder, exist_ok=True)
        tasks = []
        for i, group in enumerate(groups):
            target = posixpath.join(folder, f"part-{i:05d}.parquet")
            if len(group) == 1 and _read_schema(self.fs, group[0]["path"]) == schema:
                self.fs.mv(group[0]["path"], target)
                tasks.append(dask.delayed({**group[0], "path": target}))
            else:
                tasks.append(dask.delayed(_merge)(self.fs, [g["path"] for g in group], target, schema, self.compression))
        shards = list(dask.compute(*tasks))
        for s in shards:
            s["file"] = posixpath.relpath(s.pop("path"), self.tmp)
            s.pop("memory", None)
        return shards, schema

    def write_text(self, name: str, text: str) -> None:
        with self.fs.open(posixpath.join(self.tmp, name), "w") as f:
            f.write(text)

    def commit(self) -> None:
        """Mark success inside the temporary folder, then move it into place."""
        self.fs.rm(posixpath.join(self.tmp, "_staging"), recursive=True) if self.fs.exists(posixpath.join(self.tmp, "_staging")) else None
        self.write_text(SUCCESS, "")
        old = None
        if self.fs.exists(self.path):
            old = f"{self.path}.old-{uuid.uuid4().hex[:12]}"
            self.fs.mv(self.path, old, recursive=True)
        self.fs.mv(self.tmp, self.path, recursive=True)
        if old:
            self.fs.rm(old, recursive=True)

    def abort(self) -> None:
        if self.fs.exists(self.tmp):
            self.fs.rm(self.tmp, recursive=True)


def _chunks(table: pa.Table, max_rows: int, max_bytes: int):
    if table.num_rows == 0:
        yield table
        return
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    step = max(1, min(max_rows, max_bytes // per_row))
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def _write_table(fs, table: pa.Table, path: str, compression) -> dict:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, row_group_size=min(max(table.num_rows, 1), 128 * 1024))
    data = buf.getvalue()
    with fs.open(path, "wb") as f:
        f.write(data)
    return {
        "path": path,
        "rows": table.num_rows,
        "bytes": len(data),
        "memory": table.nbytes,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _read_schema(fs, path: str) -> pa.Schema:
    with fs.open(path, "rb") as f:
        return pq.read_schema(f).remove_metadata()


def _unify(schemas: list[pa.Schema], cast_conflicts_to_string: bool) -> pa.Schema:
    """One schema for all files: nulls take the type seen elsewhere; a true conflict
    (int here, text there) becomes text in rejects, and is an error in kept data."""
    fields: dict[str, pa.DataType] = {}
    order: list[str] = []
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f.type
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
    if REASON in order:
        order = [n for n in order if n not in (REASON, "stage")] + [REASON, "stage"]
    return pa.schema([pa.field(n, pa.string() if pa.types.is_null(fields[n]) else fields[n]) for n in order])


def _merge(fs, paths: list[str], target: str, schema: pa.Schema, compression) -> dict:
    tables = []
    for p in paths:
        with fs.open(p, "rb") as f:
            t = pq.read_table(f)
        tables.append(_conform(t, schema))
    out = _write_table(fs, pa.concat_tables(tables), target, compression)
    for p in paths:
        fs.rm(p)
    return out


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
