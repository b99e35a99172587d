"""Data already at hand: the bundled samples, and frames built in Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator

from dsbuild.io.sources.common import Source, SourceError, _Spec, _with_id, to_pandas
from dsbuild.io.sources.delimited import CsvSource, _read_csv
from dsbuild.io.sources.images import images_frame
from dsbuild.records import ID

if TYPE_CHECKING:
    import dask.dataframe as dd


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
        import dask.dataframe as dd

        if not isinstance(value, (pd.DataFrame, dd.DataFrame)):
            raise ValueError(f"frame must be a pandas or Dask DataFrame, got {type(value).__name__}")
        return value

    def __repr_args__(self):
        from dsbuild.job import shown

        for name, value in super().__repr_args__():
            yield name, shown(value)


_BUNDLED_CSV = {"adult": "adult.csv.gz", "adult_test": "adult_test.csv.gz", "german_credit": "german_credit.csv.gz"}


def bundled_path(name: str) -> str:
    from importlib.resources import files

    return str(files("dsbuild.io") / "data" / _BUNDLED_CSV[name])


def _read_sample(spec: SampleSource, count_rows: bool = True) -> Source:
    if spec.name in _BUNDLED_CSV:
        path = bundled_path(spec.name)
        source = _read_csv(CsvSource(format="csv", path=path), count_rows)
        # A compressed file is read whole, as one partition: cut it as the job asks.
        if spec.partitions != source.frame.npartitions:
            source.frame = source.frame.repartition(npartitions=spec.partitions)
        return source
    import dask.dataframe as dd

    loader = _SklearnSample(spec.name)
    n = _SKLEARN_ROWS[spec.name]
    bounds = np.linspace(0, n, min(spec.partitions, n) + 1).astype(int)
    ranges = list(zip(bounds[:-1], bounds[1:]))
    frame = dd.from_map(loader, ranges, meta=loader.empty(), divisions=None, label=f"sample-{spec.name}", enforce_metadata=False)
    return Source(frame, [{"path": f"sklearn:{spec.name}", "size": n, "mtime": ""}])


def _read_frame(spec: FrameSource) -> Source:
    """Ids are the frame's ``id`` column, else ``name:row`` by the row's position in the
    whole frame, whatever its partitions: a Dask frame without one is computed once more
    first, to count its partitions' rows. A meaningful index (named, or not 0..n-1) is kept
    as a column, as ``to_parquet`` keeps it."""
    import dask

    frame, rows_per_partition = _before_string_conversion(spec.frame, spec.name), spec.rows_per_partition
    texts = None  # columns Dask's conversion made text and the partitions hold as text: made text again
    if not isinstance(frame, pd.DataFrame) and frame is not spec.frame:
        texts = [c for c, t in frame._meta.dtypes.items() if t == object]
    elif frame is not spec.frame:  # as many partitions as the Dask frame had
        rows_per_partition = max(-(-len(frame) // spec.frame.npartitions), 1)
    schema = numbers = None  # numbers: a Dask frame's decimals, made numbers in each partition
    if isinstance(frame, pd.DataFrame):
        if frame.index.name is not None or not frame.index.equals(pd.RangeIndex(len(frame))):
            frame = frame.reset_index()
        frame = _text_names(frame)
        frame, schema = _decimals_as_numbers(frame, _object_types(frame, spec.name))
        rows = len(frame)
        starts = list(range(0, rows, rows_per_partition)) or [0]
        frame = _scattered([frame.iloc[s : s + rows_per_partition] for s in starts], frame.iloc[:0])
    else:
        if frame.index.name is not None:
            frame = frame.reset_index()
        frame = _text_names(frame)
        starts = None
        rows = None
        schema = numbers = _partitions_object_types(frame, spec.name)
        if texts and numbers is not None:
            texts = [c for c in texts if c not in numbers.names or pa.types.is_string(numbers.field(c).type)]
    if ID not in frame.columns and starts is None:
        from dsbuild.stages.shapes import compute

        (lengths,) = compute(frame.map_partitions(len, meta=(None, "int64")))
        lengths = lengths.tolist()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        rows = int(sum(lengths))

    def read(columns: list[str] | None = None) -> dd.DataFrame:
        part = frame if columns is None else frame[columns]  # Dask pushes the columns down to its reads
        meta = _with_id(_as_text(_decimals_as_numbers(part._meta.copy(), numbers)[0], texts), spec.name, 0)
        return part.map_partitions(_FrameRows(spec.name, starts, numbers, texts), meta=meta, enforce_metadata=False,
                                   align_dataframes=False)

    return Source(read(), [{"path": f"frame:{spec.name}", "size": rows, "mtime": dask.base.tokenize(spec.frame)}],
                  schema=schema, ids_given=ID in frame.columns, read_columns=read)


def _before_string_conversion(frame, name: str):
    """The pandas frame ``dd.from_pandas`` made a Dask frame of, where Dask's conversion of
    object columns to text would change it: decimals became text ('1.50'), a column of
    numbers and words ('1', 'a') text too. Read as a pandas frame is, decimals are numbers
    and the mixed column is refused, named. A frame ``dd.from_delayed`` made (or any Dask
    frame whose last step is that conversion) without it: its object columns are typed
    by a pass over the partitions, as its text columns are made text again. Any other
    frame as it is."""
    expr = getattr(frame, "expr", None)
    if type(expr).__name__ == "ArrowStringConversion":
        from dask.dataframe.dask_expr import new_collection

        return new_collection(expr.frame)
    if type(expr).__name__ != "FromPandas" or not expr.operand("pyarrow_strings_enabled"):
        return frame
    held = expr.operand("frame")
    held = getattr(held, "_data", held)  # Dask wraps it
    if not isinstance(held, pd.DataFrame):
        return frame
    objects = [c for c, t in held.dtypes.items() if t == object]
    types = _object_types(_text_names(held[objects]), name) if objects else None
    return held if any(not pa.types.is_string(f.type) for f in types or []) else frame


def _partitions_object_types(frame, name: str) -> pa.Schema | None:
    """The Arrow types of a Dask frame's object columns, from every partition, as a pandas
    frame's are typed (:func:`_object_types`): decimals then become numbers in each
    partition, with one type, and a column Arrow cannot type, or typed otherwise in
    another partition, is refused here, named, not when the sink writes it."""
    import dask

    objects = [c for c, t in frame._meta.dtypes.items() if t == object]
    if not objects:
        return None
    parts = frame[objects].to_delayed()
    found = dask.compute(*[dask.delayed(_object_types)(p, name, i) for i, p in enumerate(parts)])
    fields = []
    for column in objects:
        types = {s.field(column).type for s in found if s is not None and column in s.names}
        if len(types) > 1 and all(pa.types.is_decimal(t) for t in types):
            scale = max(t.scale for t in types)
            types = {pa.decimal128(min(max(t.precision - t.scale for t in types) + scale, 38), scale)}
        if len(types) > 1:
            raise SourceError(f"frame {name!r}: column {column!r} holds {' in one partition, '.join(sorted(map(str, types)))} "
                              f"in another; a Parquet column holds one type: convert it first")
        fields += [pa.field(column, t) for t in types]
    return pa.schema(fields) if fields else None


def _text_names(frame):
    """Column names as text, as Parquet stores them (``pd.DataFrame(X)`` names its columns
    0, 1, …, and every stage reads names as text); two columns may not share a name."""
    if isinstance(frame.columns, pd.MultiIndex):
        raise SourceError("frame: its columns are a MultiIndex; flatten them first, e.g. "
                          "frame.columns = ['_'.join(map(str, c)) for c in frame.columns]")
    names = [str(c) for c in frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"frame: column {twice[0]!r} is named more than once; give every column its own name")
    return frame if names == list(frame.columns) else frame.rename(columns=dict(zip(frame.columns, names)))


def _object_types(frame: pd.DataFrame, name: str = "frame", partition: int | None = None) -> pa.Schema | None:
    """The Arrow types of the columns pandas holds as objects (lists, structs, bytes,
    decimals, dates), from all their values: a run left with no rows writes its zero-row
    shard in them, as it does for a Parquet source, not as text. A column Arrow cannot
    type is refused here, named (see :func:`_untyped`): its first rows alone let a
    different value further on fail the run in the sink."""
    fields = []
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        try:
            kind = pa.array(frame[column], from_pandas=True).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise _untyped(frame[column], name, e, partition) from None
        if not pa.types.is_null(kind):
            fields.append(pa.field(column, kind))
    return pa.schema(fields) if fields else None


def _untyped(col: pd.Series, name: str, error: Exception, partition: int | None = None) -> SourceError:
    """A column of values Parquet cannot hold in one type (1 and 'a' from a spreadsheet, a
    time beside text): the run failed when it wrote its first partition, with Arrow's
    "Could not convert 'a' with type str: tried to convert to int64" and no column named.
    ``partition``: the Dask frame's partition ``col`` is, whose rows are named in it."""
    values = col.reset_index(drop=True).dropna()
    at = (lambda row: f"{name}:{row}") if partition is None else (lambda row: f"partition {partition}, row {row},")
    kinds = values.map(type)
    other = values[kinds != kinds.iloc[0]] if len(values) else values
    if len(other):
        first, odd = values.index[0], other.index[0]
        held = (f"holds {kinds.iloc[0].__name__} and {type(other.iloc[0]).__name__} values ({at(first)} is "
                f"{values.iloc[0]!r:.40}, {at(odd)} is {other.iloc[0]!r:.40})")
    else:
        held = f"holds {kinds.iloc[0].__name__ if len(values) else 'no'} values Arrow cannot convert ({error})"
    return SourceError(f"frame {name!r}: column {col.name!r} {held}; a Parquet column holds one type: convert it first, "
                       f"e.g. frame[{col.name!r}].astype('string'), or pd.to_numeric(frame[{col.name!r}], errors='coerce')")


def _decimals_as_numbers(frame: pd.DataFrame, schema: pa.Schema | None) -> tuple[pd.DataFrame, pa.Schema | None]:
    """The frame with its columns of ``decimal.Decimal`` objects (typed by all their values,
    :func:`_object_types`) as numbers, as a Parquet source reads decimals
    (``common._decimals_as_numbers``): as objects no numeric stage took them (ranges,
    impute, outliers refused a price read from a database as "string"). The sink writes
    them back as decimals of the schema's type."""
    decimals = [f for f in schema or [] if pa.types.is_decimal(f.type) and f.name in frame.columns]  # read_columns: some
    if not decimals:
        return frame, schema
    frame = frame.copy(deep=False)
    for f in decimals:
        values = pa.array(frame[f.name], type=f.type, from_pandas=True)
        frame[f.name] = to_pandas(pa.table({f.name: values}))[f.name].set_axis(frame.index)
    return frame, schema


def _scattered(parts: list[pd.DataFrame], meta: pd.DataFrame):
    """The parts as a Dask frame: sent to the workers once, where a distributed client is
    current (in the graph, they would travel with every compute of the job)."""
    import dask
    import dask.dataframe as dd

    try:
        from distributed import default_client

        parts = default_client().scatter(parts, hash=False)
    except (ImportError, ValueError):
        pass
    return dd.from_delayed([dask.delayed(p) for p in parts], meta=meta, verify_meta=False)


def _as_text(frame: pd.DataFrame, columns: list[str] | None) -> pd.DataFrame:
    """The frame with ``columns`` (objects, all text) in Dask's text dtype, as its conversion gives them."""
    if not columns:
        return frame
    return frame.astype({c: pd.StringDtype("pyarrow") for c in columns if c in frame.columns})


class _FrameRows:
    def __init__(self, name: str, starts: list[int] | None, numbers: pa.Schema | None = None, texts: list[str] | None = None):
        self.name, self.starts, self.numbers, self.texts = name, starts, numbers, texts

    def __call__(self, part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
        start = self.starts[partition_info["number"]] if self.starts is not None and partition_info else 0
        return _with_id(_as_text(_decimals_as_numbers(part.copy(), self.numbers)[0], self.texts), self.name, start)


# Rows of scikit-learn's bundled data sets, known without importing it: scikit-learn took
# 1.7 s of the driver's start (validate, run) for the quick start's digits.
_SKLEARN_ROWS = {"digits": 1797, "breast_cancer": 569}


class _SklearnSample:
    """scikit-learn's bundled data sets: digits as PNG images with labels, breast_cancer."""

    def __init__(self, name: str):
        self.name = name

    def empty(self) -> pd.DataFrame:
        """The frame's columns; the digits' without loading scikit-learn."""
        if self.name == "digits":
            return images_frame([], []).assign(label=pd.array([], dtype="string"))
        return self((0, 0))

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
