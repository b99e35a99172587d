"""Shard writing: the manifest's size and hash are the file's, and merging small files
into a shard streams them a row group at a time; an output kept apart from its input."""

import hashlib

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsbuild.io.sink import OutputExists, Sink, _merge, _row_groups, _write_table
from dsbuild.io.sources import CsvSource, ParquetSource

FS = fsspec.filesystem("file")


def _table(n: int) -> pa.Table:
    return pa.table({"id": [f"r{i:05d}" for i in range(n)], "x": np.arange(n, dtype=float), "image": [bytes([i % 251]) * (i % 97) for i in range(n)]})


def test_written_shard_is_described_by_its_own_bytes(tmp_path):
    table = _table(2000)
    shard = _write_table(FS, table, str(tmp_path / "a.parquet"), "zstd")
    data = (tmp_path / "a.parquet").read_bytes()
    assert (shard["rows"], shard["bytes"], shard["sha256"]) == (2000, len(data), hashlib.sha256(data).hexdigest())
    assert pq.read_table(tmp_path / "a.parquet").equals(table)
    empty = _write_table(FS, table.slice(0, 0), str(tmp_path / "e.parquet"), None)
    assert empty["rows"] == 0 and pq.read_table(tmp_path / "e.parquet").schema.equals(table.schema)


def test_merge_keeps_rows_in_order_and_removes_its_inputs(tmp_path):
    table = _table(3000)
    paths = [str(tmp_path / f"p{k}.parquet") for k in range(5)]
    for k, p in enumerate(paths):
        _write_table(FS, table.slice(600 * k, 600), p, None)
    done = str(tmp_path / "_staging" / "done" / "0.pickle")
    shard = _merge(FS, paths, str(tmp_path / "m.parquet"), table.schema, "zstd", {}, done)
    assert pq.read_table(tmp_path / "m.parquet").equals(table)
    assert shard["rows"] == 3000 and shard["sha256"] == hashlib.sha256((tmp_path / "m.parquet").read_bytes()).hexdigest()
    assert not any(FS.exists(p) for p in paths)
    # Dask runs the task again when its worker died before reporting: its inputs are gone by then
    assert _merge(FS, paths, str(tmp_path / "m.parquet"), table.schema, "zstd", {}, done) == shard


def test_row_groups_stay_within_the_byte_budget():
    tables = [_table(700).slice(0, 300), _table(700).slice(300, 400)]
    budget = tables[0].nbytes // 2
    groups = list(_row_groups(tables, budget))
    assert pa.concat_tables(groups).equals(pa.concat_tables(tables))
    assert len(groups) > 2 and all(g.nbytes <= 1.2 * budget for g in groups)


def test_files_of_a_sixteenth_of_the_byte_limit_are_written_as_shards(tmp_path):
    """A partition of a few tens of MiB of images is written once, as its shard; only
    remnants under the limits' small-file bounds are staged and merged."""
    import pandas as pd

    from dsbuild.io.sink import Sink
    from dsbuild.records import IMAGE_DTYPE

    sink = Sink(str(tmp_path / "out"), shard_rows=100_000, shard_bytes=64 * 2**20, compression="zstd", key="t")
    blob = b"\xff\xd8\xff" + bytes(60_000)  # a JPEG's magic bytes; ~60 KB like a 512 px photo

    def frame(start: int, n: int) -> pd.DataFrame:
        return pd.DataFrame({"id": [f"r{i:05d}" for i in range(start, start + n)], "image": pd.Series([blob] * n, dtype=IMAGE_DTYPE)})

    folder = sink.staging("data", "kept")
    big = sink.write_partition(frame(0, 100), folder, 0)  # ~6 MiB: over 64 MiB / 16
    small = sink.write_partition(frame(100, 10), folder, 1) + sink.write_partition(frame(110, 10), folder, 2)
    assert [f["path"].endswith(".parquet") for f in big] == [True] and big[0]["sha256"]
    assert all(f["path"].endswith(".arrow") for f in small)
    shards, _ = sink.finish("data", big + small, [], cast_conflicts_to_string=False)
    assert [s["rows"] for s in shards] == [100, 20]
    assert shards[0]["sha256"] == big[0]["sha256"]  # renamed, not rewritten
    for s in shards:
        assert hashlib.sha256((tmp_path / "out.tmp-t" / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    ids = pq.read_table(tmp_path / "out.tmp-t" / "data").column("id").to_pylist()
    assert ids == [f"r{i:05d}" for i in range(120)]


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")  # Dask's own reader, on pandas 3
def test_dask_reads_an_output_whose_categorical_is_empty_in_a_shard(tmp_path):
    """A shard whose categorical column holds only nulls would read back with categories of
    dtype object, the others' of str, and Dask could not concatenate them: such shards get a
    value the output holds elsewhere, used by no row."""
    import dask.dataframe as dd
    import pandas as pd

    sink = Sink(str(tmp_path / "out"), shard_rows=400, shard_bytes=64 * 2**20, compression="zstd", key="t")

    def frame(start: int, colors: list) -> pd.DataFrame:
        ids = [f"r{i:05d}" for i in range(start, start + len(colors))]
        return pd.DataFrame({"id": ids, "color": pd.Series(colors, dtype="str").astype("category")})

    folder = sink.staging("data", "kept")
    files = (
        sink.write_partition(frame(0, ["red", "blue"] * 200), folder, 0)  # a shard of its own, as Parquet
        + sink.write_partition(frame(400, [None] * 400), folder, 1)  # the same, with no value
        + sink.write_partition(frame(800, [None] * 50), folder, 2)  # staged and encoded alone
    )
    assert [f["path"].rsplit(".", 1)[1] for f in files] == ["parquet", "parquet", "arrow"]
    shards, _ = sink.finish("data", files, [], cast_conflicts_to_string=False)
    assert [s["rows"] for s in shards] == [400, 400, 50] and "dictionary" not in shards[0]
    out = dd.read_parquet(str(tmp_path / "out.tmp-t" / "data")).compute()
    assert sorted(out["color"].cat.categories) == ["blue", "red"]
    assert out["color"].isna().sum() == 450 and (out["color"] == "red").sum() == 200


def test_resume_skips_a_checkpoint_its_killed_driver_left_half_written(tmp_path):
    """A driver killed while writing before-003.json left it empty, and --resume failed with
    JSONDecodeError instead of continuing from the last complete checkpoint."""
    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**20, compression="zstd")
    sink.write_checkpoint(1, {"rows": 5})
    assert not FS.exists(sink.checkpoint(1) + ".json.part")
    FS.pipe(sink.checkpoint(3) + ".json", b"")
    assert sink.last_checkpoint() == (1, {"rows": 5})


def test_abort_outlasts_tasks_still_writing(tmp_path):
    """After a task fails, the job's other tasks may still write into the temporary folder
    while the driver removes it; the removal must neither fail on their files nor leave
    the folder behind."""
    import threading
    import time

    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**20, compression="zstd")
    staging = f"{sink.tmp}/data/000"
    FS.makedirs(staging, exist_ok=True)
    for i in range(200):
        FS.pipe(f"{staging}/old-{i}.arrow", b"x" * 100)
    stop = time.monotonic() + 0.8

    def late_task():
        i = 0
        while time.monotonic() < stop:
            try:
                FS.makedirs(staging, exist_ok=True)
                FS.pipe(f"{staging}/late-{i}.arrow", b"x")
            except (FileNotFoundError, FileExistsError):  # the removal raced makedirs or took a parent folder between the two
                pass
            i += 1

    writer = threading.Thread(target=late_task)
    writer.start()
    try:
        sink.abort()
    finally:
        writer.join()
    sink.abort()  # what the writer made after a removal that won the race
    assert not FS.exists(sink.tmp)


def test_tasks_of_a_stopped_run_do_not_make_its_folder_again(tmp_path):
    """Cancelled, a run removes its temporary folder while tasks it started still run on
    the workers; their writes (a partition staged, a checkpoint, a merge's record) made
    the folder again, left beside the output after ``dsbuild status --cancel``."""
    import pandas as pd

    from dsbuild.io.sink import RunStopped, _encode

    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**20, compression="zstd", key="t")
    sink.claim()
    part = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})
    sink.write_partition(part, sink.staging("data", "kept"), 0)
    sink.abort()
    with pytest.raises(RunStopped):
        sink.write_partition(part, sink.staging("data", "kept"), 1)
    with pytest.raises(RunStopped):
        sink.write_scratch(part, sink.checkpoint(1), 0)
    elsewhere = Sink(str(tmp_path / "other"), shard_rows=1000, shard_bytes=2**20, compression="zstd", key="t")
    staged = elsewhere.write_partition(part, elsewhere.staging("data", "kept"), 0)  # as if read before the removal
    with pytest.raises(RunStopped):
        _encode(FS, staged[0]["path"], f"{elsewhere.tmp}/p.parquet", None, {}, {}, f"{sink.tmp}/_staging/done-data-x/0.pickle", sink.tmp)
    assert not FS.exists(sink.tmp)


def test_an_output_is_kept_apart_from_its_input(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("x\n1\n")
    parquet = ParquetSource(format="parquet", path=str(tmp_path / "in"))

    def sink(path, overwrite=False):
        return Sink(str(path), shard_rows=10, shard_bytes=10, compression="none", overwrite=overwrite)

    with pytest.raises(OutputExists, match="inside source.path .*the next run would read this output as its input"):
        sink(tmp_path / "in" / "clean").check_apart_from(parquet)
    with pytest.raises(OutputExists, match="overwriting the output would delete the input"):
        sink(tmp_path, overwrite=True).check_apart_from(CsvSource(format="csv", path=str(tmp_path / "in" / "a.csv")))
    sink(tmp_path / "in" / "clean").check_apart_from(CsvSource(format="csv", path=str(tmp_path / "in")))  # CSV reads no Parquet
    sink(tmp_path / "out", overwrite=True).check_apart_from(parquet)
    sink(tmp_path, overwrite=False).check_apart_from(parquet)  # nothing is replaced without overwrite


def test_a_glob_source_refuses_only_an_output_it_would_read(tmp_path):
    """An output beside a glob's files was refused as "inside source.path" though the glob
    cannot match it (``bc*.parquet`` and ``out/``); one the glob reaches still is."""
    def sink(path):
        return Sink(str(path), shard_rows=10, shard_bytes=10, compression="none")

    def glob(pattern):
        return ParquetSource(format="parquet", path=str(tmp_path / pattern))

    sink(tmp_path / "out" / "j3").check_apart_from(glob("bc*.parquet"))
    sink(tmp_path / "out" / "j3").check_apart_from(glob("*/*.parquet"))  # out/j3/data/ is three folders down
    for reaches in ("**/*.parquet", "out/*/data/*.parquet", "*/*/*/*.parquet"):
        with pytest.raises(OutputExists, match="inside source.path"):
            sink(tmp_path / "out" / "j3").check_apart_from(glob(reaches))


def test_an_overwrite_keeps_the_files_stages_read():
    """Crowd annotations kept in the output folder were deleted by --overwrite."""
    from dsbuild.job import load_job

    spec = load_job({
        "name": "lab", "source": {"format": "sample", "name": "digits"}, "sink": {"path": "/data/out"},
        "stages": [{"aggregate_labels": {"annotations": {"format": "csv", "path": "/data/out/crowd.csv", "item": "i",
                                                         "annotator": "a", "label": "l"}}},
                   {"decontaminate": {"reference": {"format": "parquet", "path": "/data/test.parquet"}}}],
    })
    assert spec.stage_inputs() == [("stages[0].aggregate_labels.annotations.path", "/data/out/crowd.csv"),
                                   ("stages[1].decontaminate.reference.path", "/data/test.parquet")]
    out = Sink("/data/out", shard_rows=10, shard_bytes=10, compression="none", overwrite=True)
    with pytest.raises(OutputExists, match=r"stages\[0\].aggregate_labels.annotations.path /data/out/crowd.csv is inside sink.path"):
        out.check_apart_from(spec.source, spec.stage_inputs())


def test_an_output_written_by_another_run_meanwhile_is_not_replaced(tmp_path):
    """Two jobs into one folder: the one that finished last replaced the other's output
    without --overwrite, as the check ran only at the start."""
    for overwrite in (False, True):
        out = tmp_path / f"out{overwrite}"
        sink = Sink(str(out), shard_rows=10, shard_bytes=10, compression="none", overwrite=overwrite, key="k")
        sink.check_target()
        sink.claim()
        sink.write_text("manifest.json", "{}")  # this run's output, in its temporary folder
        out.mkdir()
        (out / "manifest.json").write_text('{"dsbuild": "0.1.0", "job": "the other run", "ledger": {"balanced": true}}')
        if overwrite:
            (out / "manifest.json").rename(out / "thesis.tex")  # asked to overwrite, still not a folder of other work
            with pytest.raises(OutputExists, match="is not a dsbuild output"):
                sink.commit()
            (out / "thesis.tex").rename(out / "manifest.json")
            sink.commit()
            assert (out / "manifest.json").read_text() == "{}"
        else:
            with pytest.raises(OutputExists, match="exists and is not empty; pass --overwrite .* \\(it appeared while this run ran\\)"):
                sink.commit()
            assert "the other run" in (out / "manifest.json").read_text()
            assert (tmp_path / f"out{overwrite}.tmp-k" / "_SUCCESS").exists()  # this run's output, kept whole


def test_an_overwrite_replaces_only_a_folder_dsbuild_wrote(tmp_path):
    """A Spark output (``_SUCCESS`` beside its part files) and a web app's build folder
    (its ``manifest.json``) were taken for earlier outputs, and --overwrite deleted them."""
    spark, web, ours = tmp_path / "spark", tmp_path / "web", tmp_path / "ours"
    for folder, files in [(spark, {"_SUCCESS": "", "part-00000-1a2b.csv": "a,b\n"}),
                          (web, {"manifest.json": '{"name": "My App", "start_url": "/"}', "index.html": "<html>"}),
                          (ours, {"manifest.json": '{"dsbuild": "0.1.0", "ledger": {"balanced": true}}', "_SUCCESS": ""})]:
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    for folder in (spark, web):
        with pytest.raises(OutputExists, match="is not a dsbuild output"):
            Sink(str(folder), shard_rows=10, shard_bytes=10, compression="none", overwrite=True).check_target()
    Sink(str(ours), shard_rows=10, shard_bytes=10, compression="none", overwrite=True).check_target()


def test_two_runs_of_a_job_in_one_process_do_not_share_its_folder(tmp_path):
    """The owner of the temporary folder was its process: a second run of the job in the
    same process (a notebook's second thread) took the first one's folder, and each
    deleted the other's checkpoints (both failed: "Failed to open ... before-003/000003.arrow")."""
    import json
    import os
    import socket

    def sink():
        return Sink(str(tmp_path / "out"), shard_rows=10, shard_bytes=2**20, compression="none", key="job")

    first, second = sink(), sink()
    first.claim()
    with pytest.raises(OutputExists, match="another run of this job in this process .* is writing"):
        second.claim()
    first.release()
    second.claim()  # once the first gave it up
    second.abort()
    (tmp_path / "out.tmp-job").mkdir()  # a claim a run of this process left behind when it died
    (tmp_path / "out.tmp-job" / "_owner.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run": "gone"}))
    first.claim()


def test_partition_folders_are_slices_of_one_conversion_to_arrow(tmp_path, monkeypatch):
    """With partition_by, a partition becomes Arrow once and each group is a slice of it:
    converted group by group, 2,000 groups of a 50,000-row partition took 2 s of CPU
    (0.2 s so), and each group's types were guessed from its own rows. Every row lands in
    its group's folder, in order; a missing value (also a categorical's) in Hive's default."""
    import pandas as pd

    from dsbuild.io.sink import folder as sink_module  # where the Sink converts partitions

    conversions = []
    convert = sink_module._to_arrow
    monkeypatch.setattr(sink_module, "_to_arrow", lambda part, types: conversions.append(len(part)) or convert(part, types))
    n = 600
    part = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "x": np.arange(n, dtype=float),
        "g": pd.array([None if i % 7 == 0 else i % 50 for i in range(n)], dtype="Int64"),
        "c": pd.Categorical([None if i % 11 == 0 else "ab"[i % 2] for i in range(n)]),
    })
    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**28, compression="zstd", partition_by=["g", "c"])
    files = sink.write_partition(part, str(tmp_path / "stage"), 0, by=["g", "c"])
    assert conversions == [n]
    groups = part.groupby(["g", "c"], dropna=False, observed=True)
    assert len(files) == groups.ngroups
    for f in files:
        g, c = (v.split("=")[1] for v in f["group"].split("/"))
        want = part[(part["g"].isna() if g == "__HIVE_DEFAULT_PARTITION__" else part["g"] == int(g)).fillna(False)
                    & (part["c"].isna() if c == "__HIVE_DEFAULT_PARTITION__" else part["c"] == c).to_numpy()]
        with pa.memory_map(f["path"]) as source:
            got = pa.ipc.open_file(source).read_all()
        assert got.column("id").to_pylist() == want["id"].tolist() and f["rows"] == len(want) > 0


def test_text_the_source_typed_string_view_is_written_so_in_partition_folders_too(tmp_path):
    """A string_view column (Polars' text) was written back as large_string, the type
    Arrow makes of pandas' text; kept so, a partition_by output failed, as Arrow's take
    has no kernel for it."""
    import pandas as pd

    part = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "s": ["a", None, "c", "d", "e", "f"], "g": [1, 2, 1, 2, 1, 2]})
    for by in ([], ["g"]):
        sink = Sink(str(tmp_path / f"out{by}"), shard_rows=1000, shard_bytes=2**28, compression="zstd", partition_by=by)
        sink.column_types = {"s": pa.string_view()}
        values = []
        for f in sink.write_partition(part, str(tmp_path / f"stage{by}"), 0, by=by):
            with pa.memory_map(f["path"]) as source:
                got = pa.ipc.open_file(source).read_all()
            assert got.schema.field("s").type == pa.string_view()
            values += got.column("s").to_pylist()
        assert values.count(None) == 1 and sorted(filter(None, values)) == ["a", "c", "d", "e", "f"]


def test_partition_folders_are_finished_by_a_few_tasks(tmp_path, monkeypatch):
    """A partition_by output's finish made a task per shard: 2,000 groups of ~100 rows
    were 2,000 tasks (and 2,000 folders made one by one in the driver), whose scheduling
    cost more than their writes (15 s). Small shards share a task; every row still lands
    in its group's folder."""
    import dask
    import pandas as pd

    computed = []
    compute = dask.compute
    monkeypatch.setattr(dask, "compute", lambda *tasks, **kw: computed.append(len(tasks)) or compute(*tasks, **kw))
    n = 2000
    part = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": np.arange(n, dtype=float), "g": np.arange(n) % 200})
    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**28, compression="zstd", partition_by=["g"])
    staged = [f for i in range(2) for f in sink.write_partition(part.iloc[i::2], sink.staging("data", "kept"), i, by=["g"])]
    with dask.config.set(scheduler="sync"):
        shards, _ = sink.finish("data", staged, [part.iloc[:0]], cast_conflicts_to_string=False)
    assert len(shards) == 200 and computed == [4]  # 64 shards a task
    back = pd.read_parquet(sink.tmp + "/data")
    assert sorted(back["id"]) == sorted(part["id"])
    got = back.set_index("id")["g"].astype(int)
    assert (got.to_numpy() == part.set_index("id")["g"][got.index].to_numpy()).all()


def test_a_partition_is_converted_to_arrow_in_its_task_thread(tmp_path, monkeypatch):
    """A worker runs a task per core; Arrow started a pool of threads to convert every
    partition of more than a few hundred cells, which cost a 5,000-row partition twice
    the CPU of the conversion and, on a loaded machine, twice its wall time."""
    import concurrent.futures

    import pandas as pd

    pools = []

    class Counted(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Counted)
    n = 5000
    part = pd.DataFrame({"id": [f"r{i}" for i in range(n)], **{f"x{j}": np.arange(n, dtype=float) for j in range(6)},
                         "s": pd.Series(["a", "b"] * (n // 2), dtype="str")})
    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**28, compression="zstd")
    sink.write_scratch(part, str(tmp_path / "checkpoint"), 0)
    sink.write_partition(part, str(tmp_path / "stage"), 0)
    assert pools == []


def test_finish_takes_the_files_schemas_from_their_records(tmp_path, monkeypatch):
    """The finish unified the shards' schemas by opening every staged file: 1.6-1.8 s per
    2,000 files of a partition_by output. The writing task puts the schema in the file's
    record (as text, which a checkpoint's JSON keeps); a record without one, from a
    checkpoint an older version wrote, still has its file read."""
    import json

    import dask
    import pandas as pd

    from dsbuild.io.sink import schemas as sink_module  # where the finish reads the files' schemas

    n = 600
    part = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": pd.array(np.arange(n), dtype="Int64"),
                         "s": pd.Series(["a", None] * (n // 2), dtype="string"), "g": np.arange(n) % 30})
    sink = Sink(str(tmp_path / "out"), shard_rows=1000, shard_bytes=2**28, compression="zstd", partition_by=["g"])
    staged = [f for i in range(2) for f in sink.write_partition(part.iloc[i::2], sink.staging("data", "kept"), i, by=["g"])]
    staged = json.loads(json.dumps(staged))  # as a checkpoint keeps them
    old = staged[0]
    staged[0] = {k: v for k, v in old.items() if k != "schema"}
    opened = []
    read = sink_module._read_schema
    monkeypatch.setattr(sink_module, "_read_schema", lambda fs, path: opened.append(path) or read(fs, path))
    with dask.config.set(scheduler="sync"):
        shards, schema = sink.finish("data", staged, [part.iloc[:0]], cast_conflicts_to_string=False)
    assert opened == [old["path"]]
    assert sink_module._read_schema(sink.fs, sink.tmp + "/" + shards[0]["file"]).equals(schema)
    assert all("schema" not in s for s in shards)
    back = pd.read_parquet(sink.tmp + "/data")
    assert sorted(back["id"]) == sorted(part["id"]) and str(back["x"].dtype) == "Int64"


@pytest.mark.parametrize(("fmt", "codec"), [("jpeg", "UNCOMPRESSED"), ("jp2", "UNCOMPRESSED"), ("pnm", "ZSTD")])
def test_compressed_images_are_stored_without_a_codec_and_raw_ones_with_it(tmp_path, fmt, codec):
    """JPEG and JPEG 2000 bytes are compressed already: zstd over them costs CPU for
    nothing (JPEG 2000 was zstd'd); a netpbm file's raw pixels keep the codec."""
    from skimage import data

    from dsbuild.kernels.decode import encode_image

    blobs = [encode_image(data.camera()[i : i + 48, :64], fmt) for i in range(0, 240, 48)]
    table = pa.table({"id": [f"r{i}" for i in range(len(blobs))], "image": blobs})
    _write_table(FS, table, str(tmp_path / "a.parquet"), "zstd")
    column = pq.read_metadata(tmp_path / "a.parquet").row_group(0).column(1)
    assert column.path_in_schema == "image" and column.compression == codec
