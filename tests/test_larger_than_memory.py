"""A job over data 5x larger than its workers' total memory limit completes.

Two worker processes with a 400 MiB limit each (a worker process weighs ~200 MiB before it
holds any data) run a map stage and exact_dedup, whose p2p shuffle goes through disk, over
Parquet whose rows take 5x their 800 MiB in memory. The output is checked against a
direct pass over the same files, and the manifest must show every worker's peak below
its limit and no restart for exceeding it.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import dsbuild
from dsbuild.io.sources import read_source

WORKERS, LIMIT = 2, 400 * 2**20
TEXT_BYTES = 4000
FILES = 8
PARTITION = 4 * 2**20  # one row group: a 400 MiB worker has ~120 MiB above its baseline before it pauses


def make_text_rows(folder: Path, total_bytes: int, row_group_bytes: int = 4 * 2**20, copies: float = 0.1, seed: int = 0) -> None:
    """Parquet files of (n, x, text) rows, ~``total_bytes`` in memory, uncompressed; a
    ``copies`` share of each file's rows repeat rows of the file before it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = int(total_bytes / FILES / (TEXT_BYTES + 16))
    previous = None
    for k in range(FILES):
        letters = rng.integers(ord("a"), ord("z") + 1, rows * TEXT_BYTES, dtype=np.uint8)
        offsets = np.arange(0, (rows + 1) * TEXT_BYTES, TEXT_BYTES, dtype=np.int32)
        text = pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(letters))
        table = pa.table({"n": rng.integers(0, 1000, rows), "x": rng.standard_normal(rows), "text": text})
        if previous is not None:
            at = rng.choice(rows, int(rows * copies), replace=False)
            order = np.arange(rows)
            order[at] = rows + np.arange(len(at))
            copied = previous.take(rng.choice(rows, len(at), replace=False))
            table = pa.concat_tables([table, copied]).take(order)
        pq.write_table(table, folder / f"part-{k:03d}.parquet", compression="none",
                       row_group_size=max(1, row_group_bytes // (TEXT_BYTES + 16)))
        previous = table


def _digests(path: Path):
    """(row number, n, what identifies the whole row) for every row of one file, in
    batches; the text is hashed straight from Arrow's buffer, without Python strings."""
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["n", "x", "text"]):
        n, x = batch.column("n").to_numpy(), batch.column("x").to_numpy()
        text = pc.cast(batch.column("text"), pa.large_string())
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
        data = memoryview(text.buffers()[2])
        for i in range(len(batch)):
            digest = hashlib.blake2b(data[offsets[i] : offsets[i + 1]], digest_size=16).digest()
            yield row + i, int(n[i]), (int(n[i]), float(x[i]), digest)
        row += len(batch)


def expected(folder: Path, min_n: int) -> tuple[dict, dict]:
    """Directly from the files: kept id -> row digest, and rejected id -> reason (the
    filter's rule, or the lowest id among equal rows)."""
    digest_of, rejected, keeper = {}, {}, {}
    for path in sorted(folder.glob("*.parquet")):
        for row, n, digest in _digests(path):
            rid = f"{path.name}:{row}"
            if n < min_n:
                rejected[rid] = "filter"
                continue
            digest_of[rid] = digest
            keeper[digest] = min(rid, keeper.get(digest, rid))
    kept = {}
    for rid, digest in digest_of.items():
        if keeper[digest] == rid:
            kept[rid] = digest
        else:
            rejected[rid] = "duplicate-of=" + keeper[digest]
    return kept, rejected


def output_rows(folder: Path) -> dict:
    """id -> row digest of every row in an output's data shards."""
    out = {}
    for path in sorted((folder / "data").glob("*.parquet")):
        ids = pq.read_table(path, columns=["id"])["id"].to_pylist()
        for (row, _, digest) in _digests(path):
            out[ids[row]] = digest
    return out


def test_parquet_partitions_follow_the_byte_budget(tmp_path):
    """Row groups are gathered into partitions until the next would pass the byte budget."""
    make_text_rows(tmp_path, 8 * 40 * (TEXT_BYTES + 16), row_group_bytes=10 * (TEXT_BYTES + 16), copies=0)
    meta = pq.ParquetFile(tmp_path / "part-000.parquet").metadata
    group = max(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
    for groups_per_partition in (1, 2, 4):
        src = read_source({"format": "parquet", "path": str(tmp_path), "bytes_per_partition": groups_per_partition * group + 1})
        assert src.frame.npartitions == 8 * 4 // groups_per_partition
    frame = src.frame.compute()
    assert frame["id"].tolist() == [f"part-{k:03d}.parquet:{r}" for k in range(8) for r in range(40)]


def test_a_task_over_the_limit_fails_with_the_restart_counted():
    """A task that needs more than its worker's limit fails the job with KilledWorker (not a
    hang on a cluster with no workers), the restart is counted, and the worker is back."""
    import time

    import dask
    import pytest
    from distributed import KilledWorker

    from dsbuild.runtime import connect, peak_worker_memory

    limit = 600 << 20

    def hog():
        # Grows until the nanny kills it, whatever the worker held before: a fresh install's
        # libraries alone took 266 MiB (page cache maps more of just-written .so files), and a
        # 300 MiB worker paused before this task started. 8 MiB strings, not a numpy array, so
        # no transparent huge pages, which can stall in compaction on fragmented memory.
        held = []
        while len(held) < (2 * limit) >> 23:
            held.append(b"\x01" * (8 << 20))
            time.sleep(0.02)
        time.sleep(10)  # long enough for the nanny's memory check (every 100 ms) to see it
        return len(held)

    spec = {"kind": "local", "workers": 1, "memory_limit": f"{limit >> 20}MiB", "dashboard": None}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), connect(spec) as client:
        peak_worker_memory(client, reset=True)
        with pytest.raises(KilledWorker):
            client.submit(hog).result(timeout=120)
        client.wait_for_workers(1, timeout=300)
        assert peak_worker_memory(client)["restarts_over_limit"] == 1


@pytest.mark.skipif(
    not os.environ.get("DSBUILD_LARGE_TESTS"),
    reason="4 GiB through two 400 MiB workers takes over 10 min on a quiet 2-core machine, and a worker was "
    "still restarted over its limit in the final pass once; run with DSBUILD_LARGE_TESTS=1",
)
def test_job_over_five_times_the_workers_memory(tmp_path):
    src = tmp_path / "src"
    make_text_rows(src, int(5.1 * WORKERS * LIMIT))
    in_memory = sum(pq.ParquetFile(p).metadata.row_group(g).total_byte_size
                    for p in src.glob("*.parquet") for g in range(pq.ParquetFile(p).metadata.num_row_groups))
    assert in_memory > 5 * WORKERS * LIMIT

    source = {"format": "parquet", "path": str(src), "bytes_per_partition": PARTITION}
    assert read_source(source).frame.npartitions >= 0.9 * in_memory / PARTITION
    job = {
        "name": "larger-than-memory",
        "source": source,
        "stages": [{"select": {"where": [{"column": "n", "op": ">=", "value": 50}]}}, {"exact_dedup": {}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    cluster = {"kind": "local", "workers": WORKERS, "memory_limit": f"{LIMIT // 2**20}MiB",
               "dashboard": None, "local_directory": str(tmp_path / "spill")}
    manifest = dsbuild.run(job, cluster=cluster)

    assert manifest["ledger"]["balanced"]
    memory = manifest["cluster"]["memory"]
    print(f"\n{in_memory / 2**30:.2f} GiB in memory through {WORKERS} workers of {LIMIT / 2**20:.0f} MiB: peak "
          f"{memory['max_bytes'] / 2**20:.0f} MiB, spilled {memory['spilled_bytes'] / 2**20:.0f} MiB, shuffled "
          f"{memory['shuffle_disk_bytes'] / 2**20:.0f} MiB on disk, {manifest['timings']['total']:.0f} s")
    assert memory["restarts_over_limit"] == 0
    assert len(memory["workers"]) == WORKERS
    for worker in memory["workers"].values():
        assert worker["limit_bytes"] == LIMIT
        assert 100 * 2**20 < worker["peak_bytes"] < LIMIT
    assert memory["shuffle_disk_bytes"] > 0

    kept, rejected = expected(src, min_n=50)
    assert output_rows(tmp_path / "out") == kept
    rejects = pq.read_table(tmp_path / "out" / "rejects", columns=["id", "reason", "stage"]).to_pylist()
    assert len(rejects) == len(rejected)
    for r in rejects:
        want = rejected[r["id"]]
        assert r["reason"].startswith("filter:") if want == "filter" else r["reason"] == want
        assert r["stage"] == ("select" if want == "filter" else "exact_dedup")
    dedup = next(s for s in manifest["stages"] if s["name"] == "exact_dedup")
    assert dedup["rejected"] == sum(1 for v in rejected.values() if v != "filter") > 0
