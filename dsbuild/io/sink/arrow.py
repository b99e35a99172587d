"""Partitions as Arrow tables, in the source's types where pandas lost them (dates,
decimals, lists, structs, text)."""

from __future__ import annotations

import decimal
import json
import math

import pandas as pd
import pyarrow as pa

from dsbuild.io.sources.common import EXACT_FLOAT_DIGITS


def _to_arrow(part: pd.DataFrame, types: dict[str, pa.DataType]) -> pa.Table:
    """``part`` as Arrow, with the source's type for each column pandas could not type.

    Arrow infers an object column's type from its values: a decimal's precision shrinks to
    the partition's widest value (so shards disagree, and each is rewritten to agree), and
    a column with no values, as in a run's zero-row output, becomes null, as does an empty
    categorical's dictionary. A column whose values no longer fit the source's type (a
    stage made them something else) keeps the type they have. Decimals, which sources read
    as numbers, are numbers again (rounded to the column's scale where a stage computed them),
    and text is the source's ``string``, not the ``large_string`` Arrow makes of pandas' text.
    """
    table = _from_pandas(part, types)
    numbers = []
    for i, f in enumerate(table.schema):
        want = types.get(f.name)
        if want is None or f.type == want or not _back_to_source_type(part[f.name].dtype, f.type, want):
            continue
        try:
            table = table.set_column(i, pa.field(f.name, want), _cast(table.column(i), want))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
        numbers += [f.name] if _decimal_as_number(f.type, want) else []
    return _decimals_for_pandas(table, numbers)


def _decimals_for_pandas(table: pa.Table, names: list[str]) -> pa.Table:
    """The table with its pandas metadata naming ``names`` decimals, as pandas writes them:
    the frame's Int64 for a whole decimal made ``pd.read_parquet`` fail ("Expected array of
    Int64 type, got decimal128(5, 0)")."""
    meta = table.schema.pandas_metadata
    if not names or not meta:
        return table
    for column in meta.get("columns", []):
        if column.get("name") in names:
            column.update(pandas_type="decimal", numpy_type="object")
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta).encode()})


def _from_pandas(part: pd.DataFrame, types: dict[str, pa.DataType]) -> pa.Table:
    """``part`` as Arrow, typed by its values; where Arrow cannot type a column from its
    values alone (pandas holds a map as lists of (key, value) tuples, which Arrow reads as
    structs of mixed fields: "Expected bytes, got a 'int' object"), the source's types
    for its object columns. Writing such a partition, or its checkpoint, failed the run.

    In the calling thread: a worker runs a task per core already, and Arrow's default
    started a pool of threads for every partition of more than a few hundred cells, which
    cost a 5,000-row partition three times the CPU of the conversion itself."""
    try:
        return pa.Table.from_pandas(part, preserve_index=False, nthreads=1)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.Table.from_pandas(part, schema=_declared_schema(part, types), preserve_index=False, nthreads=1)


def _declared_schema(part: pd.DataFrame, types: dict[str, pa.DataType]) -> pa.Schema:
    declared = [c for c in part.columns if part[c].dtype == object and c in types]
    inferred = pa.Schema.from_pandas(part.drop(columns=declared), preserve_index=False)
    return pa.schema([pa.field(c, types[c]) if c in declared else inferred.field(c) for c in part.columns])


def _cast(column: pa.ChunkedArray, want: pa.DataType) -> pa.ChunkedArray:
    """``column`` as ``want``; whole numbers into a decimal by way of the widest one, as
    Arrow casts int64 only into a decimal of 19 digits or more."""
    if pa.types.is_decimal(want) and pa.types.is_integer(column.type):
        widest = pa.decimal256(76, 0) if pa.types.is_decimal256(want) else pa.decimal128(38, 0)
        column = column.cast(widest)
    if pa.types.is_decimal(want) and pa.types.is_floating(column.type) and want.precision > EXACT_FLOAT_DIGITS:
        return _shortest_decimals(column, want)
    return column.cast(want)


def _shortest_decimals(column: pa.ChunkedArray, want: pa.DataType) -> pa.ChunkedArray:
    """Floats into a decimal wider than float64's 15 digits, each from its shortest text
    (0.3333333333333333), rounded to the scale: Arrow's cast writes out the float's binary
    value to the scale (0.333333333333333315), digits no input had."""
    quantum = decimal.Decimal(1).scaleb(-want.scale)
    exact = decimal.Context(prec=want.precision + 2)
    values = []
    for x in column.to_pylist():
        if x is not None and not math.isfinite(x):
            raise pa.ArrowInvalid(f"{x} is no decimal")
        values.append(None if x is None else decimal.Decimal(repr(x)).quantize(quantum, context=exact))
    return pa.chunked_array([pa.array(values, want)], want)


def _back_to_source_type(dtype, have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column Arrow typed ``have`` from pandas' ``dtype`` is written in the source's ``want``."""
    return dtype == object or _holds_null_type(have) or _decimal_as_number(have, want) or _large_text(have, want)


def _large_text(t: pa.DataType, want: pa.DataType) -> bool:
    """Whether a text column the source declared ``string`` (or ``string_view``, as Polars
    and DuckDB write text) comes as ``large_string``, as Arrow converts pandas' text: every
    output's text columns changed type (a schema that no longer matched the input's, a
    ``datasets`` feature ``large_string``)."""
    return pa.types.is_large_string(t) and (pa.types.is_string(want) or str(want) == "string_view")


def _decimal_as_number(t: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column the source declared decimal holds numbers (see ``sources.common._decimals_as_numbers``)."""
    return pa.types.is_decimal(want) and (pa.types.is_floating(t) or pa.types.is_integer(t))


def _holds_null_type(t: pa.DataType) -> bool:
    return pa.types.is_null(t) or (pa.types.is_dictionary(t) and pa.types.is_null(t.value_type))
