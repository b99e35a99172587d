"""What a run says of its source once read: values its types could not hold, and why.

A CSV or JSON lines source types its columns from its first bytes, and decimals reach the
stages as float64; each note says what happened and which source option changes it.
"""

from __future__ import annotations

import pyarrow as pa

from dsbuild.io.sources.common import EXACT_FLOAT_DIGITS, EXACT_INT_DIGITS


def rejected_by_type_sample(source, schema, rejected: dict) -> list[str]:
    """Notes on the source's rejects (reason -> rows) that its type sample explains."""
    return _mistyped_columns(source, schema, rejected) + _unknown_fields(source, rejected)


def _mistyped_columns(source, schema, rejected: dict) -> list[str]:
    """A CSV or JSON lines source types its columns from its first ``infer_bytes``, and
    rejects the rows whose later values do not fit (2.5 after whole numbers) as
    ``type:<column>``: say how to give the column a type that holds them, if they are data."""
    if not hasattr(source, "column_types") or schema is None:
        return []
    notes = []
    for reason, n in sorted(rejected.items()):
        column = reason.removeprefix("type:")
        if reason.startswith("type:") and column in schema.names and column not in source.column_types:
            wider = "float" if pa.types.is_integer(schema.field(column).type) else "str"
            notes.append(f"source: {n:,} row(s) rejected as {reason}: column {column!r} is {schema.field(column).type}, "
                         f"typed from the first {source.infer_bytes:,} bytes of the first file (infer_bytes), and their "
                         f"values do not fit it; if they are data, give it a type that holds them "
                         f"(source.column_types: {{{column}: {wider}}})")
    return notes


def _unknown_fields(source, rejected: dict) -> list[str]:
    """A JSON lines source takes its fields from the first ``infer_bytes`` of its first file
    and rejects a record with another as ``json:unknown-field``: say where the fields came
    from, as a reason naming one field does not."""
    n = rejected.get("json:unknown-field", 0)
    if not n:
        return []
    sampled = "every file's first lines" if source.merge_schemas else f"the first {source.infer_bytes:,} bytes of the first file"
    fixes = ("raise source.infer_bytes to reach it" if source.merge_schemas else
             "set source.merge_schemas: true (the fields of every file's first lines), or raise source.infer_bytes to reach it")
    return [f"source: {n:,} record(s) rejected as json:unknown-field: they hold a field (their reason names it) that no "
            f"record in {sampled} has, which decided the columns; if they are data, {fixes}"]


def inexact_decimals(schema) -> list[str]:
    """Decimals are read as float64 (see ``sources.common._decimals_as_numbers``), exact up
    to 15 significant digits: say so for a wider column, whose values may hold more."""
    wide = [f for f in schema or [] if pa.types.is_decimal(f.type)
            and f.type.precision > (EXACT_INT_DIGITS if f.type.scale == 0 else EXACT_FLOAT_DIGITS)]
    return [f"source: column {f.name!r} is {f.type}, read as float64 for the stages: a value with more than "
            f"{EXACT_FLOAT_DIGITS} significant digits is written back with float64's 15-17 significant digits" for f in wide]
