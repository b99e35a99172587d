"""The sink: the output folder of one run, built in a temporary folder and moved into place."""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
import time
import uuid

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa

from dsbuild.io.sink.arrow import _from_pandas, _to_arrow
from dsbuild.io.sink.files import (
    _chunks,
    _is_staged,
    _row_group_bytes,
    _row_groups,
    _write_staged,
    _write_table,
    _write_whole,
)
from dsbuild.io.sink.places import (
    _CLAIMED,
    _CLAIMING,
    _OWNER,
    OutputAppeared,
    OutputExists,
    _glob_reaches,
    _is_local,
    _task_folder,
    _within,
    check_writable,
)
from dsbuild.io.sink.schemas import (
    _file_schema,
    _pandas_metadata,
    _stored_schemas,
    _unify,
)
from dsbuild.io.sink.shards import (
    _dictionary_fills,
    _encode,
    _lacks,
    _merge,
    _written_shards,
)
from dsbuild.io.sources.parquet import HIVE_NULL
from dsbuild.processes import alive

SUCCESS = "_SUCCESS"


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
        if _is_local(self.fs):
            check_writable(self.path)
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
        table = _to_arrow(part.drop(columns=by).iloc[order], self.column_types)  # Arrow takes no string_view
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
                if owner.get("pid") != os.getpid() and alive(owner.get("pid")):
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
