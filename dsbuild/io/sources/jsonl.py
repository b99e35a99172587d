"""JSON lines, and .json files holding one array of objects."""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic import Field

from dsbuild.io.sources.common import (
    RAW,
    TYPE_SAMPLE_BYTES,
    UTC_WRITTEN,
    Source,
    SourceError,
    _expand,
    _mark_bad,
    _Spec,
    _typed_nulls,
    _with_id,
    _without_empty,
    ColumnType,
    as_text,
    id_columns,
    with_types,
    to_pandas,
)
from dsbuild.io.sources import wide as wide_text
from dsbuild.io.sources.text import Together, _read_text_block, _text_blocks, check_compressions, compressed_too, together
from dsbuild.records import ID, REJECT
from dsbuild.sizes import Bytes


class JsonlSource(_Spec):
    format: Literal["jsonl"]
    path: str | list[str]
    blocksize: Bytes = Field(64 * 2**20, gt=0)
    infer_bytes: Bytes = Field(TYPE_SAMPLE_BYTES, gt=0, description="bytes from the start of the first file that decide the columns' types")
    text_columns: list[str] = Field(default_factory=list, description="fields read as text whatever their values are: "
                                    "a number as it is written (1, 2.5), true/false as True/False, a list or object as JSON")
    column_types: dict[str, ColumnType] = Field(
        default_factory=dict, description="field -> int | float | str | bool, in place of the type read off the first "
        "infer_bytes: {amount: float} for a field whose first values are whole numbers; a value that does not fit is rejected")
    merge_schemas: bool = Field(
        False, description="files with different fields (an API that added one): take the fields of every file's first "
        "lines, infer_bytes spread over the files (64 KiB each at least), null where a record lacks one; off, only the "
        "first file's decide, and a record with another field is rejected as json:unknown-field")


def _read_jsonl(spec: JsonlSource, count_rows: bool = True, id_column: str | None = None) -> Source:
    """JSON lines; a file that is one JSON array of objects (what many tools export as
    ``.json``) is read too, whole, as one partition: an array cannot be split."""
    import dask.dataframe as dd

    fs, root, files, skipped = _expand(spec.path, compressed_too(".jsonl", ".json", ".ndjson"))
    files = _without_empty(fs, files, skipped, spec.path)
    check_compressions(fs, files)
    wide = {f: encoding for f in files if (encoding := wide_text.file_encoding(fs, f))}
    read = functools.partial(_read_json_text, wide=wide)
    arrays = {f for f in files if _is_json_array(fs, f, wide.get(f))}
    sampled = files if spec.merge_schemas else [_first_with_records(fs, files, arrays, read)]
    per_file = spec.infer_bytes if len(sampled) == 1 else max(spec.infer_bytes // len(sampled), _LEAST_SAMPLE)
    rows = [r for f in sampled for r in _sample_records(fs, f, per_file, f in arrays, read)]
    if not rows:
        sample = read(fs, files[0], 0, spec.infer_bytes)
        if b"\r" in sample.rstrip(b"\r\n") and b"\n" not in sample.rstrip(b"\r\n"):
            raise SourceError(f"{files[0]}: its lines end with a carriage return alone (\\r, old Mac text); JSON lines "
                              "end with \\n or \\r\\n: convert it, e.g. tr '\\r' '\\n' < in.jsonl > out.jsonl")
        raise SourceError(f"{files[0]}: no JSON object in the first lines" + _not_json_lines(sample, files[0] in arrays))
    if len(rows) == 1 and _pandas_columns(rows[0]):
        raise SourceError(f"{sampled[0]}: one JSON object holding a whole table, by column or by row "
                          f"({', '.join(list(rows[0])[:3])}, ...), as pandas' DataFrame.to_json() writes by default: it "
                          "would be read as one row; write it as df.to_json(path, orient='records', lines=True)")
    inferred = _json_schema(rows)
    text = [*spec.text_columns, *(c for c, t in spec.column_types.items() if t == "str"), *id_columns(inferred.names, id_column)]
    untyped = [n for n in inferred.names if n not in text and n not in spec.column_types and all(_valueless(r.get(n)) for r in rows)]
    schema = with_types(as_text(inferred, [*text, *untyped], files[0]), spec.column_types, files[0])  # text: a value's, as JSON writes it
    encoded = _written_as_text(rows, schema, {*text, *untyped, *spec.column_types})
    schema = pa.schema([pa.field(f.name, encoded.get(f.name, f.type)) for f in schema])
    blocksize = max(spec.blocksize // 4 * 4, 4) if wide else spec.blocksize  # blocks begin at whole code units
    blocks, records = _text_blocks(fs, files, root, blocksize, count_rows, whole=arrays, read=read)
    reader = _JsonBlock(fs, schema, tuple(text), tuple(untyped), read, encoded)
    frame = dd.from_map(Together(reader), together(blocks, records, spec.blocksize), meta=reader.empty(), divisions=None, label="read-jsonl",
                        enforce_metadata=False)
    notes = [wide_text.marked_note(wide)] if wide else []
    notes += [f"source: {sampled[0]}: {', '.join(f'{n} ({t})' for n, t in encoded.items())}: written as JSON text ('39', as "
              "BigQuery writes INT64; ISO dates and times): read as such; list them in source.text_columns to keep them "
              "text"] if encoded else []
    notes += [f"source: {sampled[0]}: {', '.join(untyped)} {'has' if len(untyped) == 1 else 'have'} no value in the first "
             f"{spec.infer_bytes:,} bytes (null, or empty lists): read as text, an object or list as its JSON; set "
             "infer_bytes to type them by more lines"] if untyped else []
    return Source(frame, records, skipped, schema, ids_given=ID in schema.names, filesystem=fs, notes=notes)


def _read_json_text(fs, path: str, start: int, length: int | None, wide: dict[str, str]) -> bytes:
    """A block of a JSON lines file as UTF-8 text: one in UTF-16 or UTF-32 (PowerShell's
    Out-File and ``>`` write UTF-16), as the UTF-8 text it holds. Such a file was refused
    with advice to convert it, as though its byte-order mark left any doubt."""
    if path in wide:
        return wide_text.read_block(fs, path, start, length, wide[path], advice="its byte-order mark says so: re-export the file")
    return _read_text_block(fs, path, start, length)


_WHOLE = r"^-?(0|[1-9][0-9]{0,18})$"  # as BigQuery writes INT64: no sign +, no leading zeros (007 stays a code)
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"


def _written_as_text(rows: list[dict], schema: pa.Schema, kept: set[str]) -> dict[str, pa.DataType]:
    """The text fields whose every sampled value is a whole number, an ISO date or an ISO
    date and time, and the type they are read as: JSON has no integers past 2**53, dates
    or times, so BigQuery writes its INT64 as text ("39"), and Spark, BigQuery and pandas
    write dates and timestamps as ISO text. The same table read as CSV or Parquet had
    numbers and timestamps, read as JSON lines text. ``kept``: fields the job types."""
    found = {}
    for f in schema:
        if f.name in kept or not pa.types.is_string(f.type):
            continue
        values = [r[f.name] for r in rows if r.get(f.name) is not None]
        if not values or not all(isinstance(v, str) for v in values):
            continue
        values = pa.array(values, pa.string())
        for typ in (pa.int64(), pa.date32(), pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
            try:
                _as_type(values, typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            found[f.name] = typ
            break
    return found


def _as_type(values, typ: pa.DataType):
    """Text values as ``typ`` (of :func:`_written_as_text`); ArrowInvalid if one is not such text."""
    pattern = _WHOLE if pa.types.is_integer(typ) else _DATE if pa.types.is_date(typ) else _TIME
    if pc.all(pc.match_substring_regex(values, pattern)).as_py() is False:  # None: no values
        raise pa.ArrowInvalid(f"not {typ} text")
    if pa.types.is_timestamp(typ):
        values = pc.replace_substring_regex(values, UTC_WRITTEN, "Z")
    return values.cast(typ)


def _pandas_columns(record: dict) -> bool:
    """Whether ``record`` is a frame pandas' ``to_json()`` wrote whole (``orient='columns'``,
    its default, or ``'index'``): every value an object of more than one value, all keyed
    alike, the rows numbered (pandas' default index). It was read as one row of a struct
    column per column, and the run kept 1 row."""
    values = list(record.values())
    if not values or not all(isinstance(v, dict) and len(v) > 1 and v.keys() == values[0].keys() for v in values):
        return False
    return all(k.isdigit() for k in values[0]) or all(k.isdigit() for k in record)


def _valueless(value) -> bool:
    """Whether a sampled value says nothing of its field's type: null, or a list of such.
    A field with no other value in the sample was typed as text (or a list of nulls), and
    its later objects and lists were each rejected as type:meta={...}: every row where an
    API fills a field only sometimes (null in the first thousands of lines)."""
    return value is None or (isinstance(value, list) and all(_valueless(v) for v in value))


def _first_with_records(fs, files: list[str], arrays: set[str], read) -> str:
    """The first file not empty of records, whose fields type the columns: a folder of daily
    exports whose first day was ``[]`` or blank lines stopped as "no JSON object in the first
    lines" (an empty array's: "name the file .json", which it was)."""
    return next((f for f in files if not _no_records(read(fs, f, 0, _LEAST_SAMPLE), f in arrays)), files[0])


def _no_records(sample: bytes, array: bool) -> bool:
    text = sample.removeprefix(b"\xef\xbb\xbf").strip()
    return not text or (array and text.startswith(b"[") and not text[1:].strip(b" \t\r\n]"))


def _not_json_lines(sample: bytes, array: bool = False) -> str:
    """What a file that holds no JSON object per line holds instead, and how to make it
    JSON lines, as far as its first bytes tell: an array in a file not named .json, one
    object holding the records under a key (an API's {"data": [...]}), or objects
    pretty-printed over lines. The message had said "no JSON object in the first lines"."""
    text = sample.decode("utf-8-sig", "replace").lstrip()
    if text.startswith("["):
        return ": it is a JSON array of no objects" if array else ": it is one JSON array; name the file .json to read its elements as rows"
    if not text.startswith("{"):
        return ""
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:  # cut by the sample: one object longer than it, or not JSON
        return ("; if its objects are pretty-printed over lines, write one per line, e.g. jq -c . in.json > out.jsonl")
    records = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    if not text[end:].strip() and records:
        return (f": it is one JSON object, whose {records[0]!r} holds the records; write them one per line, e.g. "
                f"jq -c '.{records[0]}[]' in.json > out.jsonl")
    return ": its objects are pretty-printed over lines; write one per line, e.g. jq -c . in.json > out.jsonl"


_LEAST_SAMPLE = 64 * 2**10  # bytes of each file that merge_schemas reads, however many files


def _sample_records(fs, path: str, size: int, array: bool, read) -> list[dict]:
    """The objects in the first ``size`` bytes of a file, which type the columns. Every
    record of them, not the first 1,000: a field first met further on (an API that added
    one) was no column, and each row with it was rejected as json:unknown-field."""
    sample = read(fs, path, 0, size)
    _require_utf8(sample, path)
    rows = _array_prefix(sample) if array else [value for _, value, _ in _JsonBlock.items(sample, path, 0)]
    return [r for r in rows if isinstance(r, dict)]


def _require_utf8(sample: bytes, path: str) -> None:
    """JSON text is UTF-8 (or UTF-16 or UTF-32 with its byte-order mark, read as UTF-8); a
    file in another encoding (latin-1) stops the run with its first such line, as a CSV
    file not in its encoding does."""
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        number = sample.count(b"\n", 0, e.start) + 1
        raise SourceError(f"{path}: line {number} is not UTF-8 text ({sample[max(e.start - 20, 0):e.end + 20]!r}); "
                          "JSON is UTF-8: convert the file to it, e.g. iconv -f latin1 -t utf-8") from None


def _is_json_array(fs, path: str, wide: str | None = None) -> bool:
    """A ``.json`` file whose text starts with ``[`` (JSON lines files are not opened)."""
    if not _may_be_array(path):
        return False
    with fs.open(path, "rb", compression="infer") as f:
        head = f.read(256)
    return _starts_array(head.decode(wide, "ignore").encode() if wide else head)


def _may_be_array(path: str) -> bool:
    return path.lower().endswith(compressed_too(".json"))


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


def _array_prefix(sample: bytes) -> list:
    """The elements of a JSON array in the sample from the start of its file: the driver
    types the columns from them, and only the task that reads the file parses it whole."""
    text = sample.decode("utf-8-sig", "ignore")
    decoder, out, at = json.JSONDecoder(), [], text.find("[") + 1
    while True:
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
        if "int" in kinds and "float" in kinds:  # a float column; its whole numbers are floats (2**53 + 1 too)
            kinds["float"] += [float(v) for v in kinds.pop("int")]
        if not kinds:
            fields.append(pa.field(name, pa.string()))
            continue
        common = max(kinds.values(), key=len)
        try:
            fields.append(pa.field(name, pa.array(common).type))
        except (OverflowError, UnicodeEncodeError):  # one value beyond int64, or no UTF-8: typed by the others, it is rejected
            fields.append(pa.field(name, _typed_without_misfits(common)))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _typed_without_misfits(values: list) -> pa.DataType:
    """The type of the sample's values that Arrow can hold (ints within int64, text that is
    UTF-8); text when none can."""
    def holds(v) -> bool:
        try:
            pa.array([v])
            return True
        except (OverflowError, UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
            return False

    kept = [v for v in values if holds(v)]
    try:
        return pa.array(kept).type if kept else pa.string()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()


class _JsonBlock:
    def __init__(self, fs, schema: pa.Schema, text: tuple[str, ...] = (), untyped: tuple[str, ...] = (), read=None,
                 encoded: dict[str, pa.DataType] | None = None):
        # ``encoded``: fields parsed as the text they are written as, then made ``schema``'s types
        self.fs, self.text, self.untyped, self.read, self.out = fs, text, untyped, read or _read_text_block, schema
        self.encoded = encoded or {}
        self.schema = pa.schema([pa.field(f.name, pa.string()) if f.name in self.encoded else f for f in schema])
        self.floats = [f.name for f in schema if pa.types.is_floating(f.type)]
        self.integers = [f.name for f in schema if _holds_integers(f.type)]  # where a fraction must be refused
        self.nested = [f.name for f in schema if _holds_structs(f.type)]  # where an object may hold a field the type lacks

    def empty(self) -> pd.DataFrame:
        return _mark_bad(_with_id(to_pandas(self.out.empty_table())))

    @staticmethod
    def items(data: bytes, path: str, start: int):
        """(line or array index, value, raw): the block's JSON lines (raw: the line), or
        the elements of a file that is one JSON array (always a block of its own; raw:
        the element). A line that is not JSON has an ``_Unparsed`` value, its error."""
        if start == 0 and _may_be_array(path) and _starts_array(data):
            for i, item in enumerate(_json_array(data, path)):
                yield i, item, item
            return
        for i, line in enumerate(data.split(b"\n")[:-1]):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except UnicodeDecodeError:
                value = _NOT_UTF8
            except ValueError as e:
                value = _Unparsed(e)
            yield i, value, line.rstrip(b"\r")  # a CRLF file's rejected line, as CSV gives it

    def __call__(self, block) -> pd.DataFrame:
        path, rel, start, length, first_line = block
        data = self.read(self.fs, path, start, length)
        table = self._read_whole(data, path, start)
        if table is not None:
            return _mark_bad(_with_id(to_pandas(table), rel, first_line))
        raws: dict[int, Any] = {}
        good, good_rows, bad = [], [], []
        array = start == 0 and _may_be_array(path) and _starts_array(data)
        for i, obj, raw in self.items(data, path, start):
            raws[i] = raw
            where = f"{rel} element {i}" if array else f"{rel} line {first_line + i + 1}"
            if obj is _NOT_UTF8:
                bad.append((i, _raw_text(raw), f"json:not-utf8={where}"))
                continue
            if isinstance(obj, _Unparsed):
                bad.append((i, _raw_text(raw), f"json:JSONDecodeError={where}{obj}"[:200]))
                continue
            if not isinstance(obj, dict):
                bad.append((i, _raw_text(raw), f"json:ValueError={where}: {_json_kind(obj)}, not an object"))
                continue
            unknown = sorted(set(obj) - set(self.schema.names))[:1] or [
                u for name in self.nested if (u := _unknown_inside(obj.get(name), self.schema.field(name).type, name))][:1]
            if unknown:
                bad.append((i, _raw_text(raw), f"json:unknown-field={unknown[0]}"))
                continue
            good.append(self._as_columns_take(obj))
            good_rows.append(i)
        try:  # every row fits its columns' types, as nearly always: one conversion
            if any(self._fraction(obj) for obj in good):
                raise TypeError("a fraction in an integer column, which pyarrow would truncate")
            table, typed_rows = (pa.Table.from_pylist(good, schema=self.schema) if good else self.schema.empty_table()), good_rows
        except _UNFIT:  # else row by row, to name the rows that do not
            table, typed_rows = self._typed_by_row(good, good_rows, raws, bad)
        table, typed_rows = self._from_text(table, typed_rows, raws, bad)
        df = to_pandas(table)
        df = _with_id(df, ids=pd.array([f"{rel}:{first_line + i}" for i in typed_rows], dtype="string"))
        out = _mark_bad(df)
        if bad:
            extra = pd.DataFrame({ID: pd.array([f"{rel}:{first_line + i}" for i, _, _ in bad], dtype="string")})
            out = pd.concat([out, _mark_bad(_typed_nulls(extra, self.empty()))], ignore_index=True)
            out.loc[len(df):, REJECT] = [why for _, _, why in bad]
            out.loc[len(df):, RAW] = [text for _, text, _ in bad]
        return out

    def _as_columns_take(self, obj: dict) -> dict:
        """A text column's other values as text; a float column's whole numbers as floats,
        as Arrow's JSON reader takes them (2**53 + 1 too)."""
        for name in (*self.text, *self.untyped):
            if obj.get(name) is not None and not isinstance(obj[name], str):
                obj[name] = json.dumps(obj[name], ensure_ascii=False) if isinstance(obj[name], (list, dict)) else str(obj[name])
        for name in self.floats:
            if isinstance(obj.get(name), int) and not isinstance(obj[name], bool):
                obj[name] = float(obj[name])
        return obj

    def _fraction(self, obj: dict) -> bool:
        return any(_fraction_in(obj.get(name), self.schema.field(name).type) for name in self.integers)

    def _read_whole(self, data: bytes, path: str, start: int) -> pa.Table | None:
        """The block through Arrow's JSON reader, where every line is an object of the
        schema's fields whose values fit their types (4 times as fast as Python's parser
        and a table built from it); None, for the line-by-line reader to say which
        lines do not, or where a blank line would shift the rows' numbers."""
        if self.text or not data or (start == 0 and _may_be_array(path) and _starts_array(data)):
            return None
        options = pajson.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error")
        try:
            table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(use_threads=False), parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if table.num_rows != data.count(b"\n"):
            return None
        try:  # Arrow's reader takes text that is not UTF-8 into string columns as it is: Parquet that cannot be read back
            table.validate(full=True)
            return self._from_text(table.select(self.schema.names).cast(self.schema))
        except pa.ArrowInvalid:  # the line-by-line reader names the lines
            return None

    def _from_text(self, table: pa.Table, rows: list | None = None, raws: dict | None = None, bad: list | None = None):
        """The table with its ``encoded`` fields in their types. Without ``rows``, ArrowInvalid
        if a value is not such text; with them, (the table without the rows whose value is
        not, their rows) and each such row in ``bad`` as ``type:<field>=<value>``."""
        for name, typ in self.encoded.items():
            i = table.schema.get_field_index(name)
            try:
                table = table.set_column(i, pa.field(name, typ), _as_type(table.column(i), typ))
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                if rows is None:
                    raise pa.ArrowInvalid(f"{name}: not {typ} text") from None
            values = table.column(i).to_pylist()
            fits = np.array([v is None or _fits_text(v, typ) for v in values])
            bad += [(rows[r], _raw_text(raws[rows[r]]), f"type:{name}={values[r]!r}"[:120]) for r in np.flatnonzero(~fits)]
            table, rows = table.filter(pa.array(fits)), [r for r, ok in zip(rows, fits) if ok]
            table = table.set_column(i, pa.field(name, typ), _as_type(table.column(i), typ))
        return table if raws is None else (table, rows)

    def _typed_by_row(self, good: list, rows: list, raws: dict, bad: list) -> tuple[pa.Table, list]:
        typed, typed_rows = [], []
        for obj, i in zip(good, rows):
            try:
                if self._fraction(obj):
                    raise TypeError("a fraction in an integer column")
                pa.Table.from_pylist([obj], schema=self.schema)
            except _UNFIT:
                field_name = next((k for k in obj if not _fits(obj[k], self.schema.field(k).type)), "?")
                bad.append((i, _raw_text(raws[i]), f"type:{field_name}={obj.get(field_name)!r}"[:120]))
                continue
            typed.append(obj)
            typed_rows.append(i)
        return (pa.Table.from_pylist(typed, schema=self.schema) if typed else self.schema.empty_table()), typed_rows


class _Unparsed:
    """A line that is not JSON: where in it, and why, as the reject's reason says (the
    reason was ``json:JSONDecodeError`` alone, with nothing to find the fault by)."""

    def __init__(self, error: ValueError):
        self.error = error

    def __str__(self) -> str:
        if isinstance(self.error, json.JSONDecodeError):
            return f", column {self.error.colno}: {self.error.msg}"
        return f": {self.error}"


def _json_kind(value) -> str:
    """A JSON value's kind, as JSON names it: what a line held instead of an object."""
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


_NOT_UTF8 = object()
# What converting a value to its column's type raises: besides Arrow's own errors, an
# integer beyond int64 (OverflowError) and text that is no UTF-8, an escaped lone
# surrogate such as "\ud800" (UnicodeEncodeError); both crashed the job.
_UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, UnicodeEncodeError)


def _fraction_in(value, typ: pa.DataType) -> bool:
    """Whether an integer of ``typ`` (a column, a list's element, a struct's field) is
    given as a fraction, which pyarrow truncates ([1, 2.5] became [1, 2])."""
    if value is None:
        return False
    if pa.types.is_integer(typ):
        return isinstance(value, float) and not value.is_integer()
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return isinstance(value, list) and any(_fraction_in(v, typ.value_type) for v in value)
    if pa.types.is_struct(typ):
        return isinstance(value, dict) and any(_fraction_in(value.get(f.name), f.type) for f in typ)
    return False


def _holds_integers(typ: pa.DataType) -> bool:
    if pa.types.is_integer(typ):
        return True
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _holds_integers(typ.value_type)
    return pa.types.is_struct(typ) and any(_holds_integers(f.type) for f in typ)


def _holds_structs(typ: pa.DataType) -> bool:
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _holds_structs(typ.value_type)
    return pa.types.is_struct(typ)


def _unknown_inside(value, typ: pa.DataType, at: str) -> str | None:
    """The first field of an object in ``value`` (``user.city``) that its struct type
    lacks, through objects and lists. Arrow's conversion dropped it without a word: a
    field an API added inside an object after the type sample was lost from every row,
    where one added at the top is rejected as json:unknown-field."""
    if isinstance(value, dict) and pa.types.is_struct(typ):
        for key, inner in value.items():
            if typ.get_field_index(key) < 0:
                return f"{at}.{key}"
            if found := _unknown_inside(inner, typ.field(key).type, f"{at}.{key}"):
                return found
    elif isinstance(value, list) and (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        return next((found for v in value if (found := _unknown_inside(v, typ.value_type, at))), None)
    return None


def _fits_text(value: str, typ: pa.DataType) -> bool:
    try:
        _as_type(pa.array([value], pa.string()), typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def _fits(value, typ: pa.DataType) -> bool:
    """Whether ``value`` is one of ``typ``'s values as it is: pyarrow would truncate 7.5 to
    an integer column's 7, so a fraction is no integer here."""
    if _fraction_in(value, typ):
        return False
    try:
        pa.array([value], type=typ)
        return True
    except _UNFIT:
        return False
