"""Framework overhead: a no-op stage over synthetic Parquet vs plain pyarrow read + write.

Both sides read the same files and write Parquet with the same compression and shard
size, on the same machine, in the same process: pyarrow through ``pyarrow.dataset``
(multi-threaded), dsbuild through a job with one no-op map stage (``select: {}``) on a
LocalCluster of one worker process per core, started before the clock starts. dsbuild
also gives every row an id, counts every stage, and writes a manifest with checksums.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def make_data(folder: Path, total_bytes: int, rows_per_file: int = 2_000_000) -> tuple[int, int]:
    """Synthetic Parquet: ints, floats and short strings, ~``total_bytes`` on disk."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    written, rows, k = 0, 0, 0
    words = np.array([f"w{i:05d}" for i in range(50_000)])
    while written < total_bytes:
        n = rows_per_file
        table = pa.table(
            {
                **{f"i{j}": rng.integers(0, 1_000_000, n) for j in range(3)},
                **{f"f{j}": rng.standard_normal(n) for j in range(4)},
                "word": words[rng.integers(0, len(words), n)],
            }
        )
        path = folder / f"part-{k:04d}.parquet"
        pq.write_table(table, path, compression="snappy", row_group_size=500_000)
        written += path.stat().st_size
        rows += n
        k += 1
    return written, rows


def plain_pyarrow(src: Path, dst: Path, shard_rows: int) -> float:
    t = time.perf_counter()
    ds.write_dataset(
        ds.dataset(src, format="parquet"),
        dst,
        format="parquet",
        max_rows_per_file=shard_rows,
        max_rows_per_group=min(shard_rows, 1024 * 1024),  # dsbuild's row groups hold up to 1 Mi rows too
        file_options=ds.ParquetFileFormat().make_write_options(compression="snappy"),
    )
    return time.perf_counter() - t


def with_dsbuild(src: Path, dst: Path, shard_rows: int, client) -> float:
    import dsbuild

    job = {
        "name": "overhead",
        "source": {"format": "parquet", "path": str(src), "rows_per_partition": 1_000_000},
        "stages": [{"select": {}}],
        "sink": {"path": str(dst), "shard_rows": shard_rows, "shard_bytes": 2**40, "compression": "snappy"},
    }
    t = time.perf_counter()
    manifest = dsbuild.run(job, client=client)
    elapsed = time.perf_counter() - t
    assert manifest["ledger"]["balanced"]
    return elapsed


def run(quick: bool = False) -> str:
    from distributed import Client

    from dsbuild.runtime import DsbuildWorkerSetup, local_cluster

    total = 40 * 2**20 if quick else 2 * 2**30
    shard_rows = 1_000_000
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="dsbuild-bench-") as tmp:
        tmp = Path(tmp)
        size, rows = make_data(tmp / "src", total, rows_per_file=250_000 if quick else 2_000_000)
        with local_cluster(dashboard_address=None) as cluster, Client(cluster) as client:
            client.register_plugin(DsbuildWorkerSetup())
            times = {"pyarrow": [], "dsbuild": []}
            for r in range(repeats):
                for side in ("pyarrow", "dsbuild"):
                    dst = tmp / f"{side}-{r}"
                    if side == "pyarrow":
                        times[side].append(plain_pyarrow(tmp / "src", dst, shard_rows))
                    else:
                        times[side].append(with_dsbuild(tmp / "src", dst, shard_rows, client))
                    shutil.rmtree(dst)
            workers = len(client.scheduler_info()["workers"])
    best = {k: min(v) for k, v in times.items()}
    ratio = best["dsbuild"] / best["pyarrow"]
    verdict = "meets" if ratio <= 1.3 else "misses"
    return (
        "## Framework overhead (issue 2)\n\n"
        f"{size / 2**30:.2f} GiB of synthetic Parquet ({rows:,} rows, 8 columns, snappy), read and written "
        f"again in {shard_rows:,}-row shards. Best of {repeats}; dsbuild on {workers} worker processes.\n\n"
        "| side | seconds | rows/s |\n|---|---:|---:|\n"
        f"| pyarrow `dataset.write_dataset` | {best['pyarrow']:.2f} | {rows / best['pyarrow']:,.0f} |\n"
        f"| dsbuild, one no-op map stage | {best['dsbuild']:.2f} | {rows / best['dsbuild']:,.0f} |\n\n"
        f"**dsbuild / pyarrow = {ratio:.2f}×** (target ≤ 1.3×: {verdict}).\n"
    )


if __name__ == "__main__":
    print(run(quick=bool(os.environ.get("QUICK"))))
