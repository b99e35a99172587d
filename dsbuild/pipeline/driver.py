"""The run's driver: a job and its output checked, the cluster, the temporary folder taken,
the passes computed, then the output finished and committed (or the folder kept for
``--resume`` when the run was stopped); and ``validate``'s check of a job against its
source without running it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
import warnings
from collections import Counter

import dask

from dsbuild.io.sink import OutputAppeared, OutputExists, Sink
from dsbuild.io.sources.common import skipped_note
from dsbuild.job import JobSpec, load_job
from dsbuild.pipeline.accounting import kept_rows
from dsbuild.pipeline.checks import _at_stage, _check_roles, _partition_problem, _weight_column
from dsbuild.pipeline.errors import DsbuildWarning, ResumeRefused
from dsbuild.pipeline.execution import Execution, StageRun, read_job_source
from dsbuild.pipeline.ids import _marked_source
from dsbuild.pipeline.manifest import _manifest, check_ledger, job_key
from dsbuild.stages.base import REJECT, StageError
from dsbuild.watch import WorkersLost, workers_watched

# p2p: Dask's shuffle that streams through disk, so memory stays bounded. No string
# conversion: sources and checkpoints already give every partition its final dtypes, and
# converting the object-typed marks at every read costs a pass over them.
_DASK_CONFIG = {"dataframe.shuffle.method": "p2p", "dataframe.convert-string": False}


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
    from dsbuild.runtime import end_memory_window, peak_worker_memory  # here: validate needs no distributed

    t0 = time.perf_counter()
    window = uuid.uuid4().hex
    peak_worker_memory(client, reset=True, window=window)
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
        task_seconds = _seconds_by_stage(stream, ex.runs, ex.fused_names)
        manifest = _manifest(spec, ex, data_shards, reject_shards, data_schema, reject_schema, task_seconds, client, window)
        check_ledger(manifest)
        t_report = time.perf_counter()
        manifest["timings"] = {
            "build_and_compute": round(t_compute - t0, 3),
            "finish": round(t_report - t_compute, 3),
            "total": round(t_report - t0, 3),
            "tasks_shared": round(task_seconds.get(SHARED, 0.0), 3),
        }
        _write_report(sink, manifest)
        # the report's own seconds: in the manifest only, as the page is drawn from it
        manifest["timings"]["report"] = round(time.perf_counter() - t_report, 3)
        manifest["timings"]["total"] = round(time.perf_counter() - t0, 3)
        sink.write_text("manifest.json", json.dumps(manifest, indent=2, default=str))
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
    finally:
        end_memory_window(client, window)
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
    source = read_job_source(spec, count_rows=False)
    frame = _marked_source(source, spec.columns.id)
    _check_roles(spec, frame._meta, source.notes)
    meta = kept_rows(frame._meta)
    stages = spec.build_stages(frame._meta)
    skipped = skipped_note(source.skipped)
    notes, problems = source.notes + [f"source: {skipped}"] * bool(skipped) + _weight_column(spec, frame._meta, stages), []
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


@contextlib.contextmanager
def _task_stream(client):
    """Task timings for the manifest; errors inside the block pass through untouched."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        yield ts


def _seconds_by_stage(stream, runs: list[StageRun], fused: dict[str, str] | None = None) -> dict[str, float]:
    """Task seconds per stage, a task counted for the stage its key names (a fused task by
    the keys it holds: a stage's map with its accounting); of ``ranges`` and ``ranges#2``
    (``dsbuild-ranges-2-map``) the longer name that matches a key. A task that names no
    stage counts for the stage it ran for (``StageRun.own_keys``): a fit pass, whose
    partial statistics Dask fuses with the checkpoint's read under a name of its own, or a
    read of the source; those were counted nowhere, so a stage whose fit was slow looked
    fast. A fit's first partials, taken in the tasks that wrote its checkpoint, count for
    the fit (``StageRun.moved_seconds``), not for the stage those tasks accounted for.

    A stage's accounting is named for it (``dsbuild-cast-account``): as
    ``dsbuild-account-2`` it counted for the first stage of its pass. The kept rows handed
    on name no stage (as ``dsbuild-split-kept`` they named one called ``split``). A fused
    task whose keys name several stages counts for none of them but ``SHARED``; it was
    credited whole to the stage with the longest name."""
    out: Counter = Counter()
    if stream is None:
        return {}
    fused = fused or {}
    safe = {run_.name: "".join(ch if ch.isalnum() else "-" for ch in run_.name) for run_ in runs}
    owner = {key: run_.name for run_ in reversed(runs) for key in run_.own_keys}
    for rec in stream.data:
        raw = rec.get("key", "")
        named = set()
        for member in fused.get(raw[0] if isinstance(raw, tuple) else raw, str(raw)).split(" "):
            matches = [name for name, s in safe.items() if f"dsbuild-{s}-" in member]
            if matches:
                named.add(max(matches, key=lambda n: len(safe[n])))
        stage = (next(iter(named)) if len(named) == 1 else SHARED) if named else owner.get(raw)
        if stage is not None:
            out[stage] += sum(s["stop"] - s["start"] for s in rec.get("startstops", ()) if s.get("action") == "compute")
    for run_ in runs:  # a fit's partials taken in the tasks of the flush before it
        if run_.moved_seconds and (run_.name in out or run_.moved_seconds > 0):
            out[run_.name] = max(0.0, out[run_.name] + run_.moved_seconds)
    return dict(out)


SHARED = "(shared)"  # the seconds of tasks that several stages' steps ran in


def _write_report(sink: Sink, manifest: dict) -> None:
    try:
        from dsbuild.report import render_report
    except ImportError:
        return
    sink.write_text("report.html", render_report(manifest, sink.tmp, fs=sink.fs))
