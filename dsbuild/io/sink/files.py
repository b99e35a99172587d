"""One file at a time: Parquet written in row groups and hashed as it is written, and the
uncompressed Arrow IPC files a partition stages for the finish."""

from __future__ import annotations

import base64
import hashlib
import itertools
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dsbuild.io.sink.places import _is_local, _task_folder
from dsbuild.records import ID, sniff_image_format


def _chunks(table: pa.Table, max_rows: int, max_bytes: int):
    if table.num_rows == 0:
        yield table
        return
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    step = max(1, min(max_rows, max_bytes // per_row))
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


ROW_GROUP_ROWS = 1024 * 1024
ROW_GROUP_BYTES = 128 * 2**20


def _write_table(fs, table: pa.Table, path: str, compression) -> dict:
    """Write one Parquet file; return its row count, size and SHA-256 for the manifest."""
    return _write_batches(fs, table.schema, [table], path, compression)


def _write_batches(fs, schema: pa.Schema, tables, path: str, compression) -> dict:
    """Write ``tables`` (an iterable, consumed once) as one Parquet file, hashed as it is
    written: nothing larger than a row group is held, on top of one input table.

    Row groups hold up to a million rows or 128 MiB, less on a worker with little memory
    (small groups cost writers and readers dearly: dictionaries restart in every group).
    Ids and binary columns (images) skip dictionary encoding: their values are unique or
    large. Binary columns of encoded images (PNG, JPEG, WebP, GIF, JPEG 2000) are stored without
    compression: their bytes are compressed already (zstd shrank 512x512 JPEGs by 0.4 %, and
    took two fifths of the CPU of writing them, and more to read them back).
    """
    binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    dictionary = [f.name for f in schema if f.name != ID and f.name not in binary]
    groups = _row_groups(tables, _row_group_bytes())
    first = next(groups, None)
    codecs = compression or "none"
    encoded = [name for name in binary if first is not None and _holds_encoded_images(first.column(name))]
    if encoded and codecs != "none":
        codecs = {path: "none" if path in encoded else codecs for path in _leaf_paths(schema)}
    rows = memory = 0
    values = {}
    with fs.open(path, "wb") as raw:
        out = _Hashing(raw)
        with pq.ParquetWriter(out, schema, compression=codecs, use_dictionary=dictionary) as writer:
            for group in itertools.chain([first] if first is not None else [], groups):
                writer.write_table(group, row_group_size=max(1, group.num_rows))
                rows, memory = rows + group.num_rows, memory + group.nbytes
                values = _dictionary_values(group, values)
            if rows == 0:
                writer.write_table(schema.empty_table())
    return {"path": path, "rows": rows, "bytes": out.size, "memory": memory, "sha256": out.hash.hexdigest(), "dictionary": values,
            "schema": _schema_text(schema)}


_COMPRESSED_IMAGES = ("png", "jpeg", "webp", "gif", "jp2")


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's column paths (``boxes.list.element``): a per-column codec names leaves."""
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    leaves = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    return [leaves.column(i).path for i in range(len(leaves))]


def _holds_encoded_images(column: pa.ChunkedArray) -> bool:
    """Whether a binary column's first value is a compressed image (the rest are taken to
    be like it: one file's column holds one kind of value)."""
    for chunk in column.chunks:
        if chunk.null_count < len(chunk):
            first = 0 if chunk.null_count == 0 else pc.index(chunk.is_valid(), True).as_py()
            return sniff_image_format(chunk[first].as_py()[:16]) in _COMPRESSED_IMAGES
    return False


def _row_group_bytes() -> int:
    """128 MiB, or an eighth of this worker's memory limit where that is smaller: writing a
    group holds it and its encoded pages at once."""
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):
        limit = None
    return min(ROW_GROUP_BYTES, limit // 8) if limit else ROW_GROUP_BYTES


def _row_groups(tables, budget: int):
    """Re-cut a stream of tables into groups of up to ROW_GROUP_ROWS rows and ``budget`` bytes."""
    held, held_rows, held_bytes = [], 0, 0
    for table in tables:
        per_row = max(1, table.nbytes // max(1, table.num_rows))
        step = max(1, min(ROW_GROUP_ROWS, budget // per_row))
        start = 0
        while start < table.num_rows:
            take = min(step - held_rows, table.num_rows - start)
            if take <= 0 or held_bytes + take * per_row > budget and held:
                yield pa.concat_tables(held)
                held, held_rows, held_bytes = [], 0, 0
                continue
            held.append(table.slice(start, take))
            held_rows, held_bytes, start = held_rows + take, held_bytes + take * per_row, start + take
    if held:
        yield pa.concat_tables(held)


class _Hashing:
    """A writable file that hashes and counts what passes through it."""

    def __init__(self, raw):
        self.raw, self.hash, self.size, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.closed = True


def _write_staged(fs, table: pa.Table, path: str, memory: int) -> dict:
    """Stage a small file as uncompressed Arrow IPC, for :meth:`Sink.finish` to encode."""
    with fs.open(path, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)
    return {"path": path, "rows": table.num_rows, "bytes": fs.size(path), "memory": memory, "sha256": None,
            "dictionary": _dictionary_values(table), "schema": _schema_text(table.schema)}


def _is_staged(path: str) -> bool:
    return path.endswith(".arrow")


def _read_staged(fs, path: str) -> pa.Table:
    if _is_local(fs):
        with pa.memory_map(path) as source:
            return pa.ipc.open_file(source).read_all()
    with fs.open(path, "rb") as f:
        return pa.ipc.open_file(f).read_all()


def _write_whole(fs, path: str, data: bytes, root: str | None = None) -> None:
    """``data`` at ``path``, written aside and moved into place: a process killed while
    writing leaves no half file for a resume or a retried task to read. A task's file is
    written only while its run's folder ``root`` is there (:func:`_task_folder`)."""
    _task_folder(fs, posixpath.dirname(path), root)
    with fs.open(path + ".part", "wb") as f:
        f.write(data)
    fs.mv(path + ".part", path)


def _schema_text(schema: pa.Schema) -> str:
    """A written file's schema (without metadata) as text, for its record: a checkpoint's
    JSON keeps the records, and :meth:`Sink.finish` reads the schemas from them."""
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode("ascii")


def _dictionary_values(table: pa.Table, found: dict | None = None) -> dict:
    """One value of each dictionary column's dictionary (None where it is empty), so
    :meth:`Sink.finish` can tell which files would read back with no categories. Only
    values that a checkpoint's JSON keeps as they are (text, numbers)."""
    found = dict(found or {})
    for f in table.schema:
        if pa.types.is_dictionary(f.type) and found.get(f.name) is None:
            value = next((c.dictionary[0].as_py() for c in table[f.name].chunks if len(c.dictionary)), None)
            found[f.name] = value if isinstance(value, (str, int, float)) else None
    return found
