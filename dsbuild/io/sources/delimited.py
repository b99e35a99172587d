"""CSV and other delimited text: separator sniffed, types from a sample, bad rows kept with their reason."""

from __future__ import annotations

import codecs
import csv
import difflib
import fnmatch
import functools
import io
import json
import posixpath
import re
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field, NonNegativeInt, field_validator, model_validator

from dsbuild.io.sources import postgres_text
from dsbuild.io.sources import quoted as quoting
from dsbuild.io.sources import wide as wide_text
from dsbuild.io.sources.common import (
    RAW,
    TYPE_SAMPLE_BYTES,
    UTC_WRITTEN,
    Source,
    SourceError,
    _expand,
    _mark_bad,
    _relative,
    _Spec,
    _typed_nulls,
    _with_id,
    _without_empty,
    ColumnType,
    as_text,
    id_columns,
    row_ids,
    with_types,
    to_pandas,
)
from dsbuild.io.sources.text import Together, _read_text_block, _text_blocks, check_compressions, compressed_too, together, unpaired_quotes
from dsbuild.kernels.dtypes import whole_numbers
from dsbuild.records import ID, REJECT
from dsbuild.sizes import Bytes


class CsvSource(_Spec):
    format: Literal["csv"]
    path: str | list[str]
    sep: str | None = Field(None, min_length=1, max_length=1, description="field separator; default a tab for .tsv "
                            "files and for others not named .csv that a tab splits alike, else the one of , ; tab | that "
                            "splits the first lines alike")
    header: bool = True
    skip_rows: NonNegativeInt | dict[str, NonNegativeInt] = Field(
        0, description="lines at the start of each file before the header (or the first row): a title, a notice such as "
        "Adult's test file's '|1x3 Cross validator'; not rows, not in the ledger. A mapping of file name or glob -> lines "
        "skips them in the files it names only ({adult.test.gz: 1}; the others skip none)")
    column_names: list[str] | None = Field(None, description="names when the file has no header")
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "?"])
    skip_initial_space: bool = True
    blocksize: Bytes = Field(64 * 2**20, gt=0, description="bytes per partition of an uncompressed file")
    infer_bytes: Bytes = Field(TYPE_SAMPLE_BYTES, gt=0, description="bytes from the start of the first file that decide the columns' types")
    encoding: str = "utf8"
    decimal: str = Field(".", min_length=1, max_length=1, description="decimal mark of numbers: ',' for 3,50 (then sep is usually ';')")
    thousands: str | None = Field(None, min_length=1, max_length=1, description="thousands separator of numbers, as "
                                  "spreadsheets export them: ',' reads \"1,234.50\" as 1234.5, '.' reads 1.234,50 (the decimal mark then a comma)")
    text_columns: list[str] = Field(default_factory=list, description="columns read as text, as written, whatever their "
                                    "values look like: zip codes and codes with leading zeros, labels that mix numbers and words")
    column_types: dict[str, ColumnType] = Field(
        default_factory=dict, description="column -> int | float | str | bool, in place of the type read off the first "
        "infer_bytes: {amount: float} for a column whose first values are whole numbers; a value that does not fit is rejected")
    dialect: Literal["postgres_text"] | None = Field(
        None, description="postgres_text: PostgreSQL's COPY ... TO text format, its default: a tab between fields, no "
        "header (give column_names), \\N for NULL, backslash escapes (\\t \\n \\\\) undone, no quoting; an empty "
        "field is empty text. sep, header and null_values may still be set, as COPY's DELIMITER, HEADER and NULL")
    newlines_in_values: bool | None = Field(
        None, description="quoted values may span lines (reviews, addresses): a file is cut into blocks only between "
        "records, found by one more pass over it. Default: on if a value in the first infer_bytes spans lines")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        """A misspelt encoding failed the run (and validate) with a LookupError traceback."""
        try:
            codecs.lookup(name)
        except LookupError:
            close = difflib.get_close_matches(name.lower(), ["utf8", "utf-8", "utf-16", "latin-1", "cp1252", "ascii", "utf-8-sig"], n=1)
            raise ValueError(f"unknown encoding {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")) from None
        return name

    @model_validator(mode="before")
    @classmethod
    def _thousands_dots_mean_decimal_commas(cls, data):
        """``thousands: '.'`` alone is the European ``1.234,50``: it was refused as "thousands
        '.' is also the decimal mark", the decimal point it was not given."""
        if isinstance(data, dict) and data.get("thousands") == "." and "decimal" not in data:
            return {**data, "decimal": ","}
        return data

    @model_validator(mode="before")
    @classmethod
    def _dialect_defaults(cls, data):
        """``dialect: postgres_text`` sets what PostgreSQL's text format is, unless the job
        sets it (as COPY's DELIMITER, HEADER and NULL options change it): CSV's defaults read
        an empty field as missing and stripped a value's leading spaces."""
        if isinstance(data, dict) and data.get("dialect") == "postgres_text":
            return {"sep": "\t", "header": False, "null_values": [postgres_text.NULL], "skip_initial_space": False} | data
        return data

    @model_validator(mode="after")
    def _decimal_is_not_sep(self):
        if self.decimal == self.sep:
            raise ValueError(f"decimal {self.decimal!r} is also the separator; set sep (e.g. ';') or decimal")
        if self.thousands is not None and self.thousands in (self.decimal, self.sep):
            raise ValueError(f"thousands {self.thousands!r} is also the {'decimal mark' if self.thousands == self.decimal else 'separator'}")
        if self.dialect == "postgres_text" and self.newlines_in_values:
            raise ValueError("dialect postgres_text writes a newline in a value as \\n: no value spans lines; "
                             "leave newlines_in_values out")
        return self


def _read_csv(spec: CsvSource, count_rows: bool = True, id_column: str | None = None) -> Source:
    import dask.dataframe as dd

    fs, root, files, skipped = _expand(spec.path, compressed_too(".csv", ".tsv", ".tab", ".txt"))
    files = _without_empty(fs, files, skipped, spec.path)
    check_compressions(fs, files)
    if isinstance(spec.skip_rows, dict):  # by file: resolved once, to the files' own paths
        spec = spec.model_copy(update={"skip_rows": _skips_by_file(spec.skip_rows, files, root)})
    marked = None if "encoding" in spec.model_fields_set else wide_text.file_encoding(fs, files[0])
    if marked:  # Excel's Unicode Text: the byte-order mark says what the text is
        spec = spec.model_copy(update={"encoding": marked})
    wide = spec.encoding if wide_text.is_wide(spec.encoding) else None
    if wide:  # read as the UTF-8 text they hold
        spec = spec.model_copy(update={"encoding": "utf8"})
    read = functools.partial(_read_block, wide=wide, skip=spec.skip_rows)
    sample = read(fs, files[0], 0, spec.infer_bytes)
    hints = {path: hint for path in files if (hint := _separator_hint(fs, path, wide))}
    sniffed = spec.sep is None
    if sniffed:
        spec = spec.model_copy(update={"sep": hints.get(files[0]) or _sniff_sep(files[0], sample, spec)})
    if not spec.header:
        _check_not_json(files[0], sample[:_SNIFF_BYTES].split(b"\n", 1)[0].decode(spec.encoding, "replace"), spec)
    names = _csv_header(fs, files[0], spec, wide)
    lines, notes = _first_lines(sample, spec), []
    if spec.column_names:
        _check_field_count(files[0], lines, names, spec)
    elif spec.header:
        _check_header_fits(files[0], lines, names, spec, len(files) > 1)
    notes += _title_notes(fs, files, spec, read) if not spec.header else []
    if not spec.dialect and spec.sep == "\t" and postgres_text.looks_written_so(lines):
        notes.append(_postgres_text_note(files[0], spec))
    elif spec.header and _reads_as_a_row(lines):
        notes.append(_row_read_as_header(files[0], lines, spec))
    orders = {}  # files that list the same columns in another order: read by name
    seps = {}  # files split by another separator than the first file (a .tsv among .csv files)
    for path in files[1:]:
        other = _csv_header(fs, path, spec, wide)
        if sniffed and sorted(other) != sorted(names):
            seps, other = _own_separator(fs, path, spec, names, other, seps, wide, hints.get(path))
        if other == names:
            continue
        if sorted(other) != sorted(names):
            own = spec.model_copy(update={"sep": seps[path]}) if path in seps else spec
            _check_header_fits(path, _first_lines(read(fs, path, 0, _SNIFF_BYTES), own), other, own, many=True)
            missing, extra = [n for n in names if n not in other], [n for n in other if n not in names]
            raise SourceError(f"{path}: header {other} differs from {files[0]}: {names}"
                              + (f"; lacks {missing}" if missing else "") + (f"; has {extra} besides" if extra else ""))
        orders[path] = other
    sampled = files[0] if not spec.header or _holds_rows(sample) else _first_with_rows(fs, files, read)
    if sampled != files[0]:  # a first export with its header alone typed every column as text
        sample = read(fs, sampled, 0, spec.infer_bytes)
    own = spec.model_copy(update={"sep": seps[sampled]}) if sampled in seps else spec
    schema, spans_lines = _csv_infer_schema(sample, orders.get(sampled, names), own)
    notes += [wide_text.marked_note({files[0]: marked})] if marked else []
    notes += [_hint_note(next(iter(hints)), hints, spec)] if hints else []
    told = spec.model_fields_set
    if "thousands" not in told and not spec.dialect and (spec.decimal == "," or ("decimal" not in told and own.sep != ",")):
        found, schema, spans_lines, note = _decimal_commas(sample, orders.get(sampled, names), own, schema, spans_lines,
                                                           [*spec.text_columns, *(c for c, t in spec.column_types.items() if t in ("str", "bool")),
                                                            *id_columns(names, id_column)])
        if found:
            spec = spec.model_copy(update=found)
        notes += [f"source: {sampled}: {note}"] if note else []
    schema = pa.schema([schema.field(n) for n in names])
    schema = with_types(as_text(schema, [*spec.text_columns, *id_columns(names, id_column)], files[0]), spec.column_types, files[0])
    quoted = spans_lines if spec.newlines_in_values is None else spec.newlines_in_values
    units = {path: wide_text.wide_unit(fs, path, wide) for path in files} if wide and quoted else None
    blocksize = max(spec.blocksize // 4 * 4, 4) if wide else spec.blocksize  # blocks begin at whole code units
    blocks, records = _text_blocks(fs, files, root, blocksize, count_rows, quoted=quoted, units=units, read=read)
    reader = _CsvBlock(fs, spec, names, schema, quoted, orders, wide, seps, set(hints))
    frame = dd.from_map(Together(reader), together(blocks, records, spec.blocksize), meta=reader._empty(), divisions=None, label="read-csv",
                        enforce_metadata=False)
    return Source(frame, records, skipped, schema, ids_given=ID in schema.names, filesystem=fs, notes=notes)


# a number with a decimal comma, its whole part grouped by thousands dots or not: 3,50 1.234,50 1.234.567
_DECIMAL_COMMA = r"^[+-]?((\d{1,3}(\.\d{3})+|\d+)(,\d+)?|,\d+)$"


def _decimal_commas(sample: bytes, names: list[str], spec: CsvSource, schema: pa.Schema, spans_lines: bool,
                    kept: list[str]) -> tuple[dict, pa.Schema, bool, str | None]:
    """(the options the sample is read with: ``decimal: ','``, and ``thousands: '.'``; the
    schema and spans_lines read with them; a note for validate) where the job gives no
    ``decimal`` (or gives a comma) and no ``thousands``: a ``;``-separated European export
    read ``1,5`` and ``1.234,50`` as text, and no numeric stage took the column.

    A column counts when every value in the sample is such a number (whole numbers beside
    them), one at least with a comma or a thousands dot; the sample is read again with the
    marks they need only if that keeps every other column's type, so a file that also
    writes ``1.5``, or ``1.000`` (a float, or a thousand?), stays as it was, and the note
    says which column held it back. ``kept``: columns the job reads as text or booleans
    (text_columns, column_types, ids); one it declares a number is one with a decimal comma
    as well."""
    text = [f.name for f in schema if f.name not in kept and pa.types.is_string(f.type)]
    sampled = _sampled_text(sample, names, spec, text) if text else pa.table({})
    found = [n for n in text if _comma_numbers(sampled.column(n).drop_null())]
    if not found:
        return {}, schema, spans_lines, None
    dots = [n for n in found if pc.any(pc.match_substring(sampled.column(n), ".")).as_py()]
    marks = {"decimal": ","} | ({"thousands": "."} if dots else {})
    again, spans_again = _csv_infer_schema(sample, names, spec.model_copy(update=marks))
    changed = [f.name for f in schema if f.name not in found and f.name not in kept and again.field(f.name).type != f.type]
    written = f"written with {'thousands dots and ' * bool(dots)}a decimal comma ({'1.234,50' if dots else '3,50'})"
    listed = f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} {written}"
    if not all(pa.types.is_floating(t) or (dots and pa.types.is_integer(t)) for t in (again.field(n).type for n in found)):
        return {}, schema, spans_lines, None
    if changed:
        told = " and ".join(f"{k}: {v!r}" for k, v in marks.items())
        return {}, schema, spans_lines, (
            f"{listed}, but read so, {changed[0]} ({schema.field(changed[0]).type}: {_first_value(sample, names, spec, changed[0])}) "
            f"would be read as {again.field(changed[0]).type}: every column is read as written; set source.{told} to "
            "read them so")
    how = "set source.decimal: '.'" if "decimal" not in spec.model_fields_set else "list them in source.text_columns"
    return marks, again, spans_again, f"{listed}: read as numbers; {how} to read them as text"


def _first_value(sample: bytes, names: list[str], spec: CsvSource, name: str) -> str:
    """The column's first value in the sample, as written (for a note)."""
    values = _sampled_text(sample, names, spec, [name]).column(name).drop_null()
    return repr(values[0].as_py()) if len(values) else "no values"


def _comma_numbers(values: pa.ChunkedArray) -> bool:
    return len(values) > 0 and pc.all(pc.match_substring_regex(values, _DECIMAL_COMMA)).as_py() and \
        pc.any(pc.match_substring_regex(values, "[,.]")).as_py()


def _sampled_text(sample: bytes, names: list[str], spec: CsvSource, columns: list[str]) -> pa.Table:
    """The sample's ``columns`` as text, cut and stripped as :func:`_csv_infer_schema` reads it."""
    cut = sample[: _records_end(sample, spec)] or sample
    if spec.skip_initial_space:
        cut = _strip_after_separators(cut, spec.sep)
    read, parse, convert = _csv_options(spec, names, dict.fromkeys(columns, pa.string()), spec.header, [])
    convert.include_columns = columns
    return _parse(cut, (read, parse, convert), [])


_SEPARATORS = ",;\t|"


def _holds_rows(sample: bytes) -> bool:
    """Whether the start of a file holds a line after its header."""
    end = sample.find(b"\n")
    return end >= 0 and bool(sample[end + 1:].strip())


def _first_with_rows(fs, files: list[str], read) -> str:
    """The first of ``files`` whose start holds rows, to type the columns (the first file if none does)."""
    return next((p for p in files[1:] if _holds_rows(read(fs, p, 0, _SNIFF_BYTES))), files[0])


def _own_separator(fs, path: str, spec: CsvSource, names: list[str], header: list[str], seps: dict, wide: str | None,
                   hint: str | None = None):
    """(``seps``, the header) with ``path``'s own separator (its ``hint``'s, if it starts
    with one), where the job gives none and the file's header is the first file's split by
    another: a folder of .csv exports with a .tsv among them stopped as "header
    ['a\tb\tc'] differs from ['a', 'b', 'c']"."""
    own = hint or _sniff_sep(path, _read_block(fs, path, 0, _SNIFF_BYTES, wide, skip=spec.skip_rows), spec)
    theirs = _csv_header(fs, path, spec.model_copy(update={"sep": own}), wide) if own != spec.sep else header
    return ({**seps, path: own}, theirs) if sorted(theirs) == sorted(names) else (seps, header)


_SNIFF_BYTES = 64 * 2**10

# Excel's separator hint, a first line such as "sep=;" that its European exports write and
# read: no data, so it is read as no row (a file's rows are numbered from the line after its header).
_HINT = re.compile(rb"sep=([^\r\n])\r?\n")


def _separator_hint(fs, path: str, wide: str | None) -> str | None:
    """The separator ``path``'s first line names, if that line is Excel's hint (``sep=;``):
    such a file was refused, and a user had to cut the line off every export."""
    if wide:
        found = _HINT.match(_read_block(fs, path, 0, 16, wide, hint=True))
    else:
        with fs.open(path, "rb", compression="infer") as f:
            found = _HINT.match(f.readline(64).removeprefix(codecs.BOM_UTF8))
    return found[1].decode() if found else None


def _hint_note(path: str, hints: dict[str, str], spec: CsvSource) -> str:
    others = f" (and {len(hints) - 1:,} more file(s))" if len(hints) > 1 else ""
    used = "read with that separator" if spec.sep == hints[path] else f"read with source.sep {spec.sep!r}, which the job sets"
    return (f"source: {path}{others} starts with Excel's separator hint 'sep={hints[path]}': {used}; the line is no "
            "row (not in the ledger), and rows are numbered from the line after the header")


def _without_hint(data: bytes) -> bytes:
    """A file's first bytes without Excel's separator hint line."""
    found = _HINT.match(data)
    return data[found.end():] if found else data


def _read_block(fs, path: str, start: int, length: int | None, wide: str | None, hint: bool = False,
                skip: int | dict[str, int] = 0) -> bytes:
    """A block of the file as :func:`_read_text_block` reads it (a file in a ``wide``
    encoding as the UTF-8 text it holds, :func:`wide.read_block`). The file's first block
    comes without a separator hint line (``hint``: with it) and the ``skip`` lines after
    it (``skip_rows``), so the header is its first line and the lines after it are counted
    from there."""
    if wide is None:
        data = _read_text_block(fs, path, start, length)
        data = data if start else data.removeprefix(codecs.BOM_UTF8)
    else:
        data = wide_text.read_block(fs, path, start, length, wide)
    return data if start or hint else _after_lines(_without_hint(data), _skip(skip, path))


def _skips_by_file(patterns: dict[str, int], files: list[str], root: str) -> dict[str, int]:
    """``skip_rows`` given per file: each file's lines to skip, by the first name or glob
    that matches its path (relative to the source's root, as its ids name it) or its file
    name. Adult's train file has no title line and its test file one: a number for every
    file lost the train file's first row. A name that matches no file stops the read (a
    misspelt name would skip nothing, without a word)."""

    def matches(pattern: str, path: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for name in (_relative(path, root), posixpath.basename(path)))

    unused = [p for p in patterns if not any(matches(p, f) for f in files)]
    if unused:
        listed = ", ".join(_relative(f, root) for f in files[:5]) + (f" and {len(files) - 5:,} more" if len(files) > 5 else "")
        raise SourceError(f"source.skip_rows names {unused[0]!r}, which matches none of the files read ({listed})")
    return {path: next((n for p, n in patterns.items() if matches(p, path)), 0) for path in files}


def _skip(rows: int | dict[str, int], path: str) -> int:
    """The lines ``skip_rows`` leaves out at the start of ``path``."""
    return rows if isinstance(rows, int) else rows.get(path, 0)


def _after_lines(data: bytes, n: int) -> bytes:
    """``data`` from its ``n``-th newline on: the lines ``skip_rows`` says are not rows."""
    for _ in range(n):
        end = data.find(b"\n")
        if end < 0:
            return b""
        data = data[end + 1:]
    return data


def _sniff_sep(path: str, sample: bytes, spec: CsvSource) -> str:
    """A tab for .tsv and .tab files, and for a file not named .csv whose first lines a tab
    splits alike; else the separator that splits the first lines (a
    header and its records) into the same number of fields, more than one, as the
    standard library's sniffer finds it; a comma (a semicolon beside decimal commas) if
    none does. A European export
    (``Apfel;3,50``) is read as it was written without a job saying so."""
    if re.search(r"\.(tsv|tab)(\.[a-z0-9]+)?$", path.lower()):
        return "\t"
    fallback = "," if spec.decimal != "," else ";"
    try:
        text = sample[: quoting.records_end(sample[: 64 * 1024])].decode(spec.encoding)
    except (UnicodeDecodeError, LookupError):
        return fallback
    candidates = _SEPARATORS.replace(spec.decimal, "")
    if not re.search(r"\.csv(\.[a-z0-9]+)?$", path.lower()) and _splits_alike(text, "\t"):
        return "\t"  # PostgreSQL's COPY text (.txt, .dat), whose arrays and JSON hold commas, was split at them
    try:
        return csv.Sniffer().sniff(text, delimiters=candidates).delimiter
    except csv.Error:
        return _splits_alike(text, candidates) or fallback


def _splits_alike(text: str, candidates: str) -> str | None:
    """The first of ``candidates`` that splits the first lines into as many fields each,
    more than one, read as CSV (quotes and all). The sniffer counts the separator per line,
    so one inside a quoted value (``1;"x; y"``) threw it off, and a semicolon export with
    such values was split at commas."""
    for sep in candidates:
        counts = {len(row) for row, _ in zip(filter(None, csv.reader(io.StringIO(text), delimiter=sep)), range(20))}
        if len(counts) == 1 and counts.pop() > 1:
            return sep
    return None


def _records_end(sample: bytes, spec: CsvSource) -> int:
    """Where the whole records at the start of ``sample`` end: after its last newline
    outside quotes, or its last newline where nothing is quoted (``dialect``)."""
    return sample.rfind(b"\n") + 1 if spec.dialect else quoting.records_end(sample)


def _quoting(spec: CsvSource) -> dict:
    """The csv module's options for the file's quoting: none in PostgreSQL's text format,
    whose quotes are the values' own."""
    return {"quoting": csv.QUOTE_NONE} if spec.dialect else {}


def _first_lines(sample: bytes, spec: CsvSource) -> list[list[str]]:
    """The fields of the sample's first 20 lines (the header's first), for the checks
    below; none where the sample is not text in the encoding."""
    try:
        text = sample[: _records_end(sample[: 64 * 1024], spec)].decode(spec.encoding)
    except (UnicodeDecodeError, LookupError):
        return []
    reader = csv.reader(io.StringIO(text), delimiter=spec.sep, skipinitialspace=spec.skip_initial_space, **_quoting(spec))
    return [row for row, _ in zip(filter(None, reader), range(20))]


def _check_field_count(path: str, lines: list[list[str]], names: list[str], spec: CsvSource) -> None:
    """``column_names`` that no one of the first lines has as many fields as: the separator
    is not the file's (German credit's spaces), and every row would be rejected as
    csv:fields, in a run that succeeds with nothing kept."""
    counts = [len(row) for row in lines]
    if counts and len(names) not in counts:
        raise SourceError(
            f"{path}: column_names names {len(names)} columns, but the first lines split by {spec.sep!r} have "
            f"{', '.join(str(n) for n in sorted(set(counts)))} field(s); set source.sep to the file's separator "
            "(e.g. ' ' for spaces)")


def _reads_as_a_row(lines: list[list[str]]) -> bool:
    """Whether the first line holds numbers where the second does, and text where it does:
    a row, not a header (German credit's ``A11 6 A34 …`` over ``A12 48 A32 …``). A whole
    number and a decimal are of one kind: PostgreSQL's ``1 1.5 …`` over ``2 3 …`` (a float
    column's 3) was no row to it, and its columns were named '1' and '1.5' without a word."""

    def kinds(row: list[str]) -> list[bool]:
        return [bool(_NUMBER.fullmatch(v)) for v in row]

    if len(lines) < 2:
        return False
    first = kinds(lines[0])
    return first == kinds(lines[1]) and any(first) and not _numbers_name_columns(lines[0], lines[1], first)


def _numbers_name_columns(header: list[str], row: list[str], numbers: list[bool]) -> bool:
    """Whether the first line's numbers are column labels, not a row's values: whole numbers
    that are years over values that are not (a wide table, ``country,2019,2020`` over
    ``Germany,83,84``), or a run by one step (months 1..12; pandas' labels ``0,1`` of
    ``DataFrame(X)``: two from 0 or 1 suffice, else three) over a row that is no such run.
    The note fired on such headers; a row of a table (German credit's ``6 … 1169``, Adult's
    ``39 … 77516``) is neither."""
    at = [i for i, number in enumerate(numbers) if number]
    if not all(re.fullmatch(r"\d+", header[i]) for i in at):  # a decimal or a sign is no label
        return False
    ours, theirs = [int(header[i]) for i in at], [float(row[i]) for i in at]

    def years(values: list[float]) -> bool:
        return all(1800 <= v <= 2200 and v == int(v) for v in values) and values == sorted(set(values))

    def run(values: list[float]) -> bool:
        steps = {b - a for a, b in zip(values, values[1:])}
        return len(steps) == 1 and steps.pop() > 0 and (len(values) >= 3 or values == [values[0], values[0] + 1] and values[0] in (0, 1))

    return (years(ours) and not years(theirs)) or (run(ours) and not run(theirs))


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _row_read_as_header(path: str, lines: list[list[str]], spec: CsvSource) -> str:
    """A header that may be a row: German credit's raw file with column_names and no
    ``header: false`` lost its first row; PostgreSQL's COPY, which writes no header, had
    columns named '39' and 'State-gov'."""
    first = spec.sep.join(lines[0][:4]) + (f"{spec.sep}…" if len(lines[0]) > 4 else "")
    if spec.column_names:
        return (f"source: {path}: line {1 + _skip(spec.skip_rows, path)} ({first}) is read as the header, which column_names renames, "
                "so it is no row; it holds numbers where the next line does, as a row would: if the file has no header, "
                "set source.header: false")
    return (f"source: {path}: line {1 + _skip(spec.skip_rows, path)} ({first}) is read as the header, so its values name the columns; "
            "it holds numbers where the next line does, as a row would: if the file has no header, set source.header: "
            "false and column_names" + ("; if it is PostgreSQL's COPY text format (tab separated, no header), set "
                                        "source.dialect: postgres_text and column_names" if spec.sep == "\t" else ""))


def _postgres_text_note(path: str, spec: CsvSource) -> str:
    """A tab-separated file with ``\\N`` fields, as PostgreSQL's COPY writes by default: read
    as CSV, ``\\N`` was the text '\\N', a value's ``\\t`` and ``\\n`` stayed two characters, and
    its first row named the columns."""
    return (f"source: {path}: fields that are \\N alone, tab separated, as PostgreSQL's COPY ... TO writes its text "
            "format (MySQL's SELECT ... INTO OUTFILE too): set source.dialect: postgres_text to read \\N as missing and "
            "\\t \\n \\\\ as the characters" + (", with column_names (it writes no header)" if spec.header and not spec.column_names else ""))


def _check_header_fits(path: str, lines: list[list[str]], names: list[str], spec: CsvSource, many: bool) -> None:
    """A first line that is no header: every line after it has another number of fields
    (Adult's test file opens with ``|1x3 Cross validator``), so every row would be
    rejected as csv:fields, in a run that succeeds with nothing kept."""
    fields = _fields_after_title(lines)
    if fields is not None:
        first = 1 + _skip(spec.skip_rows, path)
        raise SourceError(
            f"{path}: line {first}, read as the header, has {len(names)} field(s) ({', '.join(names[:3])}"
            f"{', …' if len(names) > 3 else ''}) but the lines after it have {fields} (split by {spec.sep!r}): if line "
            f"{first} is a title or a note, set {_skip_advice(path, first, spec, many)}; if the file has no header, set "
            "header: false and column_names")


def _fields_after_title(lines: list[list[str]]) -> int | None:
    """The fields of every line after the first, where the first has another number of them
    (a title or a notice above the table); None if not so. Lines that all end with a
    separator ("1,2,3," under "a,b,c") are left to their rows' rejects and the run's warning."""
    after = lines[1:]
    counts = {len(row) for row in after}
    if len(counts) != 1 or all(row[-1] == "" for row in after) or (fields := counts.pop()) == len(lines[0]):
        return None
    return fields


def _skip_advice(path: str, lines: int, spec: CsvSource, many: bool) -> str:
    """``skip_rows`` as the job would set it to skip ``lines`` of ``path``: by its file name
    where the source reads several files (the others may have no such line)."""
    if not many and not isinstance(spec.skip_rows, dict):
        return f"source.skip_rows: {lines}"
    return f"source.skip_rows: {{{posixpath.basename(path)}: {lines}}}"


def _title_notes(fs, files: list[str], spec: CsvSource, read) -> list[str]:
    """Files without a header (``header: false``) whose first line has another number of
    fields than the lines after it, and than column_names: a title (Adult's test file's
    '|1x3 Cross validator' beside its train file), rejected as csv:fields. Up to 100 files
    are looked at, 64 KiB each."""
    notes = []
    for path in files[:100]:
        lines = _first_lines(read(fs, path, 0, _SNIFF_BYTES), spec)
        fields = _fields_after_title(lines) if lines else None
        if fields is not None and len(lines[0]) != len(spec.column_names) == fields:
            first = 1 + _skip(spec.skip_rows, path)
            notes.append(f"source: {path}: line {first} ({spec.sep.join(lines[0])[:40]}) has {len(lines[0])} field(s) where the "
                         f"lines after it have {fields}, as column_names: it is rejected as csv:fields; if it is a title or a "
                         f"note, set {_skip_advice(path, first, spec, len(files) > 1)}")
    return notes


def _csv_header(fs, path: str, spec: CsvSource, wide: str | None = None) -> list[str]:
    if not spec.header:
        if not spec.column_names and spec.dialect:
            raise SourceError(f"{path}: PostgreSQL's COPY text format writes no header: give source.column_names, the "
                              "table's columns in order (as psql's \\d <table> lists them), or export WITH (HEADER) "
                              "(PostgreSQL 15 and later) and set source.header: true")
        if not spec.column_names:
            raise SourceError(f"{path}: header: false needs column_names")
        names = list(spec.column_names)
    else:
        if wide:
            line = _read_block(fs, path, 0, _SNIFF_BYTES, wide, skip=spec.skip_rows).split(b"\n", 1)[0]
        else:
            with fs.open(path, "rb", compression="infer") as f:
                line = f.readline()
                line = f.readline() if _HINT.match(line.removeprefix(codecs.BOM_UTF8)) else line
                for _ in range(_skip(spec.skip_rows, path)):
                    line = f.readline()
        try:
            first = line.decode(spec.encoding).rstrip("\r\n").lstrip("\ufeff")  # a byte-order mark is no name
        except UnicodeDecodeError:
            with fs.open(path, "rb", compression="infer") as f:  # more than its first line tells what the file is
                raise SourceError(_not_text(f.read(_SNIFF_BYTES), spec)) from None
        if not first:
            raise SourceError(f"{path}: empty file, no header line")
        _check_not_json(path, first, spec)
        if "\r" in first:  # the whole file was one line: csv.Error's traceback
            raise SourceError(f"{path}: its lines end with a carriage return alone (\\r, old Mac text); lines must end "
                              "with \\n or \\r\\n: convert it, e.g. tr '\\r' '\\n' < in.csv > out.csv")
        # as the rows are read: a quoted name may hold the separator ("Weight, kg") or a quote ("")
        try:
            header = next(csv.reader([first], delimiter=spec.sep, skipinitialspace=spec.skip_initial_space, **_quoting(spec)))
        except csv.Error as e:
            raise SourceError(f"{path}: the header line does not parse: {e}") from None
        header = postgres_text.header_unescaped(header) if spec.dialect else header
        names = list(spec.column_names) if spec.column_names else _named(header)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"{path}: column {twice[0]!r} is named more than once in {names}; "
                          "give every column its own name (column_names)")
    return names


def _check_not_json(path: str, first: str, spec: CsvSource) -> None:
    """Stop at a file of JSON given as CSV: JSON lines were read with columns named
    '{"a":1' and 'b:"x"}', and rows rejected as csv:fields or kept as such pieces. JSON
    holds no tab inside a line (a string writes it \\t), so a first line with a tab, as
    PostgreSQL's text export of a jsonb column and another, is no JSON file."""
    line = first.strip()
    if spec.dialect or "\t" in line:
        return
    try:
        value = json.loads(line) if line.startswith("{") else None
    except ValueError:
        value = None
    if isinstance(value, dict):
        kind = "JSON lines (an object per line)"
    elif line == "[" or line.startswith(("[{", "[ {")):
        kind = "a JSON array"
    elif line == "{":
        kind = "JSON (an object over several lines)"
    else:
        return
    raise SourceError(f"{path}: {kind}, not CSV ({line[:40]}{'…' * (len(line) > 40)}): use format: jsonl, which reads JSON "
                      "lines and a .json file holding one array of objects")


def _named(header: list[str]) -> list[str]:
    """The header's names, a blank one named by its position as pandas names it
    (``Unnamed: 0``, the index ``DataFrame.to_csv`` writes): it was the column ``""``, and
    two blank names stopped the read as one name given twice."""
    return [name.strip() or f"Unnamed: {i}" for i, name in enumerate(header)]


def _csv_options(spec: CsvSource, names: list[str], types: dict | None, skip_header: bool, bad: list):
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if skip_header else 0, encoding=spec.encoding, use_threads=False)

    def on_invalid(row):
        bad.append(row)
        return "skip"

    # Arrow reads a block in chunks cut at newlines unless told values may span them (which
    # costs nothing measurable in one thread); dsbuild cuts files into blocks itself
    parse = pacsv.ParseOptions(delimiter=spec.sep, invalid_row_handler=on_invalid, newlines_in_values=True,
                               **({"quote_char": False} if spec.dialect else {}))
    convert = pacsv.ConvertOptions(
        null_values=spec.null_values, strings_can_be_null=True, quoted_strings_can_be_null=True, column_types=types or {},
        decimal_point=spec.decimal, true_values=_TRUE, false_values=_FALSE,
    )
    return read, parse, convert


# Arrow's words for true and false, and PostgreSQL's t and f (COPY ... CSV writes its booleans
# so): a column of them was text, and no stage read it as the boolean it is.
_TRUE, _FALSE = ["1", "True", "TRUE", "true", "t"], ["0", "False", "FALSE", "false", "f"]
_BOOLEANS = {"1": True, "true": True, "t": True, "0": False, "false": False, "f": False}


def _parse(data: bytes, options: tuple, bad: list, stream: bool = False) -> pa.Table:
    """Arrow's parse of ``data`` with ``options`` (from :func:`_csv_options`, whose invalid
    rows go to ``bad``). Arrow parses in blocks of 1 MiB, and a record longer than that (a
    document, an embedded image as base64) failed the run with "straddling object straddles
    two block boundaries": the data, in memory already, is then parsed as one block.

    With ``stream`` (every column's type given, so nothing is inferred from the first chunk
    alone) Arrow's streaming reader parses it batch by batch. ``pacsv.read_csv`` keeps every
    parsed chunk until the whole table is converted: on a 64 MiB block of Adult it peaked at
    twice its table (188 MiB of Arrow memory for a 96 MiB table), the streaming reader at
    the table and one chunk (99 MiB)."""
    read = _read_streaming if stream else _read_whole
    try:
        return read(data, *options)
    except pa.ArrowInvalid as e:
        if "straddling object" not in str(e):
            raise
    bad.clear()
    options[0].block_size = len(data) + 1
    return read(data, *options)


def _read_whole(data: bytes, read, parse, convert) -> pa.Table:
    return pacsv.read_csv(io.BytesIO(data), read, parse, convert)


def _read_streaming(data: bytes, read, parse, convert) -> pa.Table:
    return pacsv.open_csv(pa.BufferReader(data), read_options=read, parse_options=parse, convert_options=convert).read_all()


def _csv_infer_schema(sample: bytes, names: list[str], spec: CsvSource) -> tuple[pa.Schema, bool]:
    """The columns' types from a few MB, and whether a value there spans lines."""
    # Drop a possibly cut last record (it may be a quoted value cut between its lines).
    cut = sample[: _records_end(sample, spec)] or sample
    if spec.skip_initial_space:
        cut = _strip_after_separators(cut, spec.sep)
    table = _parse(cut, _csv_options(spec, names, None, spec.header, []), [])
    if any(pa.types.is_binary(f.type) for f in table.schema):  # Arrow's type for text that does not decode
        raise SourceError(_not_text(cut, spec))
    fields = [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else
                       _grouped_number_type(table.column(f.name), spec) or _utc_time_type(table.column(f.name)) or f.type)
              for f in table.schema]
    return pa.schema(fields), _has_newline_value(table)


def _grouped_number_type(column: pa.ChunkedArray, spec: CsvSource) -> pa.DataType | None:
    """int64 or float64 for a text column of numbers written with ``spec.thousands``
    (``1,234.50``), which Arrow reads as text; None for any other column."""
    if spec.thousands is None or not pa.types.is_string(column.type):
        return None
    t, d = re.escape(spec.thousands), re.escape(spec.decimal)
    values = column.drop_null()
    if len(values) == 0 or not pc.all(pc.match_substring_regex(values, rf"^[+-]?(\d{{1,3}}({t}\d{{3}})+|\d+)({d}\d+)?$")).as_py():
        return None
    return pa.float64() if pc.any(pc.match_substring(values, spec.decimal)).as_py() else pa.int64()


# BigQuery's TIMESTAMP as its CSV export writes it (microseconds at most)
_UTC_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)? UTC$"


def _utc_time_type(column: pa.ChunkedArray) -> pa.DataType | None:
    """A timestamp in UTC for a text column of times written as BigQuery's CSV export writes
    them (``2024-01-02 03:04:05 UTC``), which Arrow reads as text, as it reads ISO times
    with ``Z`` or ``+00`` as timestamps; None for any other column. Microseconds, as
    BigQuery keeps them."""
    if not pa.types.is_string(column.type):
        return None
    values = column.drop_null()
    if len(values) == 0 or not pc.all(pc.match_substring_regex(values, _UTC_TIME)).as_py():
        return None
    return pa.timestamp("us", tz="UTC")


def _has_newline_value(table: pa.Table) -> bool:
    return any(
        pc.any(pc.match_substring(col, "\n")).as_py()
        for col in table.columns
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type)
    )


_MAGIC = {b"PAR1": "a Parquet file: use format: parquet", b"PK\x03\x04": "a zip archive: unpack it",
          b"\x1f\x8b": "gzip-compressed: name it .csv.gz, or unpack it", b"\x89PNG": "a PNG image: use format: images",
          b"\xff\xd8\xff": "a JPEG image: use format: images"}


# An Excel workbook: .xlsx is a zip archive of XML parts ("unpack it", the advice was), .xls
# an OLE2 compound file (whose bytes were "not utf8 text: set source.encoding to latin-1").
_WORKBOOK = ("an Excel workbook: save it as CSV (File > Save As > CSV UTF-8), or read it with pandas.read_excel and "
             "give the frame (format: frame)")


def _not_text(sample: bytes, spec: CsvSource) -> str:
    """The first line of ``spec.path`` that is not ``spec.encoding`` text, and the way out."""
    if sample.startswith(b"\xd0\xcf\x11\xe0") or (sample.startswith(b"PK\x03\x04") and
                                                  (b"[Content_Types].xml" in sample[:4096] or b"xl/" in sample[:4096])):
        return f"{spec.path}: not CSV text but {_WORKBOOK}"
    kind = next((what for magic, what in _MAGIC.items() if sample.startswith(magic)), None)
    if kind:
        return f"{spec.path}: not CSV text but {kind}"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"{spec.path}: UTF-16 text (it starts with UTF-16's byte-order mark), as Excel's Unicode Text export; set source.encoding: utf-16"
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
    alternates outside, inside (a doubled quote inside is an empty outside piece).

    A slice of whole lines at a time, the quote state carried from one to the next: the
    substitution keeps a Python object per piece of the text it cuts, and over a 64 MiB
    block of Adult (9 M separators) that peaked at 1.6 GiB, twelve times the block's frame."""
    s = sep.encode()
    if s + b" " not in data:
        return data
    spaces = re.compile(re.escape(s) + b" +")  # every space, as csv's skipinitialspace: two replaces left ",   x" as " x"
    out, inside, start = [], False, 0
    while start < len(data):
        end = data.find(b"\n", start + _STRIP_SLICE)
        end = len(data) if end < 0 else end + 1  # a run of spaces never spans a newline
        piece = data[start:end]
        out.append(_strip_outside_quotes(piece, spaces, s, inside))
        inside ^= piece.count(b'"') % 2 == 1
        start = end
    return b"".join(out)


_STRIP_SLICE = 2**18


def _strip_outside_quotes(text: bytes, spaces: re.Pattern, sep: bytes, inside: bool) -> bytes:
    """:func:`_strip_after_separators` on one slice, which starts ``inside`` quotes or not."""
    if b'"' not in text:
        return text if inside else spaces.sub(sep, text)
    pieces = text.split(b'"')
    outside = 1 if inside else 0
    pieces[outside::2] = [spaces.sub(sep, p) for p in pieces[outside::2]]
    return b'"'.join(pieces)


class _CsvBlock:
    """One block of a CSV file read as a frame of the first file's columns, in its order
    (``orders``: the files whose header lists them in another)."""

    def __init__(self, fs, spec: CsvSource, names: list[str], schema: pa.Schema, quoted: bool = False,
                 orders: dict[str, list[str]] | None = None, wide: str | None = None, seps: dict[str, str] | None = None,
                 hinted: set[str] = frozenset()):
        self.fs, self.spec, self.names, self.schema, self.quoted = fs, spec, names, schema, quoted
        self.orders, self.wide, self.seps, self.hinted = orders or {}, wide, seps or {}, hinted

    def _empty(self) -> pd.DataFrame:
        df = _with_id(to_pandas(self.schema.empty_table()))
        return _mark_bad(df)

    def __call__(self, block) -> pd.DataFrame:
        path, rel, start, length, first_line, *quote_states = block
        if quote_states and length is not None:
            with self.fs.open(path, "rb") as f:
                codec, unit = wide_text.wide_codec(f.read(4), self.wide) if self.wide else (None, 1)
                data = quoting.read_records(f, start, length, *quote_states[0], wide_text.unit_dtype(codec, unit))
            data = wide_text.transcoded(io.BytesIO(data), b"", codec, path, start) if self.wide else data
            data = data if data.endswith(b"\n") or not data else data + b"\n"
            data = _after_lines(_without_hint(data.removeprefix(codecs.BOM_UTF8)), _skip(self.spec.skip_rows, path)) if start == 0 else data
        else:
            data = _read_block(self.fs, path, start, length, self.wide, skip=self.spec.skip_rows)
        header_here = self.spec.header and start == 0
        if not data and not header_here:  # the block lies inside a line longer than the blocksize
            return self._empty()
        if self.spec.skip_initial_space:
            data = _strip_after_separators(data, self.seps.get(path, self.spec.sep))
        # Ids are file:row, the row's data line in the file: the block's first line plus
        # the line of the row's record in the block (Arrow counts records, skipping empty
        # lines). Where values span lines, a record's line is its number among the pieces
        # between newlines outside quotes.
        offset = first_line - (1 if self.spec.header and start != 0 else 0)
        if quote_states and start != 0:  # its records were counted from the file's first byte
            offset -= (path in self.hinted) + _skip(self.spec.skip_rows, path)
        bad: list = []
        by_hand: dict[str, pa.DataType] = {}  # columns read as text, to be typed a value at a time
        while True:
            try:
                table = _parse(data, self._options(path, header_here, bad, by_hand), bad, stream=True)
                break
            except pa.ArrowInvalid as e:  # a value does not fit its column's type, or is not text
                bad.clear()
                by_hand = self._read_by_hand(e, path, by_hand)
        typed = not by_hand
        spans_lines = self.quoted or (b'"' in data and _has_newline_value(table))
        if spans_lines and not self.quoted and length is not None:
            raise self._spans_lines(path, start)
        if data.count(b'"') % 2 and (spans_lines or any("\n" in b.text for b in bad)):
            self._check_quotes_close(data, path, start)
        line_of = _record_lines(data, header_here, spans_lines)
        if line_of is not None and table.num_rows + len(bad) != len(line_of):
            raise unpaired_quotes(path)
        if typed:
            del data  # read no more: the block's bytes and the table's numbers need not wait beside the frame
            df = to_pandas(table)
            del table
            rows, bad_rows = _place_invalid(bad, len(df), header_here) if bad else (None, [])
        else:
            columns, rejected, rows, bad_rows = self._typed_by_hand(table.select(list(by_hand)), bad, data, header_here,
                                                                    line_of, spans_lines)
            rest = table.drop_columns(list(by_hand))
            del table, data
            df = to_pandas(rest)
            del rest
            for i, name in enumerate(self.names):
                if name in columns:
                    df.insert(i, name, columns[name])
            if rejected:  # in place, as a reject's row has no values: taken out, the frame was copied twice
                df.iloc[[i for i, _, _ in rejected], :] = None
        if line_of is not None and rows is None:
            rows = np.arange(len(df))
        line = (lambda r: r) if line_of is None else line_of.__getitem__
        ids = None if rows is None else row_ids(rel, offset, numbers=line(np.asarray(rows, dtype=np.int64)))
        df = _with_id(df, rel, offset, ids)
        out = _mark_bad(df)
        if not typed and rejected:
            at = [i for i, _, _ in rejected]
            out.iloc[at, out.columns.get_loc(REJECT)] = [why for _, _, why in rejected]
            out.iloc[at, out.columns.get_loc(RAW)] = [text for _, text, _ in rejected]
        if self.spec.dialect:
            _unescape(out, self.schema)
        if bad_rows:
            extra = pd.DataFrame({ID: pd.array([f"{rel}:{offset + line(r)}" for r, _, _ in bad_rows], dtype="string")})
            out = _mark_bad(pd.concat([out, _typed_nulls(extra, self._empty())], ignore_index=True))
            out.loc[len(df):, REJECT] = [why for _, _, why in bad_rows]
            out.loc[len(df):, RAW] = [text for _, text, _ in bad_rows]
        return out

    def _options(self, path: str, header_here: bool, bad: list, by_hand: dict | None = None):
        types = {**dict(zip(self.schema.names, self.schema.types)), **(by_hand or {})}
        spec = self.spec.model_copy(update={"sep": self.seps[path]}) if path in self.seps else self.spec
        if path not in self.orders:
            return _csv_options(spec, self.names, types, header_here, bad)
        read, parse, convert = _csv_options(spec, self.orders[path], types, header_here, bad)
        convert.include_columns = self.names  # Arrow gives the columns in this order
        return read, parse, convert

    def _check_quotes_close(self, data: bytes, path: str, start: int) -> None:
        """Stop at a quote the block never closes: Arrow took the rest of the block after it
        as one value (or one invalid row), and a file read as one block lost its records
        without a word. A quote inside an unquoted value (5" screen) is Arrow's literal; one
        left open on the last line swallows no record, and its row is read (or rejected)."""
        opened = _open_quote_at(data, self.seps.get(path, self.spec.sep).encode())
        if opened is not None and data[data.find(b"\n", opened) + 1:].strip():
            raise unpaired_quotes(path, data.count(b"\n", 0, opened) + 1 if start == 0 else None)

    def _read_by_hand(self, error: pa.ArrowInvalid, path: str, by_hand: dict) -> dict:
        """``by_hand`` and the column Arrow's ``error`` names, to be read as text (as bytes, if
        it was text already: a value is not UTF-8). Every column was read as bytes and
        typed by hand, its values held as Python objects: a block of Adult with one bad age
        peaked at +461 MiB, a clean one at +182 MiB. An error that names no column reads
        them all as bytes, as before."""
        found = re.match(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error", str(error))
        names = self.orders.get(path, self.names)
        if found is None or int(found[1]) >= len(names) or by_hand.get(names[int(found[1])]) == pa.binary():
            if all(by_hand.get(n) == pa.binary() for n in self.names):
                raise error
            return {n: pa.binary() for n in self.names}
        name = names[int(found[1])]
        text = name in by_hand or pa.types.is_string(self.schema.field(name).type)
        return {**by_hand, name: pa.binary() if text else pa.string()}

    def _spans_lines(self, path: str, start: int) -> SourceError:
        """A quoted value spans lines past the sample that decided how to cut the file: this
        block was cut inside a value, and its rows would be wrong."""
        return SourceError(
            f"{path}: a quoted value spans lines in the block at byte {start:,}, past the first {self.spec.infer_bytes:,} "
            "bytes that decided how to cut the file; set source.newlines_in_values: true")

    def _typed_by_hand(self, table: pa.Table, bad: list, data: bytes, header_here: bool, line_of: np.ndarray | None,
                       spans_lines: bool):
        """The block's columns that Arrow could not type, read as text or bytes (``table``):
        convert them per value, and reject the rows whose values do not fit, naming the
        column and value: (columns, (row, text, reason) of the rows they reject, each row's
        number, the rows Arrow could not parse as :func:`_place_invalid` gives them)."""
        rows, bad_rows = _place_invalid(bad, table.num_rows, header_here)
        rows = np.asarray(rows)
        reasons = np.full(table.num_rows, None, dtype=object)
        out = {}
        for f in (self.schema.field(name) for name in table.column_names):
            text = col = _decoded(table.column(f.name), reasons, f.name)
            if self.spec.thousands and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)):
                col = col.str.replace(self.spec.thousands, "", regex=False)
            if pa.types.is_floating(f.type) and self.spec.decimal != ".":
                col = col.str.replace(self.spec.decimal, ".", regex=False)
            if pa.types.is_boolean(f.type):  # Arrow's cast knows no t and f
                col = col.replace({"t": "true", "f": "false"})
            if pa.types.is_timestamp(f.type) and f.type.tz is not None:  # BigQuery's 2024-01-02 03:04:05 UTC
                col = col.str.replace(UTC_WRITTEN, "Z", regex=True)
            try:
                converted = to_pandas(pa.table({f.name: pa.array(col, type=pa.string()).cast(f.type)}))[f.name]
                out[f.name] = converted
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            if pa.types.is_integer(f.type):  # exactly, not through float64 (2**53 + 1), and in the type's range
                num = whole_numbers(col, np.iinfo(f.type.to_pandas_dtype()))
            elif pa.types.is_boolean(f.type):  # one value neither true nor false rejected every row of its block
                num = col.str.lower().map(_BOOLEANS)
            elif pa.types.is_timestamp(f.type) or pa.types.is_date(f.type):  # one value not a time failed the run
                num = _times(col, f.type)
            else:
                num = pd.to_numeric(col, errors="coerce") if pa.types.is_floating(f.type) else None
            failed = col.notna() & (num.isna() if num is not None else True)
            for i in np.flatnonzero(failed.to_numpy()):
                if reasons[i] is None:
                    reasons[i] = f"type:{f.name}={text.iat[i]}"
            good = num.where(~failed) if num is not None else pd.Series(None, index=col.index)
            out[f.name] = to_pandas(pa.table({f.name: pa.array(good, type=f.type, from_pandas=True)}))[f.name].set_axis(col.index)
        failed = np.flatnonzero(pd.notna(reasons))
        at = [(1 if header_here else 0) + (int(rows[i]) if line_of is None else int(line_of[rows[i]])) for i in failed]
        lines = _lines_at(data, at, spans_lines)
        rejected = [(int(i), lines.get(a, b"").rstrip(b"\r").decode(self.spec.encoding, "replace"), reasons[i])  # CRLF files
                    for i, a in zip(failed, at)]
        return out, rejected, rows, bad_rows


def _unescape(out: pd.DataFrame, schema: pa.Schema) -> None:
    """PostgreSQL's escapes undone in ``out``'s text columns, in place. A row whose octal or
    hex escapes make bytes that are not UTF-8 (PostgreSQL's own COPY FROM refuses them) is
    rejected as ``encoding:<column>``, with that value as written for its raw text."""
    for f in schema:
        if not pa.types.is_string(f.type):
            continue
        reasons: dict[int, str] = {}
        written = out[f.name]
        out[f.name] = postgres_text.unescaped(written, f.name, reasons)
        for i, why in reasons.items():
            if pd.isna(out.iat[i, out.columns.get_loc(REJECT)]):
                out.iat[i, out.columns.get_loc(REJECT)] = why
                out.iat[i, out.columns.get_loc(RAW)] = written.iat[i]


def _times(col: pd.Series, typ: pa.DataType) -> pd.Series:
    """Each text value as Arrow casts it to the date or timestamp ``typ``, None where it
    cannot: a value past the type sample that was no time ('soon') failed the run with
    "Unsupported cast from double to timestamp". A value at a time, in the blocks that hold
    such a value only."""
    def one(value):
        try:
            return pa.scalar(value, pa.string()).cast(typ).as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    return pd.Series([None if pd.isna(v) else one(v) for v in col], index=col.index, dtype=object)


def _lines_at(data: bytes, wanted: list[int], quoted: bool) -> dict[int, bytes]:
    """The lines (records, where values span lines) of ``data`` numbered ``wanted``, from 0.
    Newlines are counted a slice at a time up to each: an array of the block's newline
    offsets took a byte per byte of the block (60 MiB for a block of Adult), as its lines
    split did objects."""
    if quoted:
        records = quoting.lines(data)
        return {at: records[at] for at in wanted if at < len(records)}
    found, line, pos = {}, 0, 0
    for at in sorted(set(wanted)):
        skip = at - line
        while skip:
            end = min(pos + _STRIP_SLICE, len(data))
            n = data.count(b"\n", pos, end)
            if n < skip and end < len(data):
                pos, skip = end, skip - n
                continue
            for _ in range(skip):
                pos = data.find(b"\n", pos) + 1
                if pos == 0:
                    return found
            skip = 0
        line, stop = at, data.find(b"\n", pos)
        found[at] = data[pos:stop if stop >= 0 else len(data)]
    return found


def _open_quote_at(data: bytes, sep: bytes) -> int | None:
    """Where the quote that ``data`` leaves open begins, as Arrow's parser reads quotes: one
    opens a value only at its start (after a separator or a newline), a doubled one inside
    is the character. Python over the quotes alone: it runs only when their count is odd."""
    quotes = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == quoting.QUOTE).tolist()
    opened, i = None, 0
    while i < len(quotes):
        at = quotes[i]
        if opened is None:
            if at == 0 or data[at - 1:at] in (sep, b"\n"):
                opened = at
        elif i + 1 < len(quotes) and quotes[i + 1] == at + 1:
            i += 1
        else:
            opened = None
        i += 1
    return opened


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


def _place_invalid(bad: list, n_parsed: int, header_here: bool) -> tuple[np.ndarray, list[tuple]]:
    """Rows Arrow skipped as invalid: each parsed row's number and (number, text, reason)
    for each skipped one. Arrow numbers records from 1, the header included and empty
    lines not; one it cannot place goes after the parsed rows."""
    skip = 1 if header_here else 0
    placed = [b.number - 1 - skip if b.number is not None else None for b in bad]
    free = np.setdiff1d(np.arange(n_parsed + len(bad)), [p for p in placed if p is not None])  # in numpy: a row is 36 bytes in a list
    rows, unknown = free[:n_parsed], iter(free[n_parsed:].tolist())
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
    lines = quoting.lines(data) if quoted else data.split(b"\n")
    if not lines[-1]:  # the newline that ends the block; a quote left open to the end is one more record
        lines = lines[:-1]
    first = 1 if header_here else 0
    return np.array([i - first for i in range(first, len(lines)) if lines[i].rstrip(b"\r")], dtype=np.int64)
