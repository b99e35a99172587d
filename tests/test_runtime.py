"""Cluster specs: validated like job files, safe to load, and each kind reaches a real cluster.

The TLS test starts one small cluster of its own (certificates it generates); everything
else uses the shared session cluster.
"""

import datetime
import json
import ipaddress
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import dsbuild
from dsbuild.cli import main
from dsbuild.clusters import (
    ClusterSpecError,
    KubernetesSpec,
    LocalSpec,
    MissingPackage,
    SchedulerSpec,
    SlurmSpec,
    load_cluster_spec,
    spec_from_target,
    start_cluster,
)
from dsbuild.runtime import connect

ROOT = Path(__file__).resolve().parents[1]
JOB = {
    "name": "digits-check",
    "seed": 0,
    "source": {"format": "sample", "name": "digits", "partitions": 3},
    "columns": {"label": "label", "image": "image"},
    "stages": [{"validate_images": {}}, {"select": {"drop": ["image_format"]}}],
    "sink": {"path": "unused", "shard_rows": 1000},
}


def read_data(folder) -> pd.DataFrame:
    files = sorted(Path(folder, "data").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.mark.parametrize("name", ["local", "scheduler", "slurm", "pbs", "kubernetes"])
def test_every_shipped_spec_is_valid(name):
    spec = load_cluster_spec(ROOT / "cluster" / f"{name}.yaml")
    assert spec.kind == name


def test_spec_errors_point_at_the_line_and_suggest():
    text = "kind: slurm\ncores: 2\nwaltime: '01:00:00'\nadaptive: {minimum: 5, maximum: 2}\n"
    with pytest.raises(ClusterSpecError) as e:
        load_cluster_spec(text)
    problems = "\n".join(e.value.problems)
    assert "<yaml>:3: waltime: unknown option 'waltime' (did you mean 'walltime'?)" in problems
    assert "<yaml>:4: adaptive: minimum (5) is larger than maximum (2)" in problems

    with pytest.raises(ClusterSpecError, match=r"unknown kind 'slurn' \(did you mean 'slurm'\?\)"):
        load_cluster_spec("kind: slurn\n")
    with pytest.raises(ClusterSpecError, match="exactly one of address or scheduler_file"):
        load_cluster_spec("kind: scheduler\naddress: tcp://a:1\nscheduler_file: s.json\n")
    with pytest.raises(ClusterSpecError, match="expected 'local', a scheduler address like 'tcp://host:8786', the JSON file"):
        spec_from_target("slurm")
    with pytest.raises(ClusterSpecError, match=r"like 'tcp://host:8786' \(did you mean 'tcp://10.0.0.5:8786'\?\)"):
        spec_from_target("10.0.0.5:8786")  # the scheme left out


def test_a_spec_file_that_is_no_utf8_text_or_a_folder_is_named(tmp_path, capsys):
    """A spec saved as Latin-1 was a UnicodeDecodeError traceback, and a folder was "no such
    cluster spec file"; both are said as the job file says them, and the run stops with
    exit 2 before a cluster starts."""
    from dsbuild.cli import main

    latin = tmp_path / "cluster.yaml"
    latin.write_bytes("kind: local\n# café\nworkers: 1\n".encode("latin-1"))
    with pytest.raises(ClusterSpecError, match=r"cluster.yaml:2: not UTF-8 text \(byte 0xe9\); save the cluster spec as UTF-8$"):
        load_cluster_spec(latin)
    with pytest.raises(ClusterSpecError, match="a folder, not a cluster spec; name a YAML file in it"):
        load_cluster_spec(tmp_path)
    assert main(["run", str(ROOT / "jobs" / "quickstart.yaml"), "--cluster", str(latin), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {latin}:2: not UTF-8 text (byte 0xe9); save the cluster spec as UTF-8"
    assert load_cluster_spec(latin.write_text("kind: local\n# café\nworkers: 1\n", encoding="utf-8-sig") and latin).workers == 1


def test_a_mistyped_cluster_is_said_with_the_one_meant_before_the_source_is_read(tmp_path, capsys):
    """``--cluster locall`` or ``cluster/locl.yaml`` were said only after the job's source had
    been read to check the stages against it (seconds, or minutes for a large one), and
    without the name meant."""
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: parquet, path: {tmp_path / 'gone'}}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    for cluster, said in (("locall", "cluster 'locall' (did you mean 'local'?): expected 'local', "),
                          (str(ROOT / "cluster" / "locl.yaml"), f"locl.yaml: no such cluster spec file (did you mean {ROOT / 'cluster' / 'local.yaml'}?)")):
        for command in ("run", "submit"):
            assert main([command, str(job), "--cluster", cluster]) == 2
            err = capsys.readouterr().err
            assert said in err and "gone" not in err.replace(str(job), ""), err  # the missing source is not reached


def test_unquoted_walltime_is_not_read_as_seconds():
    assert load_cluster_spec("kind: slurm\nwalltime: 02:30:00\n").walltime == "02:30:00"


def test_a_cluster_file_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"kind: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ClusterSpecError):
        load_cluster_spec(text)
    assert not marker.exists()


def test_dashboards_listen_on_localhost_by_default():
    for spec in (LocalSpec(kind="local"), SlurmSpec(kind="slurm")):
        assert spec.dashboard.startswith("127.0.0.1:")
    assert SlurmSpec(kind="slurm").jobqueue_kwargs()["scheduler_options"]["dashboard_address"].startswith("127.0.0.1:")


def test_optional_packages_are_named_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(MissingPackage, match=r"pip install 'dsbuild\[slurm\]'.*dask-jobqueue"):
        start_cluster(SlurmSpec(kind="slurm"))
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(MissingPackage, match=r"pip install 'dsbuild\[kubernetes\]'.*dask-kubernetes"):
        start_cluster(KubernetesSpec(kind="kubernetes"))


def test_a_kind_this_machine_cannot_start_is_said_before_the_source_is_read(tmp_path, monkeypatch, capsys):
    """A Kubernetes spec without dask-kubernetes, or a PBS one without qsub, was said only
    after run and submit had read the job's source to check its stages."""
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no qsub
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: parquet, path: {tmp_path / 'gone'}}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    for spec, said in (("kubernetes", "needs the dask-kubernetes package"), ("pbs", "submits workers with qsub, which is not")):
        for command in ("run", "submit"):
            assert main([command, str(job), "--cluster", str(ROOT / "cluster" / f"{spec}.yaml")]) == 2
            err = capsys.readouterr().err
            assert said in err and "does not exist" not in err, err


def test_existing_scheduler_by_scheduler_file_runs_a_job(client, cluster, tmp_path):
    """`--cluster scheduler.yaml` with a scheduler file: same scheduler, same output as a direct run."""
    # the file as `dask scheduler --scheduler-file` writes it; Client.write_scheduler_file failed now and then on
    # Dask's own worker metrics, whose keys are tuples between heartbeats
    (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler", "address": client.scheduler.address}))
    spec_file = tmp_path / "scheduler.yaml"
    spec_file.write_text(f"kind: scheduler\nscheduler_file: {tmp_path / 'scheduler.json'}\nworkers: 2\n")
    with connect(spec_file) as c:
        assert c.scheduler.address == cluster.scheduler_address
        assert len(c.scheduler_info()["workers"]) == 2
        assert "dsbuild-worker-setup" in c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    # a scheduler others use is left without dsbuild's setup: a worker joining later needs no dsbuild
    assert "dsbuild-worker-setup" not in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))

    direct = dsbuild.run(JOB, output=str(tmp_path / "direct"), client=client)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(dsbuild.load_job(JOB).to_yaml())
    assert main(["run", str(job_file), "--cluster", str(spec_file), "--output", str(tmp_path / "via-spec"), "--quiet"]) == 0
    assert len(cluster.scheduler_info["workers"]) == 2  # the shared cluster outlives the command
    pd.testing.assert_frame_equal(read_data(tmp_path / "via-spec"), read_data(tmp_path / "direct"))
    assert direct["totals"]["kept"] == len(read_data(tmp_path / "direct")) == 1797


def test_a_killed_driver_leaves_a_scheduler_others_use_without_dsbuilds_setup(client):
    """A driver killed on a scheduler others use (SIGKILL, a lost batch job) never
    unregistered dsbuild's worker setup: every worker that joined later got it, one
    without dsbuild an error. The scheduler forgets it when the driver's client leaves."""
    import subprocess

    from dsbuild.runtime import DsbuildWorkerSetup

    script = ("import os, signal, sys\n"
              "from dsbuild.runtime import connect\n"
              "with connect(sys.argv[1]) as c:\n"
              "    print(sorted(c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))), flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")

    def setup_kept(dask_scheduler=None):
        return "dsbuild-worker-setup" in dask_scheduler.worker_plugins

    try:
        done = subprocess.run([sys.executable, "-c", script, client.scheduler.address], capture_output=True, text=True, timeout=120,
                              check=False)  # it kills itself
        assert "dsbuild-worker-setup" in done.stdout, done.stderr
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(setup_kept) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.run_on_scheduler(setup_kept)
        assert not [n for n in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins)) if "forget-setup" in n]
    finally:
        client.register_plugin(DsbuildWorkerSetup())  # as the fixture left it


def test_a_scheduler_file_is_read_as_its_spec_example_writes_it_and_a_missing_one_is_said(client, tmp_path, monkeypatch):
    """Dask's Client waited for ever for a scheduler file that was not there, whatever the
    spec's timeout, and read the spec's own example ``~/scheduler.json`` literally, so it
    waited for ever there too."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler", "address": client.scheduler.address}))
    with connect({"kind": "scheduler", "scheduler_file": "~/scheduler.json", "timeout": 5}) as c:
        assert c.scheduler.address == client.scheduler.address
    # the file itself as the cluster, as `dask scheduler --scheduler-file` wrote it: it was read as a spec with no kind
    assert spec_from_target(str(tmp_path / "scheduler.json")) == SchedulerSpec(kind="scheduler", scheduler_file=str(tmp_path / "scheduler.json"))
    with connect(tmp_path / "scheduler.json") as c:
        assert c.scheduler.address == client.scheduler.address
    t0 = time.monotonic()
    with pytest.raises(ClusterSpecError, match=r"scheduler_file ~/gone.json: no such file within 1 s; is the scheduler running"):
        with connect({"kind": "scheduler", "scheduler_file": "~/gone.json", "timeout": 1}):
            pass
    assert time.monotonic() - t0 < 10


def test_the_image_has_the_commands_the_dask_operator_runs(tmp_path):
    """dask-kubernetes' pods run ``dask-scheduler`` and ``dask-worker``, which distributed
    2026.6 no longer installs: an image built from cluster/Dockerfile crash-looped. The
    Dockerfile's own lines make them, here into a folder of the test's, and they start Dask."""
    import re
    import subprocess

    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text().replace("\\\n", "")
    made = [line.removeprefix("RUN ") for line in dockerfile.splitlines() if re.search(r"/usr/local/bin/dask-\$c", line)]
    assert made, "cluster/Dockerfile makes no dask-scheduler / dask-worker"
    subprocess.run(["sh", "-c", made[0].replace("/usr/local/bin", str(tmp_path))], check=True)
    for command in ("dask-scheduler", "dask-worker"):
        done = subprocess.run([str(tmp_path / command), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "--dashboard-address" in done.stdout, done.stderr


def test_kubernetes_quantities_and_env_may_be_numbers_as_in_a_manifest():
    """``cpu: 1`` is how Kubernetes manifests write a quantity; the spec refused it."""
    spec = load_cluster_spec("kind: kubernetes\nresources:\n  limits: {cpu: 1, memory: 4Gi}\n  requests: {cpu: 0.5}\n"
                             "env: {OMP_NUM_THREADS: 2}\n")
    assert spec.resources == {"limits": {"cpu": "1", "memory": "4Gi"}, "requests": {"cpu": "0.5"}}
    assert spec.env == {"OMP_NUM_THREADS": "2"}
    with pytest.raises(ClusterSpecError, match="env.DEBUG: Input should be a valid string"):
        load_cluster_spec("kind: kubernetes\nenv: {DEBUG: true}\n")  # True or true? said, not guessed


def test_paths_on_this_machine_may_start_at_home(tmp_path, monkeypatch):
    """``~/certs/ca.pem`` was 'no such file', and ``local_directory: ~/spill`` a folder named ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_cluster_spec("kind: local\nlocal_directory: ~/spill\ntls: {ca_file: ~/ca.pem, cert: ~/node.pem}\n")
    assert spec.local_directory == str(tmp_path / "spill")
    assert (spec.tls.ca_file, spec.tls.cert, spec.tls.key) == (str(tmp_path / "ca.pem"), str(tmp_path / "node.pem"), None)


def test_workers_asked_for_beside_a_client_are_said_to_be_unused(client, tmp_path):
    """dsbuild.run(job, client=c, workers=4) ran on the client's workers without a word."""
    job = {"name": "adult-few", "source": {"format": "sample", "name": "adult", "partitions": 1},
           "stages": [{"select": {"columns": ["age", "income"]}}], "sink": {"path": str(tmp_path / "out")}}
    with pytest.warns(UserWarning, match="workers is not used: the run uses the client given"):
        dsbuild.run(job, client=client, workers=4)
    with pytest.warns(UserWarning, match="cluster is not used"):
        dsbuild.run(job, client=client, cluster="cluster/local.yaml", overwrite=True)


def test_scheduler_address_is_a_spec():
    assert spec_from_target("tcp://10.0.0.5:8786") == SchedulerSpec(kind="scheduler", address="tcp://10.0.0.5:8786")
    assert spec_from_target("local") == LocalSpec(kind="local")


def test_cluster_mistakes_are_said_before_anything_starts(tmp_path, capsys):
    """A dashboard's URL, a missing port, a size Dask cannot read, a missing certificate and an
    unreachable scheduler each ended in a traceback from deep inside Dask."""
    for target, problem in (("tcp://127.0.0.1", "names no port: write tcp://127.0.0.1:8786"),
                            ("http://127.0.0.1:8787/status", "is not a scheduler's: write tcp://HOST:PORT")):
        with pytest.raises(ClusterSpecError, match=problem):
            spec_from_target(target)
    (tmp_path / "local.yaml").write_text("kind: local\nmemory_limit: 4 gigs\n")
    with pytest.raises(ClusterSpecError, match="local.yaml:2: memory_limit: '4 gigs' is no size; write it like 4GiB"):
        spec_from_target(str(tmp_path / "local.yaml"))
    for size in ("-5GiB", "1KiB"):  # a traceback from the nanny, and Dask's own MemoryError
        (tmp_path / "local.yaml").write_text(f"kind: local\nmemory_limit: {size}\n")
        with pytest.raises(ClusterSpecError, match=f"memory_limit: '{size}' is too small for a worker"):
            spec_from_target(str(tmp_path / "local.yaml"))
    (tmp_path / "tls.yaml").write_text(f"kind: scheduler\naddress: tcp://127.0.0.1:1\ntls: {{ca_file: {tmp_path / 'ca.pem'}, cert: x.pem}}\n")
    (tmp_path / "job.yaml").write_text(f"name: t\nsource: {{format: sample, name: adult}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    assert main(["run", str(tmp_path / "job.yaml"), "--cluster", str(tmp_path / "tls.yaml")]) == 2
    assert f"tls.ca_file: {tmp_path / 'ca.pem'}: no such file" in capsys.readouterr().err
    import socket

    with socket.socket() as silent:  # a port that takes connections and says nothing (a dashboard's waits for HTTP)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        (tmp_path / "silent.yaml").write_text(f"kind: scheduler\naddress: tcp://127.0.0.1:{silent.getsockname()[1]}\ntimeout: 1\n")
        assert main(["run", str(tmp_path / "job.yaml"), "--cluster", str(tmp_path / "silent.yaml")]) == 2  # it waited for ever
        assert "no answer to the handshake" in capsys.readouterr().err
    with socket.socket() as talker:  # a server that speaks first (SSH): a MemoryError from Dask's handshake
        talker.bind(("127.0.0.1", 0))
        talker.listen()
        port = talker.getsockname()[1]
        greet = threading.Thread(target=lambda: talker.accept()[0].sendall(b"SSH-2.0-OpenSSH_8.9\r\n"), daemon=True)
        greet.start()
        t0 = time.monotonic()
        assert main(["run", str(tmp_path / "job.yaml"), "--cluster", f"tcp://127.0.0.1:{port}"]) == 2
        assert time.monotonic() - t0 < 20
        err = capsys.readouterr().err
        assert f"the server at tcp://127.0.0.1:{port} is no Dask scheduler: it answered in another protocol" in err
        assert "Traceback" not in err
    (tmp_path / "nobody.yaml").write_text("kind: scheduler\naddress: tcp://127.0.0.1:9\ntimeout: 1\n")
    assert main(["run", str(tmp_path / "job.yaml"), "--cluster", str(tmp_path / "nobody.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no Dask scheduler answered at tcp://127.0.0.1:9 within 1 s" in err and "Traceback" not in err
    assert "nothing listens on that port: connection refused" in err  # Dask's words said only "Timed out"
    (tmp_path / "nobody.yaml").write_text("kind: scheduler\naddress: tcp://127.0.0.1:9\ntimeout: 3\n")
    with pytest.warns(UserWarning, match=r"nothing listens at tcp://127.0.0.1:9 yet \(connection refused\); waiting up to 3 s"):
        assert main(["run", str(tmp_path / "job.yaml"), "--cluster", str(tmp_path / "nobody.yaml")]) == 2  # in silence
    assert "no Dask scheduler answered at tcp://127.0.0.1:9 within 3 s" in capsys.readouterr().err
    t0 = time.monotonic()  # a host name that does not resolve: it waited all of the 30 s before
    assert main(["run", str(tmp_path / "job.yaml"), "--cluster", "tcp://no-such-scheduler.invalid:8786"]) == 2
    assert time.monotonic() - t0 < 20
    assert "no Dask scheduler at tcp://no-such-scheduler.invalid:8786: no host is named 'no-such-scheduler.invalid'" in capsys.readouterr().err


def test_a_dashboard_or_web_server_given_as_the_scheduler_is_said_at_once(cluster, tmp_path, capsys):
    """The dashboard's port given as the scheduler's (8787 for 8786) waited the Client's whole
    timeout (30 s) for a handshake a web server never sends, then said "no answer". A
    dashboard is named, with its scheduler's address; another web server as one."""
    import http.server
    from urllib.parse import urlparse

    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: sample, name: adult}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    dashboard = f"tcp://127.0.0.1:{urlparse(cluster.dashboard_link).port}"
    t0 = time.monotonic()
    assert main(["run", str(job), "--cluster", dashboard]) == 2
    assert time.monotonic() - t0 < 20
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: the server at {dashboard} is a Dask scheduler's dashboard, not "
                                                        f"the scheduler: the scheduler is at {cluster.scheduler_address}")
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            assert main(["run", str(job), "--cluster", f"tcp://127.0.0.1:{web.server_port}"]) == 2
        finally:
            web.shutdown()
    assert "is a web server, no Dask scheduler: is this a dashboard's port (8787 by default)?" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- TLS ------------------------------------------------------------------------------------


def _certificates(folder: Path) -> dict[str, str]:
    """A CA and one certificate it signed for 127.0.0.1, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("dsbuild-test-ca", "dsbuild-test-ca", ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build("127.0.0.1", "dsbuild-test-ca", key.public_key(), ca_key, ca=False)
    paths = {"ca_file": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node-key.pem"}
    paths["ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


def test_tls_from_the_cluster_spec(tmp_path):
    """Scheduler, workers and client talk TLS with the spec's certificates; plain TCP is refused."""
    from distributed import Client

    certs = _certificates(tmp_path)
    spec_file = tmp_path / "tls.yaml"
    spec_file.write_text(
        "kind: local\nworkers: 1\nmemory_limit: 2GiB\n"
        "tls:\n" + "".join(f"  {k}: {v}\n" for k, v in certs.items())
    )
    with connect(spec_file) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        manifest = dsbuild.run(JOB, output=str(tmp_path / "out"), client=client)
        assert manifest["ledger"]["balanced"] and manifest["totals"]["kept"] == 1797

        # set_as_default=False: a client that fails to connect would leave itself as the
        # default scheduler, and later tests would compute on it.
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout=2, set_as_default=False)
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(address, timeout=2, set_as_default=False)  # TLS without the certificates


def test_peak_worker_memory_is_measured(client):
    """The worker setup samples each worker's resident memory; a 300 MB result shows up in the peak."""
    import numpy as np
    from distributed import wait

    from dsbuild.runtime import peak_worker_memory

    baseline = peak_worker_memory(client, reset=True)
    assert set(baseline["workers"]) == set(client.scheduler_info()["workers"])
    size = 300 * 2**20
    held = client.submit(np.ones, size // 8, pure=False)
    wait(held)
    after = peak_worker_memory(client)
    del held
    assert after["max_bytes"] >= size
    assert all(w["limit_bytes"] > 0 for w in after["workers"].values())


def _short_lived_spike(size: int) -> int:
    import numpy as np

    return int(np.ones(size // 8).sum() > 0)


def test_peak_worker_memory_sees_a_spike_between_samples(client):
    """The peak is the kernel's high-water mark, not the largest of the 200 ms samples: 300 MB
    allocated and freed within one task, between two samples, is in the peak (sampled, a
    4M-row cleaning job's worker peaked at 577 MiB in the manifest and 619 MiB by the kernel)."""
    from dsbuild.runtime import DsbuildWorkerSetup, peak_worker_memory

    client.register_plugin(DsbuildWorkerSetup(sample_ms=600_000))  # no sample falls in the task
    try:
        baseline = peak_worker_memory(client, reset=True)["max_bytes"]
        size = 300 * 2**20
        assert client.submit(_short_lived_spike, size, pure=False).result() == 1
        assert peak_worker_memory(client)["max_bytes"] >= size
        assert peak_worker_memory(client, reset=True)["max_bytes"] < baseline + size  # a new window forgets it
    finally:
        client.register_plugin(DsbuildWorkerSetup())


def _freed_but_kept(mib: int) -> int:
    """Allocate ``mib`` MiB in Arrow's pool and in small heap blocks, and free it all: the
    allocators keep it for reuse, resident."""
    import numpy as np
    import pyarrow as pa

    arrays = [pa.array(np.random.default_rng(i).random(2**17)) for i in range(mib // 2)]
    blocks = [bytearray(200_000) for _ in range(mib * 5 // 2)]
    del arrays, blocks
    return 1


def test_a_new_memory_window_starts_without_an_earlier_runs_freed_memory(client):
    """Two runs on one client: memory the first freed but the allocators kept (Arrow's pool,
    glibc's heap) was in the second run's peak (a small run said 1.4 GiB after a large one,
    275 MiB on fresh workers)."""
    from dsbuild.runtime import peak_worker_memory

    peak_worker_memory(client, reset=True)
    before = peak_worker_memory(client)["max_bytes"]
    assert client.submit(_freed_but_kept, 600, pure=False).result() == 1
    assert peak_worker_memory(client)["max_bytes"] >= before + 400 * 2**20  # the first run's window has it
    peak_worker_memory(client, reset=True)  # the second run's window
    assert peak_worker_memory(client)["max_bytes"] < before + 200 * 2**20


def test_runs_that_overlap_on_one_client_say_their_memory_is_shared(client):
    """The workers hold one memory window: a run that starts while another runs resets the
    other's figures and adds its own memory to them. Each run's manifest says so, and a
    run alone on the workers says nothing."""
    from dsbuild.runtime import end_memory_window, peak_worker_memory

    peak_worker_memory(client, reset=True, window="first")
    peak_worker_memory(client, reset=True, window="second")  # while the first runs
    assert peak_worker_memory(client, window="second")["shared_with_runs"] == 1
    end_memory_window(client, "second")
    first = peak_worker_memory(client, window="first")
    assert first["shared_with_runs"] == 1 and "other run(s) used these workers" in first["note"]
    end_memory_window(client, "first")
    peak_worker_memory(client, reset=True, window="alone")
    assert "shared_with_runs" not in peak_worker_memory(client, window="alone")
    end_memory_window(client, "alone")


def test_workers_do_not_ask_for_huge_pages(client):
    """numpy's default on Linux is to madvise huge pages for large arrays (it can stall a worker
    in memory compaction); every worker of a dsbuild cluster has it off."""
    from numpy._core.multiarray import _get_madvise_hugepage

    assert set(client.run(_get_madvise_hugepage).values()) == {False}


def test_workers_run_no_statistical_profiler(client):
    """The profiler's 10 ms stack walks and hour of call trees are off on dsbuild's workers."""
    import time

    def profiler(dask_worker):
        return "profile" in dask_worker.periodic_callbacks, len(dask_worker.profile_history)

    time.sleep(1.5)  # longer than one profile cycle
    assert set(client.run(profiler).values()) == {(False, 0)}


def test_headroom_warning_says_when_a_worker_limit_is_too_small():
    from dsbuild.runtime import headroom_warning

    mib = 2**20
    assert headroom_warning(200 * mib, 4096 * mib, 0.8) is None
    assert headroom_warning(200 * mib, None, 0.8) is None  # no limit: nothing to pause at
    tight = headroom_warning(200 * mib, 400 * mib, 0.8)
    assert "200 MiB in use before any task" in tight and "tasks have 120 MiB" in tight
    stuck = headroom_warning(266 * mib, 300 * mib, 0.8)
    assert "paused before its first task and will run nothing" in stuck and "300 MiB memory_limit" in stuck


def test_a_worker_whose_libraries_fill_its_limit_says_so():
    """A worker that starts near its pause threshold logs why, where Dask users look for it
    (the worker logs), instead of leaving a job that never starts to guess at."""
    spec = {"kind": "local", "workers": 1, "memory_limit": "320MiB", "dashboard": None}
    with pytest.warns(UserWarning, match="MiB in use before any task, of the 256 MiB at which Dask pauses it"), connect(spec) as client:
        logs = [message for _, message in next(iter(client.get_worker_logs().values()))]
    assert any("give workers a larger memory_limit" in m for m in logs), logs  # and the run says it too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_workers_keep_freed_image_buffers_for_reuse():
    """Under the nanny's MALLOC_TRIM_THRESHOLD_, a 1 MiB buffer is a fresh mmap; after the
    worker setup's tuning it comes from the heap (glibc counts mmapped chunks)."""
    import os
    import subprocess

    probe = (
        "import ctypes, ctypes.util, sys, numpy as np\n"
        "from dsbuild.runtime import keep_freed_buffers\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c')); libc.mallinfo2.restype = Info\n"
        "tuned = sys.argv[1] == 'tuned' and keep_freed_buffers()\n"
        "before = libc.mallinfo2().hblks; image = np.ones(1 << 20, np.uint8)\n"
        "print(tuned, libc.mallinfo2().hblks - before)\n"
    )
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    runs = {how: subprocess.run([sys.executable, "-c", probe, how], env=env, capture_output=True, text=True, check=True).stdout.split() for how in ("plain", "tuned")}
    assert runs["plain"] == ["False", "1"]
    assert runs["tuned"] == ["True", "0"]


def test_a_local_worker_leaves_its_objects_to_the_os_as_it_closes():
    """Python's last garbage collection in a closing worker (pandas, Dask, OpenCV loaded)
    took 1-3 s per worker, which closing the cluster waited for: the teardown of the
    module local_cluster preloads freezes the collector first."""
    import gc

    from dsbuild import runtime

    assert gc.get_freeze_count() == 0
    try:
        runtime.dask_teardown(None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_worker_without_dsbuild_is_named_before_the_run(tmp_path):
    """A plain Dask worker (the default Kubernetes image) failed to start dsbuild's setup,
    and the run waited on it for ever."""
    import os
    import subprocess

    from distributed import Client, LocalCluster

    from dsbuild.runtime import connect

    (tmp_path / "dsbuild").mkdir()
    (tmp_path / "dsbuild" / "__init__.py").write_text("raise ModuleNotFoundError('no dsbuild here')\n")
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nthreads", "1",
                                   "--no-dashboard"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(cluster) as c:
                c.wait_for_workers(1, timeout=60)
            with pytest.raises(ClusterSpecError, match="1 of the cluster's 1 workers .* have no dsbuild installed"):
                with connect(cluster.scheduler_address):
                    pass
        finally:
            worker.terminate()
            worker.wait()


def test_a_worker_that_dies_in_the_setup_is_said_in_one_line(capfd):
    """A worker whose memory limit its libraries alone exceed dies while dsbuild sets it
    up: the user reads one line that says why, not distributed's ~60 (the nanny's restart,
    the scheduler's failed broadcast and its traceback, the client's closed stream)."""
    from dsbuild.watch import WorkersLost

    spec = {"kind": "local", "workers": 1, "memory_limit": "150MiB", "dashboard": None}
    with pytest.raises(WorkersLost, match="memory limit.*at least 1 GiB"):
        with connect(spec):
            pass
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) < 5, err


def test_workers_that_die_in_the_setup_leave_no_account_of_this_process_after_the_line():
    """With two workers, the second's failed broadcast, a never-retrieved future's traceback
    and the nannies' restarts came after the first's error (32 lines in all), and the cluster
    waited for the restarted workers to finish starting before it closed (27 s at load 30,
    13 s now). What the workers' own processes print is theirs."""
    import io
    import logging

    from dsbuild.watch import WorkersLost

    said = io.StringIO()
    terminal = logging.StreamHandler(said)  # as distributed's own handler on stderr, and Python's last resort for asyncio's
    terminal.setLevel(logging.WARNING)
    loggers = [logging.getLogger("distributed"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(terminal)
    try:
        spec = {"kind": "local", "workers": 2, "memory_limit": "100MiB", "dashboard": None}
        with pytest.raises(WorkersLost, match="memory limit.*at least 1 GiB"):
            with connect(spec):
                pass
        import gc

        gc.collect()  # a future whose exception was never retrieved says so when it is collected
    finally:
        for logger in loggers:
            logger.removeHandler(terminal)
    assert said.getvalue() == ""


@pytest.mark.filterwarnings("ignore:the cluster's workers died and none is left")  # said as they die; the error is asserted
def test_a_local_cluster_whose_workers_die_as_they_start_stops_the_run_at_once(tmp_path, monkeypatch):
    """Workers that die as they start (here a preload that exits, as one that cannot load
    its library does) are restarted by their nannies for ever: the run warned, then waited
    out DSBUILD_NO_WORKERS_SECONDS (300 s) for workers that could not come. On a local
    cluster in this process it stops once each worker has died twice, with their exit
    status; the cluster is left as it was."""
    import os
    import signal

    import dask
    from distributed import Client, LocalCluster

    from dsbuild.runtime import RESTART_CONFIG
    from dsbuild.watch import WorkersLost

    monkeypatch.setenv("DSBUILD_NO_WORKERS_SECONDS", "600")
    marker = tmp_path / "die"
    preload = tmp_path / "preload_that_exits.py"
    preload.write_text(f"import os, sys\n\n\ndef dask_setup(worker):\n    if os.path.exists({str(marker)!r}):\n"
                       "        print('this worker cannot start', file=sys.stderr, flush=True)\n        os._exit(3)\n")
    job = {"name": "died", "source": {"format": "sample", "name": "breast_cancer"}, "stages": [],
           "sink": {"path": str(tmp_path / "out")}}
    with dask.config.set(RESTART_CONFIG), LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0",
                                                       preload=[str(preload)]) as cluster, Client(cluster) as c:
        (nanny,) = cluster.workers.values()
        on_exit = nanny.process.on_exit
        marker.touch()
        os.kill(nanny.process.pid, signal.SIGKILL)
        t = time.monotonic()
        with pytest.raises(WorkersLost, match=r"the local cluster's workers \(1\) die as they start: they exited \d+ times "
                           r"\((each with status 3|killed by SIGKILL ×1, with status 3 ×\d+)\) and none came back") as e:
            dsbuild.run(job, client=c)
        assert time.monotonic() - t < 300
        assert "each worker's own output, above, says which" in str(e.value)
        assert nanny.process.on_exit == on_exit  # the count's hook is gone
    assert not (tmp_path / "out").exists()


def test_workers_let_opencv_read_exr(client):
    """OpenCV reads EXR only with OPENCV_IO_ENABLE_OPENEXR set before it is imported: the
    worker setup sets it once a worker (an EXR was refused as an unknown format)."""
    import os

    assert set(client.run(lambda: os.environ.get("OPENCV_IO_ENABLE_OPENEXR")).values()) == {"1"}
