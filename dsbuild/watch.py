"""Watching the cluster while a run computes: a run whose workers are all gone or all
paused for memory fails with why, instead of waiting for ever; a task that kills every
worker that runs it is explained."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
import warnings


class WorkerKilled(RuntimeError):
    """Every worker that ran one task died running it (Dask's KilledWorker)."""


def killed_message(e, names: list[str]) -> str:
    """KilledWorker said which task and where, not why nor what to do: a partition too
    large for a worker's memory is the usual cause (120 phone photos in one partition
    killed two 2 GiB workers four times)."""
    limit = getattr(e.last_worker, "memory_limit", None)
    memory = f" of {limit / 2**30:.1f} GiB" if limit else ""
    return (f"{', '.join(names)}: the task {e.task!r} killed every worker that ran it ({e.allowed_failures + 1}), "
            f"most often for want of memory (a worker's limit{memory}); give the workers more memory (fewer workers, "
            "or memory_limit in a cluster spec), or make the partitions smaller (the source's blocksize, or an images "
            f"source's bytes_per_partition); the last worker was {e.last_worker.address}")


class WorkersLost(RuntimeError):
    """The cluster has had no worker for longer than ``DSBUILD_NO_WORKERS_SECONDS``."""


WAITING_SAID = 10.0  # seconds without any worker before a run says it waits for one
_SETUP_SECONDS = 60.0  # a worker removed this long before the watch began died in the run's own setup (connect)


@contextlib.contextmanager
def workers_watched(client, every: float = 1.0):
    """Fail the run once the cluster has had no worker for ``DSBUILD_NO_WORKERS_SECONDS``
    (default 300) after having had some: on a scheduler whose workers all died, Dask waits
    for new ones for ever, and the run hung with no word. A cluster still waiting for its
    first workers (a batch queue) is left to wait, and said to wait after ``WAITING_SAID``
    seconds (on a scheduler with no worker, the run sat silent). Workers that are all
    paused for memory as long are treated alike: Dask never resumes one whose libraries
    alone fill its pause threshold."""
    from distributed import Future
    from distributed.client import FutureCancelledError
    from distributed.comm import CommClosedError

    from dsbuild.clusters import ClusterSpecError
    from dsbuild.pipeline import DsbuildWarning

    try:
        limit = float(os.environ.get("DSBUILD_NO_WORKERS_SECONDS", "300"))
    except ValueError:
        value = os.environ["DSBUILD_NO_WORKERS_SECONDS"]
        raise ClusterSpecError([f"DSBUILD_NO_WORKERS_SECONDS={value!r}: give a number of seconds"]) from None
    stop = threading.Event()
    stopped: list[str] = []  # why the watch stopped the run
    held = _HeldLogs()
    nannies = local_nannies(client)
    restarts = _Restarts(nannies) if nannies else None
    start, started = time.monotonic(), time.time()

    def stop_run(why: str) -> None:
        stopped.append(why)
        cancel_all()

    def cancel_all() -> None:
        client.cancel([Future(key, client) for key in list(client.futures)], force=True)

    def watch():
        seen, since, said = False, None, False
        paused_since, paused_said = None, False
        while not stop.wait(every):
            if stopped:  # what the run submits after the stop (it was still building its graph) waits too
                cancel_all()
                continue
            mark = held.mark()
            n = worker_count(client)
            if n is None:
                continue
            if n:
                held.release(mark)
                if restarts:
                    restarts.base = len(restarts.exits)
            elif restarts and (why := restarts.hopeless(client)):
                stop_run(why)
                continue
            paused = paused_workers(client) if n else 0
            if not n or paused < n:
                paused_since = None
            elif paused_since is None:
                paused_since = time.monotonic()
            elif not paused_said and time.monotonic() - paused_since > WAITING_SAID:
                paused_said = True
                warnings.warn(f"every worker of the cluster is paused, {_PAUSED}, so it runs no task; {_MORE_MEMORY}. The "
                              f"run is stopped if this lasts {limit:.0f} s (DSBUILD_NO_WORKERS_SECONDS)", DsbuildWarning,
                              stacklevel=2)
            elif time.monotonic() - paused_since > limit:
                stop_run(f"every worker has been paused for {limit:.0f} s, {_PAUSED}, so the run was stopped; {_MORE_MEMORY}")
                continue
            if not seen and not n and workers_died(client, since=started - _SETUP_SECONDS):
                # Workers that died before the first look (a plugin or preload that exits, a memory
                # limit the libraries alone exceed): a cluster that lost its workers, not one still
                # starting, which the run waited for for ever.
                seen = True
                again = ("the run is stopped if they die again as they start" if restarts else
                         f"the run is stopped if none comes back within {limit:.0f} s (DSBUILD_NO_WORKERS_SECONDS)")
                warnings.warn(f"the cluster's workers died and none is left (a worker's log says why: a memory_limit "
                              f"too small for the libraries, a worker plugin or preload that fails); {again}",
                              DsbuildWarning, stacklevel=2)
            if not seen and not n and not said and time.monotonic() - start > WAITING_SAID:
                said = True
                warnings.warn(f"the cluster ({client.scheduler.address}) has no worker yet; waiting for one (start "
                              "workers with: dask worker ADDRESS, or look at the batch queue)", DsbuildWarning, stacklevel=2)
            if n or not seen:
                seen, since = seen or n > 0, None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since > limit:
                stop_run(f"the cluster has had no worker for {limit:.0f} s (DSBUILD_NO_WORKERS_SECONDS), so the run was stopped")

    thread = threading.Thread(target=watch, name="dsbuild-workers-watch", daemon=True)
    thread.start()
    try:
        yield
    except Exception as e:
        kept = "its checkpoints, if any, are kept for --resume"
        if stopped:
            held.drop()
            raise WorkersLost(f"{stopped[0]}; {kept}") from e
        # a cancelled task, or data that found no worker to go to (the source's frame scattered,
        # whose connection closes if its worker dies while it is sent: the scheduler may not
        # have noticed yet)
        closed = isinstance(e, (ConnectionError, CommClosedError))
        if (closed or isinstance(e, (FutureCancelledError, TimeoutError))) and _none_left(client, wait=5.0 if closed else 0.0):
            held.drop()
            raise WorkersLost(f"the cluster has no worker left, so the run was stopped; {kept}") from e
        raise
    finally:
        stop.set()
        thread.join()
        held.close()
        if restarts:
            restarts.close()


def local_nannies(client) -> list | None:
    """The nannies of a local cluster in this process (one ``dsbuild run`` made, or a
    LocalCluster the caller made), which say when they restart their workers; None for
    any other cluster (a scheduler's address, a batch queue), or one whose adaptive
    scaling may start new workers."""
    from distributed import Nanny

    cluster = getattr(client, "cluster", None)
    workers = list(getattr(cluster, "workers", {}).values())
    if not workers or getattr(cluster, "_adaptive", None) is not None or not all(isinstance(w, Nanny) for w in workers):
        return None
    return workers


class _Restarts(logging.Handler):
    """How often a local cluster's workers exited (their nannies restart them), with the
    exit statuses and what the nannies said of them (a worker over its memory budget).
    Workers that die as they start (a preload that exits, a memory_limit the libraries
    alone exceed) are restarted for ever, and the run waited out DSBUILD_NO_WORKERS_SECONDS
    (300 s) for workers that never came. Counted by each nanny's worker process's exit
    callback, restored when the watch ends."""

    def __init__(self, nannies: list):
        super().__init__(logging.WARNING)
        self.nannies = nannies
        self.exits: list[int] = []
        self.base = 0  # exits before the watch last saw a worker
        self.words: list[str] = []
        self.wrapped = [(p, p.on_exit) for p in (getattr(n, "process", None) for n in nannies) if callable(getattr(p, "on_exit", None))]
        for process, original in self.wrapped:
            process.on_exit = functools.partial(self._exited, original)
        logging.getLogger("distributed.nanny").addHandler(self)

    def _exited(self, original, exitcode) -> None:
        self.exits.append(exitcode)
        original(exitcode)

    def emit(self, record: logging.LogRecord) -> None:
        said = record.getMessage().strip()
        if not said.startswith("Restarting worker"):  # said for every exit, which the statuses tell better
            self.words = [w for w in self.words if w != said][-1:] + [said]

    def close(self) -> None:
        for process, original in self.wrapped:
            process.on_exit = original
        logging.getLogger("distributed.nanny").removeHandler(self)
        super().close()

    def hopeless(self, client) -> str | None:
        """Why no worker can come back (the cluster has none now), or None: every nanny
        closed, or the workers exited twice each since the watch last saw one, none of
        them while running a task (a task that kills its workers is Dask's KilledWorker,
        which names the task)."""
        from distributed.core import Status

        exits = self.exits[self.base:]
        closed = all(n.status in (Status.closing, Status.closed, Status.failed) for n in self.nannies)
        if not closed and (len(exits) < 2 * len(self.nannies) or _tasks_killed_workers(client)):
            return None
        codes = list(dict.fromkeys(exits))
        statuses = (f"each {_exit_text(codes[0])}" if len(codes) == 1
                    else ", ".join(f"{_exit_text(code)} ×{exits.count(code)}" for code in codes))
        how = "their nannies have closed" if closed else f"they exited {len(exits)} times ({statuses}) and none came back"
        said = f"; the nannies said: {' | '.join(self.words)}" if self.words else ""
        return (f"the local cluster's workers ({len(self.nannies)}) die as they start: {how}, so the run was stopped "
                "(a worker preload or plugin that exits, or a memory_limit the libraries alone exceed; each worker's own "
                f"output, above, says which){said}")


def _exit_text(code: int) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"with status {code}"


def _tasks_killed_workers(client) -> bool:
    """Whether a worker died running one of the scheduler's tasks (Dask counts the task as
    suspicious)."""

    def suspicious(dask_scheduler) -> bool:  # defined here, so it travels by value: a scheduler needs no dsbuild
        return any(ts.suspicious for ts in dask_scheduler.tasks.values())

    try:
        return client.run_on_scheduler(suspicious)
    except Exception:  # noqa: BLE001 - a closing client: the run itself reports that
        return True


DASK_LOGGERS = ("distributed", "tornado", "asyncio")


def quiet_dask_logs() -> None:
    """Dask's loggers set to CRITICAL in this process: for a run that was stopped or failed,
    whose closing cluster would log its cut streams under the run's one line."""
    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _HeldLogs:
    """Holds what distributed logs for a moment, and says it only if the run goes on: a
    run that lost every worker printed a screen of distributed's own lines first (workers
    removed, scattered data lost, keys it could not gather, the scatter's traceback),
    before the one line that says what happened and what to do. Held on the handlers of
    the ``distributed`` logger (it does not propagate), released at each look of the watch
    that finds a worker (a second at most) and when the run ends, and dropped when the run
    stops for want of workers."""

    def __init__(self, also: tuple[str, ...] = ()):
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.lock = threading.Lock()
        self.muted = False
        self.filters = [(h, _Hold(h, self)) for h in logging.getLogger("distributed").handlers]
        for handler, hold in self.filters:
            handler.addFilter(hold)
        # loggers held whole (asyncio's, which logs a never-retrieved future's traceback): they
        # have no handler of their own, and go to Python's last-resort one
        self.loggers = [(logging.getLogger(name), _Hold(None, self)) for name in also]
        for logger, hold in self.loggers:
            logger.addFilter(hold)

    def mute(self) -> None:
        """Drop what is held, and what is logged from now on until :meth:`close`."""
        with self.lock:
            self.held, self.muted = [], True

    def mark(self) -> int:
        """How many records are held now: :meth:`release` up to a mark says only those
        logged before the look at the cluster that followed it."""
        with self.lock:
            return len(self.held)

    def release(self, upto: int | None = None) -> None:
        with self.lock:
            upto = len(self.held) if upto is None else upto
            said, self.held = self.held[:upto], self.held[upto:]
        for handler, record in said:
            record.dsbuild_released = True
            if handler is None:  # a logger's own record
                logging.getLogger(record.name).handle(record)
            else:
                handler.handle(record)

    def drop(self) -> None:
        with self.lock:
            self.held = []

    def close(self) -> None:
        """Stop holding, and say what is held (the run did not stop for want of workers)."""
        for handler, hold in self.filters:
            handler.removeFilter(hold)
        for logger, hold in self.loggers:
            logger.removeFilter(hold)
        self.release()


class _Hold(logging.Filter):
    def __init__(self, handler: logging.Handler | None, logs: _HeldLogs):
        super().__init__()
        self.handler, self.logs = handler, logs

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "dsbuild_released", False):
            return True
        with self.logs.lock:
            if not self.logs.muted:
                self.logs.held.append((self.handler, record))
        return False


_PAUSED = "its memory above Dask's pause threshold (distributed.worker.memory.pause: 80% of memory_limit by default)"
_MORE_MEMORY = "give workers a larger memory_limit, or fewer workers with more memory each"


def paused_workers(client) -> int:
    """How many workers are paused for memory (Dask pauses one above its pause threshold,
    and one whose libraries alone fill it never resumes: the run hung without a word)."""

    def paused(dask_scheduler) -> int:  # defined here, so it travels by value: a scheduler needs no dsbuild
        return sum(ws.status.name == "paused" for ws in dask_scheduler.workers.values())

    try:
        return client.run_on_scheduler(paused)
    except Exception:  # noqa: BLE001 - a closing client: the run itself reports that
        return 0


def _none_left(client, wait: float) -> bool:
    """Whether the cluster has no worker, given the scheduler ``wait`` seconds to notice a
    worker that has just died (the run's error can come first)."""
    end = time.monotonic() + wait
    while (n := worker_count(client)) != 0 and time.monotonic() < end:
        time.sleep(0.2)
    return n == 0


def workers_died(client, since: float) -> bool:
    """Whether a worker has left the scheduler since ``since`` (a ``time.time()``): a
    cluster without workers that had some is not one still waiting for its first (a batch
    queue). Removals before the run are not its workers dying: an adaptive cluster scaled
    to none between jobs waits for its queue like any other."""

    def removed(dask_scheduler, since) -> bool:  # defined here, so it travels by value: a scheduler needs no dsbuild
        return any(isinstance(e, dict) and e.get("action") == "remove-worker" and t >= since
                   for t, e in dask_scheduler.get_events("all"))

    try:
        return client.run_on_scheduler(removed, since=since)
    except Exception:  # noqa: BLE001 - a closing client: the run itself reports that
        return False


def worker_count(client) -> int | None:
    """How many workers the scheduler has (None: it cannot be asked); ``nthreads`` is the
    smallest answer the scheduler gives about them (``scheduler_info`` sends each
    worker's metrics, too much to ask every second of a large cluster)."""
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - a closing client: the run itself reports that
        return None
