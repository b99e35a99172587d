"""JobSpec → Dask graph → written output, with the ledger that accounts for every row.

The graph is built stage by stage: each stage returns its input with rejected rows
marked, the pipeline splits kept from rejected and hands the kept rows on. Kept rows,
rejects and every stage's counts are then computed together — one compute, so shared
upstream work runs once and nothing is collected in the driver but counts. Fit→apply
stages compute their (small) statistics while the graph is built.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import dask
import numpy as np
import pandas as pd

import dsbuild
from dsbuild.io.sink import OutputAppeared, OutputExists, Sink
from dsbuild.io.sources import RAW, read_source
from dsbuild.io.sources.advice import inexact_decimals, rejected_by_type_sample
from dsbuild.job import JobSpec, _described, load_job
from dsbuild.kernels.dtypes import blank_text
from dsbuild.progress import ProgressBar
from dsbuild.records import ID, REASON, STAGE, stable_hash64
from dsbuild.stages.base import ADDED, GONE, METRIC, REJECT, Shapes, Stage, StageError, _did_you_mean
from dsbuild.watch import WorkerKilled, WorkersLost, killed_message, workers_watched

INTERNAL = (REJECT, ADDED, RAW)

# p2p: Dask's shuffle that streams through disk, so memory stays bounded. No string
# conversion: sources and checkpoints already give every partition its final dtypes, and
# converting the object-typed marks at every read costs a pass over them.
_DASK_CONFIG = {"dataframe.shuffle.method": "p2p", "dataframe.convert-string": False}


class LedgerError(RuntimeError):
    """Rows were lost or invented: rows in ≠ kept + rejected − added."""


class ResumeRefused(RuntimeError):
    """An interrupted run cannot be resumed as asked; its checkpoints are kept."""


class DsbuildWarning(UserWarning):
    pass


@dataclass
class StageRun:
    name: str
    shape: str
    stage: Stage | None
    output: object  # the stage's marked output frame (dask); None once restored from a checkpoint
    fit_seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"name": self.name, "shape": self.shape, "fit_seconds": self.fit_seconds,
                "counts": self.counts, "options": self.options, "summary": self.summary}


def run(
    job,
    *,
    output: str | None = None,
    overwrite: bool = False,
    cluster: str | None = "local",
    workers: int | None = None,
    client=None,
    progress: bool = False,
    overrides: dict | None = None,
    resume: bool = False,
) -> dict:
    """Run a job (path, YAML text, dict or JobSpec) and return its manifest.

    Uses ``client`` if given, else starts the cluster ``cluster`` names (see runtime).
    A client you pass is used as it is: ``client.register_plugin(DsbuildWorkerSetup())``
    (``dsbuild.runtime``) gives its workers what ``cluster`` would (one OpenCV thread,
    freed buffers kept for reuse, the memory figures in the manifest); without it tasks
    that allocate large arrays ran up to twice as long.
    ``resume=True`` continues an interrupted run of the same job from its last complete
    checkpoint (kept rows written before each multi-pass stage).
    """
    spec, sink = checked_output(job, output=output, overwrite=overwrite, overrides=overrides)
    if client is not None:
        if workers is not None or cluster not in ("local", None):
            warnings.warn(f"{'workers' if workers is not None else 'cluster'} is not used: the run uses the client "
                          "given, with its workers", UserWarning, stacklevel=2)
        return _run(spec, sink, client, progress, resume)
    from dsbuild.runtime import connect

    validate_against_source(spec)  # before a cluster starts (on Slurm, before the queue); its warnings are the run's
    with connect(cluster, workers) as c:
        return _run(spec, sink, c, progress, resume)


def checked_output(job, *, output: str | None = None, overwrite: bool = False, overrides: dict | None = None) -> tuple[JobSpec, Sink]:
    """The job and its sink, once the output may be written where the job says: checked
    before a cluster starts (the CLI refused an existing output only after starting one)."""
    spec = load_job(job, overrides)
    if output:
        spec = spec.model_copy(update={"sink": spec.sink.model_copy(update={"path": output})})
    sink = _sink(spec, overwrite)
    sink.check_target()
    sink.check_apart_from(spec.source, spec.stage_inputs())
    sink.check_written_beside(spec.stage_outputs())
    return spec, sink


def _sink(spec: JobSpec, overwrite: bool) -> Sink:
    return Sink(
        spec.sink.path,
        shard_rows=spec.sink.shard_rows,
        shard_bytes=spec.sink.shard_bytes,
        compression=spec.sink.compression,
        overwrite=overwrite,
        key=job_key(spec),
        partition_by=spec.sink.partition_by,
    )


def job_key(spec: JobSpec) -> str:
    """Names the temporary folder, so a resumed run finds its own checkpoints. The output
    path is left out: the folder sits beside the output already, and ``out`` and
    ``/abs/out`` are one output."""
    resolved = spec.resolved()
    resolved["sink"] = {k: v for k, v in resolved["sink"].items() if k != "path"}
    return f"{stable_hash64(json.dumps(resolved, sort_keys=True)):016x}"


# Set by the CLI's Ctrl-C handler. Python only prints a KeyboardInterrupt raised inside a
# garbage-collector callback (distributed registers one), so that Ctrl-C would be lost and
# the run would write its output; the run checks this before it commits.
INTERRUPTED = threading.Event()


def _run(spec: JobSpec, sink: Sink, client, progress: bool, resume: bool = False) -> dict:
    """The run on ``client``: every compute in it goes there, also those that stages and
    the sink start with ``dask.compute``, which would otherwise go to the client the
    process made last (with two clusters, a fit and the shard merges ran on the other)."""
    with client.as_current():
        return _run_on_current(spec, sink, client, progress, resume)


def _run_on_current(spec: JobSpec, sink: Sink, client, progress: bool, resume: bool) -> dict:
    from dsbuild.runtime import peak_worker_memory  # here: validate needs no distributed

    t0 = time.perf_counter()
    peak_worker_memory(client, reset=True)
    taken = False
    try:
        _take_folder(sink, resume)
        taken = True
        with dask.config.set(_DASK_CONFIG), _task_stream(client) as stream, workers_watched(client):
            ex = Execution(spec, sink, client, progress, resume)
            ex.run()
        t_compute = time.perf_counter()
        if INTERRUPTED.is_set():  # before the finish, while the checkpoints can be resumed from
            raise KeyboardInterrupt
        data_shards, data_schema = sink.finish("data", ex.files["data"], [ex.kept_meta], cast_conflicts_to_string=False)
        # Finishing the rejects moves and deletes the staged files the checkpoints list: a
        # resume from them after an interrupt here failed on a missing file.
        sink.drop_checkpoints_before(len(ex.runs))
        reject_shards, reject_schema = sink.finish("rejects", ex.files["rejects"], ex.reject_metas, cast_conflicts_to_string=True)
        manifest = _manifest(spec, ex, data_shards, reject_shards, data_schema, reject_schema, _seconds_by_stage(stream, ex.runs), client)
        check_ledger(manifest)
        manifest["timings"] = {
            "build_and_compute": round(t_compute - t0, 3),
            "finish": round(time.perf_counter() - t_compute, 3),
            "total": round(time.perf_counter() - t0, 3),
        }
        sink.write_text("manifest.json", json.dumps(manifest, indent=2, default=str))
        _write_report(sink, manifest)
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        sink.commit()
    except (ResumeRefused, OutputAppeared):
        sink.release()
        raise
    except BaseException as e:
        if not taken and isinstance(e, OutputExists):  # refused: the folder is another live run's
            raise
        if _stopped(e) and sink.has_checkpoints():
            sink.release()
        else:
            _abort(sink, e)
        raise
    manifest["output"] = sink.path
    return manifest


def _stopped(error: BaseException) -> bool:
    """Whether the run was stopped rather than failed: Ctrl-C, ``status --cancel`` (a
    KeyboardInterrupt too, or whatever error the stop broke a call with: both set
    ``INTERRUPTED``), or a cluster left without workers. A stopped run keeps its checkpoints
    for ``--resume``; a cancel deleted them, so a cancelled run of hours started over."""
    return isinstance(error, (KeyboardInterrupt, WorkersLost)) or INTERRUPTED.is_set()


def _take_folder(sink: Sink, resume: bool) -> None:
    """Make the temporary folder this run's, once its cluster is up: refused while another
    run of the job writes it; emptied unless resuming (a stale folder of an earlier,
    interrupted run); and say what a resume will not find, or what other runs left."""
    sink.claim()
    if resume and not sink.has_checkpoints():
        warnings.warn(f"nothing to resume: no complete checkpoint of this job in {sink.tmp}; running from the start",
                      DsbuildWarning, stacklevel=4)
    if not resume or not sink.has_checkpoints():  # a fresh start, in the folder that is now ours
        sink.abort()
        sink.claim()
    for other in sink.other_runs():
        warnings.warn(f"{other} was left by an interrupted run of another version of this job (or another output "
                      "spelling); resume that job, or remove it", DsbuildWarning, stacklevel=4)


def _abort(sink: Sink, error: BaseException) -> None:
    """Remove the run's temporary folder without hiding why the run failed."""
    try:
        sink.abort()
    except OSError as e:
        error.add_note(f"dsbuild could not remove the temporary folder {sink.tmp}: {e}")


class Execution:
    """Builds the graph stage by stage and computes it in as few passes as possible.

    Map and group stages pass over their input once, so a chain of them stays lazy.
    A stage that passes over its input more than once (fit → apply, chains) would
    recompute everything upstream on each pass; before such a stage the rows kept so far
    are written to a checkpoint in the output's temporary folder and read back, and in
    the same compute the rejects and counts of the stages before it are written. Memory
    stays bounded, and an interrupted run resumes from its last complete checkpoint.
    The last flush writes the kept rows.

    A stage that passes its rows through (an audit) hands its input on as it is: after
    it, a multi-pass stage needs no checkpoint when that input is one, and one ``Shapes``
    for the whole run lets it reuse a statistic the audit already fitted over those rows.
    Its own output is accounted for at the next flush.
    """

    def __init__(self, spec: JobSpec, sink: Sink, client, progress: bool, resume: bool = False):
        self.spec, self.sink, self.client, self.progress, self.resume = spec, sink, client, progress, resume
        self.runs: list[StageRun] = []
        self.pending: list[int] = []
        self.files: dict[str, list[dict]] = {"data": [], "rejects": []}
        self.reject_metas: list[pd.DataFrame] = []
        self.warnings: list[str] = []
        self.source = None
        self.kept_meta = None
        self.resumed_from: int | None = None
        # The input files' digests, taken when the first checkpoint is written: a resume
        # compares a file whose modification time alone changed (touch) by its bytes.
        self.input_digests: dict[str, str | None] | None = None

    def run(self) -> None:
        spec = self.spec
        self.source = read_source(spec.source, id_column=spec.columns.id)
        self.warnings += _whole_compressed_files(spec.source, self.source.files)
        self.warnings += inexact_decimals(self.source.schema)
        marked = _marked_source(self.source, spec.columns.id)
        if (spec.columns.id and spec.columns.id != ID) or self.source.ids_given:
            marked = _with_repeated_ids_rejected(marked, _ids_alone(self.source, spec.columns.id))
        _check_roles(spec, marked._meta)
        kept = self._add_run(StageRun("source", "read", None, marked))
        stages = spec.build_stages(marked._meta)
        self.sink.column_types = _source_types(self.source.schema, stages)
        self.warnings += _weight_column(spec, marked._meta, stages)
        restored = self._restore(stages, kept) if self.resume else None
        start = 0
        if restored is not None:
            start, kept = restored
        shapes = Shapes()
        stored = restored is not None  # ``kept`` is a checkpoint's rows
        for i, stage in enumerate(stages):
            self.warnings += stage.order_warnings(stages[:i], stages[i + 1 :])
            if i < start:
                continue
            try:
                stage.check(kept._meta)
            except StageError as e:
                raise _at_stage(i, stage, e, spec) from None
            self.warnings += stage.column_warnings(kept._meta)
            if stage.multi_pass and not stored:
                kept, stored = self._flush(kept, checkpoint=i), True
            t = time.perf_counter()
            out = stage.build(kept, shapes)
            if stage.adds_rows and spec.columns.id and spec.columns.id != ID:
                out = out.map_partitions(_added_rows_named, spec.columns.id, meta=_added_rows_named(out._meta, spec.columns.id),
                                         token="dsbuild-added-ids")
            run_ = StageRun(stage.ctx.name, stage.shape, stage, out, time.perf_counter() - t)
            if stage.passes_rows_through:
                self._add_run(run_)  # accounted at the next flush; its input goes on as it is
            else:
                kept, stored = self._add_run(run_), False
        for note in self.warnings:
            warnings.warn(note, DsbuildWarning, stacklevel=4)
        self.kept_meta = kept._meta
        problem = _partition_problem(spec, kept._meta)
        if problem:
            raise StageError(problem)
        self._flush(kept)

    def _add_run(self, run_: StageRun):
        self.pending.append(len(self.runs))
        self.runs.append(run_)
        self.reject_metas.append(_rejected(run_.output, run_.name)._meta)
        return _kept(run_.output)

    def _flush(self, kept, checkpoint: int | None = None):
        """Compute the pending stages' rejects and counts, and write ``kept``: to the
        output's data when this is the end, else to the checkpoint before stage
        ``checkpoint`` (on disk, read back as the next stage's input; or persisted on
        the workers with ``sink.checkpoints: memory``)."""
        pending = [self.runs[r] for r in self.pending]
        label = self.spec.columns.label
        in_memory = checkpoint is not None and self.spec.sink.checkpoints == "memory"
        # The last stage's kept rows are written in the task that accounts for that stage:
        # one task per partition reads its output once, and it never moves between workers
        # (as two tasks, the scheduler sent many a partition of images to the other worker).
        # ``kept`` is always the last pending run's kept rows (see ``run``; after a stage
        # that passes rows through, its input: the same rows).
        together = not in_memory and bool(self.pending)
        accounts = [
            run_.output.map_partitions(
                _account, self.sink, self.sink.staging("rejects", f"{r:03d}"), run_.name, label,
                meta=_ACCOUNT_META, token=f"dsbuild-account-{r}", enforce_metadata=False,
            )
            for r, run_ in zip(self.pending[:-1] if together else self.pending, pending)
        ]
        if in_memory:
            kept, *accounts = self.client.persist([kept, *accounts])
            results = self._gather(accounts, [run_.name for run_ in pending])
        else:
            folder = self.sink.staging("data", "kept") if checkpoint is None else self.sink.checkpoint(checkpoint)
            what = "data" if checkpoint is None else "checkpoint"
            if together:
                r, run_ = self.pending[-1], pending[-1]
                written = run_.output.map_partitions(
                    _account_and_write, self.sink, self.sink.staging("rejects", f"{r:03d}"), run_.name, label,
                    folder, checkpoint is not None, meta=_ACCOUNT_WRITE_META, token=f"dsbuild-account-{r}-write-{what}",
                    enforce_metadata=False,
                )
                *results, last = self._gather([*accounts, written], [run_.name for run_ in pending])
                kept_files = _in_order(_kept_files(last))
                results.append(last[list(_ACCOUNT_META.columns)])
            else:
                written = _written(kept, self.sink, folder, what, scratch=checkpoint is not None)
                kept_files, *results = self._gather([written, *accounts], [run_.name for run_ in pending])
                kept_files = _in_order(kept_files)
        for run_, frame in zip(pending, results):
            frame = frame.sort_values("partition")
            run_.counts = _sum_counts(frame["counts"])
            run_.output = None  # accounted for: let the workers forget it
            self.files["rejects"].extend(f for files in frame["files"] for f in files)
            if run_.stage is not None:
                run_.options = run_.stage.options.model_dump(mode="json", by_alias=True, exclude_defaults=True, fallback=_described)
                run_.summary = run_.stage.summary()
        self.pending = []
        if in_memory:
            return kept
        if checkpoint is None:
            self.files["data"] = kept_files
            return None
        if self.input_digests is None:
            self.input_digests = self.source.content_digests(self._compute)
        self.sink.write_checkpoint(checkpoint, {
            "fingerprint": self.source.fingerprint(),
            "files": self.source.files,
            "digests": self.input_digests,
            "runs": [r.record() for r in self.runs],
            "rejects": self.files["rejects"],
            "kept": kept_files,
        })
        self.sink.drop_checkpoints_before(checkpoint)
        return _read_checkpoint(self.sink, kept_files, kept._meta)

    def _compute(self, tasks: list) -> list:
        return self.client.gather(self.client.compute(tasks))

    def _gather(self, collections: list, names: list[str]) -> list[pd.DataFrame]:
        """Each collection's per-partition results, concatenated, gathered as each partition
        finishes. A partition's results are small; fetching them as they come lets the
        scheduler and the workers forget that partition's tasks at once, so their
        bookkeeping stays bounded by the partitions in flight, not the job's (on 400 MiB
        workers, 1,000 partitions' worth of finished tasks paused both for good)."""
        from distributed import KilledWorker, as_completed, futures_of

        persisted = self.client.persist(collections)
        which = {f.key: i for i, c in enumerate(persisted) for f in futures_of(c)}
        pending = as_completed([f for c in persisted for f in futures_of(c)], with_results=True)
        del persisted
        parts: list[list[pd.DataFrame]] = [[] for _ in collections]
        bar = ProgressBar(len(which), ", ".join(names)) if self.progress else None
        try:
            for future, part in pending:
                if isinstance(part, BaseException):  # a cancelled future comes as its error
                    raise part
                parts[which[future.key]].append(part)
                if bar is not None:
                    bar.update()
        except KilledWorker as e:
            raise WorkerKilled(killed_message(e, names)) from None
        if bar is not None:
            bar.close()
        return [pd.concat(p, ignore_index=True) if p else c._meta for p, c in zip(parts, collections)]

    def _restore(self, stages: list[Stage], source_kept):
        """(first stage to run, its input) from the last complete checkpoint, or None."""
        found = self.sink.last_checkpoint()
        if found is None:
            return None
        index, state = found
        if state["fingerprint"] != self.source.fingerprint():
            changes = (self.source.changes_since(state["files"], state["digests"], self._compute) if "files" in state
                       else ["the size or modification time of a file"])
            if changes:
                more = f" (and {len(changes) - 1:,} more)" if len(changes) > 1 else ""
                raise ResumeRefused(
                    f"cannot resume: the input changed since the interrupted run: {changes[0]}{more}; its checkpoints "
                    f"are kept in {self.sink.tmp}: restore the input and resume, or run without --resume"
                )
        self.input_digests = state.get("digests")
        self.sink.drop_staging_after(len(state["runs"]))
        self.runs = [StageRun(r["name"], r["shape"], None, None, r["fit_seconds"], r["counts"], r["options"], r["summary"]) for r in state["runs"]]
        self.pending = []
        self.files["rejects"] = list(state["rejects"])
        self.resumed_from = index
        meta = _checkpoint_meta(self.sink, state["kept"], source_kept._meta)
        return index, _read_checkpoint(self.sink, state["kept"], meta)


def _read_checkpoint(sink: Sink, files: list[dict], meta: pd.DataFrame):
    import dask.dataframe as dd

    if not files:
        return dd.from_pandas(meta, npartitions=1)
    paths = [f["path"] for f in files]
    return dd.from_map(_CheckpointPart(sink, meta), paths, meta=meta, divisions=None, label="read-checkpoint", enforce_metadata=False)


def _checkpoint_meta(sink: Sink, files: list[dict], fallback: pd.DataFrame) -> pd.DataFrame:
    """The kept rows' schema as the checkpoint stored it (restored stages may have
    changed columns in ways an empty frame cannot show), in the dtypes the rows had, as
    its pandas metadata names them: read as nullable types, a resumed run's output said
    ``boolean`` where an uninterrupted run's said ``bool``."""
    if not files:
        return fallback
    from dsbuild.io.sources.common import _readable_pandas_metadata

    return _readable_pandas_metadata(sink.read_scratch(files[0]["path"]).schema.empty_table()).to_pandas()


class _CheckpointPart:
    def __init__(self, sink: Sink, meta: pd.DataFrame):
        self.sink, self.meta = sink, meta

    def __call__(self, path: str) -> pd.DataFrame:
        """The partition in the kept rows' dtypes, each column that differs cast on its own: a
        stage's flag (numpy bool) comes back from Arrow as ``boolean``, so after such a stage
        every partition was cast, and a frame's ``astype`` rebuilds every column (5,000 rows
        of Adult: 0.82 ms, 0.27 ms so)."""
        from dsbuild.io.sources import to_pandas

        part = to_pandas(self.sink.read_scratch(path))
        for column, dtype in self.meta.dtypes.items():
            if column in part.columns and _recast(part[column].dtype, dtype):
                part[column] = part[column].astype(dtype)
        return part


def _recast(have, want) -> bool:
    """Whether a checkpoint column must be cast to the kept rows' dtype. Not a categorical
    to a categorical: each partition holds its own categories (a Parquet dictionary
    column's), and casting to the frame's, often unknown and so empty, made every value
    missing."""
    if isinstance(have, pd.CategoricalDtype) and isinstance(want, pd.CategoricalDtype):
        return False
    return have != want


def validate_against_source(spec: JobSpec) -> list[str]:
    """Check roles and stage settings against the source's columns, without running.

    Map stages are run on the empty schema so later stages see the columns earlier ones
    make or drop; other stages are checked against the columns as they arrive. Every
    stage's problem is said at once (a job with two misnamed columns took two runs of
    validate to find them); after a stage whose check failed, later stages see the columns
    it would make where they can be told. The source is read as a run reads it (Dask's
    text conversion off): with it, a date, list or struct column (objects) was text to
    the checks, and ranges refused a date column's date bounds before the run.
    """
    with dask.config.set(_DASK_CONFIG):
        return _validate_against_source(spec)


def _validate_against_source(spec: JobSpec) -> list[str]:
    sink = _sink(spec, overwrite=False)
    sink.check_apart_from(spec.source, spec.stage_inputs())
    sink.check_written_beside(spec.stage_outputs())
    frame = _marked_source(read_source(spec.source, count_rows=False, id_column=spec.columns.id), spec.columns.id)
    _check_roles(spec, frame._meta)
    meta = kept_rows(frame._meta)
    stages = spec.build_stages(frame._meta)
    notes, problems = _weight_column(spec, frame._meta, stages), []
    for i, stage in enumerate(stages):
        notes += stage.order_warnings(stages[:i], stages[i + 1 :])
        try:
            stage.check(meta)
        except StageError as e:
            problems.append(str(_at_stage(i, stage, e, spec)))
            with contextlib.suppress(Exception):  # the columns it would make, as far as they can be told
                meta = stage.columns_after(meta)
            continue
        notes += stage.column_warnings(meta)
        meta = stage.columns_after(meta)
        meta = kept_rows(meta) if REJECT in meta.columns else meta
    if problems:
        raise StageError("\n".join(problems))
    problem = _partition_problem(spec, meta)
    if problem and all(s.shape == "map" for s in stages):
        raise StageError(problem)
    return notes + ([problem + " (a stage that is not a map may add it)"] if problem else [])


def _at_stage(i: int, stage: Stage, e: StageError, spec: JobSpec) -> StageError:
    """The stage's error with its place in the job (the file's line too), its name said once."""
    return StageError(f"{spec.place('stages', i)}stages[{i}] {stage.ctx.name}: "
                      f"{str(e).removeprefix(f'stage {stage.ctx.name!r}: ')}")


def _weight_column(spec: JobSpec, meta: pd.DataFrame, stages: list[Stage]) -> list[str]:
    """A source column that is named as ``columns.weight`` (``weight`` unless the job says)
    is each row's sample weight to the fairness stages and to label_issues, which
    multiplies it: a body weight was read as one, its text values as missing weights,
    and reweigh overwrote it."""
    column = spec.columns.weight
    users = [s for s in stages if s.reads_weights or s.writes_weights]
    if not users or column not in meta.columns:
        return []
    use = "counts each row by its weight" if users[0].reads_weights else "multiplies the weights"
    dtype = meta[column].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise StageError(f"columns.weight: {users[0].ctx.name!r} {use} in the column {column!r}, which "
                         f"holds {dtype} values, not numbers; name the weight column another way (columns.weight: "
                         "sample_weight), or cast it")
    if "weight" in spec.columns.model_fields_set:
        return []
    writers = [s.ctx.name for s in users if s.writes_weights]
    if users[0].reads_weights:
        said = f"counts each row by the source's column {column!r} as its sample weight{f' (and {writers[0]} multiplies it)' if writers else ''}"
    else:
        said = f"multiplies the source's column {column!r}, taking it for each row's sample weight"
    return [f"columns.weight: {users[0].ctx.name!r} {said}; if it is a feature, not a weight, set columns.weight to another name"]


def _partition_problem(spec: JobSpec, meta: pd.DataFrame) -> str | None:
    """sink.partition_by naming a column the output will not have."""
    absent = [c for c in spec.sink.partition_by if c not in meta.columns]
    if not absent:
        return None
    columns = [c for c in meta.columns if not str(c).startswith("_")]
    return (f"{spec.place('sink', 'partition_by')}sink.partition_by: {absent[0]!r} is not a column of the output{_did_you_mean(absent[0], columns)}; "
            f"columns are {columns}")


def _marked_source(source, id_column: str | None):
    """The source's rows with their ids and the reject mark, in one task per partition."""
    frame = source.frame
    if id_column and id_column != ID and id_column not in frame.columns:
        raise StageError(f"columns.id: {id_column!r} is not a column of the source; columns are {list(frame.columns)}")
    own = [c for c in frame.columns if c in (REASON, STAGE) or (c == "raw" and RAW in frame.columns)]  # raw: a text source's line
    if own:
        raise StageError(f"the source has a column {own[0]!r}, a name the rejects output uses for its own (why, where and "
                         "as what text a row was rejected); rename it before dsbuild reads it (a CSV's column_names, "
                         "pandas' rename)")
    if id_column and id_column != ID and source.schema is not None and ID in source.schema.names:
        raise StageError(f"the source has a column {ID!r} and columns.id names {id_column!r}: the output's id column would "
                         f"replace its values; set columns.id: {ID}, or rename the source's {ID!r}")
    return _ids_marked(frame, id_column)


def _ids_marked(frame, id_column: str | None):
    """:func:`_with_known_ids` on every partition of ``frame``."""
    return frame.map_partitions(_with_known_ids, id_column, meta=_with_known_ids(frame._meta.copy(), id_column),
                                token="dsbuild-ids", enforce_metadata=False)


def _source_types(schema, stages: list[Stage]) -> dict:
    """The source's Arrow types the sink writes columns back in, but not a column a stage
    gives a type of its own (``cast``): a decimal read as a number and cast to float stays
    float, as asked."""
    retyped = {c for s in stages for c in s.retyped_columns()}
    return {} if schema is None else {f.name: f.type for f in schema if f.name not in retyped}


def _whole_compressed_files(source, files: list[dict]) -> list[str]:
    """A compressed text file cannot be cut into blocks, so one task reads it whole: one
    worker, and memory for all of it (2.5 M rows of gzip CSV killed a 1 GiB worker while
    the same file unpacked ran in 4.6 s at 730 MiB)."""
    blocksize = getattr(source, "blocksize", None)
    if blocksize is None:
        return []
    import fsspec

    large = [f for f in files if fsspec.utils.infer_compression(f["path"]) and (f.get("size") or 0) > blocksize // 2]
    return [f"source: {f['path']} is compressed ({f['size'] / 2**20:,.1f} MiB), so one task reads it whole, with memory "
            f"for all of it; unpack it, or split it into files, for reads in blocks of source.blocksize"
            for f in large[:3]]


def _ids_alone(source, id_column: str | None):
    """The source's ids and reject marks, read without its other columns where the format
    can skip them (Parquet: the check then reads a column of ids, not a column of images);
    else None. Such a reader rejects no row, so the marks are the same as the whole read's."""
    if source.read_columns is None:
        return None
    return _ids_marked(source.read_columns([id_column] if id_column and id_column != ID else [ID]), id_column)


def _with_repeated_ids_rejected(marked, ids=None):
    """The data's own ids, checked to name one row each: every row but the first of an id
    goes to rejects as ``id:repeated``. Stages key rows by id (near-duplicate clusters,
    keepers, crowd labels), and two rows under one id were taken as one: near_dedup_text
    joined two clusters through a shared id and kept no copy of one of them.

    Ids made from file:row are unique as made; this runs only where the data gives them.
    It costs a pass over the source that counts 64-bit hashes of the ids (a shuffle of
    integers), and, where a hash repeats, one more that fetches only those rows to compare
    their ids exactly. The first row is the first in the source's order (partition, then
    row), whatever the partitioning. ``ids``: the same partitions' ids and marks alone,
    where the source can read them so.
    """
    ids = marked if ids is None else ids
    places = ids.map_partitions(_id_places, meta=_id_places(ids._meta), token="dsbuild-id-places")
    counts = places.groupby("_hash", sort=False)["_at"].count(split_out=max(1, marked.npartitions // 4))
    (hashes,) = dask.compute(counts[counts > 1].index)
    if len(hashes) == 0:
        return marked
    suspects = dask.delayed(pd.Index(hashes), pure=True)
    rows = places.map_partitions(_hashed_as, suspects, meta=places._meta, token="dsbuild-id-suspects")
    (rows,) = dask.compute(rows)  # only the rows whose id's hash repeats
    counts = rows.groupby(ID)["_at"].agg(["count", "min"])
    first = counts.loc[counts["count"] > 1, "min"]
    if first.empty:  # hashes that collided, ids that did not
        return marked
    return marked.map_partitions(_reject_repeats, dask.delayed(first, pure=True), meta=marked._meta, token="dsbuild-id-repeats")


def _id_places(part: pd.DataFrame, partition_info=None) -> pd.DataFrame:
    """Each unrejected row's id, its hash, and its place in the source (partition, row) as
    one sortable number."""
    number = partition_info["number"] if partition_info else 0
    ok = np.flatnonzero(part[REJECT].isna().to_numpy())
    ids = part[ID].astype("string").iloc[ok]
    return pd.DataFrame({
        ID: ids.to_numpy(), "_hash": pd.util.hash_pandas_object(ids, index=False).to_numpy().view(np.int64),
        "_at": (np.int64(number) << 32) + ok.astype(np.int64),
    })


def _hashed_as(places: pd.DataFrame, hashes: pd.Index) -> pd.DataFrame:
    return places[places["_hash"].isin(hashes)]


def _reject_repeats(part: pd.DataFrame, first: pd.Series, partition_info=None) -> pd.DataFrame:
    places = _id_places(part, partition_info)
    keeper = first.reindex(places[ID], fill_value=-1).to_numpy()
    again = (keeper >= 0) & (keeper != places["_at"].to_numpy())
    if not again.any():
        return part
    mark = part[REJECT].to_numpy(dtype=object).copy()
    mark[places["_at"].to_numpy()[again] & 0xFFFFFFFF] = "id:repeated"
    return part.assign(**{REJECT: mark})


def _added_rows_named(part: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """A row a stage added carries its own id (``parent#smote0``) in the job's id column
    too, where that column holds text: it kept its parent's value, so the column named
    two rows alike, and the output read as a source again rejected one as a repeat. A
    column of numbers cannot hold such an id: it is left empty there."""
    if id_column not in part.columns:
        return part
    added = part[ADDED].fillna(False).to_numpy(dtype=bool) if ADDED in part.columns else np.zeros(len(part), bool)
    column = part[id_column].copy()
    if pd.api.types.is_string_dtype(column.dtype) or column.dtype == object:
        column[added] = part[ID][added].astype(str).to_numpy()
    else:
        column = column.astype("Int64") if pd.api.types.is_integer_dtype(column.dtype) else column  # room for a missing value
        column[added] = None
    return part.assign(**{id_column: column})


def _with_known_ids(part: pd.DataFrame, id_column: str | None) -> pd.DataFrame:
    """The partition with its ids (``columns.id``'s values, if the job names a column) and
    the reject mark. A row without an id is rejected as ``id:missing`` (a duplicate's
    keeper is chosen by id); it keeps its file:row as its id, as a row the reader rejected
    does, so the rejects name where each came from."""
    named = part[ID].astype("string")
    if id_column and id_column != ID:
        # a row the reader rejected, or one without a value, keeps its file:row: it can be found
        named = part[id_column].astype("string")
        named = named.mask(blank_text(named))  # a blank id names no row, as a CSV reader makes it missing
        part = part.assign(**{ID: named.fillna(part[ID].astype("string"))})
    else:
        named = named.mask(blank_text(named))
    if REJECT not in part.columns:
        part = part.assign(**{REJECT: pd.Series([None] * len(part), dtype=object, index=part.index)})
    missing = named.isna().to_numpy() & part[REJECT].isna().to_numpy()
    if missing.any():
        part = part.assign(**{REJECT: part[REJECT].mask(missing, "id:missing")})
    return part


def _check_roles(spec: JobSpec, meta: pd.DataFrame) -> None:
    c = spec.columns
    named = {"label": [c.label] if c.label else [], "sensitive": c.sensitive, "features": c.features,
             "image": [c.image] if c.image else [], "text": [c.text] if c.text else []}
    for role, cols in named.items():
        for col in cols:
            if col not in meta.columns:
                raise StageError(
                    f"{spec.place('columns', role)}columns.{role}: {col!r} is not a column of the source"
                    f"{_did_you_mean(col, meta.columns)}; "
                    f"columns are {[x for x in meta.columns if not str(x).startswith('_')]}"
                )


def _kept(out):
    return out.map_partitions(kept_rows, meta=kept_rows(out._meta), token="dsbuild-split-kept")


def _rejected(out, stage: str):
    return out.map_partitions(rejected_rows, stage, meta=rejected_rows(out._meta, stage), token="dsbuild-split-rejects")


def kept_rows(part: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in part.columns if c in INTERNAL or c.startswith((METRIC, GONE))]
    keep = part[REJECT].isna().to_numpy()
    return (part if keep.all() else part[keep]).drop(columns=drop)


def rejected_rows(part: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Rejected rows whole, with ``reason`` and ``stage`` (and ``raw`` text from sources)."""
    drop = [c for c in part.columns if c == ADDED or c.startswith(METRIC)]
    marked = part[REJECT].notna().to_numpy()
    rej = (part[marked] if marked.any() else part.iloc[:0]).drop(columns=drop)  # most stages reject nothing
    rej = rej.rename(columns={REJECT: REASON, RAW: "raw", **{c: c[len(GONE):] for c in rej.columns if c.startswith(GONE)}})
    rej[REASON] = rej[REASON].astype("string")
    rej[STAGE] = pd.array([stage] * len(rej), dtype="string")
    return rej


_FILES_META = pd.DataFrame(
    {
        "partition": pd.Series(dtype="int64"), "k": pd.Series(dtype="int64"), "path": pd.Series(dtype=object),
        "rows": pd.Series(dtype="int64"), "bytes": pd.Series(dtype="int64"), "memory": pd.Series(dtype="int64"),
        "sha256": pd.Series(dtype=object), "group": pd.Series(dtype=object), "dictionary": pd.Series(dtype=object),
    }
)
_ACCOUNT_META = pd.DataFrame({"partition": pd.Series(dtype="int64"), "counts": pd.Series(dtype=object), "files": pd.Series(dtype=object)})


def _written(frame, sink: Sink, folder: str, label: str, scratch: bool = False):
    return frame.map_partitions(_write, sink, folder, scratch, meta=_FILES_META, token=f"dsbuild-write-{label}", enforce_metadata=False)


def _write(part: pd.DataFrame, sink: Sink, folder: str, scratch: bool, partition_info=None) -> pd.DataFrame:
    index = partition_info["number"] if partition_info else 0
    files = sink.write_scratch(part, folder, index) if scratch else sink.write_partition(part, folder, index, by=sink.partition_by)
    return pd.DataFrame([{"partition": index, "k": k, **f} for k, f in enumerate(files)], columns=_FILES_META.columns)


def _in_order(files: pd.DataFrame) -> list[dict]:
    """The files in output order; ``group`` (a partition folder) only where there is one."""
    records = files.sort_values(["partition", "k"]).drop(columns=["partition", "k"]).to_dict("records")
    return [{k: v for k, v in r.items() if k != "group" or isinstance(v, str)} for r in records]


@contextlib.contextmanager
def _task_stream(client):
    """Task timings for the manifest; errors inside the block pass through untouched."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        yield ts


def _seconds_by_stage(stream, runs: list[StageRun]) -> dict[str, float]:
    out: Counter = Counter()
    if stream is None:
        return {}
    for rec in stream.data:
        key = str(rec.get("key", ""))
        for run_ in runs:
            safe = "".join(ch if ch.isalnum() else "-" for ch in run_.name)
            if f"dsbuild-{safe}-" in key:
                out[run_.name] += sum(s["stop"] - s["start"] for s in rec.get("startstops", ()) if s.get("action") == "compute")
    return dict(out)


def _account(part: pd.DataFrame, sink: Sink, folder: str, stage: str, label: str | None, partition_info=None) -> pd.DataFrame:
    """One partition of a stage's marked output, accounted for in one task: its rejected
    rows written to the rejects staging folder, its counts returned (a small dict, never
    rows: the driver sums them). Most stages reject no row of most partitions: those build
    no empty frame of rejects, a fixed cost per stage and partition (half of the
    accounting of a 5,000-row partition of Adult)."""
    index = partition_info["number"] if partition_info else 0
    files = sink.write_partition(rejected_rows(part, stage), folder, index) if part[REJECT].notna().any() else []
    return pd.DataFrame({"partition": [index], "counts": [_partition_counts(part, label)], "files": [files]})


_ACCOUNT_WRITE_META = _ACCOUNT_META.assign(kept=pd.Series(dtype=object))


def _account_and_write(part: pd.DataFrame, sink: Sink, rejects: str, stage: str, label: str | None, folder: str, scratch: bool, partition_info=None) -> pd.DataFrame:
    """:func:`_account` and :func:`_write` of the stage's kept rows, in one task."""
    out = _account(part, sink, rejects, stage, label, partition_info)
    kept = _write(kept_rows(part), sink, folder, scratch, partition_info)
    return out.assign(kept=[kept.drop(columns=["partition", "k"]).to_dict("records")])


def _kept_files(accounted: pd.DataFrame) -> pd.DataFrame:
    """The files that :func:`_account_and_write` tasks wrote, as :func:`_write` lists them."""
    rows = [{"partition": p, "k": k, **f} for p, files in zip(accounted["partition"], accounted["kept"]) for k, f in enumerate(files)]
    return pd.DataFrame(rows, columns=_FILES_META.columns)


def _partition_counts(part: pd.DataFrame, label: str | None = None) -> dict:
    """Counts of one partition of a stage's marked output, with the kept rows per label."""
    reasons = part[REJECT]
    labels = _label_counts(part.loc[reasons.isna().to_numpy(), label]) if label and label in part.columns else {}
    rejected = _rules(reasons)
    added = int(part[ADDED].fillna(False).astype(bool).sum()) if ADDED in part.columns else 0
    return {
        "rows": len(part),
        "kept": int(reasons.isna().sum()),
        "rejected": rejected,
        "added": added,
        "metrics": {c[len(METRIC):]: float(pd.to_numeric(part[c], errors="coerce").sum()) for c in part.columns if c.startswith(METRIC)},
        "labels": labels,
    }


def _label_counts(labels: pd.Series) -> dict[str, int]:
    """Rows per label as text, the most common first (at most ``_MAX_LABELS``). Counted on
    the column as it is and only the distinct values made text: converting every label
    to text first was nine tenths of a stage's accounting (1 M categorical labels, 0.2 s)."""
    found = labels.value_counts(dropna=False)
    found = found[found > 0]  # a categorical's unused categories
    texts = pd.Series(found.index, dtype=labels.dtype).astype("string").fillna("<missing>")
    counts: Counter = Counter()
    for text, n in zip(texts, found.to_numpy()):
        counts[text] += int(n)
    return dict(counts.most_common(_MAX_LABELS))


def _rules(reasons: pd.Series) -> dict[str, int]:
    """Rejected rows per rule (a reason up to its first ``=``), counted by Arrow: a stage
    like exact_dedup rejects a large share of the rows, each with its own reason."""
    import pyarrow as pa
    import pyarrow.compute as pc

    given = reasons.dropna()
    if given.empty:
        return {}
    texts = pa.array(given.astype("string").array)
    counts = pc.value_counts(pc.list_element(pc.split_pattern(texts, "=", max_splits=1), 0))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


_MAX_LABELS = 200


def _sum_counts(counts) -> dict:
    acc = {"rows": 0, "kept": 0, "rejected": {}, "added": 0, "metrics": {}, "labels": {}}
    for c in counts:
        acc = {
            "rows": acc["rows"] + c["rows"],
            "kept": acc["kept"] + c["kept"],
            "rejected": _add(acc["rejected"], c["rejected"]),
            "added": acc["added"] + c["added"],
            "metrics": _add(acc["metrics"], c["metrics"]),
            "labels": _add(acc["labels"], c.get("labels", {})),
        }
    top = sorted(acc["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_LABELS]
    acc["labels"] = dict(sorted(top))
    return acc


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


# -- manifest and ledger ----------------------------------------------------------------


def _manifest(spec, ex: Execution, data_shards, reject_shards, data_schema, reject_schema, task_seconds, client) -> dict:
    from dsbuild.runtime import peak_worker_memory

    stages = []
    rows_in = None
    for run_ in ex.runs:
        c = run_.counts
        rejected = sum(c["rejected"].values())
        entry = {
            "name": run_.name,
            "shape": run_.shape,
            "in": c["rows"] if rows_in is None else rows_in,
            "out": c["kept"],
            "rejected": rejected,
            "rejected_by_reason": dict(sorted(c["rejected"].items())),
            "added": c["added"],
            "metrics": dict(sorted(c["metrics"].items())),
            "labels": c.get("labels", {}),
            "seconds": {"fit": round(run_.fit_seconds, 3), "tasks": round(task_seconds.get(run_.name, 0.0), 3)},
        }
        if run_.name != "source":
            entry["options"] = run_.options
            if run_.summary:
                entry["summary"] = run_.summary
            if run_.stage is not None:  # a stage restored by --resume has only its counts
                ex.warnings += run_.stage.result_warnings(entry)
        elif entry["in"] and not entry["out"]:
            # a file read with the wrong separator or column_names: every row is a csv:fields reject
            reason, n = max(c["rejected"].items(), key=lambda kv: kv[1])
            ex.warnings.append(f"the source rejected every row ({entry['in']:,}), {n:,} as {reason}: check the source's "
                               "options (sep, header, column_names, encoding) against the files")
        if run_.name == "source":
            ex.warnings += rejected_by_type_sample(spec.source, ex.source.schema, c["rejected"])
        stages.append(entry)
        rows_in = c["kept"]
    info = client.scheduler_info() if client is not None else {}
    workers = info.get("workers", {})
    return {
        "dsbuild": dsbuild.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "job": spec.resolved(),
        "job_hash": job_key(spec),
        "versions": _versions(),
        "input": {
            "fingerprint": ex.source.fingerprint(),
            "files": len(ex.source.files),
            "bytes": sum(f.get("size") or 0 for f in ex.source.files),
            "skipped": ex.source.skipped,
        },
        "stages": stages,
        "totals": {
            "in": stages[0]["in"],
            "kept": stages[-1]["out"],
            "rejected": sum(s["rejected"] for s in stages),
            "added": sum(s["added"] for s in stages),
        },
        "outputs": {
            "data": data_shards,
            "rejects": reject_shards,
            "rows": {"data": sum(s["rows"] for s in data_shards), "rejects": sum(s["rows"] for s in reject_shards)},
        },
        "schema": {
            "data": _schema_json(data_schema) + _partition_columns(spec, ex),
            "rejects": _schema_json(reject_schema),
        },
        "warnings": ex.warnings,
        "resumed_from_stage": ex.resumed_from,
        "cluster": {
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
            "dashboard": getattr(client, "dashboard_link", None),
            "memory": peak_worker_memory(client),
        },
    }


def _schema_json(schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in schema] if schema is not None else []


def _partition_columns(spec, ex: Execution) -> list[dict]:
    """The ``sink.partition_by`` columns, which live in the folder names and not in the
    files: the data's schema listed the files' columns alone, so a reader of the manifest
    did not learn the data has a ``split`` column. Each is marked ``partition``, with the
    type it had in the rows (readers make text or a dictionary of the folder names)."""
    import pyarrow as pa

    by = list(spec.sink.partition_by)
    if not by or ex.kept_meta is None:
        return []
    types = pa.Table.from_pandas(ex.kept_meta[by], preserve_index=False).schema
    return [{"name": f.name, "type": str(f.type), "partition": True} for f in types]


def check_ledger(manifest: dict) -> None:
    """Rows in = kept + rejected − added, per stage and for the job; shards hold them all."""
    problems = []
    for s in manifest["stages"]:
        if s["in"] != s["out"] + s["rejected"] - s["added"]:
            problems.append(
                f"stage {s['name']}: {s['in']} rows in, but {s['out']} kept + {s['rejected']} rejected "
                f"- {s['added']} added = {s['out'] + s['rejected'] - s['added']}"
            )
    t = manifest["totals"]
    if t["in"] != t["kept"] + t["rejected"] - t["added"]:
        problems.append(f"job: {t['in']} rows in ≠ {t['kept']} kept + {t['rejected']} rejected - {t['added']} added")
    rows = manifest["outputs"]["rows"]
    if rows["data"] != t["kept"]:
        problems.append(f"data shards hold {rows['data']} rows, but {t['kept']} were kept")
    if rows["rejects"] != t["rejected"]:
        problems.append(f"reject shards hold {rows['rejects']} rows, but {t['rejected']} were rejected")
    manifest["ledger"] = {"balanced": not problems, "problems": problems}
    if problems:
        raise LedgerError("the ledger does not balance:\n  " + "\n  ".join(problems))


def _versions() -> dict:
    """The libraries the output depends on: besides the data stack, those whose kernels
    make the rows (scikit-learn's models, OpenCV's pixels, fairlearn's mitigations), so two
    outputs of one job that differ can be told apart by what built them."""
    import distributed
    import numpy
    import pyarrow

    return {
        "python": platform.python_version(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        **{name: _installed(*dists) for name, dists in _KERNEL_LIBRARIES.items()},
    }


# name in the manifest -> the distributions that provide it (OpenCV comes in four builds)
_KERNEL_LIBRARIES = {
    "scikit-learn": ("scikit-learn",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "fairlearn": ("fairlearn",),
    "scikit-image": ("scikit-image",),
}


def _installed(*dists: str) -> str | None:
    """The version of the first of ``dists`` installed, read from its metadata (importing
    OpenCV or scikit-learn in the driver only to ask would cost a second)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def _write_report(sink: Sink, manifest: dict) -> None:
    try:
        from dsbuild.report import render_report
    except ImportError:
        return
    sink.write_text("report.html", render_report(manifest, sink.tmp, fs=sink.fs))
