"""Data larger than the workers' memory: ``dsbuild run`` with a memory-limited cluster spec.

The overhead benchmark's synthetic Parquet goes through a map stage and ``exact_dedup``
(a p2p shuffle, through disk) twice, back to back, from the shell as a user runs it:
on 2 workers whose spec caps their memory below the data, and on the same 2 workers with
the default limit (80% of RAM split between them). The figures are the two wall times,
their ratio, and what each run's manifest recorded: peak worker memory, bytes spilled,
bytes shuffled through disk, workers restarted for exceeding their limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from benchmarks.bench_overhead import make_data

WORKERS = 2


def in_memory_bytes(folder: Path) -> int:
    """Uncompressed size of every row group, as the Parquet metadata states it."""
    total = 0
    for path in folder.glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        total += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    return total


def run_cli(job: Path, cluster: Path, output: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dsbuild.cli", "run", str(job), "--cluster", str(cluster),
                    "--output", str(output), "--overwrite", "--quiet"], check=True)
    seconds = time.perf_counter() - t
    return seconds, json.loads((output / "manifest.json").read_text())


def run(quick: bool = False) -> str:
    # --quick is a smoke run of the same path: a 400 MiB worker (half of it the process
    # itself) has stalled paused on a 2-core machine, so it gets room.
    total = 40 * 2**20 if quick else 2 * 2**30
    limit = 1 * 2**30
    partition = 16 * 2**20 if quick else 32 * 2**20
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dsbuild-bench-") as tmp:
        tmp = Path(tmp)
        size, rows = make_data(tmp / "src", total, rows_per_file=250_000 if quick else 2_000_000)
        memory = in_memory_bytes(tmp / "src")
        job = tmp / "job.yaml"
        job.write_text(yaml.safe_dump({
            "name": "memory",
            "source": {"format": "parquet", "path": str(tmp / "src"), "bytes_per_partition": partition},
            "stages": [{"select": {"where": [{"column": "f0", "op": ">", "value": -3.0}]}}, {"exact_dedup": {}}],
            "sink": {"path": str(tmp / "out")},
        }))
        sides = {}
        for name, memory_limit in (("limited", f"{limit // 2**20}MiB"), ("default", None)):
            spec = {"kind": "local", "workers": WORKERS, "dashboard": None, "local_directory": str(tmp / "spill")}
            if memory_limit:
                spec["memory_limit"] = memory_limit
            cluster = tmp / f"{name}.yaml"
            cluster.write_text(yaml.safe_dump(spec))
            sides[name] = run_cli(job, cluster, tmp / name)
    lines = []
    for name, (seconds, manifest) in sides.items():
        m = manifest["cluster"]["memory"]
        worker_limit = min(w["limit_bytes"] for w in m["workers"].values())
        assert manifest["ledger"]["balanced"]
        lines.append(
            f"| {name} | {worker_limit / 2**20:,.0f} MiB | {seconds:.1f} | {m['max_bytes'] / 2**20:,.0f} MiB "
            f"| {m['spilled_bytes'] / 2**20:,.0f} MiB | {m['shuffle_disk_bytes'] / 2**20:,.0f} MiB | {m['restarts_over_limit']} |"
        )
    ratio = sides["limited"][0] / sides["default"][0]
    limited = sides["limited"][1]["cluster"]["memory"]
    under = all(w["peak_bytes"] < w["limit_bytes"] for w in limited["workers"].values()) and limited["restarts_over_limit"] == 0
    return (
        "## Data larger than the workers' memory (issue 9)\n\n"
        f"{size / 2**30:.2f} GiB of synthetic Parquet on disk, {memory / 2**30:.2f} GiB in memory ({rows:,} rows), "
        f"through `select` and `exact_dedup` by `dsbuild run JOB --cluster SPEC` on {WORKERS} worker processes, "
        f"partitions of at most {partition // 2**20} MiB; the two runs back to back. Load average at the start: "
        f"{load:.1f} on {os.cpu_count()} cores.\n\n"
        "| cluster spec | limit per worker | seconds | peak worker memory | spilled | shuffled on disk | restarts over the limit |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n\n"
        f"Data in memory / workers' total limit = {memory / (WORKERS * limit):.1f}×; "
        f"every worker stayed under its limit: {'yes' if under else 'no'}. "
        f"**limited / default = {ratio:.2f}×** in wall time.\n"
    )


if __name__ == "__main__":
    print(run(quick=bool(os.environ.get("QUICK"))))
