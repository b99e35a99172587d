"""What every source shares: the Source record, errors, file listing, ids and Arrow → pandas."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from dsbuild.records import ID, REJECT

if TYPE_CHECKING:  # the readers import it when they make a frame: listing the sources needs none
    import dask.dataframe as dd

RAW = "_raw"


# UTF-32's marks first: UTF-32 LE's begins with UTF-16 LE's.
BYTE_ORDER_MARKS = [(codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
                    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]


def marked_encoding(head: bytes) -> str | None:
    """``utf-16`` or ``utf-32`` where text starts with that encoding's byte-order mark."""
    return next((name[:6] for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), None)


class SourceError(ValueError):
    """A source cannot be read as a whole (no files, unreadable file, schemas that clash)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_PARTITION_BYTES = 64 * 2**20
# Text sources are typed from this much of their first file, whatever their blocksize:
# types that followed the blocksize made a job's output change with its partitioning.
TYPE_SAMPLE_BYTES = 4 * 2**20

# BigQuery's TIMESTAMP as its CSV and JSON exports write it: 2024-01-02 03:04:05 UTC
# (.123456 UTC); Arrow reads ISO times ending Z or +00, not this.
UTC_WRITTEN = r" UTC$"
BLOB_PARTITION_BYTES = 16 * 2**20
BLOB_ROW_BYTES = 8 * 2**10


@dataclass
class Source:
    """A lazy frame plus what the manifest says about where it came from."""

    frame: dd.DataFrame
    files: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    # The files' Arrow types, where the reader knows them: pandas holds dates, decimals,
    # lists and structs as objects, and the sink writes them back in these types.
    schema: pa.Schema | None = None
    # The data has an ``id`` column of its own (else ids are file:row, unique as made).
    ids_given: bool = False
    # The same partitions with only these columns (and ``id``), where the format can skip
    # the others (Parquet): the id check then reads ids, not images.
    read_columns: Callable[[list[str]], dd.DataFrame] | None = None
    # Where ``files`` are, for their contents' digests (None: no files, as a frame's).
    filesystem: fsspec.AbstractFileSystem | None = None
    # What the reader warns about: the run's and validate's warnings say it.
    notes: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for f in sorted(self.files, key=lambda f: f["path"]):
            h.update(json.dumps(f, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def content_digests(self, compute, paths: list[str] | None = None) -> dict[str, str | None]:
        """Each file's (or each of ``paths``') digest of its bytes, read in ranges of
        ``DIGEST_RANGE_BYTES``, in tasks of about that many bytes, by ``compute`` (a list
        of delayed → their results); None for a file that changed while it was read, or
        that there is no reading (a frame)."""
        import dask

        records = [f for f in self.files if paths is None or f["path"] in paths]
        if self.filesystem is None:
            return {f["path"]: None for f in records}
        tasks = [dask.delayed(_digest_ranges)(self.filesystem, group) for group in _digest_groups(records)]
        pieces: dict[str, list] = {}
        for path, start, digest in (piece for done in compute(tasks) for piece in done):
            pieces.setdefault(path, []).append((start, digest))
        digests = {}
        for f in records:
            h = hashlib.blake2b(digest_size=16)
            for _, digest in sorted(pieces.get(f["path"], [])):
                h.update(bytes.fromhex(digest))
            digests[f["path"]] = h.hexdigest() if _file_record(self.filesystem, f["path"]) == _plain(f) else None
        return digests

    def changes_since(self, files: list[dict], digests: dict[str, str | None], compute) -> list[str]:
        """How the files differ from ``files``, an earlier read of the same source (empty:
        the same data). A file whose size and name are the same but not its modification
        time (``touch``, a copy, a checkout) is compared by its bytes' digest against
        ``digests``, taken when the earlier run read it."""
        before, now = {f["path"]: _plain(f) for f in files}, {f["path"]: _plain(f) for f in self.files}
        changes = [f"{p} is new" for p in now if p not in before] + [f"{p} is gone" for p in before if p not in now]
        changes += [f"{p} changed size ({before[p]['size']:,} → {now[p]['size']:,} bytes)"
                    for p in now if p in before and before[p]["size"] != now[p]["size"]]
        touched = [p for p in now if p in before and before[p]["size"] == now[p]["size"] and before[p] != now[p]]
        if touched and not changes:
            found = self.content_digests(compute, touched)
            changes += [f"{p} was modified (its modification time and its bytes)" for p in touched
                        if digests.get(p) is None or found[p] != digests[p]]
        return changes


# Bytes per digest range: a file is hashed in ranges this long, small files together up to
# it per task, so hashing a large input is spread over the workers without holding more
# than a read buffer in memory.
DIGEST_RANGE_BYTES = 64 * 2**20


def _plain(record: dict) -> dict:
    return {"path": record["path"], "size": record.get("size"), "mtime": str(record.get("mtime") or "")}


def _digest_groups(records: list[dict]) -> list[list[tuple]]:
    """(path, start, length) ranges, in groups of about ``DIGEST_RANGE_BYTES``."""
    groups, held, held_bytes = [], [], 0
    for f in records:
        size = f.get("size") or 0
        for start in range(0, max(size, 1), DIGEST_RANGE_BYTES):
            length = min(DIGEST_RANGE_BYTES, size - start)
            if held and held_bytes + length > DIGEST_RANGE_BYTES:
                groups.append(held)
                held, held_bytes = [], 0
            held.append((f["path"], start, length))
            held_bytes += length
    return groups + [held] * bool(held)


def _digest_ranges(fs, ranges: list[tuple]) -> list[tuple[str, int, str]]:
    out = []
    for path, start, length in ranges:
        h = hashlib.blake2b(digest_size=16)
        with fs.open(path, "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 2**20))
                if not chunk:
                    break
                h.update(chunk)
                length -= len(chunk)
        out.append((path, start, h.hexdigest()))
    return out


_LISTED_OTHERS = 20  # files of other kinds listed one by one (a folder of images may hold an XML file per image)


def _expand(
    path: str | list[str], suffixes: tuple[str, ...], ignore: tuple[str, ...] = (".", "_")
) -> tuple[fsspec.AbstractFileSystem, str, list[str], list[dict]]:
    """(filesystem, root, files, left out) for a file, folder, glob or list; root names ids.

    In a folder (or matched by a glob's wildcards), a file is left out when a name on its path below the folder starts with
    one of ``ignore``: hidden files and folders (``.ipynb_checkpoints``, macOS's ``._``
    copies) and, for tables, what writers keep beside their output (Spark's
    ``_temporary``), as Arrow datasets do; so is a file of another kind (a README beside
    the CSVs, a text file among images). Each is listed, with why, for the manifest (files
    of other kinds up to ``_LISTED_OTHERS``, then counted)."""
    paths = [path] if isinstance(path, str) else list(path)
    fs, _, _ = fsspec.get_fs_token_paths(paths[0])
    files: list[str] = []
    left_out: list[dict] = []
    roots = []
    for p in paths:
        # a chained URL (zip://train.csv::data.zip, a file inside an archive) is its inner path
        stripped = fsspec.core.url_to_fs(p)[1] if "::" in p else fs._strip_protocol(p)
        if fs.isdir(stripped):
            roots.append(stripped)
            found: dict[str, list[dict]] = {}  # by kind: Spark's _SUCCESS and .crc files went unsaid
            for f in fs.find(stripped):
                names = posixpath.relpath(f, stripped).split("/")
                hidden = next((n for n in names if n.startswith(ignore)), None)
                if hidden is not None:
                    found.setdefault(_HIDDEN[hidden[0] == "."], []).append(_hidden(f, hidden))
                elif f.lower().endswith(suffixes):
                    files.append(f)
                else:
                    found.setdefault(OTHER_KIND, []).append(
                        {"path": f, "why": f"not a file this source reads (names ending in {_listed(suffixes)})", "kind": OTHER_KIND})
            for kind, records in found.items():
                left_out += records[:_LISTED_OTHERS]
                if len(records) > _LISTED_OTHERS:
                    more = len(records) - _LISTED_OTHERS
                    left_out.append({"path": stripped, "why": f"{more:,} more {'' if kind == OTHER_KIND else kind + ' '}files in it "
                                     "are not read either", "kind": kind, "files": more})
        elif any(ch in p for ch in "*?["):
            matched = fs.glob(stripped)
            if not matched:  # it was "holds no files ending in .csv, ...", as if it had matched some
                raise SourceError(f"source path {p!r} matches no file{_looked_in(p)}")
            root = posixpath.dirname(stripped.split("*")[0].split("?")[0].split("[")[0])
            roots.append(root)
            # fsspec's wildcards match names starting with '.' (a shell's do not): what a
            # wildcard matched is left out as in a folder; a name the pattern spells is read
            asked = {n[0] for n in posixpath.relpath(stripped, root).split("/") if n.startswith(ignore)}
            for m in (m for m in matched if fs.isfile(m)):
                hidden = next((n for n in posixpath.relpath(m, root).split("/") if n.startswith(ignore) and n[0] not in asked), None)
                if hidden is None:
                    files.append(m)
                else:
                    left_out.append(_hidden(m, hidden))
        elif fs.isfile(stripped):
            roots.append(posixpath.dirname(stripped))
            files.append(stripped)
        else:
            raise SourceError(f"source path {p!r} does not exist{_looked_in(p)}{_name_near(fs, stripped, p)}")
    if not files:
        hint = f" (not read: {left_out[0]['path']}: {left_out[0]['why']})" if left_out else ""
        raise SourceError(f"source path {path!r} holds no files ending in {_listed(suffixes)}{hint}")
    root = posixpath.commonpath(roots) if roots else ""
    return fs, root, sorted(set(files)), left_out


OTHER_KIND = "of another kind"
_HIDDEN = {True: "hidden", False: "a writer's own"}


def _hidden(path: str, name: str) -> dict:
    """The record of a file left out for ``name`` on its path (hidden, or a writer's own)."""
    kind = _HIDDEN[name[0] == "."]
    return {"path": path, "why": f"{name!r} starts with {name[0]!r}: {'hidden files and folders' if name[0] == '.' else kind + ' files'} "
            "are not read", "kind": kind}


def skipped_note(skipped: list[dict]) -> str | None:
    """One line on the files a source left out, for validate and a run's summary: how many,
    of which kinds, a few names of each. A Spark output's _SUCCESS and .crc files were left
    out without a word, and the summary named only the first file left out."""
    if not skipped:
        return None
    kinds: dict[str, list] = {}
    for record in skipped:
        kind = kinds.setdefault(record.get("kind", "other"), [0, []])
        kind[0] += record.get("files", 1)
        if "files" not in record:
            kind[1].append(posixpath.basename(record["path"]))
    total = sum(n for n, _ in kinds.values())
    listed = [f"{n:,} {kind} ({names[0]}{', …' * (n > 1)})" if names else f"{n:,} {kind}" for kind, (n, names) in kinds.items()]
    return f"{total:,} file{'s' * (total != 1)} not read, each listed in manifest.json (input.skipped): {'; '.join(listed)}"


def _listed(suffixes: tuple[str, ...]) -> str:
    """The suffixes for a message, their compressed forms said once: .csv.gz, .csv.bz2, ...
    for every text suffix made a line of twenty."""
    plain = [s for s in suffixes if not any(s.endswith(c) and s[: -len(c)] in suffixes for c in _COMPRESSED)]
    squeezed = len(plain) < len(suffixes)
    return ", ".join(plain) + (f" (or compressed: {', '.join(_COMPRESSED)})" if squeezed else "")


_COMPRESSED = (".gz", ".bz2", ".zst", ".xz")


def _name_near(fs, stripped: str, given: str) -> str:
    """``; did you mean 'data/empty.csv'?`` for a close name in the missing path's folder,
    as a job file's typo gets one; a typo in a source path was said with none."""
    import difflib

    folder, name = posixpath.split(stripped)
    try:
        names = [posixpath.basename(f.rstrip("/")) for f in fs.ls(folder or ".", detail=False)]
    except (OSError, ValueError):  # the folder is missing too, or cannot be listed
        return ""
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    return f"; did you mean {posixpath.join(posixpath.dirname(given), near[0])!r}?" if near else ""


def _looked_in(path: str) -> str:
    """Where a relative path was looked for: a job's paths are relative to the folder it runs in."""
    if "://" in path or os.path.isabs(path):
        return ""
    return f" (looked for {os.path.abspath(path)}: a job's paths are relative to the folder it runs in)"


def as_text(schema: pa.Schema, names: list[str], path: str) -> pa.Schema:
    """The schema with ``names`` typed as text (a source's ``text_columns``)."""
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise SourceError(f"{path}: text_columns names {missing[0]!r}, which is not a column; columns are {schema.names}")
    return pa.schema([pa.field(f.name, pa.string()) if f.name in names else f for f in schema], metadata=schema.metadata)


COLUMN_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
ColumnType = Literal["int", "float", "str", "bool"]


def id_columns(names: list[str], id_column: str | None = None) -> list[str]:
    """The columns of ``names`` that name rows: ``id``, and the job's ``columns.id``. A text
    source reads them as text, as written: typed by their values, 007 became the id 7, and
    one 1e3 among them made every id a float (7.0), so 007 and 7 were one id, repeated."""
    return [c for c in dict.fromkeys((ID, id_column)) if c and c in names]


def with_types(schema: pa.Schema, types: dict[str, str], path: str) -> pa.Schema:
    """The schema with the types a source's ``column_types`` declares in place of those read
    off its first bytes: a column whose first values are whole numbers and later ones are
    not (2.5) rejected those rows, with no way to say it holds floats."""
    missing = [n for n in types if n not in schema.names]
    if missing:
        raise SourceError(f"{path}: column_types names {missing[0]!r}, which is not a column; columns are {schema.names}")
    return pa.schema([pa.field(f.name, COLUMN_TYPES[types[f.name]]) if f.name in types else f for f in schema],
                     metadata=schema.metadata)


def _relative(path: str, root: str) -> str:
    rel = posixpath.relpath(path, root) if root else path
    return posixpath.basename(path) if rel.startswith("..") else rel


def _without_empty(fs, files: list[str], skipped: list[dict], path_spec) -> list[str]:
    """The files that hold bytes; a 0-byte one (an export that wrote nothing) is listed as
    not read, as Parquet's are: it stopped a run over a folder of good files."""
    kept = []
    for path in files:
        record = _file_record(fs, path)
        if record["size"] == 0:
            skipped.append({**record, "why": "empty file (0 bytes): no rows to read", "kind": "empty"})
        else:
            kept.append(path)
    if not kept:
        raise SourceError(f"source {path_spec!r}: every file is empty (0 bytes)")
    return kept


def _file_record(fs, path: str) -> dict:
    info = fs.info(path)
    return {"path": path, "size": info.get("size"), "mtime": str(info.get("mtime") or info.get("LastModified") or "")}


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(), pa.binary(): pd.ArrowDtype(pa.binary()), pa.large_binary(): pd.ArrowDtype(pa.large_binary()),
}


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas keeping integers and booleans nullable, so a missing value never
    turns a column into floats or objects and every partition has the same dtypes. In the
    calling thread, as :func:`dsbuild.io.sink._from_pandas` converts back, for the same reason."""
    return _readable_pandas_metadata(_decimals_as_numbers(table)).to_pandas(types_mapper=_NULLABLE.get, use_threads=False)


EXACT_FLOAT_DIGITS = 15  # float64 holds every decimal of up to 15 significant digits
EXACT_INT_DIGITS = 18  # int64 every whole number of up to 18 digits


def _decimals_as_numbers(table: pa.Table) -> pa.Table:
    """The table with its decimal columns as numbers: whole ones (scale 0, up to 18 digits,
    as Spark's default ``decimal(10,0)``) as integers, the others as float64.

    pandas holds decimals as Python objects, which no numeric stage takes (ranges, impute,
    outliers, oversample, fairness bins refused them, and the default features left them
    out). Up to 15 significant digits the float is exact: the sink writes it back in the
    column's declared type (``Sink.column_types``) with the value it was read with.
    """
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type):
            whole = f.type.scale == 0 and f.type.precision <= EXACT_INT_DIGITS
            number = pa.int64() if whole else pa.float64()
            table = table.set_column(i, pa.field(f.name, number, f.nullable, f.metadata), table.column(i).cast(number))
    return table


def _readable_pandas_metadata(table: pa.Table) -> pa.Table:
    """The table without the dtypes its pandas metadata names but pandas cannot read back,
    and without its index: a frame pandas wrote with ``set_index("user")`` (or ``"id"``)
    holds that column as its index, which pandas restores and the reader's own row
    numbering then dropped; the user's ids became file:row. Its columns stay columns.

    pandas writes an Arrow-backed column's dtype into the file as text, and for nested
    types (``struct<bbox: list<...>>[pyarrow]``) it cannot parse that text again: reading
    such a file failed with "data type not understood". Those columns come as Arrow
    converts them (dicts and lists), like the same columns of a file pandas did not write.
    """
    meta = table.schema.pandas_metadata
    unreadable = [c for c in (meta or {}).get("columns", []) if str(c.get("numpy_type")).endswith("[pyarrow]") and not _parses(c["numpy_type"])]
    if not unreadable and not (meta or {}).get("index_columns"):
        return table
    for column in unreadable:
        column["numpy_type"] = "object"
    meta["index_columns"] = []
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta).encode()})


def _parses(dtype: str) -> bool:
    try:
        pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return True


def row_ids(rel: str, start: int, n: int | None = None, numbers: np.ndarray | None = None) -> pd.Series:
    """``rel:start`` … ``rel:start+n-1`` (or ``rel:start+number`` for each of ``numbers``),
    built in Arrow (millions of rows a second)."""
    numbers = np.arange(start, start + n, dtype=np.int64) if numbers is None else start + numbers
    numbers = pc.cast(pa.array(numbers), pa.string())
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
