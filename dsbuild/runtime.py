"""Where a job runs: a cluster spec becomes a ``distributed.Client``.

Specs: ``local`` (a LocalCluster on this machine's cores, the default), an address
``tcp://host:port`` of an existing scheduler, or a YAML file from ``cluster/``. Dask does
the scheduling, shuffles and retries; dsbuild only sets workers up once each.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator

import dask
import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from dsbuild.clusters import LOCALHOST, THREAD_ENV

# A child of Dask's worker logger, so its warnings are in ``Client.get_worker_logs()`` too.
worker_logger = logging.getLogger("distributed.worker.dsbuild")


def keep_freed_buffers(mmap_threshold: int = 16 << 20) -> bool:
    """Let glibc reuse freed image-sized buffers instead of mapping fresh pages each time.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it also
    freezes glibc's mmap threshold at 128 KiB, so every decoded image and transform output
    is a new mmap whose pages fault in zeroed, then an munmap: the augment stage took
    ~1.5x the CPU of a plain process. These are the values glibc's own adaptive rule
    would reach (trim at twice the mmap threshold). False where there is no mallopt.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_threshold) and mallopt(m_trim_threshold, 2 * mmap_threshold))


def avoid_huge_page_stalls() -> bool:
    """Stop numpy asking the kernel for transparent huge pages on large arrays.

    Where ``/sys/kernel/mm/transparent_hugepage/defrag`` is ``madvise`` (common, and so here),
    faulting in such an array on a machine whose memory is fragmented can compact memory
    synchronously for minutes (numpy issue 31590), and a worker that stalls near its limit
    is neither killed nor resumed. A precaution: the CI stall first blamed on it was a
    worker paused before its first task (see :func:`headroom_warning`). Small pages only
    make the first touch of a large array slower. False where numpy has no such switch.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True


def stop_profiler(worker) -> None:
    """Stop the worker's statistical profiler (the dashboard's Profile tab).

    Every 10 ms it takes the GIL to walk the task thread's stack, and it keeps an hour of
    call trees: ~18 MiB per worker after five minutes of a Parquet job, which on a 400 MiB
    worker was a good part of the room left above its 200 MiB baseline.
    """
    for name in ("profile", "profile-cycle"):
        callback = worker.periodic_callbacks.pop(name, None)
        if callback is not None:
            callback.stop()
    worker.profile_history.clear()
    worker.profile_keys_history.clear()


def release_freed_memory() -> None:
    """Hand memory that is freed but still held by Arrow's allocator and glibc back to the OS.

    A worker whose resident memory is near its limit pauses, and Dask resumes it only when
    that memory falls; freed memory the allocators keep for reuse (tens of MiB after a few
    Parquet partitions of text) does not fall on its own, so a 400 MiB worker paused for
    good and the job stalled.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library, looked up once (``find_library`` starts a subprocess)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def headroom_warning(baseline: int, limit: int | None, pause_fraction: float | None) -> str | None:
    """Why a worker's limit is too small for it, or None.

    A worker process holds its libraries (numpy, pyarrow, pandas, OpenCV: 200-270 MiB, more
    when their files were just installed) before any task. Dask pauses a worker above
    ``pause_fraction`` of its limit and never unpauses one that starts there, so a job on it
    hangs without an error; below half of that, tasks have little room and spill early.
    """
    if not limit or not pause_fraction:
        return None
    pause = pause_fraction * limit
    if baseline < pause / 2:
        return None
    mib = 2**20
    said = (f"{baseline / mib:.0f} MiB in use before any task, of the {pause / mib:.0f} MiB at which "
            f"Dask pauses it ({pause_fraction:.0%} of its {limit / mib:.0f} MiB memory_limit)")
    if baseline >= pause:
        return f"{said}: it is paused before its first task and will run nothing; give workers a larger memory_limit"
    return f"{said}: tasks have {(pause - baseline) / mib:.0f} MiB; give workers a larger memory_limit"


class DsbuildWorkerSetup(WorkerPlugin):
    """Runs once per worker: the libraries tasks use, imported up front; one OpenCV thread,
    so worker processes do not fight for cores; freed buffers kept for reuse
    (:func:`keep_freed_buffers`); small pages for numpy
    (:func:`avoid_huge_page_stalls`); no statistical profiler unless ``profile``
    (:func:`stop_profiler`); and a sampler of the worker process's memory, whose peak goes
    into the manifest and which hands freed memory back (:func:`release_freed_memory`)
    while the worker is near its limit."""

    name = "dsbuild-worker-setup"

    def __init__(self, opencv_threads: int = 1, env: dict[str, str] | None = None, sample_ms: int = 200, profile: bool = False):
        self.opencv_threads = opencv_threads
        self.env = dict(env or {})
        self.sample_ms = sample_ms
        self.profile = profile
        self.peak_bytes = 0

    def setup(self, worker) -> None:
        # OpenCV (4.5.5 on) reads EXR only where this is set before it is imported, a guard
        # against flaws in the OpenEXR decoder: set here, once a worker, not in each task.
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        os.environ.update(self.env)
        # What tasks use (pandas, Dask's dataframe, pyarrow, the stages), loaded now, as
        # `import dsbuild` did before the package loaded its API on first use: the memory
        # sampled below is then the worker's before its first task, which headroom_warning
        # judges.
        importlib.import_module("dsbuild.pipeline")
        import cv2

        cv2.setNumThreads(self.opencv_threads)
        cv2.ocl.setUseOpenCL(False)
        keep_freed_buffers()
        avoid_huge_page_stalls()
        if not self.profile:
            stop_profiler(worker)
        from tornado.ioloop import PeriodicCallback

        self._process = psutil.Process()
        self._limit = worker.memory_manager.memory_limit
        self._sample()
        warning = headroom_warning(self.peak_bytes, self._limit, worker.memory_manager.memory_pause_fraction)
        if warning:
            worker_logger.warning("worker %s: %s", worker.address, warning)
        self._sampler = PeriodicCallback(self._sample, self.sample_ms)
        self._sampler.start()

    def _sample(self) -> None:
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            return
        self.peak_bytes = max(self.peak_bytes, rss, high_water_mark())
        if self._limit and rss > self.release_above * self._limit:
            release_freed_memory()

    #: share of the worker's memory limit above which freed memory is handed back to the OS
    release_above = 0.7

    def teardown(self, worker) -> None:
        sampler = getattr(self, "_sampler", None)
        if sampler is not None:
            sampler.stop()


def _disk_bytes(worker) -> tuple[float, float]:
    """(bytes this worker spilled, bytes its p2p shuffles wrote to disk) since it started."""
    spilled = getattr(worker.data, "cumulative_metrics", {}).get(("disk-write", "bytes"), 0)
    shuffled = sum(v for k, v in worker.digests_total.items() if k[0] == "p2p" and k[-2:] == ("disk-write", "bytes"))
    return spilled, shuffled


def _worker_memory(reset: bool, dask_worker=None) -> dict | None:
    plugin = dask_worker.plugins.get(DsbuildWorkerSetup.name)
    if plugin is None:
        return None
    plugin._sample()
    disk = _disk_bytes(dask_worker)
    base = getattr(plugin, "disk_base", (0, 0))
    out = {"peak_bytes": plugin.peak_bytes, "spilled_bytes": int(disk[0] - base[0]), "shuffle_disk_bytes": int(disk[1] - base[1])}
    if reset:
        # Memory an earlier run freed but the allocators kept for reuse would otherwise count
        # in this run's peak (1.4 GiB after a large run, where the run alone peaked at 275 MiB).
        release_freed_memory()
        reset_high_water_mark()
        plugin.peak_bytes, plugin.disk_base = 0, disk
    return out


def high_water_mark() -> int:
    """This process's largest resident memory since it started or since
    :func:`reset_high_water_mark`, as the kernel counts it (``VmHWM``; 0 where there is
    none). Samples alone missed what a task held between two of them: a 4M-row cleaning
    job's worker peaked at 577 MiB by its samples and at 619 MiB by the kernel."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def reset_high_water_mark() -> None:
    """Start :func:`high_water_mark` again from the current resident memory (Linux 4.0+),
    so a job's peak is its own, not that of an earlier job on the same workers."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


_WINDOW = "dsbuild-memory-window"
_RESTARTED = "worker-restart-memory"  # the topic Dask's nanny logs a memory restart under


def peak_worker_memory(client, reset: bool = False, window: str | None = None) -> dict:
    """Per worker: largest resident memory (sampled), bytes spilled to disk and bytes its
    shuffles wrote to disk; totals; and workers restarted for exceeding their limit.

    ``reset=True`` starts a new window, e.g. at the start of a job. A worker that was
    restarted reports its figures since it came back. A run names its ``window`` (and
    ends it with :func:`end_memory_window`): the workers have one window at a time, so
    where another run's window overlapped this one, the figures say they are shared.
    """
    try:
        if reset:
            client.log_event(_WINDOW, {"window": window, "state": "start", "client": client.id})
        figures = {w: f for w, f in client.run(_worker_memory, reset).items() if f is not None}
        windows = [(t, m) for t, m in client.get_events(_WINDOW) if isinstance(m, dict)]
        since = _window_start(windows, window)
        restarts = [m for t, m in client.get_events(_RESTARTED) if t >= since]
    except Exception:  # noqa: BLE001 - a measurement must never fail a job
        return {}
    limits = {w: info.get("memory_limit") for w, info in client.scheduler_info(n_workers=-1)["workers"].items()}
    shared = _overlapping(windows, window, _clients(client)) if window and not reset else 0
    return {
        "max_bytes": max((f["peak_bytes"] for f in figures.values()), default=0),
        "spilled_bytes": sum(f["spilled_bytes"] for f in figures.values()),
        "shuffle_disk_bytes": sum(f["shuffle_disk_bytes"] for f in figures.values()),
        "restarts_over_limit": len(restarts),
        "workers": {w: {**f, "limit_bytes": limits.get(w)} for w, f in sorted(figures.items())},
        **({"shared_with_runs": shared, "note": f"{shared} other run(s) used these workers during this run: the figures "
            "hold their memory too, and count from the last of these runs' starts"} if shared else {}),
    }


def _clients(client) -> set[str]:
    def connected(dask_scheduler) -> list[str]:  # defined here, so it travels by value: a scheduler needs no dsbuild
        return list(dask_scheduler.clients)

    try:
        return set(client.run_on_scheduler(connected))
    except Exception:  # noqa: BLE001 - a measurement must never fail a job
        return set()


def end_memory_window(client, window: str) -> None:
    """Say that the run ``window`` no longer uses the workers (see :func:`peak_worker_memory`)."""
    try:
        client.log_event(_WINDOW, {"window": window, "state": "end"})
    except Exception:  # noqa: BLE001 - a closing client: nothing to share a window with
        pass


def _window_start(windows, window: str | None) -> float:
    """When ``window`` started (else the last window: any run's)."""
    starts = [t for t, m in windows if (m.get("window") == window or not window) and m.get("state") == "start"]
    return max(starts, default=0)


def _overlapping(windows, window: str, clients: set[str]) -> int:
    """How many other runs' windows overlapped ``window``: started or ended after it
    started, or still open (not ended, from a client still connected: a driver killed
    ends none)."""
    start = _window_start(windows, window)
    marks: dict[str, list[tuple[float, dict]]] = {}
    for t, m in windows:
        if m.get("window") not in (None, window):
            marks.setdefault(m["window"], []).append((t, m))
    return sum(1 for seen in marks.values()
               if any(t >= start for t, _ in seen)
               or not any(m.get("state") == "end" for _, m in seen) and seen[0][1].get("client") in clients)


def local_cluster(workers: int | None = None, memory_limit: str | None = None, **kwargs) -> LocalCluster:
    """Worker processes, one thread each, memory split evenly with room for the driver.

    Scheduler and dashboard listen on localhost unless ``host``/``dashboard_address`` say otherwise.
    """
    n = workers or os.cpu_count() or 1
    if memory_limit is None:
        memory_limit = f"{int(psutil.virtual_memory().total * 0.8 / n / 2**20)}MiB"
    kwargs.setdefault("host", LOCALHOST)
    kwargs.setdefault("dashboard_address", f"{LOCALHOST}:8787")
    kwargs.setdefault("threads_per_worker", 1)
    # The p2p scheduler plugin reports every shuffle's start and end at WARNING level; on
    # a local cluster its scheduler runs in this process, so that would reach the terminal.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    return LocalCluster(
        n_workers=n,
        processes=True,
        memory_limit=memory_limit,
        env={k: "1" for k in THREAD_ENV},
        preload=["dsbuild.runtime"],  # dask_setup below
        **kwargs,
    )


def dask_setup(worker) -> None:
    """Preloaded into the workers of :func:`local_cluster`: Ctrl-C in a terminal reaches
    every process of its group, and each worker that took it printed a traceback while
    the driver was already closing the cluster. The driver alone handles it.

    A failed task's "Compute Failed" log is held too: a local worker shares the driver's
    terminal, and the driver says the same error (raised again, with the task's traceback
    where it is a bug), so a full disk was said three times in 111 lines."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_failed_task_said_by_driver)


def _failed_task_said_by_driver(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Compute Failed")


def dask_teardown(worker) -> None:
    """Preloaded into the workers of :func:`local_cluster`, run as the worker closes: its
    process is about to exit, and Python's last garbage collection over everything pandas,
    Dask and OpenCV had loaded took 1-3 s per worker, which the closing cluster waited
    for. Frozen objects are left to the operating system (``atexit`` still runs)."""
    gc.freeze()


# A local cluster closes a worker's nanny for good when no worker of that name has come
# back this long after one died. Dask's 15 s is shorter than a worker's restart on a busy
# machine (imports alone took 24 s at load 15 on 2 cores): the restarted worker was shut
# down on arrival and the job waited forever on a cluster with no workers.
RESTART_CONFIG = {"distributed.deploy.lost-worker-timeout": "10 minutes"}


@contextlib.contextmanager
def connect(cluster="local", workers: int | None = None) -> Iterator[Client]:
    """A Client for the cluster spec, with dsbuild's worker setup; the cluster closes on exit.

    ``cluster`` is ``local``, a scheduler address, a spec file from ``cluster/`` (or its
    YAML text, a dict, a parsed spec). Closing runs on Ctrl-C as on success, so no worker
    process or batch job outlives the command.
    """
    from dsbuild.clusters import cluster_client, spec_from_target

    spec = spec_from_target(cluster)
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(RESTART_CONFIG))
        after_cluster = stack.enter_context(contextlib.ExitStack())  # closes after the cluster does
        client = cluster_client(spec, workers, stack)
        try:
            with _setup_watched(client, after_cluster):
                _check_worker_installs(client)
                client.register_plugin(DsbuildWorkerSetup())
                if spec.kind == "scheduler":  # a scheduler others use: workers that join later need no dsbuild
                    stack.callback(_forget_setup, client)
                    _forget_setup_when_gone(client)
                notes = client.run(_headroom)
            for address, note in sorted(notes.items()):
                if note:
                    warnings.warn(f"worker {address}: {note}", UserWarning, stacklevel=3)
            yield client
        except (Exception, KeyboardInterrupt):  # not GeneratorExit: a context left unclosed, collected
            if spec.kind == "local":
                _mute_closing_workers(client)
            raise


def _mute_closing_workers(client) -> None:
    """Silence the local workers' Dask logs once Ctrl-C or an error has stopped the run,
    before the cluster closes: each worker logged its cancelled tasks ("Async instruction ... ended
    with CancelledError") and, when the scheduler in this process closed first, a failed
    heartbeat's 40-line traceback, under the one line that says the run was interrupted.
    Local workers only: a shared scheduler's workers go on serving others."""
    from dsbuild.watch import quiet_dask_logs

    try:
        client.run(quiet_dask_logs, on_error="ignore")
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, a closed connection: close as it is
        pass


@contextlib.contextmanager
def _setup_watched(client, after_cluster: contextlib.ExitStack):
    """A worker that dies while dsbuild sets the workers up fails the setup with one line
    that says why: distributed's own account (the nanny's restart, the scheduler's failed
    broadcast with its traceback, the client's closed stream: about 60 lines) is held and
    dropped, and so is what it says until the cluster has closed (``after_cluster``): with
    two workers, the second's failed broadcast, its never-retrieved future's traceback and
    the nannies' restarts came after the first's error. A worker whose memory limit its
    libraries alone exceed dies so."""
    from distributed.comm import CommClosedError

    from dsbuild.watch import WorkersLost, _HeldLogs

    held = _HeldLogs(also=("asyncio",))
    try:
        yield
    except (CommClosedError, ConnectionError, TimeoutError) as e:
        said = [record.getMessage() for _, record in held.held]
        held.mute()
        after_cluster.callback(held.close)
        _stop_restarts(client)
        over = any("memory budget" in line for line in said)
        why = (f"its nanny restarted it for exceeding its memory limit; a worker holds ~250 MiB of libraries before "
               "any task: give workers at least 1 GiB (memory_limit in a cluster spec, or fewer workers)") if over else (
               "the worker's own log says why")
        raise WorkersLost(f"a worker died while dsbuild set the workers up: {why}") from e
    except BaseException:
        held.close()
        raise
    else:
        held.close()


def _stop_restarts(client) -> None:
    """Stop the workers of a local cluster whose setup failed, and their nannies' restarts:
    the cluster is about to close, and it waited for workers the nannies had restarted to
    finish starting (6-15 s at load 15), which then printed their own warnings and a
    heartbeat's traceback under the run's one line."""
    from dsbuild.watch import local_nannies

    for nanny in local_nannies(client) or []:
        nanny.close_gracefully(reason="dsbuild-setup-failed")
        pid = nanny.process.pid if nanny.process is not None else None
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _forget_setup(client) -> None:
    try:
        client.unregister_worker_plugin(DsbuildWorkerSetup.name)
    except Exception:  # noqa: BLE001 - a scheduler already gone has nothing to forget
        pass


class SetupForgotten(SchedulerPlugin):
    """On a scheduler others use, forgets dsbuild's worker setup when the client that
    registered it leaves without doing so itself: a driver killed (SIGKILL, a lost batch
    job) left the setup there, for every worker that joined later, dsbuild or not."""

    def __init__(self, client_id: str):
        self.name = f"dsbuild-forget-setup-{client_id}"
        self.client = client_id

    def remove_client(self, scheduler, client: str) -> None:
        if client == self.client:
            scheduler.worker_plugins.pop(DsbuildWorkerSetup.name, None)
            scheduler.remove_plugin(name=self.name)


def _forget_setup_when_gone(client) -> None:
    try:
        client.register_plugin(SetupForgotten(client.id))
    except Exception:  # noqa: BLE001 - a scheduler without dsbuild cannot hold it: the setup stays, as it did
        pass


def _check_worker_installs(client) -> None:
    """The workers there are have dsbuild, as this process has it: a worker without it (a
    plain Dask image) failed to start dsbuild's setup, and the run waited on it for ever.
    Another version is said, not refused."""
    from dsbuild.clusters import ClusterSpecError

    def imported() -> str:  # defined here, so it travels by value and imports dsbuild there
        import dsbuild

        return dsbuild.__version__

    here = imported()
    found = client.run(imported, on_error="return")
    lacking = sorted(a for a, v in found.items() if isinstance(v, BaseException))
    if lacking:
        raise ClusterSpecError([f"{len(lacking)} of the cluster's {len(found)} workers ({', '.join(lacking[:3])}) have no "
                                "dsbuild installed; install it where they run (their Python environment, or the image)"])
    other = sorted({v for v in found.values() if v != here})
    if other:
        warnings.warn(f"the cluster's workers have dsbuild {', '.join(other)}, this process {here}: results may differ "
                      "from a run with one version", UserWarning, stacklevel=3)


def _headroom(dask_worker) -> str | None:
    """:func:`headroom_warning` for a worker, said by the run (the worker's own log line is
    not seen by whoever runs the job: the run sat paused without a word)."""
    manager = dask_worker.memory_manager
    return headroom_warning(psutil.Process().memory_info().rss, manager.memory_limit, manager.memory_pause_fraction)
