"""A job over data 5x larger than its workers' total memory limit completes.

One worker process with a 720 MiB limit runs a map stage and exact_dedup, whose p2p
shuffle goes through disk, over Parquet whose rows take 5.1x that limit (3.6 GiB) in
memory as Arrow tables. A worker process holds 200-270 MiB (the latter in a fresh install)
before any task and Dask pauses it at 80% of its limit, so this one has ~310 MiB for
tasks; with 20 MiB partitions it peaked 250-290 MiB above its baseline (505-537 MiB).
(Two 400 MiB workers with 4 MiB partitions had 50-120 MiB for tasks, spilled and paused
nearly every result, and took over 10 minutes.) The output is checked against a direct
pass over the same files, and the manifest must show the worker's peak below its limit
and no restart for exceeding it.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import dsbuild
from dsbuild.io.sources import read_source

WORKERS, LIMIT = 1, 720 * 2**20
TEXT_BYTES = 4000
FILES = 8
PARTITION = 20 * 2**20  # of ~300 MiB above a fresh worker's baseline before it pauses, reading and writing took up to ~250
ROW_GROUP = 2 * 2**20


def make_text_rows(folder: Path, total_bytes: int, row_group_bytes: int = 4 * 2**20, copies: float = 0.1, seed: int = 0) -> int:
    """Parquet files of (n, x, text) rows, ~``total_bytes`` in memory, uncompressed; a
    ``copies`` share of each file's rows repeat rows of the file before it. Returns the
    rows' size in memory as Arrow tables."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = int(total_bytes / FILES / (TEXT_BYTES + 16))
    previous, size = None, 0
    for k in range(FILES):
        # letters a-p from the generator's raw 64-bit words: ~6x faster than drawing each letter
        letters = rng.bit_generator.random_raw(rows * TEXT_BYTES // 8).view(np.uint8)
        letters &= 15
        letters += ord("a")
        offsets = np.arange(0, (rows + 1) * TEXT_BYTES, TEXT_BYTES, dtype=np.int32)
        text = pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(letters))
        table = pa.table({"n": rng.integers(0, 1000, rows), "x": rng.standard_normal(rows), "text": text})
        if previous is not None:
            at = rng.choice(rows, int(rows * copies), replace=False)
            order = np.arange(rows)
            order[at] = rows + np.arange(len(at))
            copied = previous.take(rng.choice(rows, len(at), replace=False))
            table = pa.concat_tables([table, copied]).take(order)
        pq.write_table(table, folder / f"part-{k:03d}.parquet", compression="none", use_dictionary=False,
                       write_statistics=False, row_group_size=max(1, row_group_bytes // (TEXT_BYTES + 16)))
        previous, size = table, size + table.nbytes
    return size


# Two random linear checksums of a row's text, 64 bits each, computed by numpy on Arrow's
# buffer: independent of dsbuild's hashing, and no Python object per row but the result.
_WEIGHTS = np.random.default_rng(1).integers(1, 2**63, (2, TEXT_BYTES // 8), dtype=np.uint64) | np.uint64(1)


def _digests(path: Path):
    """(n, what identifies the whole row) for every row of one file, in order, a batch
    at a time as two lists: the digest is n, x and the text's checksums in 32 bytes."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["n", "x", "text"]):
        n, x = batch.column("n").to_numpy(), batch.column("x").to_numpy()
        text = pc.cast(batch.column("text"), pa.large_string())
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
        assert (np.diff(offsets) == TEXT_BYTES).all()
        words = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]].view(np.uint64).reshape(len(text), -1)
        sums = [(words * w).sum(axis=1, dtype=np.uint64) for w in _WEIGHTS]
        digest = np.column_stack([n.astype(np.uint64), x.view(np.uint64), *sums])
        yield n.tolist(), digest.view(f"V{digest.shape[1] * 8}").ravel().tolist()


def expected(folder: Path, min_n: int) -> tuple[dict, dict]:
    """Directly from the files: kept id -> row digest, and rejected id -> reason (the
    filter's rule, or the lowest id among equal rows)."""
    digest_of, rejected, keeper = {}, {}, {}
    for path in sorted(folder.glob("*.parquet")):
        row = 0
        for ns, digests in _digests(path):
            for n, digest in zip(ns, digests):
                rid = f"{path.name}:{row}"
                row += 1
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
        ids, row = pq.read_table(path, columns=["id"])["id"].to_pylist(), 0
        for _, digests in _digests(path):
            out.update(zip(ids[row : row + len(digests)], digests))
            row += len(digests)
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


@pytest.mark.filterwarnings("ignore:worker .* MiB in use before any task")  # a small limit, on purpose
def test_a_task_over_the_limit_fails_with_the_restart_counted():
    """A task that needs more than its worker's limit fails the job with KilledWorker (not a
    hang on a cluster with no workers), the restart is counted, and the worker is back."""
    import time

    import dask
    from distributed import KilledWorker

    from dsbuild.runtime import connect, peak_worker_memory

    limit = 600 << 20

    def hog():
        # Grows until the nanny kills it, whatever the worker held before: a fresh install's
        # libraries alone took 266 MiB (page cache maps more of just-written .so files), and a
        # 300 MiB worker paused before this task started. 8 MiB strings: small pages, as a
        # worker's numpy arrays get (runtime.avoid_huge_page_stalls).
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


def test_job_over_five_times_the_workers_memory(tmp_path):
    src = tmp_path / "src"
    in_memory = make_text_rows(src, int(5.1 * WORKERS * LIMIT), row_group_bytes=ROW_GROUP)
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
