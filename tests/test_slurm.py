"""A real Slurm cluster on this machine: workers arrive as Slurm batch jobs.

``cluster/slurm/setup-local-slurm.sh`` (run by .ci/run, or here if Slurm is not up yet)
installs and starts a one-node Slurm. The tests skip only when Slurm cannot start.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import dsbuild
from dsbuild.cli import main
from dsbuild.runtime import connect

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed: pip install 'dsbuild[slurm]'")

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "cluster" / "slurm" / "setup-local-slurm.sh"
JOB = {
    "name": "digits-slurm",
    "seed": 0,
    "source": {"format": "sample", "name": "digits", "partitions": 4},
    "columns": {"label": "label", "image": "image"},
    "stages": [{"validate_images": {}}, {"exact_dedup": {}}],
    "sink": {"path": "unused", "shard_rows": 500},
}


def _node_state() -> str:
    if not shutil.which("sinfo"):
        return ""
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    return r.stdout.strip() if r.returncode == 0 else ""


@pytest.fixture(scope="module")
def slurm():
    if _node_state().rstrip("*") in ("idle", "mix", "alloc"):
        return
    if os.geteuid() != 0:
        pytest.skip(f"Slurm is not running and starting it needs root: run sudo {SETUP}")
    r = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"Slurm could not start on this machine: {(r.stderr or r.stdout).strip()[-500:]}")


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text(
        "kind: slurm\n"
        "cores: 1\nprocesses: 1\nmemory: 2GB\nwalltime: '00:20:00'\njobs: 2\n"
        "host: 127.0.0.1\nworker_host: 127.0.0.1\ndashboard: 127.0.0.1:0\n"
        f"log_directory: {tmp_path / 'logs'}\nlocal_directory: {tmp_path / 'spill'}\n"
        "job_extra_directives: ['--job-name=dsbuild-test']\nwait_timeout: 120\n"
    )
    return path


def _our_jobs() -> list[str]:
    r = subprocess.run(["squeue", "-h", "-n", "dsbuild-test", "-o", "%i %t"], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if line.strip() and line.split()[1] not in ("CG", "CD")]


def read_data(folder) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(Path(folder, "data").glob("*.parquet"))], ignore_index=True)


def test_workers_run_inside_slurm_jobs_and_the_output_matches(slurm, spec_file, client, tmp_path):
    t0 = time.perf_counter()
    with connect(spec_file) as slurm_client:
        started = time.perf_counter() - t0
        job_ids = slurm_client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert len(job_ids) == 2
        assert all(job_ids.values()), f"a worker is not inside a Slurm job: {job_ids}"
        assert len(set(job_ids.values())) == 2, "two worker jobs, one worker each"
        running = {line.split()[0] for line in _our_jobs()}
        assert set(job_ids.values()) <= running
        on_slurm = dsbuild.run(JOB, output=str(tmp_path / "slurm"), client=slurm_client)
    print(f"\nslurm: 2 worker jobs connected in {started:.1f} s; job took {on_slurm['timings']['total']:.1f} s")
    assert on_slurm["cluster"]["workers"] == 2

    local = dsbuild.run(JOB, output=str(tmp_path / "local"), client=client)
    assert on_slurm["totals"] == local["totals"]
    pd.testing.assert_frame_equal(read_data(tmp_path / "slurm"), read_data(tmp_path / "local"))
    _wait_until_gone()


def test_cli_run_with_a_slurm_spec(slurm, spec_file, tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(dsbuild.load_job(JOB).to_yaml())
    assert main(["run", str(job_file), "--cluster", str(spec_file), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "_SUCCESS").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cluster"]["workers"] == 2 and manifest["ledger"]["balanced"]
    _wait_until_gone()


def _wait_until_gone(timeout: float = 30) -> None:
    """Closing the cluster cancels its batch jobs: none outlives the command."""
    deadline = time.monotonic() + timeout
    while _our_jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _our_jobs(), f"worker jobs left behind: {_our_jobs()}"


def _failed_fast_with(spec_file, tmp_path, line: str) -> bool:
    """``dsbuild run`` of JOB on the spec with ``line`` added exits 2 well before
    wait_timeout (120 s)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec_file.read_text() + line + "\n")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(dsbuild.load_job(JOB).to_yaml())
    t0 = time.monotonic()
    code = main(["run", str(job_file), "--cluster", str(bad), "--output", str(tmp_path / "out"), "--quiet"])
    return code == 2 and time.monotonic() - t0 < 60


def test_worker_jobs_slurm_refuses_are_said_at_once(slurm, spec_file, tmp_path, capsys):
    """A partition that does not exist was logged by Dask, and the run then waited out all
    of wait_timeout for workers that never came."""
    assert _failed_fast_with(spec_file, tmp_path, "queue: nosuchpartition")
    assert "Slurm refuses the worker jobs: sbatch: error: invalid partition specified: nosuchpartition" in capsys.readouterr().err
    assert not _our_jobs()


def test_worker_jobs_larger_than_every_node_are_said_with_the_nodes_size(slurm, spec_file, tmp_path, capsys):
    """The shipped spec (4 cores a job) on a 2-core node was refused with Slurm's words
    alone, "Requested node configuration is not available": which of the spec's numbers
    was too large, and what the nodes have, was left to find."""
    cores = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=20).stdout.split()[0].rstrip("+"))
    spec_file.write_text(spec_file.read_text().replace("cores: 1\nprocesses: 1\n", f"cores: {cores + 1}\nprocesses: 1\n"))
    assert _failed_fast_with(spec_file, tmp_path, "")
    err = capsys.readouterr().err
    assert "Slurm refuses the worker jobs: " in err and "Requested node configuration is not available" in err, err
    assert f"each worker job asks for {cores + 1} cores and 2GB (cores, memory in the spec), and the largest node has {cores} cores and " in err
    assert not _our_jobs()


def test_worker_jobs_that_end_before_connecting_are_said_with_their_log(slurm, spec_file, tmp_path, capsys):
    """A python the nodes lack made every worker job fail at once, and the run waited out
    all of wait_timeout for workers that could no longer come."""
    assert _failed_fast_with(spec_file, tmp_path, "python: /nonexistent/python")
    err = capsys.readouterr().err
    assert "0 of the 2 workers asked for connected, and no more can: worker jobs" in err
    assert f"{tmp_path / 'logs'}/dask-worker-" in err and "/nonexistent/python: No such file or directory" in err
    assert not _our_jobs()
