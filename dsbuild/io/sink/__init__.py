"""The sink: sharded Parquet written by the workers, finished by a small driver step.

Each partition writes its own files (split so none exceeds the shard limits) into a
temporary folder; after the one compute, small neighbouring files are merged into
shards near the target size, files are numbered in order, schemas are unified (rejects
from different stages may disagree on a column's type) and the folder is moved into
place. A reader never sees a half-written output: ``_SUCCESS`` is written last, inside
the temporary folder, before the move.

The modules: ``folder`` (the Sink), ``places`` (where an output may go, and the claim on
its temporary folder), ``arrow`` (partitions as Arrow), ``files`` (one file written or
read), ``schemas`` (the output's one schema), ``shards`` (the finish's merges)."""

from dsbuild.io.sink.arrow import _from_pandas, _to_arrow  # noqa: F401
from dsbuild.io.sink.files import _row_groups, _write_table  # noqa: F401
from dsbuild.io.sink.folder import SUCCESS, Sink, hive_folder  # noqa: F401
from dsbuild.io.sink.places import (  # noqa: F401
    _OWNER,
    OutputAppeared,
    OutputExists,
    OutputNotWritable,
    RunStopped,
    _is_local,
)
from dsbuild.io.sink.schemas import _read_schema  # noqa: F401
from dsbuild.io.sink.shards import _encode, _merge  # noqa: F401
