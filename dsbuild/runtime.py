"""Where a job runs: a cluster spec becomes a ``distributed.Client``.

Specs: ``local`` (a LocalCluster on this machine's cores, the default), an address
``tcp://host:port`` of an existing scheduler, or a YAML file from ``cluster/``. Dask does
the scheduling, shuffles and retries; dsbuild only sets workers up once each.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
    """Worker processes, one thread each, memory split evenly with room for the driver."""
    n = workers or os.cpu_count() or 1
    if memory_limit is None:
        memory_limit = f"{int(psutil.virtual_memory().total * 0.8 / n / 2**20)}MiB"
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        memory_limit=memory_limit,
        env={k: "1" for k in THREAD_ENV},
        **kwargs,
    )


@contextlib.contextmanager
def connect(cluster: str | os.PathLike | None = "local", workers: int | None = None) -> Iterator[Client]:
    """A Client for the spec, with dsbuild's worker setup; the cluster closes on exit.

    Closing runs on Ctrl-C as on success, so no worker process outlives the command.
    """
    spec = str(cluster or "local")
    with contextlib.ExitStack() as stack:
        if spec == "local":
            owned = stack.enter_context(local_cluster(workers))
            client = stack.enter_context(Client(owned))
        elif "://" in spec:
            client = stack.enter_context(Client(spec))
        elif Path(spec).is_file():
            from dsbuild.clusters import cluster_from_file

            owned = stack.enter_context(cluster_from_file(spec, workers=workers))
            client = stack.enter_context(Client(owned))
            if workers:
                owned.scale(workers)
                client.wait_for_workers(workers, timeout=300)
        else:
            raise ValueError(
                f"cluster {spec!r}: expected 'local', a scheduler address like "
                "'tcp://host:8786', or a cluster spec file (see cluster/)"
            )
        client.register_plugin(DsbuildWorkerSetup())
        yield client
