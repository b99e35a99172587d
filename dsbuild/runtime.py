"""Where a job runs: a cluster spec becomes a ``distributed.Client``.

Specs: ``local`` (a LocalCluster on this machine's cores, the default), an address
``tcp://host:port`` of an existing scheduler, or a YAML file from ``cluster/``. Dask does
the scheduling, shuffles and retries; dsbuild only sets workers up once each.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from dsbuild.clusters import LOCALHOST, THREAD_ENV


class DsbuildWorkerSetup(WorkerPlugin):
    """Runs once per worker: one OpenCV thread, so worker processes do not fight for cores."""

    name = "dsbuild-worker-setup"

    def __init__(self, opencv_threads: int = 1, env: dict[str, str] | None = None):
        self.opencv_threads = opencv_threads
        self.env = dict(env or {})

    def setup(self, worker) -> None:
        os.environ.update(self.env)
        import cv2

        cv2.setNumThreads(self.opencv_threads)
        cv2.ocl.setUseOpenCL(False)


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
    return LocalCluster(
        n_workers=n,
        processes=True,
        memory_limit=memory_limit,
        env={k: "1" for k in THREAD_ENV},
        **kwargs,
    )


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
        client = cluster_client(spec, workers, stack)
        client.register_plugin(DsbuildWorkerSetup())
        yield client
