"""The sink: sharded Parquet written by the workers, finished by a small driver step.

Each partition writes its own files (split so none exceeds the shard limits) into a
temporary folder; after the one compute, small neighbouring files are merged into
shards near the target size, files are numbered in order, schemas are unified (rejects
from different stages may disagree on a column's type) and the folder is moved into
place. A reader never sees a half-written output: ``_SUCCESS`` is written last, inside
the temporary folder, before the move.
"""

from __future__ import annotations

import base64
import decimal
import hashlib
import itertools
import json
import math
import os
import posixpath
import re
import socket
import threading
import time
import uuid

import dask
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.utils import glob_translate

from dsbuild.io.sources.common import EXACT_FLOAT_DIGITS
from dsbuild.io.sources.parquet import HIVE_NULL
from dsbuild.records import ID, REASON, sniff_image_format

SUCCESS = "_SUCCESS"


class OutputExists(FileExistsError):
    pass


class OutputAppeared(OutputExists):
    """The output's place was taken while the run ran; its finished output is kept."""


class Sink:
    """Where one run's output goes, and the temporary folder it is built in."""

    def __init__(self, path: str, *, shard_rows: int, shard_bytes: int, compression: str, overwrite: bool = False,
                 key: str | None = None, partition_by: list[str] | tuple[str, ...] = ()):
        self.fs, _, (self.path,) = fsspec.get_fs_token_paths(path)
        self.path = self.path.rstrip("/")
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.compression = None if compression == "none" else compression
        self.overwrite = overwrite
        self.partition_by = list(partition_by)
        self.tmp = f"{self.path}.tmp-{key or uuid.uuid4().hex[:12]}"
        self.run = uuid.uuid4().hex[:12]  # tells this run's claim from another's in the same process
        self.claimed = False  # set by claim(); the tasks' copies then never make the folder again (_task_folder)
        # The source's Arrow types by column, set by the pipeline once it has read the
        # source: what the files hold as dates, decimals, lists and structs (see _to_arrow).
        self.column_types: dict[str, pa.DataType] = {}

    def check_target(self) -> None:
        """Refuse to replace a non-empty folder unless asked, and, asked, anything but an
        earlier output (a folder of other work was deleted whole); checked before any work."""
        if not self.fs.exists(self.path):
            return
        if self.fs.isfile(self.path):
            raise OutputExists(f"{self.path} is a file, not an output folder; write the output elsewhere")
        if not self.fs.ls(self.path):
            return
        if not self.overwrite:
            raise OutputExists(f"{self.path} exists and is not empty; pass --overwrite (overwrite=True) to replace it")
        if not self._holds_an_output():
            raise OutputExists(f"{self.path} is not a dsbuild output (it has no manifest.json that dsbuild wrote), and "
                               "--overwrite replaces only an earlier output; delete it yourself, or write the output elsewhere")

    def _holds_an_output(self) -> bool:
        """Whether the folder is an earlier output: its manifest.json is one dsbuild wrote.
        A ``_SUCCESS`` (Spark and Hadoop write one into every output) or a web app's
        ``manifest.json`` is no sign of one: an overwrite deleted such folders whole."""
        try:
            with self.fs.open(posixpath.join(self.path, "manifest.json")) as f:
                manifest = json.load(f)
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return False
        return isinstance(manifest, dict) and {"dsbuild", "ledger"} <= manifest.keys()

    def check_apart_from(self, source, others: list[tuple[str, object]] = ()) -> None:
        """Refuse an output that a Parquet source's folder holds (the next run would read
        it as input), and an overwrite that would delete the job's own input: its source,
        or a file a stage reads (``others``: (where in the job, path), e.g. annotations)."""
        if not _is_local(self.fs):
            return
        out = os.path.abspath(self.path)
        for where, paths in [("source.path", getattr(source, "path", None)), *others]:
            for path in [] if paths is None else [paths] if isinstance(paths, str) else paths:
                text = self.fs._strip_protocol(path)
                fixed = re.split(r"[*?[]", text, maxsplit=1)[0]
                src = os.path.abspath(fixed if fixed == text or fixed.endswith("/") else os.path.dirname(fixed))
                globbed = fixed != text
                if (where == "source.path" and source.format == "parquet" and _within(out, src)
                        and (_glob_reaches(text, out) if globbed else os.path.isdir(src))):
                    raise OutputExists(f"sink.path {self.path} is inside source.path {path}: the next run would read "
                                       "this output as its input; write it elsewhere")
                if self.overwrite and _within(src, out):
                    raise OutputExists(f"{where} {path} is inside sink.path {self.path}: overwriting the output would "
                                       "delete the input; write it elsewhere")

    def check_written_beside(self, files: list[tuple[str, str]]) -> None:
        """Refuse a file a stage writes (``files``: (where in the job, path)) inside the
        output folder: the run builds the output in a temporary folder and moves it into
        place at the end, so the file was replaced without a word."""
        if not _is_local(self.fs):
            return
        out = os.path.abspath(self.path)
        for where, path in files:
            if _within(os.path.abspath(self.fs._strip_protocol(path)), out):
                raise OutputExists(f"{where} {path} is inside sink.path {self.path}, which the run replaces when it "
                                   "finishes: the file would be lost; write it beside the output")

    def staging(self, kind: str, group: str) -> str:
        return posixpath.join(self.tmp, "_staging", kind, group)

    # checkpoints: kept rows before stage i, and a JSON file written when they are complete
    def checkpoint(self, i: int) -> str:
        return posixpath.join(self.tmp, "_checkpoints", f"before-{i:03d}")

    def write_checkpoint(self, i: int, state: dict) -> None:
        """The checkpoint's state, once its rows are written (there may be none: then its
        folder is made here)."""
        _write_whole(self.fs, self.checkpoint(i) + ".json", json.dumps(state, default=str).encode())

    def has_checkpoints(self) -> bool:
        return self.last_checkpoint() is not None

    def last_checkpoint(self) -> tuple[int, dict] | None:
        folder = posixpath.join(self.tmp, "_checkpoints")
        if not self.fs.exists(folder):
            return None
        done = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        for path in reversed(done):  # the last complete one: a killed driver may have left one empty
            try:
                with self.fs.open(path) as f:
                    state = json.load(f)
            except ValueError:
                continue
            return int(posixpath.basename(path)[len("before-") : -len(".json")]), state
        return None

    def drop_staging_after(self, runs: int) -> None:
        """Forget what an interrupted run wrote after its last complete checkpoint."""
        rejects = posixpath.join(self.tmp, "_staging", "rejects")
        for path in self.fs.ls(rejects, detail=False) if self.fs.exists(rejects) else []:
            if int(posixpath.basename(path)) >= runs:
                self.fs.rm(path, recursive=True)
        # staged kept rows, and the shards of a finish the interrupt cut short
        for data in (posixpath.join(self.tmp, "_staging", "data"), posixpath.join(self.tmp, "data")):
            if self.fs.exists(data):
                self.fs.rm(data, recursive=True)

    def write_partition(self, part: pd.DataFrame, folder: str, index: int, by: list[str] = ()) -> list[dict]:
        """Write one partition as one or more files under the shard limits (runs on a worker);
        with ``by``, each group of equal values under its own ``col=value/`` folder.

        A small file (:meth:`_small`) is merged with its neighbours by :meth:`finish`, so it
        is staged as uncompressed Arrow IPC (a memory copy) and encoded to Parquet once,
        there: staging it as Parquet encoded and hashed every such row twice, and decoded it
        once (with 16-32 MiB partitions of text, the merge was a sixth of the job's task time).
        Any other file is written here as Parquet, and :meth:`finish` only renames it.
        """
        if part.empty:
            return []
        if by:
            return self._write_groups(part, folder, index, list(by))
        return self._write_table(_to_arrow(part, self.column_types), folder, index)

    def _write_groups(self, part: pd.DataFrame, folder: str, index: int, by: list[str]) -> list[dict]:
        """Each group of equal ``by`` values of a partition under its own ``col=value/`` folder.

        The partition becomes Arrow once, sorted by group, and each group is a slice of it:
        made into a frame and converted on its own, a partition of 50,000 rows in 2,000
        groups took 4 s of CPU; every group also had its column types guessed from its own
        rows alone.
        """
        codes = part.groupby(by, dropna=False, sort=True, observed=True).ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        starts = np.flatnonzero(np.diff(codes[order], prepend=-1))
        table = _to_arrow(part.drop(columns=by), self.column_types).take(order)
        keys = part[by].iloc[order[starts]].itertuples(index=False, name=None)
        out = []
        for start, end, values in zip(starts, [*starts[1:], len(order)], keys):
            group = hive_folder(by, values)
            files = self._write_table(table.slice(start, end - start), posixpath.join(folder, group), index)
            out.extend({**f, "group": group} for f in files)
        return out

    def _write_table(self, table: pa.Table, folder: str, index: int) -> list[dict]:
        _task_folder(self.fs, folder, self._root())
        out = []
        budget = _row_group_bytes()
        for k, chunk in enumerate(_chunks(table, self.shard_rows, self.shard_bytes)):
            stem = posixpath.join(folder, f"{index:06d}-{k:04d}")
            memory = sum(g.nbytes for g in _row_groups([chunk], budget))
            if self._small({"rows": chunk.num_rows, "memory": memory}):
                out.append(_write_staged(self.fs, chunk, stem + ".arrow", memory))
            else:
                out.append(_write_table(self.fs, chunk, stem + ".parquet", self.compression))
        return out

    def _small(self, f: dict) -> bool:
        """A file that :meth:`finish` merges with small neighbours rather than keeps as it is:
        under a quarter of the row limit and a sixteenth of the byte limit (16 MiB by default).

        Merging costs another write and read of every byte to save readers one file open,
        which matters less the larger the file: partitions of images (22-33 MiB) paid more
        for their merge after the last task than a reader saves.
        """
        return f["rows"] * 4 < self.shard_rows and f["memory"] * 16 < self.shard_bytes

    def write_scratch(self, part: pd.DataFrame, folder: str, index: int) -> list[dict]:
        """Write one partition of a checkpoint (runs on a worker).

        Checkpoints are read back once or twice and then deleted, so they are written for
        speed, not size: one uncompressed Arrow IPC file per partition, which costs a
        memory copy to write and is memory-mapped to read (Parquet took ~5x the CPU).
        """
        if part.empty:
            return []
        table = _from_pandas(part, self.column_types)
        _task_folder(self.fs, folder, self._root())
        path = posixpath.join(folder, f"{index:06d}.arrow")
        with self.fs.open(path, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        return [{"path": path, "rows": table.num_rows, "bytes": self.fs.size(path), "memory": table.nbytes, "sha256": None}]

    def _root(self) -> str | None:
        """The temporary folder a task may write into only while it is there: a claimed one."""
        return self.tmp if self.claimed else None

    def read_scratch(self, path: str) -> pa.Table:
        """A checkpoint file written by :meth:`write_scratch` (memory-mapped where local)."""
        if _is_local(self.fs):
            with pa.memory_map(path) as source:
                return pa.ipc.open_file(source).read_all()
        with self.fs.open(path, "rb") as f:
            return pa.ipc.open_file(f).read_all()

    def drop_checkpoints_before(self, i: int) -> None:
        """Checkpoints older than a complete one are never read again: free the disk."""
        folder = posixpath.join(self.tmp, "_checkpoints")
        for path in self.fs.ls(folder, detail=False) if self.fs.exists(folder) else []:
            name = posixpath.basename(path)
            if name.startswith("before-") and int(name[len("before-"):][:3]) < i:
                self.fs.rm(path, recursive=True)

    def finish(self, kind: str, staged: list[dict], empty: list[pd.DataFrame], cast_conflicts_to_string: bool) -> tuple[list[dict], pa.Schema]:
        """Merge small files, unify schemas, number shards ``part-00000.parquet``.

        ``staged`` is in output order. Only small files (:meth:`_small`) are merged with
        their neighbours, so the extra writing stays small; the rest are renamed. Rewrites
        run as tasks on the cluster. With no rows at all, one empty shard carries the
        schema, so readers still find a data set.
        """
        schemas = _stored_schemas(self.fs, staged)
        by = self.partition_by if kind == "data" else []
        placeholders = [_to_arrow(e.drop(columns=by), self.column_types).schema for e in empty]
        schema = _unify(schemas, cast_conflicts_to_string, placeholders)
        first = _file_schema(self.fs, staged[0]["path"]) if staged else (placeholders[0] if placeholders else schema)
        schema = schema.with_metadata(_pandas_metadata(first, schemas[0] if staged else first, schema))
        folder = posixpath.join(self.tmp, kind)
        self.fs.makedirs(folder, exist_ok=True)
        if not staged:
            shard = _write_table(self.fs, schema.empty_table(), posixpath.join(folder, "part-00000.parquet"), self.compression)
            return [_public(shard, self.tmp)], schema
        # each partition folder numbers its own shards, in output order
        order = sorted(range(len(staged)), key=lambda i: _folder_of(staged[i]))
        staged, schemas = [staged[i] for i in order], [schemas[i] for i in order]
        fills = _dictionary_fills(staged)
        done = posixpath.join(self.tmp, "_staging", f"done-{kind}-{uuid.uuid4().hex[:8]}")  # this finish's alone
        shards, memory, numbered = [], [], {}  # a shard's record, or the (target, function, args) that writes it
        for group in self._groups(staged):
            where = _folder_of(staged[group[0]])
            numbered[where] = numbered.get(where, -1) + 1
            target = posixpath.join(folder, where, f"part-{numbered[where]:05d}.parquet")
            alone = staged[group[0]]
            memory.append(sum(staged[g]["memory"] for g in group))
            if len(group) == 1 and schemas[group[0]] == schema and (_is_staged(alone["path"]) or not _lacks(alone, fills)):
                if _is_staged(alone["path"]):
                    shards.append((target, _encode, (alone["path"], target, self.compression, schema.metadata, fills,
                                                     posixpath.join(done, f"{len(shards)}.pickle"))))
                    continue
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
                self.fs.mv(alone["path"], target)
                shards.append({**alone, "path": target})
            else:
                shards.append((target, _merge, ([staged[g]["path"] for g in group], target, schema, self.compression, fills,
                                                posixpath.join(done, f"{len(shards)}.pickle"))))
        return [_public(s, self.tmp) for s in _written_shards(self.fs, shards, memory, self._root())], schema

    def _groups(self, staged: list[dict]) -> list[list[int]]:
        """Runs of neighbouring small files to merge into one shard (never across partition folders)."""
        small = self._small
        groups, rows, memory = [], 0, 0
        for i, f in enumerate(staged):
            same_folder = groups and _folder_of(staged[groups[-1][0]]) == _folder_of(f)
            joins = same_folder and small(f) and all(small(staged[g]) for g in groups[-1])
            if joins and rows + f["rows"] <= self.shard_rows and memory + f["memory"] <= self.shard_bytes:
                groups[-1].append(i)
                rows, memory = rows + f["rows"], memory + f["memory"]
            else:
                groups.append([i])
                rows, memory = f["rows"], f["memory"]
        return groups

    def write_text(self, name: str, text: str) -> None:
        with self.fs.open(posixpath.join(self.tmp, name), "w") as f:
            f.write(text)

    def commit(self) -> None:
        """Mark success inside the temporary folder, then move it into place. What appeared
        at the output's place since the run began (another job's output, a folder of other
        work) is refused as it would have been at the start: it was replaced silently. The
        finished output then stays in the temporary folder, whole, for the user to move."""
        for scratch in ("_staging", "_checkpoints", _OWNER):
            if self.fs.exists(posixpath.join(self.tmp, scratch)):
                self.fs.rm(posixpath.join(self.tmp, scratch), recursive=True)
        _CLAIMED.discard(self.run)
        self.write_text(SUCCESS, "")
        try:
            self.check_target()  # again: something may have been written there since the run began
        except OutputExists as e:
            raise OutputAppeared(f"{e} (it appeared while this run ran); this run's output is whole in {self.tmp}: "
                                 "move it where you want it") from None
        old = None
        if self.fs.exists(self.path):
            old = f"{self.path}.old-{uuid.uuid4().hex[:12]}"
            self.fs.mv(self.path, old, recursive=True)
        self.fs.mv(self.tmp, self.path, recursive=True)
        if old:
            self.fs.rm(old, recursive=True)

    def abort(self) -> None:
        """Remove the temporary folder. After a task fails, the job's other tasks may still
        be writing into it (a failure does not stop them), and a removal that meets a file
        written meanwhile fails ("Directory not empty"): it is retried while they finish."""
        _CLAIMED.discard(self.run)
        for wait in (0.1, 0.3, 1.0, 2.0, None):
            if not self.fs.exists(self.tmp):
                return
            try:
                self.fs.rm(self.tmp, recursive=True)
                return
            except OSError:
                if wait is None:
                    raise
                time.sleep(wait)

    # one run at a time: the owner of the temporary folder ---------------------------------
    def claim(self) -> None:
        """Mark the temporary folder as this process's, refusing it while another live run
        on this machine holds it: two runs of one job share the folder, and each deleted the
        other's files (``Failed to open … before-002/000012.arrow``). That holds for two
        runs in one process too (two threads of a notebook), told apart by ``run``; a claim
        this process left without releasing it (a run that died) is not a live run's."""
        with _CLAIMING:
            owner = self._owner()
            if owner and owner.get("host") == socket.gethostname() and owner.get("run") != self.run:
                if owner.get("pid") != os.getpid() and _alive(owner.get("pid")):
                    raise OutputExists(f"another run of this job (pid {owner['pid']}, since {owner.get('started')}) is "
                                       f"writing {self.tmp}; wait for it to finish, or stop it")
                if owner.get("pid") == os.getpid() and owner.get("run") in _CLAIMED:
                    raise OutputExists(f"another run of this job in this process (since {owner.get('started')}) is "
                                       f"writing {self.tmp}; wait for it to finish, or stop it")
            self.fs.makedirs(self.tmp, exist_ok=True)
            self.write_text(_OWNER, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run": self.run,
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
            _CLAIMED.add(self.run)
            self.claimed = True

    def release(self) -> None:
        """Give up the folder but keep its checkpoints (an interrupted or refused resume)."""
        _CLAIMED.discard(self.run)
        if self.fs.exists(posixpath.join(self.tmp, _OWNER)):
            self.fs.rm(posixpath.join(self.tmp, _OWNER))

    def _owner(self) -> dict | None:
        try:
            with self.fs.open(posixpath.join(self.tmp, _OWNER)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    def other_runs(self) -> list[str]:
        """Temporary folders beside the output left by other versions of this job."""
        parent, name = posixpath.split(self.path.rstrip("/"))
        try:
            found = self.fs.ls(parent or ".", detail=False)
        except FileNotFoundError:
            return []
        return sorted(p for p in found if posixpath.basename(p).startswith(f"{name}.tmp-") and p.rstrip("/") != self.tmp.rstrip("/"))


_OWNER = "_owner.json"
_CLAIMING = threading.Lock()  # a claim's look and write, against another thread's claim between them
_CLAIMED: set[str] = set()  # the runs of this process that hold their temporary folder


class RunStopped(FileNotFoundError):
    """A task found its run's temporary folder removed: the run was stopped meanwhile."""


def _task_folder(fs, folder: str, root: str | None) -> None:
    """Make ``folder`` for a task's file, unless the run's temporary folder ``root`` is gone.

    A run that stops (cancelled, failed) removes its temporary folder while the tasks it
    started still run on the workers (Dask does not stop a running task, and a scheduler
    of one's own keeps them going): making their folder made the temporary folder again,
    and a staged file or a merge's record was left beside the output after ``dsbuild
    status --cancel``. Below ``root`` each folder is made alone, never its parents: a
    stop that removes the folder just after the look at it would have it made again."""
    if root is not None and not fs.exists(root):
        raise RunStopped(f"{root} is gone: the run this task belongs to was stopped")
    if root is None or not _is_local(fs) or not _within(folder, root):  # an object store has no folders to remove
        fs.makedirs(folder, exist_ok=True)
        return
    path = root.rstrip("/")
    for name in filter(None, folder[len(path):].split("/")):
        path = posixpath.join(path, name)
        try:
            fs.mkdir(path, create_parents=False)
        except FileExistsError:
            pass
        except FileNotFoundError:  # a folder above it is gone since the look
            raise RunStopped(f"{root} is gone: the run this task belongs to was stopped") from None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _folder_of(staged: dict) -> str:
    """The partition folder a staged file belongs in ('' without partition_by)."""
    return staged.get("group") or ""


def hive_folder(columns: list[str], values: tuple) -> str:
    """``a=1/b=x%2Fy``: values URL-escaped and a missing one as Hive's default, as Spark,
    Hive and Arrow write partition folders and read them back."""
    from urllib.parse import quote

    return "/".join(
        f"{c}={HIVE_NULL if pd.isna(v) else quote(str(v), safe='')}" for c, v in zip(columns, values)
    )


def _public(shard: dict, root: str) -> dict:
    """A shard as the manifest lists it: path relative to the output, no internals."""
    out = {k: v for k, v in shard.items() if k not in ("path", "memory", "group", "dictionary", "schema")}
    return {"file": posixpath.relpath(shard["path"], root), **out}


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
    """Whether a text column the source declared ``string`` comes as ``large_string``, as
    Arrow converts pandas' text: every output's text columns changed type (a schema that
    no longer matched the input's, a ``datasets`` feature ``large_string``)."""
    return pa.types.is_large_string(t) and pa.types.is_string(want)


def _decimal_as_number(t: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column the source declared decimal holds numbers (see ``sources.common._decimals_as_numbers``)."""
    return pa.types.is_decimal(want) and (pa.types.is_floating(t) or pa.types.is_integer(t))


def _holds_null_type(t: pa.DataType) -> bool:
    return pa.types.is_null(t) or (pa.types.is_dictionary(t) and pa.types.is_null(t.value_type))


def _glob_reaches(pattern: str, out: str) -> bool:
    """Whether a glob matches a shard the output at ``out`` writes, as fsspec reads it
    (``*`` within a folder, ``**`` across them): ``data/bc*.parquet`` does not reach
    ``data/out/``, though the folder it starts from holds the output."""
    shards = [f"{out}/{kind}/part-00000.parquet" for kind in ("data", "rejects")] + [f"{out}/data/k=v/part-00000.parquet"]
    matches = re.compile(glob_translate(pattern)).match
    return any(matches(shard) for shard in shards)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _write_table(fs, table: pa.Table, path: str, compression) -> dict:
    """Write one Parquet file; return its row count, size and SHA-256 for the manifest."""
    return _write_batches(fs, table.schema, [table], path, compression)


def _write_batches(fs, schema: pa.Schema, tables, path: str, compression) -> dict:
    """Write ``tables`` (an iterable, consumed once) as one Parquet file, hashed as it is
    written: nothing larger than a row group is held, on top of one input table.

    Row groups hold up to a million rows or 128 MiB, less on a worker with little memory
    (small groups cost writers and readers dearly: dictionaries restart in every group).
    Ids and binary columns (images) skip dictionary encoding: their values are unique or
    large. Binary columns of encoded images (PNG, JPEG, WebP, GIF) are stored without
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


_COMPRESSED_IMAGES = ("png", "jpeg", "webp", "gif")


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


def _written_once(fs, done: str, write, inputs: list[str], root: str | None = None) -> dict:
    """``write()``'s shard record, made once even if the task runs again: its inputs are
    removed once the shard is written (the disk holds each row once), so a task that Dask
    retried after that (its worker died before it reported) found them gone and failed
    the run. The record is kept at ``done`` before any input goes."""
    import pickle

    if fs.exists(done):
        with fs.open(done, "rb") as f:
            record = pickle.load(f)
    else:
        record = write()
        _write_whole(fs, done, pickle.dumps(record), root)
    for path in inputs:
        if fs.exists(path):
            fs.rm(path)
    return record


def _encode(fs, path: str, target: str, compression, metadata: dict, fills: dict, done: str, root: str | None = None) -> dict:
    """A staged file alone in its shard, written as the Parquet a direct write makes."""

    def write():
        table = _fill_dictionaries(_read_staged(fs, path), fills).replace_schema_metadata(metadata)
        return _write_table(fs, table, target, compression)

    return _written_once(fs, done, write, [path], root)


def _file_schema(fs, path: str) -> pa.Schema:
    """A staged or Parquet file's schema as written, metadata and all."""
    with fs.open(path, "rb") as f:
        return pa.ipc.open_file(f).schema if _is_staged(path) else pq.read_schema(f)


def _pandas_metadata(written: pa.Schema, normalized: pa.Schema, schema: pa.Schema) -> dict:
    """The pandas metadata every shard carries, so ``pd.read_parquet`` gives the same
    dtypes (nullable integers, booleans, text) whichever shards were merged or renamed:
    the first file's, for the columns it holds with the output's type (merged shards
    had none, renamed ones their own, so the dtypes changed with the partitioning)."""
    raw = (written.metadata or {}).get(b"pandas")
    if raw is None:
        return {}
    doc = json.loads(raw)
    same = {f.name for f in schema if f.name in normalized.names and normalized.field(f.name).type == f.type}
    doc["columns"] = [c for c in doc.get("columns", []) if c.get("name") in same]
    return {b"pandas": json.dumps(doc).encode()}


def _schema_text(schema: pa.Schema) -> str:
    """A written file's schema (without metadata) as text, for its record: a checkpoint's
    JSON keeps the records, and :meth:`Sink.finish` reads the schemas from them."""
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode("ascii")


def _stored_schemas(fs, staged: list[dict]) -> list[pa.Schema]:
    """Each file's schema as Parquet stores it, from the record its writing task made, each
    distinct one converted once: opening every file to read it cost a partition_by output's
    finish 1.6-1.8 s per 2,000 files. A record without one (a checkpoint an older version
    wrote) has its file read."""
    stored: dict[str, pa.Schema] = {}
    out = []
    for f in staged:
        text = f.get("schema")
        if not isinstance(text, str):  # None, or NaN from a frame of records
            out.append(_read_schema(fs, f["path"]))
            continue
        if text not in stored:
            stored[text] = _as_parquet_stores(pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))))
        out.append(stored[text])
    return out


def _read_schema(fs, path: str) -> pa.Schema:
    """A staged file's schema as Parquet stores it, or a Parquet file's."""
    with fs.open(path, "rb") as f:
        if not _is_staged(path):
            return pq.read_schema(f).remove_metadata()
        schema = pa.ipc.open_file(f).schema
    return _as_parquet_stores(schema)


def _as_parquet_stores(schema: pa.Schema) -> pa.Schema:
    """``schema`` as a Parquet file of it reads back, so shards' schemas unify as if every
    file had been written as Parquet."""
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    return pq.read_schema(pa.BufferReader(buffer.getvalue())).remove_metadata()


def _unify(schemas: list[pa.Schema], cast_conflicts_to_string: bool, placeholders: list[pa.Schema] = ()) -> pa.Schema:
    """One schema for all files: nulls take the type seen elsewhere; a true conflict
    (int here, text there) becomes text in rejects, and is an error in kept data.

    ``placeholders`` (the schemas of the frames' zero-row placeholders) only name the
    columns and types that no file has: files' own types win, so that no file is
    rewritten for a placeholder's wider dictionary index, say.
    """
    fields: dict[str, pa.DataType] = {}
    order: list[str] = []
    for schema in placeholders:
        for f in schema:
            if f.name not in order:
                order.append(f.name)
    for schema in schemas:
        for f in schema:
            if f.name not in fields:
                fields[f.name] = f.type
                if f.name not in order:
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
    for schema in placeholders:
        for f in schema:
            if _holds_null_type(fields.get(f.name, pa.null())):
                fields[f.name] = f.type
    if REASON in order:
        order = [n for n in order if n not in (REASON, "stage")] + [REASON, "stage"]
    return pa.schema([pa.field(n, pa.string() if _holds_null_type(fields[n]) else fields[n]) for n in order])


def _merge(fs, paths: list[str], target: str, schema: pa.Schema, compression, fills: dict, done: str, root: str | None = None) -> dict:
    """Small files into one shard, a row group at a time: a shard may be larger than a
    worker can hold (256 MiB of 4 MiB files on a 400 MiB worker was killed, 4 times)."""

    def tables():
        for p in paths:
            if _is_staged(p):
                yield _fill_dictionaries(_conform(_read_staged(fs, p), schema), fills)
                continue
            with fs.open(p, "rb") as f:
                reader = pq.ParquetFile(f)
                for g in range(reader.num_row_groups):
                    yield _fill_dictionaries(_conform(reader.read_row_group(g), schema), fills)

    return _written_once(fs, done, lambda: _write_batches(fs, schema, tables(), target, compression), paths, root)


# A task of the finish writes shards until they hold this many bytes (in memory) or this
# many shards: a task per shard made the finish of a partition_by output, 2,000 shards of
# ~100 rows, 2,000 tasks whose scheduling and graph cost more than their writes.
_TASK_BYTES = 64 * 2**20
_TASK_SHARDS = 64


def _written_shards(fs, shards: list, memory: list[int], root: str | None) -> list[dict]:
    """Every shard's record: the ones still to write (``(target, function, args)``) written
    by tasks that each take a run of neighbours up to ``_TASK_BYTES`` or ``_TASK_SHARDS``; a
    large shard has a task of its own, so large merges still run side by side."""
    batches, size = [], 0
    for i, shard in enumerate(shards):
        if isinstance(shard, dict):
            continue
        if not batches or size + memory[i] > _TASK_BYTES or len(batches[-1]) >= _TASK_SHARDS:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += memory[i]
    jobs = [dask.delayed([shards[i] for i in batch], traverse=False) for batch in batches]  # holds no collection to look for
    written = dask.compute(*[dask.delayed(_write_shards)(fs, batch, root) for batch in jobs])
    out = list(shards)
    for batch, records in zip(batches, written):
        for i, record in zip(batch, records):
            out[i] = record
    return out


def _write_shards(fs, jobs: list[tuple], root: str | None) -> list[dict]:
    """Shards one after the other, each in its folder (made here: a partition_by output has
    one per group, and the driver made 2,000 of them one by one; not once the run's
    temporary folder ``root`` is gone, see :func:`_task_folder`)."""
    out = []
    for target, function, args in jobs:
        _task_folder(fs, posixpath.dirname(target), root)
        out.append(function(fs, *args, root))
    return out


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


def _dictionary_fills(staged: list[dict]) -> dict:
    """A value for each dictionary column that some file has and another lacks.

    A shard whose categorical column holds only nulls has an empty dictionary, which
    pandas reads as categories of dtype object where the other shards' are str; Dask then
    cannot concatenate the shards ("dtype of categories must be the same"). Such a shard
    is written with one value that the output holds elsewhere, used by no row, so the
    categories of the whole output stay the ones its rows have.
    """
    fills = {}
    for f in staged:
        for name, value in f.get("dictionary", {}).items():
            if value is not None:
                fills.setdefault(name, value)
    return {name: value for name, value in fills.items() if any(_lacks(f, {name: value}) for f in staged)}


def _lacks(f: dict, fills: dict) -> bool:
    return any(f.get("dictionary", {}).get(name) is None for name in fills)


def _fill_dictionaries(table: pa.Table, fills: dict) -> pa.Table:
    for name, value in fills.items():
        if name not in table.column_names or not pa.types.is_dictionary(table.schema.field(name).type):
            continue
        column = table[name]
        if all(len(c.dictionary) for c in column.chunks):
            continue
        values = pa.array([value], column.type.value_type)
        chunks = [c if len(c.dictionary) else pa.DictionaryArray.from_arrays(c.indices, values) for c in column.chunks]
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), pa.chunked_array(chunks, column.type))
    return table


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
