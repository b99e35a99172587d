"""Sources: files (Parquet, CSV, JSONL, a folder of images), bundled samples or a frame
built in Python → Dask frame. One module per kind; this one picks the reader.

Every source gives an ``id`` column: the data's own ``id`` column if it has one, else
``<file>:<row>`` with the file relative to the source root and the 0-based data row.
Rows that cannot be parsed (a CSV line with too many fields, a malformed JSON line, a
value that does not fit its column's type) are not dropped: they come out marked with a
reason and their raw text, and the pipeline sends them to rejects under stage
``source``. Paths go through fsspec, so ``s3://`` and ``gs://`` work where the user has
that filesystem installed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Union

import pyarrow as pa

from pydantic import BeforeValidator, Field

from dsbuild.io.sources.common import RAW, TYPE_SAMPLE_BYTES, Source, SourceError, row_ids, to_pandas
from dsbuild.io.sources.delimited import CsvSource, _read_csv
from dsbuild.io.sources.images import IMAGE_EXTENSIONS, ImagesSource, _read_images, images_frame
from dsbuild.io.sources.jsonl import JsonlSource, _read_jsonl
from dsbuild.io.sources.memory import FrameSource, SampleSource, _read_frame, _read_sample, bundled_path
from dsbuild.io.sources.parquet import ParquetSource, _read_parquet

__all__ = [
    "RAW", "TYPE_SAMPLE_BYTES", "IMAGE_EXTENSIONS", "Source", "SourceError", "SourceSpec", "check_source_spec", "read_source",
    "row_ids", "to_pandas", "images_frame", "bundled_path",
    "ParquetSource", "CsvSource", "JsonlSource", "ImagesSource", "SampleSource", "FrameSource",
]



def _folded_format(spec):
    """The spec with its ``format`` in lower case: ``format: CSV`` (as file extensions and
    tools spell it) was "unknown format 'CSV'", one of whose choices is 'csv'."""
    if isinstance(spec, dict) and isinstance(spec.get("format"), str):
        folded = spec["format"].lower()
        if folded in _READ_AS:
            raise ValueError(f"unknown format {spec['format']!r}: {_READ_AS[folded]}")
        return {**spec, "format": folded}
    return spec


# Formats a user names by the tool that wrote them, and the source that reads them: "unknown
# format 'postgres_text'; formats: ..." left the way to the dialect to be found.
_READ_AS = {
    "postgres_text": "PostgreSQL's COPY text format is read by format: csv with dialect: postgres_text",
    "postgres": "PostgreSQL's COPY exports are read by format: csv (with dialect: postgres_text for its default text format)",
    "tsv": "tab-separated text is read by format: csv (a .tsv file with tabs; else set sep: \"\\t\")",
    "text": "delimited text is read by format: csv (PostgreSQL's COPY text format: with dialect: postgres_text)",
    "json": "JSON lines and a .json file holding one array of objects are read by format: jsonl",
    "ndjson": "JSON lines are read by format: jsonl",
}


SourceSpec = Annotated[
    Union[ParquetSource, CsvSource, JsonlSource, ImagesSource, SampleSource, FrameSource],
    Field(discriminator="format"),
    BeforeValidator(_folded_format),
]


def check_source_spec(spec: dict, where: str = "") -> None:
    """A source named inside a stage (decontaminate's reference, aggregate_labels'
    annotations), checked as the job's own source is when the job is loaded: a misspelt
    option was pydantic's traceback when the source was read."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(SourceSpec).validate_python(spec)
    except ValidationError as e:
        first = e.errors()[0]
        at = ".".join(str(p) for p in first["loc"][1:]) or "format"
        if first["type"] == "extra_forbidden":
            import difflib

            fields = _FORMATS[first["loc"][0]].model_fields if first["loc"][0] in _FORMATS else {}
            close = difflib.get_close_matches(at, list(fields), n=1)
            raise ValueError(f"{where}: " * bool(where) + f"unknown option {at!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + (f"; valid options: {', '.join(fields)}" if fields else "")) from None
        raise ValueError(f"{where}." * bool(where) + f"{at}: {first['msg']} (got {first.get('input')!r})") from None


_FORMATS = {"parquet": ParquetSource, "csv": CsvSource, "jsonl": JsonlSource, "images": ImagesSource, "sample": SampleSource,
            "frame": FrameSource}


def read_source(spec, count_rows: bool = True, id_column: str | None = None) -> Source:
    """Read any source spec (a model or a plain dict) into a :class:`Source`.

    ``count_rows=False`` skips the pass that numbers rows in split text files: the
    frame's schema is right but its ids are not (for ``dsbuild validate``). ``id_column``
    (the job's ``columns.id``) is read as text by a text source, as its ``id`` column is.
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
    import dask
    from dask.dataframe.utils import pyarrow_strings_enabled

    text = pyarrow_strings_enabled()
    with dask.config.set({"dataframe.convert-string": False}):
        if spec.format in ("csv", "jsonl"):
            source = reader(spec, count_rows, id_column)
        else:
            source = reader(spec, count_rows) if spec.format == "sample" else reader(spec)
    return _text_as_dask_makes_it(source) if text else source


def _text_as_dask_makes_it(source: Source) -> Source:
    """The source with its text columns as Dask's ``dataframe.convert-string`` (on, out of
    a run) makes them, and nothing else: its conversion of every object column made lists
    (embeddings), structs, dates and bytes text ('[1. 2.]') for ``read_source()`` called
    from Python, where a run (which turns it off) keeps them."""
    import pandas as pd

    meta = source.frame._meta
    as_text = pd.StringDtype("pyarrow")
    text = [f.name for f in source.schema or [] if f.name in meta.columns and meta[f.name].dtype != as_text
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
    if not text:
        return source
    return replace(source, frame=source.frame.astype(dict.fromkeys(text, as_text)))
