"""Submit a job to run in the background and follow it: ``dsbuild.submit`` / ``dsbuild submit``.

A submitted job runs in its own detached process (the driver), so it outlives the
Python session or shell that submitted it. Driver and followers share nothing but a run
folder under ``$DSBUILD_HOME/runs`` (default ``~/.dsbuild/runs``): the request, the
driver's log and ``status.json``, which the driver rewrites every second with its state
and progress. Any process on the machine can follow or cancel a run from its id.

States: submitted → accepted (job loaded, output target checked) → running (cluster up)
→ finished | failed | cancelled. A run whose driver died without saying so is ``lost``.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import key_split

from dsbuild.processes import alive
from dsbuild.progress import current_stage

ACTIVE = ("submitted", "accepted", "running")
DONE = ("finished", "failed", "cancelled", "lost")


class SubmissionError(RuntimeError):
    """The submitted job failed, was cancelled or its driver was lost."""


class Cancelled(KeyboardInterrupt):
    """Raised in the driver when it is asked to stop; a KeyboardInterrupt, so nothing
    swallows it and the run keeps its checkpoints for ``--resume`` as on Ctrl-C."""


def runs_home() -> Path:
    return Path(os.environ.get("DSBUILD_HOME", "~/.dsbuild")).expanduser() / "runs"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict) -> None:
    """Atomic replace, so a follower never reads half a status."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    for _ in range(5):
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, FileNotFoundError):
            time.sleep(0.05)
    return json.loads(path.read_text())


class Submission:
    """A handle on a submitted job: ``status()``, ``progress()``, ``result()``, ``cancel()``."""

    def __init__(self, run_id: str, home: Path | None = None):
        self.id = run_id
        self.folder = (home or runs_home()) / run_id
        if not (self.folder / "status.json").exists():
            raise FileNotFoundError(f"no submitted run {run_id!r} in {self.folder.parent}")

    def info(self) -> dict:
        """The whole status record; ``state`` becomes ``lost`` if the driver died silently."""
        info = _read_json(self.folder / "status.json")
        if info["state"] in ACTIVE and info.get("host") == socket.gethostname() and not alive(info.get("pid")):
            info = _read_json(self.folder / "status.json")  # it may have finished just now
            if info["state"] in ACTIVE:
                info["state"] = "lost"
                info["error"] = f"the driver process {info.get('pid')} exited without finishing; see {self.log_path}"
        return info

    def status(self) -> str:
        return self.info()["state"]

    def progress(self) -> dict:
        """The current pass (counted from 1) and the fraction of its tasks done; tasks done of
        tasks submitted so far, overall and per task group. Each pass of a run (a flush, a
        fit) adds tasks as it begins, so the fraction is the pass's: over all tasks so far,
        it went backwards at every pass."""
        info = self.info()
        p = info.get("progress") or {"done": 0, "total": 0, "groups": {}}
        if info["state"] == "finished":
            p = {**p, "done": p.get("total", 0), "pass_done": p.get("pass_total", 0)}
        done, total = (p["pass_done"], p["pass_total"]) if "pass" in p else (p["done"], p.get("total", 0))
        fraction = 1.0 if info["state"] == "finished" else (done / total if total else 0.0)
        return {"state": info["state"], "fraction": round(fraction, 4), "pass": p.get("pass", 0), **p}

    def wait(self, timeout: float | None = None, poll: float = 0.25) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (state := self.status()) in ACTIVE:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {state} after {timeout} s")
            time.sleep(poll)
        return state

    def result(self, timeout: float | None = None) -> dict:
        """Wait for the job and return its manifest, as ``dsbuild.run`` returns it (with the
        ``output`` folder, which manifest.json does not hold); raise SubmissionError if it
        did not finish."""
        state = self.wait(timeout)
        info = self.info()
        if state != "finished":
            raise SubmissionError(f"run {self.id} {state}: {info.get('error') or 'no error recorded'}")
        return {**json.loads(Path(info["manifest"]).read_text()), "output": info["output"]}

    def cancel(self, timeout: float = 60) -> str:
        """Ask the driver to stop: it writes no output, closes the cluster and says ``cancelled``;
        checkpoints the run reached are kept beside the output for ``resume=True``."""
        info = self.info()
        if info["state"] in DONE:
            return info["state"]
        if info.get("host") != socket.gethostname():
            raise SubmissionError(f"run {self.id} runs on {info.get('host')}; cancel it there")
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
        return self.wait(timeout)

    @property
    def log_path(self) -> Path:
        return self.folder / "driver.log"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __repr__(self) -> str:
        try:
            p = self.progress()
            return f"<Submission {self.id}: {p['state']}, pass {p['pass']}: {p['fraction']:.0%}>"
        except Exception:  # noqa: BLE001 - repr must not fail
            return f"<Submission {self.id}>"


def submit(
    job,
    *,
    cluster="local",
    output: str | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    overrides: dict | None = None,
    accept_timeout: float = 120,
    resume: bool = False,
) -> Submission:
    """Start ``job`` (path, YAML text, dict or JobSpec) in a background driver; return its handle.

    The job and the output target are checked here, so a bad job raises at once. Returns
    when the driver has accepted the job. ``resume=True`` continues an interrupted run of
    the same job from its last checkpoint (a submitted driver that was killed, say).
    """
    from dsbuild.clusters import check_startable, spec_from_target
    from dsbuild.io.sink import Sink
    from dsbuild.job import load_job

    spec = load_job(job, overrides)
    if spec.source.format == "frame":
        raise ValueError("a frame source lives in this Python process, which a submitted job outlives: "
                         "run it with dsbuild.run, or write the frame to Parquet and submit a job that reads that")
    held = _held_in_this_process(spec) + _stages_of_this_session(spec)
    if held:
        raise ValueError(f"{'; '.join(held)}: Python objects live in this process, which a submitted job outlives "
                         "(its driver reads the job as text): run it with dsbuild.run, or give them as data the job "
                         "can read (annotations from a file, labeling rules as {name, label, column, op, value}, "
                         "dsbuild's own stages)")
    if output:
        spec = spec.model_copy(update={"sink": spec.sink.model_copy(update={"path": output})})
    target = Sink(spec.sink.path, shard_rows=1, shard_bytes=1, compression="none", overwrite=overwrite)
    target.check_target()
    target.check_apart_from(spec.source, spec.stage_inputs())
    cluster_spec = spec_from_target(cluster)  # before the source is read: a typo there is said at once
    check_startable(cluster_spec)  # the driver starts it on this machine
    from dsbuild.pipeline import validate_against_source

    validate_against_source(spec)  # a column typo fails here, not minutes later in the background

    run_id = f"{spec.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    folder = runs_home() / run_id
    folder.mkdir(parents=True)
    (folder / "job.yaml").write_text(spec.to_yaml())
    request = {
        "cluster": cluster_spec.model_dump(mode="json"),
        "workers": workers,
        "overwrite": overwrite,
        "resume": resume,
        "cwd": os.getcwd(),
    }
    _write_json(folder / "request.json", request)
    status = {"id": run_id, "state": "submitted", "job": spec.name, "output": _shown_output(spec.sink.path),
              "cluster": cluster_spec.kind, "submitted": _now(), "host": socket.gethostname(), "pid": None}
    _write_json(folder / "status.json", status)
    with open(folder / "driver.log", "ab") as log:
        proc = subprocess.Popen(
            # not ``-m dsbuild.submit``: the package imports this module first, and Python warned of it in every log
            [sys.executable, "-c", "import sys; from dsbuild.submit import _drive; sys.exit(_drive(sys.argv[1]))", str(folder)],
            cwd=os.getcwd(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = Submission(run_id)
    deadline = time.monotonic() + accept_timeout
    try:
        while (info := _read_json(folder / "status.json"))["state"] == "submitted":
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.poll() is None and proc.terminate()
                raise SubmissionError(f"run {run_id}: the driver did not start:\n{handle.log()[-2000:]}")
            time.sleep(0.1)
    except KeyboardInterrupt:  # the driver, in a session of its own, went on with no id said to follow it
        proc.terminate()
        raise
    if info["state"] == "failed":
        raise SubmissionError(f"run {run_id} failed: {info.get('error')}")
    return handle


def _shown_output(path: str) -> str:
    """The output as the finished run names it: a local one absolute. ``status`` showed
    the job's relative ``out/x`` while the run lasted (meaning the submitter's folder, not
    the follower's) and ``/home/.../out/x`` once it finished."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _held_in_this_process(spec) -> list[str]:
    """The stages whose options hold Python objects (a frame of annotations, a function as
    a labeling rule), which the job's text only names: the driver read the name and failed
    ("'str' object has no attribute 'columns'")."""
    held = []
    for i, stage in enumerate(spec.stages):
        kinds: list[str] = []
        stage.model_dump(mode="json", fallback=lambda value: kinds.append(type(value).__name__) or "")
        if kinds:
            held.append(f"stages[{i}].{stage.name} holds {', '.join(sorted(set(kinds)))}")
    return held


def _stages_of_this_session(spec) -> list[str]:
    """Stages registered by the user's own code: the driver imports dsbuild alone, so it
    did not know them and failed after starting ("unknown stage 'too_short'")."""
    from dsbuild.stages import stage_class

    return [f"stages[{i}].{stage.name} is a stage of {cls.__module__}, which the driver does not import"
            for i, stage in enumerate(spec.stages) if not (cls := stage_class(stage.name)).__module__.startswith("dsbuild.")]


def list_runs() -> list[Submission]:
    """Every run in the runs folder, newest first."""
    home = runs_home()
    if not home.exists():
        return []
    folders = [p for p in home.iterdir() if (p / "status.json").exists()]
    return [Submission(p.name, home) for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


# -- progress, counted on the scheduler ---------------------------------------------------


class TaskProgress(SchedulerPlugin):
    """Counts one client's tasks by prefix, and by pass (each graph the client sends that
    brings new tasks: a flush, a fit's statistics): submitted, and finished at least once.

    Runs on the scheduler; a retried task (its worker died) counts as done once.
    """

    def __init__(self, client_id: str):
        self.name = f"dsbuild-progress-{client_id}"
        self.clients = {client_id}
        self.prefix: dict = {}  # key -> (prefix, pass)
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.passes: list[list[int]] = []  # [done, total] of each pass
        self.finished: set = set()

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs) -> None:
        if client not in self.clients:
            return
        new = [key for key in tasks if key not in self.prefix]
        if new:
            self.passes.append([0, len(new)])
        for key in new:
            p = key_split(key)
            self.prefix[key] = (p, len(self.passes) - 1)
            self.total[p] = self.total.get(p, 0) + 1

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish in ("memory", "erred") and key in self.prefix and key not in self.finished:
            self.finished.add(key)
            p, n = self.prefix[key]
            self.done[p] = self.done.get(p, 0) + 1
            self.passes[n][0] += 1

    def remove_client(self, scheduler, client: str) -> None:
        """Leave the scheduler with the driver: one killed, cancelled or failed left its
        counter there, holding every key of its run and called on every later task's
        every transition (a finished driver removes it after its last snapshot)."""
        if client in self.clients:
            scheduler.remove_plugin(name=self.name)

    def snapshot(self) -> dict:
        return {"total": dict(self.total), "done": dict(self.done), "passes": [list(p) for p in self.passes]}


def _snapshot(name: str, dask_scheduler=None) -> dict:
    return dask_scheduler.plugins[name].snapshot()


def summarize_progress(snapshot: dict) -> dict:
    """Task counts by prefix → overall done/total, per task group, and the current pass's.

    Dask fuses a chain of map stages into one task per partition, so groups are task
    prefixes (``write_partition``, a shuffle, a fused chain), not always single stages.
    A run's passes are known only as it goes (one per flush before a multi-pass stage and
    per fit), so done/total over the tasks submitted so far fell each time a pass began
    (95% → 40%); the current pass's figure, with its number, only moves forward.
    """
    groups = {p: {"done": snapshot["done"].get(p, 0), "total": t} for p, t in sorted(snapshot["total"].items())}
    passes = snapshot.get("passes") or [[0, 0]]
    return {
        "done": sum(g["done"] for g in groups.values()),
        "total": sum(g["total"] for g in groups.values()),
        "pass": len(snapshot.get("passes") or ()),
        "pass_done": passes[-1][0],
        "pass_total": passes[-1][1],
        "groups": groups,
    }


# -- the driver -----------------------------------------------------------------------------


class _Driver:
    def __init__(self, folder: Path):
        self.folder = folder
        self.status_path = folder / "status.json"
        self.status = _read_json(self.status_path)
        self.lock = threading.Lock()

    def update(self, **fields) -> None:
        with self.lock:
            self.status.update(fields, updated=_now())
            _write_json(self.status_path, self.status)

    def follow(self, client, progress_name: str, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                snap = client.run_on_scheduler(_snapshot, progress_name)
                self.update(progress={**summarize_progress(snap), **current_stage()},
                            workers=len(client.scheduler_info(n_workers=-1)["workers"]))
            except Exception:  # noqa: BLE001 - progress is best effort; the job goes on
                pass

    def run(self) -> int:
        from dsbuild.clusters import load_cluster_spec
        from dsbuild.job import load_job
        from dsbuild.pipeline import run
        from dsbuild.runtime import connect

        signal.signal(signal.SIGTERM, _raise_cancelled)
        signal.signal(signal.SIGINT, _raise_cancelled)
        request = _read_json(self.folder / "request.json")
        self.update(pid=os.getpid(), host=socket.gethostname())
        stop = threading.Event()
        try:
            spec = load_job((self.folder / "job.yaml").read_text())
            cluster = load_cluster_spec(request["cluster"])
            self.update(state="accepted", accepted=_now())
            with connect(cluster, request.get("workers")) as client:
                progress_on = _start_progress(client)
                self.update(state="running", started=_now(), dashboard=client.dashboard_link,
                            scheduler=client.scheduler.address, progress=None)
                if progress_on:
                    threading.Thread(target=self.follow, args=(client, progress_on, stop), daemon=True).start()
                manifest = run(spec, overwrite=request["overwrite"], client=client, resume=request.get("resume", False))
                stop.set()
                if progress_on:
                    try:
                        self.update(progress={**summarize_progress(client.run_on_scheduler(_snapshot, progress_on)), **current_stage()})
                        client.unregister_scheduler_plugin(progress_on)
                    except Exception:  # noqa: BLE001
                        pass
            stop.set()
            self.update(state="finished", finished=_now(), manifest=str(Path(manifest["output"]) / "manifest.json"),
                        totals=manifest["totals"], output=manifest["output"])
            return 0
        except Cancelled:
            stop.set()
            self.update(state="cancelled", finished=_now(), error="cancelled on request")
            return 1
        except BaseException as e:  # noqa: BLE001 - the driver's last duty is to say why
            stop.set()
            if _CANCEL_ASKED.is_set():  # the stop request broke a call, which raised its own error
                self.update(state="cancelled", finished=_now(), error=f"cancelled on request ({type(e).__name__})")
                return 1
            import traceback

            from dsbuild.cli import disk_full

            traceback.print_exc()
            self.update(state="failed", finished=_now(), error=disk_full(e, self.status.get("output", "")) or f"{type(e).__name__}: {e}")
            return 1


_CANCEL_ASKED = threading.Event()


def _raise_cancelled(signum, frame):
    from dsbuild.pipeline import INTERRUPTED

    _CANCEL_ASKED.set()
    INTERRUPTED.set()  # the run stops before it commits, even where the Cancelled is swallowed
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Cancelled()


def _start_progress(client) -> str | None:
    """Register this client's progress counter on the scheduler; a scheduler without dsbuild gets none."""
    plugin = TaskProgress(client.id)
    try:
        client.register_plugin(plugin)
        return plugin.name
    except Exception:  # noqa: BLE001
        return None


def _drive(folder: str) -> int:
    """The background driver's entry point (see :func:`submit`)."""
    return _Driver(Path(folder)).run()
