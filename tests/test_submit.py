"""Background submission: a handle from Python, ``dsbuild submit`` / ``status`` from the shell.

Each submitted job runs in a real detached driver process, pointed at the shared session
cluster by its address so no extra cluster starts.
"""

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

import dsbuild
from dsbuild.cli import main
from dsbuild.job import JobError
from dsbuild.stages import StageError
from dsbuild.submit import Submission, SubmissionError, list_runs, runs_home

JOB = {
    "name": "digits-submit",
    "seed": 0,
    "source": {"format": "sample", "name": "digits", "partitions": 4},
    "columns": {"label": "label", "image": "image"},
    "stages": [{"validate_images": {}}, {"exact_dedup": {}}],
    "sink": {"path": "unused", "shard_rows": 500},
}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DSBUILD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def read_data(folder) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(Path(folder, "data").glob("*.parquet"))], ignore_index=True)


def test_python_submission_returns_the_manifest_and_the_same_output(client, tmp_path):
    address = client.scheduler.address
    handle = dsbuild.submit(JOB, cluster=address, output=str(tmp_path / "submitted"))
    assert handle.status() in ("accepted", "running", "finished")
    manifest = handle.result(timeout=300)
    assert handle.status() == "finished"
    assert handle.progress()["fraction"] == 1.0 and handle.progress()["total"] > 0
    assert manifest["ledger"]["balanced"]

    direct = dsbuild.run(JOB, output=str(tmp_path / "direct"), client=client)
    assert manifest["totals"] == direct["totals"]
    assert set(manifest) == set(direct) and manifest["output"] == str(tmp_path / "submitted")  # no KeyError: 'output'
    pd.testing.assert_frame_equal(read_data(tmp_path / "submitted"), read_data(tmp_path / "direct"))
    assert [h.id for h in list_runs()] == [handle.id]
    assert Submission(handle.id).result()["outputs"] == manifest["outputs"]


def test_a_bad_job_fails_at_submit_not_later(tmp_path):
    with pytest.raises(JobError, match="unknown option"):
        dsbuild.submit({**JOB, "stages": [{"validate_images": {"colour": 1}}]},
                       cluster="tcp://127.0.0.1:1", output=str(tmp_path / "x"))
    assert list_runs() == []
    with pytest.raises(StageError, match="'labl' is not a column of the source"):  # checked against the source too
        dsbuild.submit({**JOB, "columns": {"label": "labl", "image": "image"}}, cluster="tcp://127.0.0.1:1", output=str(tmp_path / "x"))
    assert list_runs() == []


def test_a_job_holding_python_objects_is_refused_at_submit(tmp_path):
    """A frame of annotations or a function rule went into the driver's job text as its
    name, and the driver failed ("'str' object has no attribute 'columns'")."""
    annotations = pd.DataFrame({"item": ["digits:0"], "annotator": ["w1"], "label": [0]})
    stages = [{"aggregate_labels": {"annotations": annotations}},
              {"labeling_functions": {"rules": [lambda part: part["label"]], "labels": [0, 1]}}]
    with pytest.raises(ValueError, match=r"stages\[0\].aggregate_labels holds DataFrame; stages\[1\].labeling_functions "
                       "holds function: Python objects live in this process"):
        dsbuild.submit({**JOB, "stages": stages}, cluster="tcp://127.0.0.1:1", output=str(tmp_path / "x"))
    assert list_runs() == []


def test_a_job_with_a_stage_of_ones_own_is_refused_at_submit(tmp_path):
    """The driver imports dsbuild alone: it started, then failed with "unknown stage"."""
    from dsbuild.stages import STAGES, MapStage, StageOptions, register

    class Noop(MapStage):
        name = "noop_of_my_own"
        Options = StageOptions

        def process(self, part):
            return part

    register(Noop)
    try:
        with pytest.raises(ValueError, match=r"stages\[1\].noop_of_my_own is a stage of [\w.]*test_submit, which the driver "
                           "does not import: Python objects live in this process"):
            dsbuild.submit({**JOB, "stages": [{"validate_images": {}}, Noop()]}, cluster="tcp://127.0.0.1:1",
                           output=str(tmp_path / "x"))
    finally:
        del STAGES["noop_of_my_own"]
    assert list_runs() == []


def test_cancel_stops_the_job_and_writes_nothing(client, tmp_path):
    out = tmp_path / "cancelled"
    handle = dsbuild.submit(JOB, cluster=client.scheduler.address, output=str(out))
    assert handle.cancel(timeout=120) == "cancelled"
    with pytest.raises(SubmissionError, match="cancelled"):
        handle.result()
    assert not out.exists()
    # The temporary folder goes, unless the run had reached a checkpoint before the cancel
    # came: that is kept for resume=True (CI at ecc83bb: the driver had written before-001).
    left = list(tmp_path.glob("cancelled.tmp-*"))
    assert not left or list(left[0].glob("_checkpoints/before-*.json")), "a cancel left a temporary folder without a checkpoint"


def test_a_killed_driver_is_lost_and_leaves_no_output_that_looks_complete(client, tmp_path):
    out = tmp_path / "killed"
    handle = dsbuild.submit(JOB, cluster=client.scheduler.address, output=str(out))
    os.kill(handle.info()["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while handle.status() != "lost" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert handle.status() == "lost"
    assert "exited without finishing" in handle.info()["error"]
    assert not out.exists()
    assert not any(p.name == "_SUCCESS" for p in tmp_path.rglob("*"))


def test_a_killed_driver_is_resumed_by_a_new_submission(client, tmp_path, capsys):
    """A resubmission started from scratch and deleted the killed driver's checkpoints.
    And `dsbuild status` of the lost run named its checkpoints on --cancel alone."""
    job = {**JOB, "stages": [*JOB["stages"], *[{"cast": {"schema": {"label": "str"}}}] * 30]}
    out = tmp_path / "resumed"
    handle = dsbuild.submit(job, cluster=client.scheduler.address, output=str(out))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("resumed.tmp-*/_checkpoints/before-001.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(handle.info()["pid"], signal.SIGKILL)
    assert not out.exists(), "the run finished before it could be killed"
    deadline = time.monotonic() + 30
    while handle.status() != "lost" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert main(["status", handle.id]) == 0
    assert f"its checkpoints are kept in {next(tmp_path.glob('resumed.tmp-*'))}: " in capsys.readouterr().err
    again = dsbuild.submit(job, cluster=client.scheduler.address, output=str(out), resume=True)
    manifest = again.result(timeout=300)
    assert manifest["resumed_from_stage"] == 1 and manifest["ledger"]["balanced"]
    assert len(read_data(out)) == manifest["totals"]["kept"]


def test_cli_submit_then_status(client, tmp_path, capsys):
    job_file = tmp_path / "job.yaml"
    job_file.write_text(dsbuild.load_job(JOB).to_yaml())
    out = tmp_path / "cli"
    assert main(["submit", str(job_file), "--cluster", client.scheduler.address, "--output", str(out)]) == 0
    printed = capsys.readouterr()
    run_id = printed.out.strip()  # the id alone, as RUN=$(dsbuild submit job.yaml) takes it
    assert run_id.startswith("digits") and len(printed.out.split()) == 1 and "dsbuild status" in printed.err
    assert (runs_home() / run_id / "status.json").exists()
    assert main(["status", run_id, "--wait"]) == 0
    assert "finished" in capsys.readouterr().out
    assert (out / "_SUCCESS").exists()
    assert main(["status"]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["status", "no-such-run"]) == 2


def test_status_names_the_output_whole_and_the_stage_of_how_many(client, tmp_path, monkeypatch, home):
    """status showed the job's relative output (out/x: the submitter's folder, not the
    follower's) while the run lasted and the absolute path once it finished; and "pass 11"
    of a number of passes no one knows before they come. The stage has a number of all."""
    from dsbuild.cli import _status_line
    from dsbuild.submit import _write_json

    monkeypatch.chdir(tmp_path)
    handle = dsbuild.submit(JOB, cluster=client.scheduler.address, output="relative/out")
    assert handle.info()["output"] == str(tmp_path / "relative" / "out")  # accepted, not yet finished
    handle.result(timeout=300)
    info = handle.info()
    assert info["output"] == str(tmp_path / "relative" / "out")
    assert (info["progress"]["stage"], info["progress"]["stages"]) == (len(JOB["stages"]), len(JOB["stages"]))
    folder = home / "r"
    folder.mkdir(parents=True)
    _write_json(folder / "status.json", {"state": "running", "output": "/o", "progress": {
        "done": 4, "total": 10, "pass": 11, "pass_done": 1, "pass_total": 5, "groups": {},
        "stage": 2, "stages": 3, "stage_name": "label_issues"}})
    assert "running   stage 2/3 label_issues, pass 11:  20% (1/5 tasks)  → /o" in _status_line(Submission("r", home))


def test_a_full_disk_is_said_with_the_output_by_status(client, tmp_path, tmpfs):
    """A submitted run whose disk filled said "OSError: [Errno 28] No space left on device"
    alone: no output, nothing to do. It now says what the command line says."""
    with tmpfs(tmp_path / "full", "size=300k"):
        handle = dsbuild.submit(JOB, cluster=client.scheduler.address, output=str(tmp_path / "full" / "out"))
        assert handle.wait(timeout=300) == "failed"
    assert handle.info()["error"].startswith(f"No space left on device (errno 28) while the run wrote {tmp_path / 'full' / 'out'}")


def test_ctrl_c_on_status_wait_says_the_run_goes_on(home):
    """Ctrl-C on `dsbuild status RUN --wait` said "interrupted: no output was written", as
    of a run, while the run it followed went on in the background."""
    import socket
    import subprocess
    import sys

    from dsbuild.submit import _write_json

    (home / "runs" / "r").mkdir(parents=True)
    _write_json(home / "runs" / "r" / "status.json", {"id": "r", "state": "running", "output": "/o", "host": socket.gethostname(),
                                              "pid": os.getpid()})
    proc = subprocess.Popen([sys.executable, "-m", "dsbuild.cli", "status", "r", "--wait"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "DSBUILD_HOME": str(home)})
    assert proc.stderr.readline().startswith("r  running")  # following
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "stopped following r; the run goes on in the background: 'dsbuild status r --cancel' stops it" in err, err
    assert "no output was written" not in err


def test_a_killed_drivers_progress_counter_leaves_the_scheduler(client):
    """The counter a driver registers on the scheduler stayed there when the driver was
    killed (or cancelled, or failed: only a finished run removed it), holding every key of
    its run and called on every later task's every transition, run after run."""
    import subprocess
    import sys

    script = ("import os, signal, sys\n"
              "from distributed import Client\n"
              "from dsbuild.submit import _start_progress\n"
              "c = Client(sys.argv[1])\n"
              "print(_start_progress(c), flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script, client.scheduler.address], capture_output=True, text=True, timeout=120,
                          check=False)  # it kills itself
    name = done.stdout.strip()
    assert name.startswith("dsbuild-progress-"), done.stderr

    def counters(dask_scheduler=None):
        return [n for n in dask_scheduler.plugins if n.startswith("dsbuild-progress-")]

    deadline = time.monotonic() + 30
    while name in client.run_on_scheduler(counters) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert name not in client.run_on_scheduler(counters)


def test_a_cancelled_run_keeps_its_checkpoints_for_resume(client, tmp_path, capsys):
    """Ctrl-C kept a run's checkpoints for --resume, but ``status --cancel`` deleted them:
    a cancelled run of hours started over. Cancelled now keeps them as Ctrl-C does, and
    the CLI says where they are."""
    job = {**JOB, "stages": [*JOB["stages"], *[{"cast": {"schema": {"label": "str"}}}] * 30]}
    out = tmp_path / "cancelled"
    handle = dsbuild.submit(job, cluster=client.scheduler.address, output=str(out))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("cancelled.tmp-*/_checkpoints/before-001.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert main(["status", handle.id, "--cancel"]) == 0
    said = capsys.readouterr()
    assert said.out.split()[1] == "cancelled"
    assert not out.exists()
    (folder,) = tmp_path.glob("cancelled.tmp-*")
    assert list(folder.glob("_checkpoints/before-001.json")) and not (folder / "_owner.json").exists()
    assert f"its checkpoints are kept in {folder}" in said.err
    again = dsbuild.submit(job, cluster=client.scheduler.address, output=str(out), resume=True)
    manifest = again.result(timeout=300)
    assert manifest["resumed_from_stage"] == 1 and manifest["ledger"]["balanced"]


def _when_there(path: Path) -> bool:
    """A task that waits for ``path`` to be made (a minute at most)."""
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def test_progress_does_not_go_back_when_a_later_pass_adds_tasks(client, home):
    """Tasks done of tasks submitted so far fell each time a pass of the run (a flush, a
    fit) submitted its tasks: a run at 100% went back to 20%. The figure is the current
    pass's, said with its number, so (pass, fraction) only moves forward."""
    import dask

    from dsbuild.cli import _status_line
    from dsbuild.submit import TaskProgress, _snapshot, _write_json, summarize_progress

    plugin = TaskProgress(client.id)
    client.register_plugin(plugin)
    folder = home / "r"
    folder.mkdir(parents=True)
    shown = []

    def seen():
        _write_json(folder / "status.json", {"state": "running", "progress": summarize_progress(
            client.run_on_scheduler(_snapshot, plugin.name))})
        p = Submission("r", home).progress()
        shown.append((p["pass"], p["fraction"]))
        return p

    try:
        client.compute([dask.delayed(abs)(-i) for i in range(8)], sync=True)
        assert seen()["fraction"] == 1.0
        go = home / "go"
        late = client.compute([dask.delayed(abs)(i) for i in range(10, 14)] + [dask.delayed(_when_there)(go)])
        deadline = time.monotonic() + 30
        while ((p := seen())["pass"] < 2 or p["pass_done"] < 4) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        client.gather(late)
        seen()
    finally:
        client.unregister_scheduler_plugin(plugin.name)
    assert shown == sorted(shown) and shown[0] == (1, 1.0) and shown[-1] == (2, 1.0)
    assert (2, 0.8) in shown
    _write_json(folder / "status.json", {"state": "running", "progress": summarize_progress(
        {"total": {"a": 10}, "done": {"a": 4}, "passes": [[2, 2], [2, 8]]})})
    assert "running   pass 2:  25% (2/8 tasks)" in _status_line(Submission("r", home))
    _write_json(folder / "status.json", {"state": "running"})  # no graph yet: 'pass 0: 0% (0/0 tasks)' was shown
    assert "running   planning" in _status_line(Submission("r", home))
