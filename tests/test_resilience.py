"""A worker process dies mid-job; Dask recomputes what it lost and the output is unchanged.

One small cluster of its own (it loses a worker): 2 worker processes under nannies. The
kill is triggered by the scheduler itself, the moment half of the shuffle's transfer
tasks have finished, so it lands mid-job on any machine speed.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import dask
import pandas as pd
import pytest
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.utils import key_split

import dsbuild
from dsbuild.watch import WorkerKilled
from dsbuild.runtime import RESTART_CONFIG, DsbuildWorkerSetup, local_cluster
from dsbuild.stages.base import MapStage, StageOptions, register

JOB = {
    "name": "digits-resilience",
    "seed": 0,
    "source": {"format": "sample", "name": "digits", "partitions": 8},
    "columns": {"label": "label", "image": "image"},
    "stages": [{"validate_images": {}}, {"exact_dedup": {}}, {"select": {"drop": ["image_format"], "where": [{"column": "label", "op": "!=", "value": "9"}]}}],
    "sink": {"path": "unused", "shard_rows": 400},
}


class KillAfter(SchedulerPlugin):
    """SIGKILL the worker holding the ``n``-th finished task with this prefix (once)."""

    name = "kill-after"

    def __init__(self, scheduler, prefix: str, n: int, pids: dict[str, int]):
        self.scheduler, self.prefix, self.n, self.pids = scheduler, prefix, n, pids
        self.seen = 0
        self.killed: str | None = None
        self.tasks_in_flight = 0

    def transition(self, key, start, finish, *args, **kwargs):
        if self.killed or finish != "memory" or key_split(key) != self.prefix:
            return
        self.seen += 1
        if self.seen == self.n:
            ts = self.scheduler.tasks[key]
            worker = next(iter(ts.who_has)).address
            self.tasks_in_flight = sum(1 for t in self.scheduler.tasks.values() if t.state in ("processing", "waiting", "queued"))
            os.kill(self.pids[worker], signal.SIGKILL)
            self.killed = worker


def frames(folder) -> dict[str, pd.DataFrame]:
    out = {}
    for kind in ("data", "rejects"):
        files = sorted(Path(folder, kind).glob("*.parquet"))
        out[kind] = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    return out


def counts(manifest) -> list:
    return [(s["name"], s["in"], s["out"], s["rejected_by_reason"], s["added"]) for s in manifest["stages"]]


def test_sigkill_a_worker_mid_job_gives_identical_output(tmp_path, monkeypatch):
    # The job's shuffles are small enough for Dask's task shuffle; force p2p, which large
    # jobs use and whose recovery from a lost worker is the harder path.
    monkeypatch.setattr("dsbuild.stages.shapes.SMALL_SHUFFLE", 0)
    # RESTART_CONFIG as dsbuild.run sets it: a replacement worker slow to start on a busy machine is kept
    with dask.config.set(RESTART_CONFIG), local_cluster(2, "3GiB", dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(DsbuildWorkerSetup())
        t = time.perf_counter()
        undisturbed = dsbuild.run(JOB, output=str(tmp_path / "undisturbed"), client=client)
        undisturbed_seconds = time.perf_counter() - t

        pids = client.run(os.getpid)
        killer = KillAfter(cluster.scheduler, "shuffle-transfer", n=4, pids=pids)
        cluster.scheduler.add_plugin(killer)
        result = {}

        def run():
            result["manifest"] = dsbuild.run(JOB, output=str(tmp_path / "killed"), client=client)

        t = time.perf_counter()
        runner = threading.Thread(target=run)
        runner.start()
        runner.join(timeout=600)
        killed_seconds = time.perf_counter() - t
        assert killer.killed, "the worker was never killed: the job had no shuffle-transfer tasks"
        assert killer.tasks_in_flight > 0, "the kill did not land mid-job"
        assert "manifest" in result, "the job did not finish after the worker was killed"
        client.wait_for_workers(2, timeout=60)
        assert killer.killed not in client.scheduler_info()["workers"], "the killed worker is gone; a new one replaced it"
    print(f"\nundisturbed {undisturbed_seconds:.1f} s, with a worker SIGKILLed mid-shuffle {killed_seconds:.1f} s")

    killed = result["manifest"]
    assert killed["ledger"]["balanced"]
    assert counts(killed) == counts(undisturbed)
    assert [s["rows"] for s in killed["outputs"]["data"]] == [s["rows"] for s in undisturbed["outputs"]["data"]]
    a, b = frames(tmp_path / "killed"), frames(tmp_path / "undisturbed")
    pd.testing.assert_frame_equal(a["data"], b["data"])
    pd.testing.assert_frame_equal(a["rejects"], b["rejects"])
    assert len(a["data"]) == killed["totals"]["kept"] > 0


class _DieOptions(StageOptions):
    id: str


@register
class DieOnRow(MapStage):
    """Kills its worker process on the partition holding the row ``id``: a task too big for a worker."""

    name = "die_on_row"
    Options = _DieOptions

    def process(self, part: pd.DataFrame) -> pd.DataFrame:
        if (part["id"] == self.options.id).any():
            os._exit(1)
        return part


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_a_task_that_kills_its_workers_is_said_with_what_to_do(tmp_path):
    """KilledWorker named the task and the last worker, not the stage, the memory or what to change."""
    job = {**JOB, "stages": [{"die_on_row": {"id": "digits:100"}}]}
    config = {**RESTART_CONFIG, "distributed.scheduler.allowed-failures": 0}
    with dask.config.set(config), local_cluster(1, "2GiB", dashboard_address=None) as cluster, Client(cluster) as client:
        with pytest.raises(WorkerKilled, match=r"die_on_row: the task .* killed every worker that ran it \(1\), most "
                                               r"often for want of memory \(a worker's limit of 2\.0 GiB\).*blocksize"):
            dsbuild.run(job, output=str(tmp_path / "out"), client=client)


def test_a_task_of_a_stopped_run_never_makes_its_folder_again(tmp_path):
    """A task looked for its run's temporary folder, then made its own folder with every
    parent: a stop (cancel, a failure) that removed the temporary folder between the two
    had it made again, and a staged file or a merge's record was left beside the output.
    The folders below the temporary one are made one at a time, never it."""
    import shutil

    import pandas as pd
    from fsspec.implementations.local import LocalFileSystem

    from dsbuild.io.sink import RunStopped, Sink, _encode

    class StoppedJustAfterTheLook(LocalFileSystem):
        """The run's folder removed just after a task saw it was there."""

        def exists(self, path, **kwargs):
            there = super().exists(path, **kwargs)
            if path.rstrip("/") == sink.tmp.rstrip("/") and there:
                shutil.rmtree(path)
            return there

    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**20, compression="zstd", key="t")
    sink.claim()
    part = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})
    staged = Sink(str(tmp_path / "other"), shard_rows=1000, shard_bytes=2**20, compression="zstd", key="t")
    staged = staged.write_partition(part, staged.staging("data", "kept"), 0)  # a merge's input, read before the stop
    sink.fs = StoppedJustAfterTheLook()
    with pytest.raises(RunStopped):
        sink.write_partition(part, sink.staging("data", "kept"), 0)
    assert not os.path.exists(sink.tmp)
    os.makedirs(sink.tmp)
    with pytest.raises(RunStopped):
        _encode(sink.fs, staged[0]["path"], f"{tmp_path}/p.parquet", None, {}, {}, f"{sink.tmp}/_staging/done-data-x/0.pickle", sink.tmp)
    assert not os.path.exists(sink.tmp)
