"""Cluster spec files (``cluster/*.yaml``) → a running Dask cluster and a Client.

A spec names its ``kind`` — local, scheduler, slurm, pbs or kubernetes — and that kind's
settings. It is validated like a job file (unknown keys refused, errors point at the
line) and read with YAML's safe loader, so a cluster file is data: it cannot import or
run Python. The one exception by design is ``job_script_prologue`` of Slurm/PBS specs:
shell lines the batch system runs before the worker, as in any sbatch script.

Slurm/PBS go through dask-jobqueue and Kubernetes through dask-kubernetes; both are
optional and a missing one is named with the command that installs it. Dashboards bind
to localhost unless a spec sets ``dashboard`` to another address.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOCALHOST = "127.0.0.1"


class ClusterSpecError(ValueError):
    """A cluster spec that cannot be used as written; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class MissingPackage(ImportError):
    """The spec's kind needs an optional package that is not installed."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bytes_text(value: str | None) -> str | None:
    """A size as Dask reads it (``4GiB``, ``500MB``), checked when the spec is read, not
    when the cluster starts."""
    from dask.utils import parse_bytes

    if value is not None:
        try:
            size = parse_bytes(value)
        except ValueError:
            raise ValueError(f"{value!r} is no size; write it like 4GiB or 500MB") from None
        if size < _SMALLEST_WORKER:  # a negative size failed deep in the nanny, 1KiB in Dask's own check
            raise ValueError(f"{value!r} is too small for a worker: its libraries alone take about 250 MiB; give 1GiB or more")
    return value


_SMALLEST_WORKER = 64 * 2**20


def _home_expanded(path: str | None) -> str | None:
    """``~/certs/ca.pem`` as the shell reads it: Dask does not, so a certificate there was
    'no such file' and a spill folder was made as a folder named ``~`` in the working one."""
    return None if path is None else os.path.expanduser(path)


class TLSFiles(_Spec):
    """PEM files: the CA that signed every party, and this party's certificate and key.

    For clusters dsbuild starts (local, slurm, pbs) the same certificate serves the
    scheduler, the workers and the client; for ``scheduler`` it is the client's.
    """

    ca_file: str
    cert: str
    key: str | None = Field(None, description="omit when the key is inside the cert file")

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _home(cls, value):
        return _home_expanded(value)

    def security(self):
        from distributed.security import Security

        return Security(
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert, tls_client_key=self.key,
            tls_scheduler_cert=self.cert, tls_scheduler_key=self.key,
            tls_worker_cert=self.cert, tls_worker_key=self.key,
            require_encryption=True,
        )


class Adaptive(_Spec):
    """Let Dask add and remove workers with the load, between these counts."""

    minimum: int = Field(0, ge=0)
    maximum: int = Field(..., gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is larger than maximum ({self.maximum})")
        return self


class LocalSpec(_Spec):
    """Worker processes on this machine."""

    kind: Literal["local"]
    workers: int | None = Field(None, gt=0, description="worker processes; default one per core")
    threads_per_worker: int = Field(1, gt=0)
    memory_limit: str | None = Field(None, description="per worker, e.g. 4GiB; default 80% of RAM split evenly")
    host: str = LOCALHOST

    @field_validator("memory_limit")
    @classmethod
    def _bytes(cls, value):
        return _bytes_text(value)
    dashboard: str | None = f"{LOCALHOST}:8787"
    local_directory: str | None = Field(None, description="where workers spill to disk")
    tls: TLSFiles | None = None

    @field_validator("local_directory")
    @classmethod
    def _home(cls, value):
        return _home_expanded(value)


class SchedulerSpec(_Spec):
    """A scheduler someone else started: by address or by the file it wrote."""

    kind: Literal["scheduler"]
    address: str | None = None
    scheduler_file: str | None = None
    tls: TLSFiles | None = None
    timeout: float = Field(30, gt=0, description="seconds to wait for the scheduler")
    workers: int | None = Field(None, gt=0, description="wait until this many workers are connected")

    @model_validator(mode="after")
    def _one_target(self):
        if (self.address is None) == (self.scheduler_file is None):
            raise ValueError("give exactly one of address or scheduler_file")
        if self.address is not None:
            _check_address(self.address)
        return self


def _check_address(address: str) -> None:
    """A scheduler's address as Dask takes it: ``tcp://host:port`` (or tls://, inproc://);
    a dashboard's URL or a missing port failed deep in Dask with a traceback."""
    scheme, _, rest = address.partition("://")
    if scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        raise ValueError(f"address {address!r} is not a scheduler's: write tcp://HOST:PORT (port 8786 by default; "
                         "8787 is the dashboard)")
    host, colon, port = rest.rpartition(":")
    if scheme != "inproc" and (not colon or not host or not port.isdigit()):
        raise ValueError(f"address {address!r} names no port: write {scheme}://{rest or 'HOST'}:8786")


class _BatchSpec(_Spec):
    """Settings common to batch systems driven through dask-jobqueue."""

    cores: int = Field(1, gt=0, description="cores per batch job")
    processes: int = Field(1, gt=0, description="worker processes per batch job")
    memory: str = Field("4GB", description="memory per batch job")

    @field_validator("memory")
    @classmethod
    def _bytes(cls, value):
        return _bytes_text(value)
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    jobs: int = Field(2, gt=0, description="batch jobs to start (ignored when adaptive is set)")
    adaptive: Adaptive | None = None
    job_extra_directives: list[str] = Field(default_factory=list, description="extra #SBATCH / #PBS lines")
    job_script_prologue: list[str] = Field(default_factory=list, description="shell lines run before the worker")
    python: str | None = Field(None, description="python on the compute nodes; default this one")
    local_directory: str | None = Field(None, description="node-local disk for spilling")
    log_directory: str | None = None
    interface: str | None = Field(None, description="network interface for scheduler and workers, e.g. ib0")
    host: str = Field(LOCALHOST, description="scheduler address; must be reachable from the compute nodes")
    worker_host: str | None = Field(None, description="address workers listen on")
    dashboard: str | None = f"{LOCALHOST}:8787"
    death_timeout: float = Field(60, gt=0, description="seconds a worker waits for a lost scheduler")
    wait_timeout: float = Field(300, gt=0, description="seconds to wait for the first workers")
    tls: TLSFiles | None = None

    @field_validator("walltime", mode="before")
    @classmethod
    def _sexagesimal(cls, v):
        """Unquoted ``02:00:00`` is read by YAML 1.1 as 7200 seconds; turn it back."""
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 3600:02d}:{v % 3600 // 60:02d}:{v % 60:02d}"
        return v

    def jobqueue_kwargs(self) -> dict:
        scheduler = {"host": self.host} if not self.interface else {"interface": self.interface}
        if self.dashboard:
            scheduler["dashboard_address"] = self.dashboard
        else:
            scheduler["dashboard"] = False
        prologue = [f"export {v}=1" for v in THREAD_ENV] + list(self.job_script_prologue)
        kwargs = {
            "cores": self.cores, "processes": self.processes, "memory": self.memory,
            "walltime": self.walltime, "queue": self.queue, "account": self.account,
            "job_extra_directives": list(self.job_extra_directives),
            "job_script_prologue": prologue,
            "local_directory": self.local_directory, "log_directory": self.log_directory,
            "interface": self.interface, "death_timeout": self.death_timeout,
            "scheduler_options": scheduler,
            "worker_extra_args": ["--host", self.worker_host] if self.worker_host else [],
        }
        if self.python:
            kwargs["python"] = self.python
        if self.tls:
            kwargs["security"] = self.tls.security()
            kwargs["protocol"] = "tls://"
        return kwargs


class SlurmSpec(_BatchSpec):
    kind: Literal["slurm"]


class PBSSpec(_BatchSpec):
    kind: Literal["pbs"]
    resource_spec: str | None = Field(None, description="e.g. select=1:ncpus=4:mem=16GB")


class KubernetesSpec(_Spec):
    """A DaskCluster resource through the Dask Kubernetes operator (dask-kubernetes)."""

    kind: Literal["kubernetes"]
    name: str = Field(
        "dsbuild-{user}-{uuid}", pattern=r"^([a-z0-9]|\{user\}|\{uuid\})([-a-z0-9]|\{user\}|\{uuid\})*$",
        description="the DaskCluster's name; {user} and {uuid} are filled in, so each run has a cluster of its own "
        "(a fixed name is refused while a cluster of that name exists: a second run joined the first's, and deleted it "
        "under it when done)")
    namespace: str | None = None
    image: str = Field("ghcr.io/dask/dask:latest", description="must have dsbuild installed (cluster/Dockerfile)")
    workers: int = Field(2, gt=0)
    adaptive: Adaptive | None = None
    resources: dict[Literal["requests", "limits"], dict[str, str]] = Field(
        default_factory=dict, description="per pod: the scheduler's and each worker's")
    env: dict[str, str] = Field(default_factory=dict)
    wait_timeout: float = Field(600, gt=0, description="seconds to wait for the operator, a scheduler pod that keeps "
                                "crashing, and the workers")
    idle_timeout: int = Field(3600, gt=0, description="seconds after which Kubernetes deletes a cluster whose scheduler "
                              "is idle: one left behind by a driver that was killed")

    @field_validator("resources", "env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value):
        """``cpu: 1``, ``cpu: 0.5`` and ``OMP_NUM_THREADS: 2``, as Kubernetes manifests write
        them unquoted, are the text Kubernetes reads (quantities, env values); they were refused
        ("Input should be a valid string")."""
        def text(v):
            return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

        if not isinstance(value, dict):
            return value
        return {k: ({q: text(n) for q, n in v.items()} if isinstance(v, dict) else text(v)) for k, v in value.items()}


ClusterSpec = Annotated[
    Union[LocalSpec, SchedulerSpec, SlurmSpec, PBSSpec, KubernetesSpec], Field(discriminator="kind")
]
KINDS = {"local": LocalSpec, "scheduler": SchedulerSpec, "slurm": SlurmSpec, "pbs": PBSSpec, "kubernetes": KubernetesSpec}
_ADAPTER = TypeAdapter(ClusterSpec)


# -- reading ----------------------------------------------------------------------------


def load_cluster_spec(source) -> LocalSpec | SchedulerSpec | SlurmSpec | PBSSpec | KubernetesSpec:
    """A validated spec from a path, YAML text, a dict, or a spec; errors name file and line."""
    from dsbuild.job import JobError, _load_yaml, _utf8, _yaml_file_near

    if isinstance(source, tuple(KINDS.values())):
        return source
    if isinstance(source, dict):
        data, lines, where = dict(source), {}, "<dict>"
    else:
        text, where = str(source), "<yaml>"
        try:
            if "\n" not in text and (text.endswith((".yaml", ".yml")) or Path(text).exists()):
                if Path(text).is_dir():
                    raise ClusterSpecError([f"{text}: a folder, not a cluster spec; name a YAML file in it (as cluster/local.yaml)"])
                if not Path(text).is_file():
                    near = _yaml_file_near(Path(text))
                    raise ClusterSpecError([f"{text}: no such cluster spec file" + (f" (did you mean {near}?)" if near else "")])
                where, text = text, _utf8(Path(text).read_bytes(), text, "cluster spec")
            data, lines = _load_yaml(text, where)
        except JobError as e:
            raise ClusterSpecError([p.replace("a job is a mapping (name, seed, source, columns, stages, sink)",
                                              "a cluster spec is a mapping with a 'kind'") for p in e.problems]) from None
    kind = data.get("kind")
    if kind not in KINDS:
        hint = difflib.get_close_matches(str(kind), KINDS, n=1)
        line = lines.get(("kind",), 1)
        got = "no 'kind'" if kind is None else f"unknown kind {kind!r}"
        raise ClusterSpecError([f"{where}:{line}: {got}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; kinds: {', '.join(KINDS)}"])
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ClusterSpecError(_explain(e, where, lines, KINDS[kind])) from None


def _explain(err: ValidationError, where: str, lines: dict, model) -> list[str]:
    from dsbuild.job import _dotted, _line_of

    out = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if x not in KINDS)
        line = _line_of(loc, lines)
        at = f"{where}:{line}" if line else where
        if e["type"] == "extra_forbidden":
            fields = _fields_at(model, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), fields, n=1)
            msg = (f"unknown option {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                   + (f"; valid options: {', '.join(fields)}" if fields else ""))
        elif "input" in e and e["type"] != "missing":
            msg = e["msg"].removeprefix("Value error, ")
            msg = msg if repr(e["input"]) in msg else f"{msg} (got {e['input']!r})"
        else:
            msg = e["msg"]
        out.append(f"{at}: {_dotted(loc) or 'cluster'}: {msg}")
    return out


def _fields_at(model, path: tuple) -> list[str]:
    for key in path:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        ann = getattr(field, "annotation", None)
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def spec_from_target(target) -> LocalSpec | SchedulerSpec | SlurmSpec | PBSSpec | KubernetesSpec:
    """``local``, a scheduler address, a scheduler's file (``.json``), a spec file, YAML text, a dict or a spec → a spec."""
    if target is None or (isinstance(target, str) and target == "local"):
        return LocalSpec(kind="local")
    if isinstance(target, (str, os.PathLike)):
        text = str(target)
        if "://" in text and "\n" not in text:
            try:
                return SchedulerSpec(kind="scheduler", address=text)
            except ValidationError as e:
                raise ClusterSpecError([f"cluster {text!r}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()]) from None
        if "\n" not in text and text.endswith(".json"):  # the file `dask scheduler --scheduler-file` writes
            return SchedulerSpec(kind="scheduler", scheduler_file=text)
        if "\n" not in text and not Path(text).exists() and not text.endswith((".yaml", ".yml")):
            host, _, port = text.rpartition(":")
            meant = f" (did you mean 'tcp://{text}'?)" if host and port.isdigit() else ""
            local = " (did you mean 'local'?)" if difflib.get_close_matches(text, ["local"], cutoff=0.6) else ""
            raise ClusterSpecError([
                f"cluster {text!r}{local}: expected 'local', a scheduler address like 'tcp://host:8786'{meant}, "
                "the JSON file a scheduler wrote (dask scheduler --scheduler-file), or a cluster spec file (see cluster/)"
            ])
    return load_cluster_spec(target)


# -- starting ---------------------------------------------------------------------------


def _require(module: str, package: str, extra: str, kind: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackage(
            f"cluster kind {kind!r} needs the {package} package, which is not installed: "
            f"pip install 'dsbuild[{extra}]'  (or: pip install {package})"
        ) from e


def check_startable(spec):
    """That this machine can start the spec's kind: its optional package installed, its
    batch system's submit command on the PATH. Called by ``run`` and ``submit`` before they
    read the job's source (seconds, or minutes), which they did first. Returns the package's
    module (None for kinds that need none)."""
    if isinstance(spec, (SlurmSpec, PBSSpec)):
        jobqueue = _require("dask_jobqueue", "dask-jobqueue", spec.kind, spec.kind)
        submit = "qsub" if isinstance(spec, PBSSpec) else "sbatch"
        if not shutil.which(submit):
            raise ClusterSpecError([f"cluster kind {spec.kind!r} submits workers with {submit}, which is not on this "
                                    "machine's PATH: run from the batch system's login node"])
        return jobqueue
    if isinstance(spec, KubernetesSpec):
        return _require("dask_kubernetes.operator", "dask-kubernetes", "kubernetes", "kubernetes")
    return None


def start_cluster(spec, workers: int | None = None):
    """The Dask cluster object for a spec dsbuild starts itself (not ``scheduler``)."""
    if isinstance(spec, LocalSpec):
        from dsbuild.runtime import local_cluster

        kwargs = {"host": spec.host, "dashboard_address": spec.dashboard,
                  "threads_per_worker": spec.threads_per_worker}
        if not spec.dashboard:  # Dask's scheduler serves /health and metrics anyway: on any free port
            kwargs.update(dashboard_address=f"{spec.host}:0", scheduler_kwargs={"dashboard": False})
        if spec.local_directory:
            kwargs["local_directory"] = spec.local_directory
        if spec.tls:
            kwargs["security"] = spec.tls.security()
            kwargs["protocol"] = "tls://"
        return local_cluster(workers or spec.workers, spec.memory_limit, **kwargs)
    if isinstance(spec, (SlurmSpec, PBSSpec)):
        jobqueue = check_startable(spec)
        kwargs = spec.jobqueue_kwargs()
        if isinstance(spec, PBSSpec):
            return jobqueue.PBSCluster(resource_spec=spec.resource_spec, **kwargs)
        cluster = jobqueue.SLURMCluster(**kwargs)
        _check_slurm_script(cluster, spec)
        return cluster
    if isinstance(spec, KubernetesSpec):
        operator = check_startable(spec)
        if workers and spec.adaptive:
            warnings.warn(f"--workers {workers} is not used: the spec's adaptive range decides the workers", UserWarning, stacklevel=2)
        return operator.KubeCluster(
            name=spec.name, namespace=spec.namespace, image=spec.image,
            n_workers=0 if spec.adaptive else (workers or spec.workers),
            resources=dict(spec.resources), env={**{v: "1" for v in THREAD_ENV}, **spec.env},
            create_mode=importlib.import_module("dask_kubernetes.operator.kubecluster.kubecluster").CreateMode.CREATE_ONLY,
            idle_timeout=spec.idle_timeout,
            resource_timeout=int(spec.wait_timeout),
        )
    raise TypeError(f"cluster kind {spec.kind!r} is not started by dsbuild")


def _check_slurm_script(cluster, spec) -> None:
    """Slurm's verdict on a worker job, before any is queued (``sbatch --test-only``): a
    partition that does not exist, or more memory than any node has, was logged by Dask
    and the run then waited out all of wait_timeout for workers that never came. A job
    larger than every node is said with what it asks and what the nodes have: Slurm says
    only "Requested node configuration is not available"."""
    import subprocess

    done = subprocess.run(["sbatch", "--test-only"], input=cluster.job_script(), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        cluster.close()
        said = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        largest = _largest_slurm_node(spec.queue) if "node configuration" in said else None
        if largest:
            said += (f"; each worker job asks for {spec.cores} cores and {spec.memory} (cores, memory in the spec), "
                     f"and the largest node{f' of partition {spec.queue}' if spec.queue else ''} has {largest}")
        raise ClusterSpecError([f"Slurm refuses the worker jobs: {said or f'sbatch exited with {done.returncode}'}"])


def _largest_slurm_node(partition: str | None) -> str | None:
    """The most cores and memory a node has, as ``sinfo`` lists them (None: no answer)."""
    import subprocess

    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%c %m", *(["-p", partition] if partition else [])],
                              capture_output=True, text=True, timeout=30)
        nodes = [tuple(int(x.rstrip("+")) for x in line.split()[:2]) for line in done.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if done.returncode != 0 or not nodes:
        return None
    return f"{max(c for c, _ in nodes)} cores and {max(m for _, m in nodes) / 1024:.1f} GiB"


def cluster_client(spec, workers: int | None, stack: contextlib.ExitStack):
    """A Client for any spec; clusters dsbuild started are closed when ``stack`` closes."""
    from distributed import Client

    _check_tls_files(getattr(spec, "tls", None))
    if isinstance(spec, SchedulerSpec):
        security = spec.tls.security() if spec.tls else None
        address = spec.address or _address_in(spec.scheduler_file, spec.timeout)
        where = spec.address or f"{address} (from {spec.scheduler_file})"
        _check_answers(address, spec.timeout, security)
        try:
            client = stack.enter_context(Client(address, security=security, timeout=spec.timeout))
        except (OSError, TimeoutError) as e:
            raise _no_scheduler(where, spec.timeout, e) from None
        if workers or spec.workers:
            _wait_for_workers(client, workers or spec.workers, spec.timeout, "connected to the scheduler")
        return client
    cluster = stack.enter_context(start_cluster(spec, workers))
    security = spec.tls.security() if getattr(spec, "tls", None) else None
    client = stack.enter_context(Client(cluster, security=security))
    if isinstance(spec, (SlurmSpec, PBSSpec, KubernetesSpec)):
        if spec.adaptive:
            cluster.adapt(minimum=spec.adaptive.minimum, maximum=spec.adaptive.maximum)
        elif isinstance(spec, KubernetesSpec):
            _wait_for_workers(client, workers or spec.workers, spec.wait_timeout, "started (wait_timeout)")
        else:
            if workers:
                cluster.scale(n=workers)
            else:
                cluster.scale(jobs=spec.jobs)
            jobs_ended = _slurm_jobs_ended if isinstance(spec, SlurmSpec) else None
            _wait_for_workers(client, workers or spec.jobs * spec.processes, spec.wait_timeout,
                              "started from the batch queue (wait_timeout; see squeue / qstat, and the jobs' logs)",
                              _batch_jobs_failed(cluster, spec, workers or spec.jobs * spec.processes, jobs_ended))
    return client


def _address_in(scheduler_file: str, timeout: float) -> str:
    """The address a scheduler wrote to its file, which may still be on its way (a scheduler
    starting) for up to ``timeout``: Dask's Client waited for a missing file for ever,
    whatever its timeout, and did not read ``~`` as the home folder."""
    import json
    import time

    path, deadline = Path(scheduler_file).expanduser(), time.monotonic() + timeout
    while True:
        try:
            return json.loads(path.read_text())["address"]
        except FileNotFoundError:
            why = (f"scheduler_file {scheduler_file}: no such file within {timeout:g} s; is the scheduler running "
                   f"(dask scheduler --scheduler-file {scheduler_file}), and on a filesystem this machine sees?")
        except (ValueError, KeyError, TypeError):  # half written, or no scheduler's
            why = f"scheduler_file {scheduler_file}: holds no scheduler address (a file dask scheduler --scheduler-file wrote?)"
        if time.monotonic() >= deadline:
            raise ClusterSpecError([why])
        time.sleep(0.1)


def _batch_jobs_failed(cluster, spec, n: int, jobs_ended):
    """A check, for the wait, that says why the workers cannot come any more: their batch
    jobs left the queue before enough of them connected (a ``python`` the nodes lack, a
    prologue that fails). The run had waited out all of wait_timeout for them. None where
    the queue cannot be asked (PBS is not tried here)."""
    if jobs_ended is None:
        return None
    per_job = spec.processes
    asked = -(-n // per_job)

    def failed() -> str | None:
        ids = [job.job_id for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]
        if len(ids) < asked:  # not all submitted yet
            return None
        ended = jobs_ended(ids)
        if ended is None or (len(ids) - len(ended)) * per_job >= n:
            return None
        return f"worker jobs {', '.join(ended)} ended before their workers connected; " + _job_logs(spec, ended)

    return failed


def _slurm_jobs_ended(ids: list[str]) -> list[str] | None:
    """The jobs among ``ids`` that Slurm no longer lists as pending or running; None when
    squeue does not answer."""
    import subprocess

    try:
        done = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # every id unknown by now ("Invalid job id specified"), else no answer
        return list(ids) if "Invalid job id" in done.stderr else None
    listed = set(done.stdout.split())
    return [i for i in ids if i not in listed]


def _job_logs(spec, ids: list[str]) -> str:
    """Where the jobs' output is, and the end of the first one's error log."""
    if not spec.log_directory:
        return f"Slurm wrote their output to slurm-{ids[0]}.out in the folder the run started in (set log_directory to keep them together)"
    logs = sorted(Path(spec.log_directory).glob(f"*-{ids[0]}.err"))
    if not logs:
        return f"their logs are in {spec.log_directory}"
    tail = [line for line in logs[0].read_text(errors="replace").splitlines() if line.strip()][-3:]
    return f"{logs[0]} ends: " + " | ".join(tail) if tail else f"{logs[0]} is empty"


def _check_answers(address: str, timeout: float, security) -> None:
    """That a Dask scheduler answers at ``address`` within ``timeout``: a Client pointed at a
    port that accepts connections but speaks no Dask (the dashboard's) waited for ever,
    whatever its timeout, and one whose server speaks first or answers in its own protocol
    (SSH, HTTP) failed with a MemoryError: Dask read the server's first bytes as the length of
    a message. Probed in a thread of its own, so any caller's event loop is left alone."""
    import asyncio
    import concurrent.futures

    from distributed.comm import connect

    _check_host(address)
    args = security.get_connection_args("client") if security else {}

    async def probe(seconds: float):
        comm = await connect(address, timeout=seconds, **args)
        await comm.close()

    def answers(seconds: float) -> None:
        pool.submit(asyncio.run, asyncio.wait_for(probe(seconds), seconds + 1)).result()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            try:
                answers(min(2.0, timeout))
            except (OSError, TimeoutError):
                if timeout <= 2:
                    raise
                if _refused(address):  # a scheduler may still be starting there: say so, and wait as Dask does
                    warnings.warn(f"nothing listens at {address} yet (connection refused); waiting up to "
                                  f"{timeout:g} s for a Dask scheduler to start there", UserWarning, stacklevel=3)
                elif (web := _web_server(address)) is not None:
                    raise ClusterSpecError([f"the server at {address} is {web}"])
                answers(timeout - 2)
        except (OSError, TimeoutError) as e:
            raise _no_scheduler(address, timeout, e) from None
        except ClusterSpecError:
            raise
        except Exception:  # noqa: BLE001 - whatever Dask made of another protocol's bytes (an exabyte-long message)
            raise ClusterSpecError([f"the server at {address} is no Dask scheduler: it answered in another protocol; "
                                    "is this the scheduler's address (port 8786 by default; 8787 is the dashboard)?"]) from None


def _web_server(address: str) -> str | None:
    """What to say of a web server at ``address`` (None: no web server answers there).
    The dashboard's port (8787) was the usual mistake, and a Client waited all of its
    timeout (30 s) for a handshake an HTTP server never sends; a Dask dashboard also
    says its scheduler's port."""
    import http.client
    import json

    endpoint = _tcp_endpoint(address)
    if endpoint is None:
        return None
    host, port = endpoint
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/json/identity.json")
        response = connection.getresponse()
        body = response.read(1 << 16) if response.status == 200 else b""
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    try:
        scheduler = json.loads(body)
        ports = {scheduler["address"].rpartition(":")[2]} if scheduler.get("type") == "Scheduler" else set()
    except (ValueError, AttributeError, KeyError, TypeError):
        ports = set()
    if ports:
        at = f"tcp://{'[' + host + ']' if ':' in host else host}:{ports.pop()}"
        return f"a Dask scheduler's dashboard, not the scheduler: the scheduler is at {at}"
    return "a web server, no Dask scheduler: is this a dashboard's port (8787 by default)? A scheduler listens on 8786 by default"


def _refused(address: str) -> bool:
    """Whether a TCP connection to ``address`` is refused at once (no server on that port)."""
    import socket

    endpoint = _tcp_endpoint(address)
    if endpoint is None:
        return False
    try:
        socket.create_connection(endpoint, timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _check_host(address: str) -> None:
    """The address's host name is known: Dask retried an unknown one (a typo) for all of
    ``timeout`` and then said it had timed out."""
    import socket

    endpoint = _tcp_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.getaddrinfo(endpoint[0], None)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise ClusterSpecError([f"no Dask scheduler at {address}: no host is named {endpoint[0]!r} ({e.strerror})"]) from None


def _tcp_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://`` or ``tls://`` address; None for another scheme or no port."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _no_scheduler(where: str, timeout: float, e: Exception) -> ClusterSpecError:
    """Why no scheduler answered, with whether anything listens there: Dask's own message
    said only that it timed out, and the refusal it met while retrying was not always
    kept with it."""
    why = str(e) or "no answer to the handshake"
    if _refused(where.split(" ")[0]):
        why += "; nothing listens on that port: connection refused"
    return ClusterSpecError([f"no Dask scheduler answered at {where} within {timeout:g} s ({why}); is it running "
                             "(dask scheduler), and is this its address (port 8786 by default; 8787 is the dashboard)?"])


def _wait_for_workers(client, n: int, timeout: float, how: str, failed=None) -> None:
    """Wait for ``n`` workers; ``failed``, asked every few seconds, says why they will not come."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            client.wait_for_workers(n, timeout=max(0.1, min(left, 5)) if failed else timeout)
            return
        except TimeoutError as e:  # Dask's WorkerStartTimeoutError is one
            why = failed() if failed else None
            if why or not failed or time.monotonic() >= deadline:
                have = len(client.scheduler_info(n_workers=-1).get("workers", {})) if client.status == "running" else 0
                said = (f"{have} of the {n} workers asked for connected, and no more can: {why}" if why
                        else f"only {have} of the {n} workers asked for {how} within {timeout:g} s")
                raise ClusterSpecError([said]) from e


def _check_tls_files(tls) -> None:
    """Each PEM file a spec names exists: Dask's error named none ("No such file")."""
    if tls is None:
        return
    missing = [f"tls.{name}: {path}" for name, path in (("ca_file", tls.ca_file), ("cert", tls.cert), ("key", tls.key))
               if path and not Path(path).exists()]
    if missing:
        raise ClusterSpecError([f"{m}: no such file" for m in missing])


def cluster_from_file(path, workers: int | None = None):
    """The cluster a spec file describes (kinds dsbuild starts); use as a context manager."""
    return start_cluster(load_cluster_spec(path), workers)


def describe(spec) -> str:
    """One line for logs: what kind of cluster and where."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), default_flow_style=True).strip()
