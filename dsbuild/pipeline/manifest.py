"""The manifest: the job as resolved and its hash, versions, per-stage counts, shards,
schema, warnings; and the ledger check that rows in = kept + rejected - added."""

from __future__ import annotations

import datetime
import json
import platform

import dask
import pandas as pd

import dsbuild
from dsbuild.io.sources.advice import rejected_by_type_sample
from dsbuild.job import JobSpec
from dsbuild.pipeline.errors import LedgerError
from dsbuild.pipeline.execution import Execution
from dsbuild.records import stable_hash64


def job_key(spec: JobSpec) -> str:
    """Names the temporary folder, so a resumed run finds its own checkpoints. The output
    path is left out: the folder sits beside the output already, and ``out`` and
    ``/abs/out`` are one output."""
    resolved = spec.resolved()
    resolved["sink"] = {k: v for k, v in resolved["sink"].items() if k != "path"}
    return f"{stable_hash64(json.dumps(resolved, sort_keys=True)):016x}"


def _manifest(spec, ex: Execution, data_shards, reject_shards, data_schema, reject_schema, task_seconds, client,
              window: str | None = None) -> dict:
    from dsbuild.runtime import peak_worker_memory

    stages = []
    rows_in = None
    for run_ in ex.runs:
        c = run_.counts
        rejected = sum(c["rejected"].values())
        entry = {
            "name": run_.name,
            "shape": run_.shape,
            "in": c["rows"] if rows_in is None else rows_in,
            "out": c["kept"],
            "rejected": rejected,
            "rejected_by_reason": dict(sorted(c["rejected"].items())),
            "added": c["added"],
            "metrics": dict(sorted(c["metrics"].items())),
            "labels": c.get("labels", {}),
            "seconds": {"fit": round(run_.fit_seconds, 3), "tasks": round(task_seconds.get(run_.name, 0.0), 3)},
        }
        if run_.name != "source":
            entry["options"] = run_.options
            if run_.summary:
                entry["summary"] = run_.summary
            if run_.stage is not None:  # a stage restored by --resume has only its counts
                ex.warnings += run_.stage.result_warnings(entry)
        elif entry["in"] and not entry["out"]:
            # a file read with the wrong separator or column_names: every row is a csv:fields reject
            reason, n = max(c["rejected"].items(), key=lambda kv: kv[1])
            ex.warnings.append(f"the source rejected every row ({entry['in']:,}), {n:,} as {reason}: check the source's "
                               "options (sep, header, column_names, encoding) against the files")
        if run_.name == "source":
            ex.warnings += rejected_by_type_sample(spec.source, ex.source.schema, c["rejected"])
        stages.append(entry)
        rows_in = c["kept"]
    info = client.scheduler_info() if client is not None else {}
    workers = info.get("workers", {})
    return {
        "dsbuild": dsbuild.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "job": spec.resolved(),
        "job_hash": job_key(spec),
        "versions": _versions(),
        "input": {
            "fingerprint": ex.source.fingerprint(),
            "files": len(ex.source.files),
            "bytes": sum(f.get("size") or 0 for f in ex.source.files),
            "skipped": ex.source.skipped,
        },
        "stages": stages,
        "totals": {
            "in": stages[0]["in"],
            "kept": stages[-1]["out"],
            "rejected": sum(s["rejected"] for s in stages),
            "added": sum(s["added"] for s in stages),
        },
        "outputs": {
            "data": data_shards,
            "rejects": reject_shards,
            "rows": {"data": sum(s["rows"] for s in data_shards), "rejects": sum(s["rows"] for s in reject_shards)},
        },
        "schema": {
            "data": _schema_json(data_schema) + _partition_columns(spec, ex),
            "rejects": _schema_json(reject_schema),
        },
        "warnings": ex.warnings,
        "resumed_from_stage": ex.resumed_from,
        "cluster": {
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
            "dashboard": getattr(client, "dashboard_link", None),
            "memory": peak_worker_memory(client, window=window),
        },
    }


def _schema_json(schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in schema] if schema is not None else []


def _partition_columns(spec, ex: Execution) -> list[dict]:
    """The ``sink.partition_by`` columns, which live in the folder names and not in the
    files: the data's schema listed the files' columns alone, so a reader of the manifest
    did not learn the data has a ``split`` column. Each is marked ``partition``, with the
    type it had in the rows (readers make text or a dictionary of the folder names)."""
    import pyarrow as pa

    by = list(spec.sink.partition_by)
    if not by or ex.kept_meta is None:
        return []
    types = pa.Table.from_pandas(ex.kept_meta[by], preserve_index=False).schema
    return [{"name": f.name, "type": str(f.type), "partition": True} for f in types]


def check_ledger(manifest: dict) -> None:
    """Rows in = kept + rejected − added, per stage and for the job; shards hold them all."""
    problems = []
    for s in manifest["stages"]:
        if s["in"] != s["out"] + s["rejected"] - s["added"]:
            problems.append(
                f"stage {s['name']}: {s['in']} rows in, but {s['out']} kept + {s['rejected']} rejected "
                f"- {s['added']} added = {s['out'] + s['rejected'] - s['added']}"
            )
    t = manifest["totals"]
    if t["in"] != t["kept"] + t["rejected"] - t["added"]:
        problems.append(f"job: {t['in']} rows in ≠ {t['kept']} kept + {t['rejected']} rejected - {t['added']} added")
    rows = manifest["outputs"]["rows"]
    if rows["data"] != t["kept"]:
        problems.append(f"data shards hold {rows['data']} rows, but {t['kept']} were kept")
    if rows["rejects"] != t["rejected"]:
        problems.append(f"reject shards hold {rows['rejects']} rows, but {t['rejected']} were rejected")
    manifest["ledger"] = {"balanced": not problems, "problems": problems}
    if problems:
        raise LedgerError("the ledger does not balance:\n  " + "\n  ".join(problems))


def _versions() -> dict:
    """The libraries the output depends on: besides the data stack, those whose kernels
    make the rows (scikit-learn's models, OpenCV's pixels, fairlearn's mitigations), so two
    outputs of one job that differ can be told apart by what built them."""
    import distributed
    import numpy
    import pyarrow

    return {
        "python": platform.python_version(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        **{name: _installed(*dists) for name, dists in _KERNEL_LIBRARIES.items()},
    }


# name in the manifest -> the distributions that provide it (OpenCV comes in four builds)
_KERNEL_LIBRARIES = {
    "scikit-learn": ("scikit-learn",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "fairlearn": ("fairlearn",),
    "scikit-image": ("scikit-image",),
}


def _installed(*dists: str) -> str | None:
    """The version of the first of ``dists`` installed, read from its metadata (importing
    OpenCV or scikit-learn in the driver only to ask would cost a second)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None
