"""End to end: jobs on a real LocalCluster, the output contract and the ledger."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import cloudpickle
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import dsbuild
from dsbuild.io.sink import OutputExists
from dsbuild.io.sources import read_source
from dsbuild.kernels.decode import encode_image
from dsbuild.pipeline import LedgerError
from dsbuild.stages import StageError
from dsbuild.stages.base import MapStage, StageOptions, register

ROOT = Path(__file__).resolve().parent.parent


def digits_job(tmp_path, partitions=4, **sink):
    return {
        "name": "digits",
        "seed": 0,
        "source": {"format": "sample", "name": "digits", "partitions": partitions},
        "columns": {"label": "label", "image": "image"},
        "stages": [
            {"validate_images": {}},
            {"select": {"where": [{"column": "label", "op": "not_in", "value": ["3", "8"]}]}},
        ],
        "sink": {"path": str(tmp_path / "out"), "shard_rows": 400, **sink},
    }


def read_output(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    kept = pd.read_parquet(Path(path) / "data").sort_values("id").reset_index(drop=True)
    rejects = pd.read_parquet(Path(path) / "rejects").sort_values("id").reset_index(drop=True)
    return kept, rejects


def test_output_contract(client, tmp_path):
    manifest = dsbuild.run(digits_job(tmp_path), client=client)
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists() and (out / "manifest.json").exists()
    assert not list(tmp_path.glob("out.tmp-*"))
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["ledger"] == {"balanced": True, "problems": []}
    assert on_disk["totals"] == {"in": 1797, "kept": 1797 - 174 - 183, "rejected": 174 + 183, "added": 0}
    select = on_disk["stages"][2]
    assert select["rejected_by_reason"] == {"filter:label:not_in:3,8": 357}
    assert on_disk["stages"][1]["labels"]["3"] == 183 and "3" not in select["labels"]
    assert sum(select["labels"].values()) == select["out"]
    # shards respect the target size and the manifest's counts and checksums match the files
    import hashlib

    for shard in on_disk["outputs"]["data"]:
        assert shard["rows"] <= 400
        assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    kept, rejects = read_output(out)
    assert len(kept) == 1440 and set(kept["label"]) == set("0124567 9".replace(" ", ""))
    assert set(rejects["stage"]) == {"select"} and rejects["reason"].str.startswith("filter:").all()
    assert "_reason" not in kept.columns and "_added" not in kept.columns
    # readable by the usual tools, without dsbuild
    assert ds.dataset(out / "data").count_rows() == 1440
    assert len(dd.read_parquet(str(out / "data"))) == 1440
    assert manifest["input"]["fingerprint"] == on_disk["input"]["fingerprint"]
    peaks = on_disk["cluster"]["memory"]["workers"]
    assert len(peaks) == 2 and all(50 * 2**20 < w["peak_bytes"] < w["limit_bytes"] for w in peaks.values())


def test_same_rows_whatever_the_workers_and_partitions(client, tmp_path):
    dsbuild.run(digits_job(tmp_path / "a", partitions=3), client=client)
    dsbuild.run(digits_job(tmp_path / "b", partitions=7, shard_rows=150), cluster="local", workers=1)
    kept_a, rej_a = read_output(tmp_path / "a" / "out")
    kept_b, rej_b = read_output(tmp_path / "b" / "out")
    pd.testing.assert_frame_equal(kept_a, kept_b)
    pd.testing.assert_frame_equal(rej_a, rej_b)


def test_checkpoints_in_memory_give_the_same_output(client, tmp_path):
    """``sink.checkpoints: memory`` persists the rows before each multi-pass stage on the
    workers instead of writing them: same rows, rejects and counts."""
    from dsbuild.job import load_job

    job = load_job(ROOT / "jobs" / "clean_adult.yaml")
    assert any(s.name in ("impute", "outliers", "constraints") for s in job.stages)
    runs = {}
    for mode in ("disk", "memory"):
        spec = job.model_copy(update={"sink": job.sink.model_copy(update={"path": str(tmp_path / mode), "checkpoints": mode})})
        runs[mode] = dsbuild.run(spec, client=client)
    for a, b in zip(read_output(tmp_path / "disk"), read_output(tmp_path / "memory")):
        pd.testing.assert_frame_equal(a, b)
    strip = lambda m: [{k: v for k, v in s.items() if k != "seconds"} for s in m["stages"]]  # noqa: E731
    assert strip(runs["disk"]) == strip(runs["memory"])
    assert sum(sum(s["metrics"].values()) for s in runs["memory"]["stages"]) > 0  # cells were changed


def write_corrupt_images(folder: Path) -> None:
    rng = np.random.default_rng(1)
    good = encode_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (folder / "ok").mkdir(parents=True)
    for i in range(5):
        (folder / "ok" / f"{i}.png").write_bytes(encode_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    (folder / "ok" / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "ok" / "text.jpg").write_text("definitely not a jpeg")
    (folder / "ok" / "empty.png").write_bytes(b"")
    bomb = bytearray(good)
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR claims 100000 x 100000
    (folder / "ok" / "bomb.png").write_bytes(bytes(bomb))


def test_corrupt_images_reach_rejects_with_reasons(client, tmp_path):
    write_corrupt_images(tmp_path / "imgs")
    job = {
        "name": "images",
        "source": {"format": "images", "path": str(tmp_path / "imgs"), "files_per_partition": 3},
        "columns": {"image": "image"},
        "stages": [{"validate_images": {}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    manifest = dsbuild.run(job, client=client)
    kept, rejects = read_output(tmp_path / "out")
    assert len(kept) == 5 and (kept["image_height"] == 16).all()
    reasons = dict(zip(rejects["id"], rejects["reason"]))
    assert reasons == {
        "ok/truncated.png": "truncated",
        "ok/text.jpg": "decode-error:unknown-format",
        "ok/empty.png": "empty-image",
        "ok/bomb.png": "too-large:100000x100000",
    }
    assert rejects.set_index("id").loc["ok/text.jpg", "image"] == b"definitely not a jpeg"  # whole row kept
    assert manifest["stages"][1]["rejected"] == 4


def test_corrupt_tabular_input_is_accounted_for(client, tmp_path):
    rows = ["name,age,score"] + [f"p{i},{20 + i % 50},{i / 10}" for i in range(3000)]
    rows[2001] = "p2000,twenty,1.0"
    rows[2501] = "p2500,30,1.0,surprise"
    (tmp_path / "people.csv").write_text("\n".join(rows) + "\n")
    job = {
        "name": "people",
        "source": {"format": "csv", "path": str(tmp_path / "people.csv"), "blocksize": 20_000, "infer_bytes": 20_000},
        "stages": [{"cast": {"schema": {"score": "int"}}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    manifest = dsbuild.run(job, client=client)
    kept, rejects = read_output(tmp_path / "out")
    by_id = rejects.set_index("id")
    assert by_id.loc["people.csv:2000", "reason"] == "type:age=twenty"
    assert by_id.loc["people.csv:2000", "stage"] == "source"
    assert by_id.loc["people.csv:2000", "raw"] == "p2000,twenty,1.0"
    assert by_id.loc["people.csv:2500", "reason"] == "csv:fields=expected 3, got 4"
    # cast to int rejects every score with a fraction, naming the value
    assert by_id.loc["people.csv:1", "reason"] == "cast:score:int=0.1"
    assert manifest["stages"][0]["rejected"] == 2
    assert len(kept) + len(rejects) == 3000
    assert manifest["ledger"]["balanced"]


def test_the_id_column_is_a_name_not_data(client, tmp_path):
    """``columns.id`` names each record: two copies of a record have two ids, a numeric id
    is no feature, and a synthetic row takes no source record's id."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"key": np.arange(1000, 1200), "x": rng.normal(size=200).round(6), "y": rng.integers(0, 3, 200)})
    rows.loc[150:, ["x", "y"]] = rows.loc[:49, ["x", "y"]].to_numpy()  # 50 copies under ids of their own
    rows.to_parquet(tmp_path / "rows.parquet")
    manifest = dsbuild.run({
        "name": "ids", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "rows.parquet")},
        "columns": {"id": "key", "label": "y"},
        "stages": [{"exact_dedup": {}}, {"sanitize": {"method": "l2", "fraction": 0.1}}, {"synthesize": {"rows": 20}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    kept, rejects = read_output(tmp_path / "out")
    assert (rejects["stage"] == "exact_dedup").sum() == 50
    assert manifest["stages"][2]["summary"]["features"] == ["x"]
    synthetic = kept[kept["id"].str.contains("syn")]
    assert len(synthetic) == 20 and synthetic["key"].isna().all()


def test_a_job_reads_a_frame_built_in_python(client, tmp_path):
    df = pd.read_csv("dsbuild/io/data/adult.csv.gz", nrows=3000)
    df = pd.concat([df, df.iloc[:40]], ignore_index=True)
    job = dsbuild.job(name="frame", source={"format": "frame", "frame": df, "name": "adult", "rows_per_partition": 700},
                      stages=[{"exact_dedup": {}}], sink={"path": str(tmp_path / "out")})
    manifest = dsbuild.run(job, client=client, overrides={"seed": 1})
    kept, rejects = read_output(tmp_path / "out")
    assert manifest["ledger"]["balanced"] and manifest["job"]["source"] == {"format": "frame", "name": "adult", "rows_per_partition": 700}
    assert len(kept) == 3000 and len(rejects) == 40 and rejects["reason"].str.startswith("duplicate-of=adult:").all()
    with pytest.raises(ValueError, match="frame source lives in this Python process"):
        dsbuild.submit(job)


def test_partition_folders_in_the_output(client, tmp_path, monkeypatch):
    """sink.partition_by writes data/split=train/…, which pandas and dsbuild read back. The
    finish takes the files' schemas from their records: it opened each of them (1.6-1.8 s
    per 2,000 folders)."""
    from dsbuild.io.sink import schemas as sink_module  # where the finish reads the files' schemas

    opened = []
    read = sink_module._read_schema
    monkeypatch.setattr(sink_module, "_read_schema", lambda fs, path: opened.append(path) or read(fs, path))
    df = pd.read_csv("dsbuild/io/data/adult.csv.gz", nrows=4000)
    df.loc[::500, "workclass"] = None  # a missing value is Hive's default partition
    job = {
        "name": "parts", "seed": 0, "source": {"format": "frame", "frame": df, "rows_per_partition": 900},
        "stages": [{"split": {}}],
        "sink": {"path": str(tmp_path / "out"), "partition_by": ["split", "workclass"], "shard_rows": 500},
    }
    manifest = dsbuild.run(job, client=client)
    assert manifest["ledger"]["balanced"] and opened == []
    files = [s["file"] for s in manifest["outputs"]["data"]]
    assert "data/split=train/workclass=Private/part-00000.parquet" in files
    assert any(f.startswith("data/split=test/workclass=__HIVE_DEFAULT_PARTITION__/") for f in files)
    assert "split" not in pq.read_schema(tmp_path / "out" / files[0]).names  # the folder names it
    assert manifest["schema"]["data"][-2:] == [{"name": "split", "type": "large_string", "partition": True},
                                              {"name": "workclass", "type": "large_string", "partition": True}]
    # pandas' read_parquet infers dictionaries, which pyarrow cannot yet unify with Hive's nulls
    back = ds.dataset(tmp_path / "out" / "data", partitioning="hive").to_table().to_pandas()
    assert len(back) == 4000 and set(back["split"].astype(str)) == {"train", "validation", "test"}
    ours = read_source({"format": "parquet", "path": str(tmp_path / "out" / "data")}).frame.compute()
    assert ours["workclass"].isna().sum() == df["workclass"].isna().sum()
    with pytest.raises(StageError, match="sink.partition_by: 'splits' is not a column of the output.*'split'"):
        dsbuild.run({**job, "sink": {"path": str(tmp_path / "o2"), "partition_by": ["splits"]}}, client=client)


def test_refuses_to_overwrite_unless_asked(client, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExists, match="exists and is not empty"):
        dsbuild.run(digits_job(tmp_path), client=client)
    assert (tmp_path / "out" / "precious.txt").exists()
    # asked, it still replaces only an earlier output: a folder of other work was deleted whole
    with pytest.raises(OutputExists, match="is not a dsbuild output"):
        dsbuild.run(digits_job(tmp_path), client=client, overwrite=True)
    assert (tmp_path / "out" / "precious.txt").exists()
    (tmp_path / "out" / "precious.txt").unlink()
    dsbuild.run(digits_job(tmp_path), client=client)
    (tmp_path / "out" / "data" / "note.txt").write_text("an earlier output, written into")
    dsbuild.run(digits_job(tmp_path), client=client, overwrite=True)
    assert not (tmp_path / "out" / "data" / "note.txt").exists() and (tmp_path / "out" / "_SUCCESS").exists()


@register
class DropQuietly(MapStage):
    """A broken stage: loses every tenth row without a reason."""

    name = "test_drop_quietly"

    def process(self, part):
        return part.iloc[::10]


class CountCallsOptions(StageOptions):
    folder: str


@register
class CountCalls(MapStage):
    """Leaves a file per non-empty partition it processes, to count how often it runs."""

    name = "test_count_calls"
    Options = CountCallsOptions

    def process(self, part):
        if len(part):
            Path(self.options.folder, uuid.uuid4().hex).write_text(str(len(part)))
        return part


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_ledger_catches_a_stage_that_loses_rows(client, tmp_path):
    job = digits_job(tmp_path)
    job["stages"].append({"test_drop_quietly": {}})
    with pytest.raises(LedgerError, match=r"stage test_drop_quietly: 1440 rows in, but \d+ kept \+ 0 rejected"):
        dsbuild.run(job, client=client)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_each_stage_runs_once_per_partition(client, tmp_path):
    """A map stage's output feeds its account (rejects, counts) and the next stage; fusing
    either chain on its own would run the stage again for the other."""
    first, last = tmp_path / "first", tmp_path / "last"
    first.mkdir(), last.mkdir()
    job = digits_job(tmp_path)
    job["stages"] = [{"test_count_calls": {"folder": str(first)}}, *job["stages"], {"test_count_calls": {"folder": str(last)}}]
    manifest = dsbuild.run(job, client=client)
    assert len(list(first.iterdir())) == 4
    assert sum(int(f.read_text()) for f in first.iterdir()) == manifest["totals"]["in"]
    assert len(list(last.iterdir())) == 4


def count_contingency_calls(folder: str) -> None:
    """On a worker: leave a file per non-empty partition the fairness counting kernel counts."""
    from dsbuild.kernels.fairness import contingency
    from dsbuild.stages.fairness import base as fairness  # where FairnessStage.table counts

    def counted(part, *args, **kwargs):
        if len(part):
            Path(folder, uuid.uuid4().hex).write_text(str(len(part)))
        return contingency(part, *args, **kwargs)

    fairness.contingency = counted


def restore_contingency() -> None:
    from dsbuild.kernels.fairness import contingency
    from dsbuild.stages.fairness import base as fairness  # where FairnessStage.table counts

    fairness.contingency = contingency


def test_audit_and_reweigh_count_the_rows_once(client, tmp_path):
    """The audit passes its rows through, so the reweigh after it needs no checkpoint and
    reads the table the audit counted: one counting pass over the rows for both. With a
    stage between them that may change the rows (a select, here keeping every row), each
    counts, and both report the same."""
    from dsbuild.io.sources import bundled_path

    (tmp_path / "adult").mkdir()
    adult = pd.read_csv(bundled_path("adult"))
    for i, rows in enumerate(np.array_split(np.arange(len(adult)), 4)):
        adult.iloc[rows].to_parquet(tmp_path / "adult" / f"part-{i}.parquet")

    def job(folder, stages):
        return {
            "name": "fair", "seed": 0,
            "source": {"format": "parquet", "path": str(tmp_path / "adult")},
            "columns": {"label": "income", "sensitive": ["sex", "race"]},
            "stages": stages, "sink": {"path": str(tmp_path / folder)},
        }

    audit, reweigh = {"fairness_audit": {"favorable": ">50K"}}, {"reweigh": {"favorable": ">50K"}}
    keep_all = {"select": {"where": [{"column": "age", "op": ">=", "value": 0}]}}
    runs = {}
    try:
        for name, stages in {"paired": [audit, reweigh], "apart": [audit, keep_all, reweigh]}.items():
            calls = tmp_path / f"calls-{name}"
            calls.mkdir()
            client.run(count_contingency_calls, str(calls))
            runs[name] = dsbuild.run(job(name, stages), client=client), [int(f.read_text()) for f in calls.iterdir()]
    finally:
        client.run(restore_contingency)
    (paired, calls), (apart, calls_apart) = runs["paired"], runs["apart"]
    rows = paired["totals"]["in"]
    assert rows == len(adult) and len(calls) == 4 and sum(calls) == rows
    assert len(calls_apart) == 8 and sum(calls_apart) == 2 * rows
    assert paired["ledger"]["balanced"] and [s["name"] for s in paired["stages"]] == ["source", "fairness_audit", "reweigh"]
    by_name = {name: {s["name"]: s for s in m["stages"]} for name, m in (("paired", paired), ("apart", apart))}
    for stage in ("fairness_audit", "reweigh"):
        assert by_name["paired"][stage]["summary"] == by_name["apart"][stage]["summary"]
        assert by_name["paired"][stage]["out"] == rows
    pd.testing.assert_frame_equal(read_output(tmp_path / "paired")[0], read_output(tmp_path / "apart")[0])


def test_dictionary_columns_keep_their_values(client, tmp_path):
    """Parquet dictionary columns (pandas categoricals), each file with its own categories,
    through a shuffle, a checkpoint and fairness stages: the same rows and values as the
    same data with plain string columns. The checkpoint once cast them to the frame's
    unknown (empty) categories, and every value came out missing."""
    from dsbuild.io.sources import bundled_path

    adult = pd.read_csv(bundled_path("adult"))
    text = ["workclass", "sex", "race", "income"]
    for kind in ("plain", "dictionary"):
        (tmp_path / kind).mkdir()
        for i, rows in enumerate(np.array_split(np.arange(len(adult)), 3)):
            part = adult.iloc[rows]
            part = part.astype(dict.fromkeys(text, "category")) if kind == "dictionary" else part
            part.to_parquet(tmp_path / kind / f"part-{i}.parquet")
    stages = [
        {"exact_dedup": {}},
        {"impute": {"columns": {"workclass": "mode"}, "by": ["sex"]}},
        {"fairness_audit": {"favorable": ">50K"}},
        {"reweigh": {"favorable": ">50K"}},
    ]
    out = {}
    for kind in ("plain", "dictionary"):
        manifest = dsbuild.run({
            "name": kind, "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / kind)},
            "columns": {"label": "income", "sensitive": ["sex", "race"]},
            "stages": stages, "sink": {"path": str(tmp_path / f"out-{kind}")},
        }, client=client)
        kept = read_output(tmp_path / f"out-{kind}")[0]
        kept["id"] = kept["id"].str.replace(kind, "")  # ids name the source's files
        out[kind] = manifest, kept.astype(dict.fromkeys(text, "string"))
    (plain, kept_plain), (dictionary, kept_dictionary) = out["plain"], out["dictionary"]
    assert isinstance(pd.read_parquet(tmp_path / "out-dictionary" / "data")["sex"].dtype, pd.CategoricalDtype)
    assert kept_dictionary[text].notna().all().all() and kept_dictionary["weight"].nunique() > 1
    pd.testing.assert_frame_equal(kept_plain, kept_dictionary, check_dtype=False)
    summaries = [[s.get("summary") for s in m["stages"]] for m in (plain, dictionary)]
    assert summaries[0] == summaries[1]


def every_arrow_type(n: int):
    """A table of the column types real Parquet files have, some values missing."""
    import datetime
    import decimal

    import pyarrow as pa

    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    return pa.table({
        "x": pa.array([None if k % 9 == 0 else float(k) for k in range(n)]),
        "s": pa.array([None if k % 6 == 0 else f"s{k % 50}" for k in range(n)], pa.string()),
        "sv": pa.array([None if k % 8 == 0 else f"v{k % 30}" for k in range(n)], pa.string_view()),  # Polars' text
        "i": pa.array([None if k % 7 == 0 else k for k in range(n)], pa.int32()),
        "b": pa.array([None if k % 5 == 0 else bool(k % 2) for k in range(n)]),
        "cat": pa.array([f"c{k % 4}" for k in range(n)]).dictionary_encode(),
        "ts": pa.array([start + datetime.timedelta(hours=k) for k in range(n)], pa.timestamp("us", tz="UTC")),
        "day": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=k % 400) for k in range(n)]),
        "dec": pa.array([decimal.Decimal(k) / 100 for k in range(n)], pa.decimal128(10, 2)),
        "emb": pa.array([[k / 2, 1.0] if k % 3 else [] for k in range(n)], pa.list_(pa.float64())),
        "box": pa.array([{"x": k, "tag": str(k % 5)} for k in range(n)]),
        "raw": pa.array([bytes([k % 256]) * 3 for k in range(n)], pa.binary()),
        "tags": pa.array([[("k", k), ("j", -k)] if k % 4 else [] for k in range(n)], pa.map_(pa.string(), pa.int64())),
    })


def test_arrow_types_keep_their_values(client, tmp_path):
    """Nullable integers and booleans, timestamps with a zone, dates, decimals, lists,
    structs, maps and bytes through a checkpoint (impute) and a shuffle (exact_dedup, which
    hashes every column: lists and structs reach it as arrays and dicts): the same values,
    in the same types (a decimal's precision was once cut to the widest value)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 900
    table = every_arrow_type(n)
    (tmp_path / "in").mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * 300, 300), tmp_path / "in" / f"p{i}.parquet")
    dsbuild.run({
        "name": "types", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in")},
        "stages": [{"impute": {"columns": {"x": "median"}}}, {"exact_dedup": {}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    out = pq.read_table(tmp_path / "out" / "data")
    types = out.schema
    out = out.cast(pa.schema([pa.field(f.name, pa.string()) if f.type == pa.string_view() else f for f in types]))  # no take
    number = [int(f[1]) * 300 + int(row) for f, row in (i.split(":") for i in out.column("id").to_pylist())]
    out = out.take(np.argsort(number))
    assert out.num_rows == n
    for name in table.column_names[1:]:
        want, got = table.column(name), out.column(name)
        if pa.types.is_dictionary(got.type):
            got = got.cast(got.type.value_type)
        else:
            assert types.field(name).type == want.type, name
        assert got.to_pylist() == want.cast(got.type).to_pylist(), name


def test_decimals_are_numbers_to_the_stages_and_decimals_in_the_output(client, tmp_path):
    """Parquet decimals (a price, Spark's decimal(10,0) count) reached the stages as Python
    objects, which ranges, impute, outliers, oversample and fairness bins refused as not
    numeric. They are numbers now: a kept value is written back as the decimal it was, a
    computed one (a median) rounded to the column's scale, rejects too; a column a cast
    makes float stays float; pandas reads the output back."""
    import decimal

    import pyarrow as pa

    D = decimal.Decimal
    price = [None if k % 10 == 0 else D(1000 + 37 * k) / 100 for k in range(200)]
    table = pa.table({"price": pa.array(price, pa.decimal128(9, 2)),
                      "age": pa.array([D(18 + k % 60) for k in range(200)], pa.decimal128(5, 0)),
                      "y": [k % 2 for k in range(200)], "sex": ["F", "M"] * 100})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=50)

    def run(stages, out):
        dsbuild.run({"name": "decimals", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in.parquet")},
                     "columns": {"label": "y", "sensitive": ["sex", "age"], "bins": {"age": [40]}},
                     "stages": stages, "sink": {"path": str(tmp_path / out)}}, client=client)
        return pq.read_table(tmp_path / out / "data"), pq.read_table(tmp_path / out / "rejects")

    kept, rejected = run([{"ranges": {"columns": {"price": {"min": 12, "max": 70}}}},
                          {"impute": {"columns": {"price": "median"}}}, {"reweigh": {}}], "out")
    for t in (kept, rejected):
        assert t.schema.field("price").type == pa.decimal128(9, 2) and t.schema.field("age").type == pa.decimal128(5, 0)
    given = dict(zip((f"in.parquet:{k}" for k in range(200)), price))
    values = dict(zip(kept.column("id").to_pylist(), kept.column("price").to_pylist()))
    assert all(values[i] == given[i] for i in values if given[i] is not None)
    median = {values[i] for i in values if given[i] is None}
    assert len(median) == 1 and median.pop().as_tuple().exponent == -2
    assert sorted(r.as_tuple().exponent for r in rejected.column("price").to_pylist()) == [-2] * rejected.num_rows
    assert pd.read_parquet(tmp_path / "out" / "data")["age"].iloc[0] == kept.column("age")[0].as_py()
    kept, _ = run([{"cast": {"schema": {"price": "float"}}}], "out-float")
    assert kept.schema.field("price").type == pa.float64()


def test_a_frame_of_decimal_objects_is_read_as_a_parquet_source_reads_decimals(client, tmp_path):
    """A pandas frame with ``decimal.Decimal`` values (a price from a database driver) held
    them as objects: ranges and impute refused the column as "string". It is numbers to the
    stages now, whole decimals integers, and decimals in the output in a type that holds
    every value (not only the first rows': 12345.5 is wider than 1.25)."""
    import decimal

    import pyarrow as pa

    D = decimal.Decimal
    price = [None if k % 10 == 0 else D(1000 + 37 * k) / 100 for k in range(200)] + [D("12345.5")]
    frame = pd.DataFrame({"price": price, "count": [D(k) for k in range(201)], "y": [k % 2 for k in range(201)]})
    source = read_source({"format": "frame", "frame": frame, "rows_per_partition": 50})
    read = source.frame.compute()
    assert read["price"].dtype == np.float64 and str(read["count"].dtype) == "Int64"
    assert source.schema.field("price").type == pa.decimal128(7, 2) and source.schema.field("count").type == pa.decimal128(3, 0)
    dsbuild.run({"name": "frame-decimals", "seed": 0, "source": {"format": "frame", "frame": frame, "rows_per_partition": 50},
                 "stages": [{"ranges": {"columns": {"price": {"min": 12, "max": 70}}}}, {"impute": {"columns": {"price": "median"}}}],
                 "sink": {"path": str(tmp_path / "out")}}, client=client)
    kept, rejected = pq.read_table(tmp_path / "out" / "data"), pq.read_table(tmp_path / "out" / "rejects")
    for t in (kept, rejected):
        assert t.schema.field("price").type == pa.decimal128(7, 2) and t.schema.field("count").type == pa.decimal128(3, 0)
    given = dict(zip((f"frame:{k}" for k in range(201)), price))
    values = dict(zip(kept.column("id").to_pylist(), kept.column("price").to_pylist()))
    assert all(values[i] == given[i] for i in values if given[i] is not None)
    assert D("12345.50") in rejected.column("price").to_pylist()


def test_a_decimal_wider_than_float64_holds_is_warned_about(client, tmp_path):
    """Decimals are read as float64, exact to 15 significant digits: Spark's decimal(38,18)
    (a division's) may hold more, which the output rounds; the run says so, not for
    decimal(15,2) nor for whole decimals of up to 18 digits (read as integers)."""
    import decimal

    import pyarrow as pa

    third = decimal.Decimal("0.333333333333333333")
    pq.write_table(pa.table({"share": pa.array([third], pa.decimal128(38, 18)), "price": pa.array([decimal.Decimal("0.33")], pa.decimal128(15, 2)),
                             "count": pa.array([decimal.Decimal(10**17)], pa.decimal128(18, 0))}), tmp_path / "in.parquet")
    with pytest.warns(dsbuild.pipeline.DsbuildWarning, match="'share' is decimal128") as said:
        manifest = dsbuild.run({"name": "wide", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in.parquet")},
                                "stages": [], "sink": {"path": str(tmp_path / "out")}}, client=client)
    assert len(said) == 1
    assert [w for w in manifest["warnings"] if "'share' is decimal128(38, 18), read as float64" in w] == manifest["warnings"]
    out = pq.read_table(tmp_path / "out" / "data")
    assert out.column("share")[0].as_py() == decimal.Decimal("0.333333333333333300")
    assert out.column("count")[0].as_py() == 10**17


def test_a_run_left_with_no_rows_keeps_the_source_types(client, tmp_path):
    """Every row rejected: the zero-row data shard and the rejects still have the
    source's types. The empty shard's schema came from pandas' placeholder frame, where
    dictionaries and dates, decimals, lists and structs (objects there) became null or text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def values(t):  # a dictionary's index width is pandas' choice
        return t.value_type if pa.types.is_dictionary(t) else t

    table = every_arrow_type(60)
    pq.write_table(table, tmp_path / "in.parquet")
    manifest = dsbuild.run({
        "name": "none-left", "seed": 0, "source": {"format": "parquet", "path": str(tmp_path / "in.parquet")},
        "stages": [{"select": {"where": [{"column": "x", "op": ">", "value": 1e9}]}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    assert manifest["totals"]["kept"] == 0 and manifest["totals"]["rejected"] == 60
    for kind in ("data", "rejects"):
        schema = pq.read_schema(next((tmp_path / "out" / kind).glob("*.parquet")))
        for f in table.schema:
            assert values(schema.field(f.name).type) == values(f.type), (kind, f.name)


def test_a_run_with_no_rows_left_before_a_multi_pass_stage(client, tmp_path):
    """The checkpoint before exact_dedup holds no rows, so no file made its folder: writing
    its state there failed with 'No such file or directory'."""
    manifest = dsbuild.run({
        "name": "none-left-early", "seed": 0, "source": {"format": "sample", "name": "german_credit"},
        "stages": [{"select": {"where": [{"column": "age", "op": ">", "value": 500}]}},
                   {"exact_dedup": {}}, {"split": {"stratify": True}}],
        "columns": {"label": "credit"},
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    assert manifest["totals"]["kept"] == 0 and manifest["totals"]["rejected"] == 1000
    assert [s["in"] for s in manifest["stages"][2:]] == [0, 0]


def test_pandas_reads_the_same_dtypes_whatever_the_partitioning(client, tmp_path):
    """Shards merged from small files had no pandas metadata and renamed ones their own, so
    a nullable integer read back as Int64 or float64 depending on the partitioning."""
    df = pd.DataFrame({"n": pd.array([1, None, 3] * 400, dtype="Int64"), "ok": pd.array([True, None, False] * 400, dtype="boolean"),
                       "s": ["a", None, "c"] * 400})
    dtypes = []
    for rows, shard in ((1200, 100_000), (50, 100_000), (50, 100)):
        dsbuild.run({"name": "dtypes", "seed": 0, "source": {"format": "frame", "frame": df, "rows_per_partition": rows},
                     "stages": [], "sink": {"path": str(tmp_path / f"out{rows}-{shard}"), "shard_rows": shard}}, client=client)
        back = pd.read_parquet(tmp_path / f"out{rows}-{shard}" / "data")
        dtypes.append(back.dtypes.astype(str).to_dict())
        assert back["n"].isna().sum() == 400
    assert dtypes[0] == dtypes[1] == dtypes[2] and dtypes[0]["n"] == "Int64" and dtypes[0]["ok"] == "boolean"


def test_a_row_without_an_id_is_rejected_not_a_crash(client, tmp_path):
    """An id column with a missing value: exact_dedup failed choosing a keeper
    (IndexError in segment_argmin), and nothing could name the row in the output."""
    (tmp_path / "in.csv").write_text("key,x\na,1\n,1\nb,2\nc,2\nd,2,extra\n")
    manifest = dsbuild.run({
        "name": "ids", "seed": 0, "source": {"format": "csv", "path": str(tmp_path / "in.csv")},
        "columns": {"id": "key"}, "stages": [{"exact_dedup": {"columns": ["x"]}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    rejects = pd.read_parquet(tmp_path / "out" / "rejects").set_index("reason")
    assert sorted(rejects.index) == ["csv:fields=expected 2, got 3", "duplicate-of=b", "id:missing"] and manifest["ledger"]["balanced"]
    assert pd.read_parquet(tmp_path / "out" / "data")["id"].tolist() == ["a", "b"]
    # rows with no id of their own (none given, or the reader could not read it) are named by file:row
    assert rejects.loc["id:missing", "id"] == "in.csv:1" and rejects.loc["csv:fields=expected 2, got 3", "id"] == "in.csv:4"


def test_the_id_check_of_a_dask_frame_reads_its_id_column_alone(tmp_path):
    """A Dask frame's graph was computed whole once more for the id check; Dask pushes the
    id column down to the frame's own read."""
    import dask.dataframe as dd

    from dsbuild.io.sources import read_source
    from dsbuild.job import load_job
    from dsbuild.pipeline import _ids_alone

    pd.DataFrame({"uid": ["a", "b"], "blob": [b"x" * 100] * 2, "v": [1, 2]}).to_parquet(tmp_path / "in.parquet")
    job = load_job({"name": "f", "source": {"format": "frame", "frame": dd.read_parquet(tmp_path / "in.parquet")},
                    "columns": {"id": "uid"}, "sink": {"path": str(tmp_path / "out")}})
    ids = _ids_alone(read_source(job.source), "uid")
    reads = [list(e.columns) for e in ids.optimize(fuse=False).expr.walk() if "Parquet" in type(e).__name__ or "IO" in type(e).__name__]
    assert reads == [["uid"]]
    assert ids.compute()["id"].tolist() == ["a", "b"]


def test_a_blank_id_is_missing_in_every_format(client, tmp_path):
    """JSON lines and Parquet took "" as an id, which a CSV reader makes missing."""
    (tmp_path / "in.jsonl").write_text('{"id": "a", "x": 1}\n{"id": "", "x": 2}\n{"id": "  ", "x": 3}\n{"id": "b", "x": 4}\n')
    pd.DataFrame({"key": ["a", "", "  ", "b"], "x": [1, 2, 3, 4]}).to_parquet(tmp_path / "in.parquet")
    for source, columns in (({"format": "jsonl", "path": str(tmp_path / "in.jsonl")}, {}),
                            ({"format": "parquet", "path": str(tmp_path / "in.parquet")}, {"id": "key"})):
        out = tmp_path / f"out-{source['format']}"
        manifest = dsbuild.run({"name": "blank", "source": source, "columns": columns, "sink": {"path": str(out)}}, client=client)
        assert manifest["stages"][0]["rejected_by_reason"] == {"id:missing": 2}
        assert pd.read_parquet(out / "data")["x"].tolist() == [1, 4]


@pytest.mark.parametrize("column", ["reason", "stage", "raw", "id"])
def test_a_source_column_named_as_the_outputs_own_is_refused_before_the_run(tmp_path, column):
    """A column named ``reason`` crashed the write of the rejects (duplicate columns), one
    named ``stage`` was overwritten in them, and a column ``id`` beside columns.id lost its
    values to the ids."""
    from dsbuild.job import load_job
    from dsbuild.pipeline import validate_against_source

    (tmp_path / "in.csv").write_text(f"key,{column},x\na,1,1\n")
    job = {"name": "own", "source": {"format": "csv", "path": str(tmp_path / "in.csv")}, "columns": {"id": "key"},
           "stages": [], "sink": {"path": str(tmp_path / "out")}}
    with pytest.raises(StageError, match=f"the source has a column '{column}'"):
        validate_against_source(load_job(job))


def test_validate_sees_the_columns_a_run_sees(tmp_path):
    """dsbuild validate, and the check that dsbuild run makes before starting a cluster,
    read the source with Dask's text conversion on, which a run turns off: a Parquet date
    column was text to them, and ranges' date bounds on it were refused before every run."""
    import datetime

    import pyarrow as pa

    from dsbuild.job import load_job
    from dsbuild.pipeline import validate_against_source

    days = [datetime.date(2020, 1, 1) + datetime.timedelta(days=k) for k in range(20)]
    pq.write_table(pa.table({"day": days}), tmp_path / "in.parquet")
    job = {"name": "dates", "source": {"format": "parquet", "path": str(tmp_path / "in.parquet")},
           "stages": [{"ranges": {"columns": {"day": {"min": "2020-01-05"}}}}], "sink": {"path": str(tmp_path / "out")}}
    assert validate_against_source(load_job(job)) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_ids_from_a_text_source_are_read_as_written(client, tmp_path, fmt):
    """A CSV or JSON lines id column was typed by its values: 007 became the id 7, one
    1e3 among them made every id a float (7.0), and 007 and 7 were one id, the second
    rejected as id:repeated. The data's id column and the job's columns.id are text."""
    keys = ["007", "7", "1e3"]
    if fmt == "csv":
        (tmp_path / "in.csv").write_text("key,x\n" + "".join(f"{k},{i}\n" for i, k in enumerate(keys)))
    else:
        (tmp_path / "in.jsonl").write_text("".join(json.dumps({"key": int(k) if k == "7" else k, "x": i}) + "\n"
                                                   for i, k in enumerate(keys)))
    for id_column in ("key", "id"):
        if id_column == "id":
            path = tmp_path / f"in.{fmt}"
            path.write_text(path.read_text().replace("key", "id"))
        manifest = dsbuild.run({"name": "ids", "seed": 0, "source": {"format": fmt, "path": str(tmp_path / f"in.{fmt}")},
                                "columns": {"id": id_column}, "stages": [], "sink": {"path": str(tmp_path / "out")}},
                               client=client, overwrite=True)
        assert manifest["totals"]["rejected"] == 0
        assert sorted(pd.read_parquet(tmp_path / "out" / "data")["id"]) == sorted(keys)


def test_a_run_computes_on_the_client_it_is_given(client, tmp_path):
    """Every compute of ``dsbuild.run(client=...)`` goes to that client, also when the
    process made another client after it (the default one for ``dask.compute``)."""
    from distributed import Client, LocalCluster, get_task_stream

    job = {
        "name": "fit", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 2},
        "columns": {"label": "income", "sensitive": ["sex"]},
        "stages": [{"impute": {"columns": {"age": "median"}}}, {"reweigh": {"favorable": ">50K"}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as other, Client(other) as latest:
        with get_task_stream(latest) as elsewhere:
            dsbuild.run(job, client=client)
    assert elsewhere.data == []


def test_a_stage_and_its_accounting_run_as_one_task_per_partition(client, tmp_path):
    """The pending stages' results are computed together; Dask fuses none of a list of
    collections, so every stage's map, its kept rows and its accounting were tasks of
    their own per partition. Fused, a map stage's timing still reaches the manifest."""
    from distributed import get_task_stream
    from distributed.utils import key_split

    job = {
        "name": "fused", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 4},
        "columns": {"label": "income"},
        "stages": [{"ranges": {"columns": {"age": {"min": 18, "max": 80}}}}, {"cast": {"schema": {"age": "float"}}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    with get_task_stream(client) as stream:
        manifest = dsbuild.run(job, client=client)
    prefixes = {key_split(t["key"]) for t in stream.data}
    assert not [p for p in prefixes if p.endswith(("-kept", "-kept-rows", "-map"))], prefixes
    seconds = {s["name"]: s["seconds"]["tasks"] for s in manifest["stages"]}
    assert seconds["ranges"] > 0 and seconds["cast"] > 0, seconds


def test_many_pending_stages_are_fused_too(client, tmp_path):
    """Dask's fusion of a list of collections took twice as long with every pending stage
    (8 collections 22.8 s), so more than three were computed unfused: a job of seven map
    stages ran each stage's map and accounting as tasks of their own per partition."""
    from dask.utils import key_split
    from distributed import get_task_stream

    job = {
        "name": "seven", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 2},
        "columns": {"label": "income"},
        "stages": [{"ranges": {"columns": {"age": {"min": 10 + i}}}} for i in range(7)],
        "sink": {"path": str(tmp_path / "out")},
    }
    with get_task_stream(client) as stream:
        manifest = dsbuild.run(job, client=client)
    prefixes = {key_split(t["key"]) for t in stream.data}
    assert not [p for p in prefixes if p.endswith(("-map", "-kept-rows"))], prefixes
    assert manifest["ledger"]["balanced"] and manifest["stages"][-1]["in"] == manifest["stages"][1]["in"] - sum(
        s["rejected"] for s in manifest["stages"][1:-1])


def test_every_task_of_a_run_counts_for_a_stage(client, tmp_path):
    """A fit pass's tasks (the checkpoint's read fused with the partial statistics, the
    combines) and the source's reads named no stage, so the stage table left them out: a
    stage whose fit was slow looked fast. Every task's seconds now count for a stage."""
    from dask.utils import key_split
    from distributed import get_task_stream

    job = {
        "name": "counted", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 4},
        "columns": {"label": "income"},
        "stages": [{"ranges": {"columns": {"age": {"min": 18, "max": 80}}}},
                   {"impute": {"columns": {"age": "median", "workclass": "mode"}}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    with get_task_stream(client) as stream:
        manifest = dsbuild.run(job, client=client)
    stages = [t for t in stream.data if key_split(t["key"]) != "write_shards"]  # the sink's finish, in timings.finish
    computed = sum(s["stop"] - s["start"] for t in stages for s in t["startstops"] if s["action"] == "compute")
    seconds = {s["name"]: s["seconds"] for s in manifest["stages"]}
    shared = manifest["timings"]["tasks_shared"]
    assert sum(s["tasks"] for s in seconds.values()) + shared == pytest.approx(computed, abs=0.01), (seconds, shared)
    assert seconds["source"]["tasks"] > 0 and seconds["impute"]["tasks"] > 0, seconds


def test_a_fit_reads_its_checkpoint_once(client, tmp_path):
    """A fit → apply stage read its checkpoint twice: once for its partial statistics, once
    to apply them (a fifth of the task seconds at 80 partitions). The partials are taken in
    the tasks that write the checkpoint; the statistics, the output and the manifest are
    those of a fit that reads the rows again (``checkpoints: memory`` fits on the persisted
    rows), and the partials' seconds count for the fit's stage."""
    from dask.utils import key_split
    from distributed import get_task_stream

    job = {
        "name": "once", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 4},
        "columns": {"label": "income", "sensitive": ["sex"]},
        "stages": [{"ranges": {"columns": {"age": {"min": 18, "max": 80}}}},
                   {"impute": {"columns": {"age": "median", "workclass": "mode"}, "by": ["relationship"]}},
                   {"reweigh": {"favorable": ">50K"}}],
    }
    manifests = {}
    for mode in ("disk", "memory"):
        with get_task_stream(client) as stream:
            manifests[mode] = dsbuild.run({**job, "sink": {"path": str(tmp_path / mode), "checkpoints": mode}}, client=client)
        if mode == "disk":
            folds = [t for t in stream.data if key_split(t["key"]) == "fold"]
            assert folds == [], "a fit read its checkpoint again"
    for a, b in zip(read_output(tmp_path / "disk"), read_output(tmp_path / "memory")):
        pd.testing.assert_frame_equal(a, b)
    for a, b in zip(manifests["disk"]["stages"], manifests["memory"]["stages"]):
        assert (a.get("summary"), a["rejected_by_reason"], a["out"]) == (b.get("summary"), b["rejected_by_reason"], b["out"])
    seconds = {s["name"]: s["seconds"]["tasks"] for s in manifests["disk"]["stages"]}
    assert seconds["impute"] > 0 and seconds["reweigh"] > 0, seconds


def test_a_fit_whose_first_partials_are_large_reads_its_checkpoint_again(client, tmp_path, monkeypatch):
    """The first partials come to the driver, which folds them; label_issues' are a sample of
    each partition's rows, together up to the whole data set's features. Over the budget,
    the fit reads the checkpoint again and combines on the workers, to the same output."""
    from dask.utils import key_split
    from distributed import get_task_stream

    from dsbuild.pipeline import execution

    job = {"name": "large", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 4},
           "stages": [{"ranges": {"columns": {"age": {"min": 18, "max": 80}}}},
                      {"impute": {"columns": {"age": "median", "workclass": "mode"}, "by": ["relationship"]}}]}
    out = {}
    for budget in (execution._GIVEN_BYTES, 0):
        monkeypatch.setattr(execution, "_GIVEN_BYTES", budget)
        with get_task_stream(client) as stream:
            dsbuild.run({**job, "sink": {"path": str(tmp_path / str(budget))}}, client=client)
        out[budget] = read_output(tmp_path / str(budget))
        folds = [t for t in stream.data if key_split(t["key"]) == "fold"]
        assert bool(folds) == (budget == 0), budget
    for a, b in zip(*out.values()):
        pd.testing.assert_frame_equal(a, b)


def test_label_counts_name_labels_as_text():
    """Counted on the column as it is, named as the column's values become text: unused
    categories are left out, missing values are one "<missing>" label."""
    from dsbuild.pipeline import _label_counts

    columns = [
        pd.Series(pd.Categorical(["a", "b", None, "a"], categories=["a", "b", "unused"])),
        pd.Series(["a", None, "b", "a", np.nan], dtype=object),
        pd.Series([1.0, np.nan, 2.5, 1.0]),
        pd.Series([1, None, 2, 1], dtype="Int64"),
        pd.Series([True, None, True], dtype="boolean"),
        pd.Series(pd.to_datetime(["2020-01-01", None, "2020-01-01"])),
        pd.Series([1, "1", 2], dtype=object),  # two values, one text
        pd.Series(["a", None, "b", "a"], dtype="string"),  # counted by Arrow
        pd.Series(["a", None, "b", "a"], dtype=pd.StringDtype("python")),
    ]
    for column in columns:
        as_text = column.astype("string").fillna("<missing>").value_counts()
        assert _label_counts(column) == {str(k): int(v) for k, v in as_text.items()}
    assert _label_counts(columns[0]) == {"a": 2, "b": 1, "<missing>": 1}


def kill_once_written(proc: subprocess.Popen, folder: Path, pattern: str, seconds: float) -> None:
    """SIGKILL ``proc`` and its children as soon as a path matching ``pattern`` appears."""
    deadline = time.time() + seconds
    while time.time() < deadline and not list(folder.glob(pattern)):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_run_killed_half_way_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL the whole `dsbuild run` while it writes: the output path must not exist."""
    job = digits_job(tmp_path)
    job["source"] = {"format": "sample", "name": "adult", "partitions": 4}
    job["columns"] = {"label": "income"}
    job["stages"] = [{"cast": {"schema": {"age": "float"}}}] * 40
    job["sink"]["shard_rows"] = 50
    path = tmp_path / "job.yaml"
    import yaml

    path.write_text(yaml.safe_dump(job))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsbuild.cli", "run", str(path), "--workers", "1", "--quiet"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    kill_once_written(proc, tmp_path, "out.tmp-*/_staging", seconds=120)
    assert list(tmp_path.glob("out.tmp-*")), "the run was killed before it began writing"
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()


def test_resume_after_the_driver_is_killed(client, tmp_path):
    """Kill `dsbuild run` after its first checkpoint; `--resume` finishes from there and
    the output equals an undisturbed run."""
    import yaml

    job = {
        "name": "resumable",
        "source": {"format": "sample", "name": "adult", "partitions": 4},
        "columns": {"label": "income", "sensitive": ["sex"]},
        "stages": [
            {"impute": {"columns": {"workclass": "mode"}}},  # a column of bools: resumed, it came back as 'boolean'
            {"select": {"where": [{"column": "age", "op": ">=", "value": 20}]}},
            {"reweigh": {}},
            *[{"cast": {"schema": {"hours-per-week": "float"}}}] * 30,
        ],
        "sink": {"path": str(tmp_path / "out"), "shard_rows": 5000},
    }
    dsbuild.run(job, output=str(tmp_path / "undisturbed"), client=client)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    command = [sys.executable, "-m", "dsbuild.cli", "run", str(path), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kill_once_written(proc, tmp_path, "out.tmp-*/_checkpoints/before-002.json", seconds=180)
    assert not (tmp_path / "out").exists()
    done = subprocess.run([*command, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["resumed_from_stage"] == 2
    assert manifest["ledger"]["balanced"] and manifest["stages"][3]["name"] == "reweigh"
    assert "resumed: from the checkpoint before 'reweigh'" in done.stdout
    kept, rejects = read_output(tmp_path / "out")
    kept_0, rejects_0 = read_output(tmp_path / "undisturbed")
    pd.testing.assert_frame_equal(kept, kept_0)
    pd.testing.assert_frame_equal(rejects, rejects_0)
    assert not list(tmp_path.glob("out.tmp-*"))


def test_a_source_that_rejects_every_row_is_warned_about(client, tmp_path):
    """A trailing separator on every line (or a wrong sep): each row a csv:fields reject, and
    the run succeeded with nothing kept and no word of why."""
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3,\n4,5,6,\n")
    job = {"name": "t", "source": {"format": "csv", "path": str(tmp_path / "t.csv")}, "stages": [],
           "sink": {"path": str(tmp_path / "out")}}
    manifest = dsbuild.run(job, client=client)
    assert [w for w in manifest["warnings"] if w.startswith("the source rejected every row (2), 2 as csv:fields")]
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n")
    assert not [w for w in dsbuild.run(job, client=client, overwrite=True)["warnings"] if "rejected every row" in w]


def test_a_column_typed_from_the_first_bytes_can_be_given_its_type(client, tmp_path):
    """Whole numbers in a CSV's first infer_bytes, 2.5 later: the rows were rejected as
    type:b, with no way to say the column holds floats and no word of how to keep them.
    The run says how (column_types), and column_types keeps them."""
    rows = "".join(f"{i},{i},x{i}\n" for i in range(2000))
    (tmp_path / "t.csv").write_text("a,b,c\n" + rows + "2000,2.5,y\n2001,abc,z\n")
    job = {"name": "t", "source": {"format": "csv", "path": str(tmp_path / "t.csv"), "infer_bytes": 1000, "blocksize": 8000},
           "stages": [], "sink": {"path": str(tmp_path / "out")}}
    manifest = dsbuild.run(job, client=client)
    assert manifest["stages"][0]["rejected_by_reason"] == {"type:b": 2}
    assert [w for w in manifest["warnings"] if "column 'b' is int64, typed from the first 1,000 bytes" in w
            and "(source.column_types: {b: float})" in w]
    job["source"]["column_types"] = {"b": "float"}
    manifest = dsbuild.run(job, client=client, overwrite=True)
    assert manifest["stages"][0]["rejected_by_reason"] == {"type:b": 1}  # abc
    assert 2.5 in pd.read_parquet(tmp_path / "out" / "data")["b"].tolist()
    assert not [w for w in manifest["warnings"] if "column_types" in w]


def test_json_records_with_a_field_past_the_type_sample_are_warned_about(client, tmp_path):
    """Fields come from the first infer_bytes of the first file: a record with another was
    rejected as json:unknown-field=<field>, with no word of where the fields came from."""
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"k": i, **({"new": i} if i > 200 else {})}) + "\n" for i in range(300)))
    job = {"name": "t", "source": {"format": "jsonl", "path": str(tmp_path / "t.jsonl"), "infer_bytes": 1000},
           "stages": [], "sink": {"path": str(tmp_path / "out")}}
    manifest = dsbuild.run(job, client=client)
    assert manifest["stages"][0]["rejected_by_reason"] == {"json:unknown-field": 99}
    assert [w for w in manifest["warnings"] if w.startswith("source: 99 record(s) rejected as json:unknown-field")
            and "first 1,000 bytes of the first file" in w and "raise source.infer_bytes" in w]
    job["source"]["infer_bytes"] = 100_000
    assert not dsbuild.run(job, client=client, overwrite=True)["warnings"]


def test_a_large_compressed_file_is_warned_about(client, tmp_path):
    """A gzip CSV is one partition whatever its size (a 2.5 M-row one killed a 1 GiB worker), without a word."""
    import shutil

    from dsbuild.io.sources import bundled_path

    shutil.copy(bundled_path("adult"), tmp_path / "adult.csv.gz")  # 0.4 MB of gzip
    job = {"name": "gz", "source": {"format": "csv", "path": str(tmp_path / "adult.csv.gz"), "blocksize": 200_000},
           "stages": [], "sink": {"path": str(tmp_path / "out")}}
    with pytest.warns(UserWarning, match="adult.csv.gz is compressed"):
        manifest = dsbuild.run(job, client=client)
    assert [w for w in manifest["warnings"] if "adult.csv.gz is compressed" in w and "one task reads it whole" in w]
    job["source"]["blocksize"] = 64 * 2**20
    assert not [w for w in dsbuild.run(job, client=client, overwrite=True)["warnings"] if "compressed" in w]


def test_a_refused_resume_keeps_the_checkpoints_and_one_run_holds_the_folder(client, tmp_path):
    """A resume refused because the input changed deleted the checkpoints it refused (and
    showed a traceback); two runs of one job at once deleted each other's files."""
    from dsbuild.io.sink import OutputExists, Sink
    from dsbuild.pipeline import INTERRUPTED, ResumeRefused, job_key

    (tmp_path / "in.csv").write_text("x,y\n" + "".join(f"{i % 50},{i}\n" for i in range(400)))
    job = {"name": "resume", "seed": 0, "source": {"format": "csv", "path": str(tmp_path / "in.csv")},
           "stages": [{"exact_dedup": {"columns": ["x"]}}], "sink": {"path": str(tmp_path / "out")}}
    INTERRUPTED.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            dsbuild.run(job, client=client)
    finally:
        INTERRUPTED.clear()
    (folder,) = tmp_path.glob("out.tmp-*")
    assert (folder / "_checkpoints").exists() and not (folder / "_owner.json").exists()
    with open(tmp_path / "in.csv", "a") as f:
        f.write("7,400\n")
    with pytest.raises(ResumeRefused, match="checkpoints are kept in"):
        dsbuild.run(job, client=client, resume=True)
    assert (folder / "_checkpoints").exists()
    sink = Sink(str(tmp_path / "out"), shard_rows=10, shard_bytes=10, compression="none", key=job_key(dsbuild.load_job(job)))
    (folder / "_owner.json").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}))
    with pytest.raises(OutputExists, match=f"another run of this job \\(pid {os.getppid()}"):
        sink.claim()
    (folder / "_owner.json").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "then"}))
    manifest = dsbuild.run(job, client=client)  # the owner is gone: the folder is ours
    assert manifest["totals"]["in"] == 401 and not list(tmp_path.glob("out.tmp-*"))
    assert not (tmp_path / "out" / "_owner.json").exists()


def test_a_resume_reads_a_touched_input_by_its_bytes(client, tmp_path):
    """The input's fingerprint is each file's size and modification time: a ``touch`` (a
    copy, a checkout) refused --resume on the same data. A file whose size is the same is
    now compared by its bytes' digest, taken with the first checkpoint; one byte changed
    is still refused, naming the file."""
    from dsbuild.pipeline import INTERRUPTED, ResumeRefused

    path = tmp_path / "in.csv"
    path.write_text("x,y\n" + "".join(f"{i % 50},{i}\n" for i in range(400)))
    job = {"name": "touched", "seed": 0, "source": {"format": "csv", "path": str(path)},
           "stages": [{"exact_dedup": {"columns": ["x"]}}], "sink": {"path": str(tmp_path / "out")}}

    def interrupted_run():
        INTERRUPTED.set()
        try:
            with pytest.raises(KeyboardInterrupt):
                dsbuild.run(job, client=client, overwrite=True)
        finally:
            INTERRUPTED.clear()

    interrupted_run()
    os.utime(path, (time.time() + 60, time.time() + 60))
    manifest = dsbuild.run(job, client=client, resume=True)
    assert manifest["resumed_from_stage"] == 0 and manifest["totals"]["kept"] == 50
    interrupted_run()
    path.write_text(path.read_text().replace("\n7,7\n", "\n8,7\n"))
    with pytest.raises(ResumeRefused, match=f"changed since the interrupted run: {path} was modified"):
        dsbuild.run(job, client=client, resume=True, overwrite=True)


@pytest.mark.parametrize("cut_after", ["data", "rejects"])
def test_resume_after_an_interrupt_in_the_finish(client, tmp_path, monkeypatch, cut_after):
    """Ctrl-C while the sink merged the shards kept the checkpoints, whose rejects the
    finish had already moved into shards: the resume failed on a missing staged file (and
    removed the checkpoints). After the data's finish it resumes; after the rejects' it
    starts over; either way the output equals an undisturbed run's."""
    from dsbuild.io.sink import Sink

    job = {
        "name": "finish", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 3},
        "columns": {"label": "income", "sensitive": ["sex"]},
        "stages": [{"select": {"where": [{"column": "age", "op": ">=", "value": 20}]}},
                   {"reweigh": {"favorable": ">50K"}}],
        "sink": {"path": str(tmp_path / "out"), "shard_rows": 5000},
    }
    dsbuild.run(job, output=str(tmp_path / "undisturbed"), client=client)
    finish = Sink.finish

    def interrupted(self, kind, *args, **kwargs):
        out = finish(self, kind, *args, **kwargs)
        if kind == cut_after:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(Sink, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dsbuild.run(job, client=client)
    monkeypatch.setattr(Sink, "finish", finish)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        manifest = dsbuild.run(job, client=client, resume=True)
    assert manifest["resumed_from_stage"] == (1 if cut_after == "data" else None)
    assert any("nothing to resume" in str(w.message) for w in said) == (cut_after == "rejects")
    kept, rejects = read_output(tmp_path / "out")
    kept_0, rejects_0 = read_output(tmp_path / "undisturbed")
    pd.testing.assert_frame_equal(kept, kept_0)
    pd.testing.assert_frame_equal(rejects, rejects_0)
    assert len(rejects) > 0 and manifest["ledger"]["balanced"]
    shards = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
    assert shards == [Path(s["file"]).name for s in manifest["outputs"]["data"]]


@register
class Sleep(MapStage):
    """Half a second per partition: a run long enough to lose its workers in."""

    name = "test_sleep"

    def process(self, part):
        time.sleep(0.5)
        return part


def test_every_task_of_a_stage_names_it_and_the_report_has_a_line(client, tmp_path):
    """A stage's accounting task was named ``dsbuild-account-2`` and the kept rows handed
    on ``dsbuild-split-kept``: their seconds counted for the first stage of the pass (the
    source), or for a stage called ``split``. The accounting now names its stage, the kept
    rows none, a task whose keys name several stages counts as ``timings.tasks_shared``,
    and the report's seconds have a line of their own."""
    from dask.utils import key_split
    from distributed import get_task_stream

    job = {
        "name": "named", "seed": 0, "source": {"format": "sample", "name": "adult", "partitions": 2},
        "columns": {"label": "income"},
        "stages": [{"ranges": {"columns": {"age": {"min": 18}}}}, {"cast": {"schema": {"age": "float"}}}, {"split": {}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    with get_task_stream(client) as stream:
        manifest = dsbuild.run(job, client=client)
    names = ("source", "ranges", "cast", "split")
    tasks = {}
    for t in stream.data:
        named = [n for n in names if f"dsbuild-{n}-" in key_split(t["key"])]
        tasks.setdefault(named[0] if len(named) == 1 else None, []).append(key_split(t["key"]))
    assert "dsbuild-cast-account" in tasks.get("cast", []), tasks
    assert not [p for ps in tasks.values() for p in ps if "split-kept" in p], tasks
    seconds = {s["name"]: s["seconds"]["tasks"] for s in manifest["stages"]}
    assert all(seconds[n] > 0 for n in names), seconds
    assert manifest["timings"]["tasks_shared"] == 0 and manifest["timings"]["report"] > 0


def test_a_run_whose_cluster_lost_every_worker_stops_instead_of_hanging(tmp_path, monkeypatch):
    """On a scheduler whose workers all died (killed, no nanny to restart them), Dask waits
    for new ones for ever: the run hung."""
    import threading

    from distributed import Client, LocalCluster

    from dsbuild.watch import WorkersLost

    monkeypatch.setenv("DSBUILD_NO_WORKERS_SECONDS", "1")
    frame = pd.DataFrame({"x": np.arange(400)})
    job = {"name": "lost", "source": {"format": "frame", "frame": frame, "rows_per_partition": 10},
           "stages": ["test_sleep"], "sink": {"path": str(tmp_path / "out")}}
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster, Client(cluster) as c:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--no-nanny",
                                   "--nthreads", "1", "--no-dashboard"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            c.wait_for_workers(1, timeout=60)
            threading.Timer(2.0, worker.kill).start()
            t = time.monotonic()
            with pytest.raises(WorkersLost, match="no worker"):  # for 1 s, or none left to send the frame to
                dsbuild.run(job, client=c)
            assert time.monotonic() - t < 60  # on a loaded machine the frame's scatter can be the one to wait (30 s)
        finally:
            worker.kill()
            worker.wait()
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_a_run_whose_workers_died_before_it_looked_stops_instead_of_waiting(tmp_path, monkeypatch):
    """Workers that died in a run's first second (a plugin or preload that exits, a memory
    limit the libraries exceed) were never seen by the watch, which took the cluster for one
    still starting: the run said it waited for workers, for ever. Stopped while it still
    built its graph, the run's later computes are stopped too (they waited for ever)."""
    import threading

    from distributed import Client, LocalCluster

    from dsbuild.watch import WorkersLost, workers_died

    monkeypatch.setenv("DSBUILD_NO_WORKERS_SECONDS", "1")
    from dsbuild.pipeline import execution

    def slow_read(*args, **kwargs):  # the stop comes while the run builds its graph, as on a loaded machine
        time.sleep(4)
        return read_source(*args, **kwargs)

    monkeypatch.setattr(execution, "read_source", slow_read)
    job = {"name": "died", "source": {"format": "sample", "name": "breast_cancer"}, "stages": [],
           "sink": {"path": str(tmp_path / "out")}}
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster, Client(cluster) as c:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--no-nanny",
                                   "--nthreads", "1", "--no-dashboard"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            c.wait_for_workers(1, timeout=60)
        finally:
            worker.kill()
            worker.wait()
        while c.nthreads():
            time.sleep(0.1)
        # a removal before the run's setup is no worker of the run dying (an adaptive cluster scaled to none)
        assert workers_died(c, since=time.time() - 60) and not workers_died(c, since=time.time() + 1)
        ended: list = []

        def run():
            try:
                dsbuild.run(job, client=c)
            except Exception as e:  # noqa: BLE001 - the test looks at it
                ended.append(e)

        runner = threading.Thread(target=run, daemon=True)
        with pytest.warns(UserWarning, match="workers died and none is left"):
            runner.start()
            runner.join(60)
        assert ended and isinstance(ended[0], WorkersLost), ended or "the run still waits"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_a_run_that_loses_every_worker_says_so_in_one_line(tmp_path, monkeypatch):
    """Before the WorkersLost error, distributed printed its own account of the loss on
    the terminal: workers removed, computed tasks and scattered data lost, keys it could
    not gather, rescheduled (a dozen lines of a run's output, a traceback for a scatter).
    The run's one line says it all; what distributed logs while workers remain is still said."""
    import logging
    import threading

    from distributed import Client, LocalCluster

    from dsbuild.watch import WorkersLost

    monkeypatch.setenv("DSBUILD_NO_WORKERS_SECONDS", "1")
    frame = pd.DataFrame({"x": np.arange(400)})
    job = {"name": "lost", "source": {"format": "frame", "frame": frame, "rows_per_partition": 10},
           "stages": ["test_sleep"], "sink": {"path": str(tmp_path / "out")}}
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster, Client(cluster) as c:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--no-nanny",
                                   "--nthreads", "1", "--no-dashboard"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def kill_once_a_partition_is_written():
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob("out.tmp-*/_staging/data/kept/*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            logging.getLogger("distributed.scheduler").warning("a line of distributed while the worker lives")
            time.sleep(1.5)  # a look of the watch, which finds the worker
            worker.kill()

        said = io.StringIO()
        terminal = logging.StreamHandler(said)  # as distributed's own handler on stderr, whose warnings reach a terminal
        terminal.setLevel(logging.WARNING)
        logging.getLogger("distributed").addHandler(terminal)
        try:
            c.wait_for_workers(1, timeout=60)
            killer = threading.Thread(target=kill_once_a_partition_is_written)
            killer.start()
            with pytest.raises(WorkersLost, match="no worker"):
                dsbuild.run(job, client=c)
            killer.join()
        finally:
            logging.getLogger("distributed").removeHandler(terminal)
            worker.kill()
            worker.wait()
        err = said.getvalue()
    assert "a line of distributed while the worker lives" in err
    assert err.splitlines() == ["a line of distributed while the worker lives"], err


def test_a_run_whose_every_worker_stays_paused_for_memory_stops_and_says_why(tmp_path, monkeypatch):
    """A memory_limit its libraries nearly fill (300 MiB) paused the one worker at its first
    task, and Dask never resumed it: the run hung without a word."""
    import dask
    from distributed import Client, LocalCluster

    from dsbuild.watch import WorkersLost

    monkeypatch.setenv("DSBUILD_NO_WORKERS_SECONDS", "3")
    monkeypatch.setattr("dsbuild.watch.WAITING_SAID", 1.0)
    job = {"name": "paused", "source": {"format": "sample", "name": "breast_cancer"}, "stages": [],
           "sink": {"path": str(tmp_path / "out")}}
    with dask.config.set({"distributed.worker.memory.pause": 0.01}), \
            LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        t = time.monotonic()
        with pytest.warns(UserWarning, match="every worker of the cluster is paused, its memory above Dask's pause threshold"), \
                pytest.raises(WorkersLost, match="every worker has been paused for 3 s.*give workers a larger memory_limit"):
            dsbuild.run(job, client=c)
        assert time.monotonic() - t < 60
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_a_run_on_a_cluster_without_workers_says_it_waits(tmp_path, monkeypatch):
    """On a scheduler with no worker the run sat silent at 0 of N."""
    import threading

    from distributed import Client, LocalCluster

    from dsbuild import pipeline, watch

    monkeypatch.setattr(watch, "WAITING_SAID", 1.0)
    job = {"name": "waits", "source": {"format": "frame", "frame": pd.DataFrame({"x": np.arange(10)})},
           "stages": [], "sink": {"path": str(tmp_path / "out")}}
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as cluster, Client(cluster) as c:
        worker = []
        start = threading.Timer(3.0, lambda: worker.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--nthreads", "1", "--no-dashboard"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        start.start()
        try:
            with pytest.warns(pipeline.DsbuildWarning, match="has no worker yet; waiting for one"):
                manifest = dsbuild.run(job, client=c)
            assert manifest["totals"]["kept"] == 10
        finally:
            start.join()
            for w in worker:
                w.terminate()
                w.wait()


def test_an_error_in_a_task_reaches_the_user_unchanged(client, tmp_path):
    from dsbuild.stages import StageError

    job = {
        "name": "bad-compare",
        "source": {"format": "sample", "name": "german_credit"},
        "stages": [{"select": {"where": [{"column": "age", "op": ">", "value": "old"}]}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    with pytest.raises(StageError, match="cannot compare column 'age'"):
        dsbuild.run(job, client=client)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_a_weight_column_the_job_did_not_name_is_said_and_text_refused(tmp_path):
    """A body weight named ``weight`` was read by reweigh as sample weights (its text values
    as missing ones) and overwritten, without a word."""
    from dsbuild.job import load_job
    from dsbuild.pipeline import validate_against_source

    job = {"name": "pets", "source": {"format": "csv", "path": str(tmp_path / "pets.csv")},
           "columns": {"id": "name", "label": "adopted", "sensitive": ["sex"]}, "stages": ["reweigh"],
           "sink": {"path": str(tmp_path / "out")}}
    (tmp_path / "pets.csv").write_text("name,weight,sex,adopted\nrex,30 kg,M,1\ntom,4.5,F,0\n")
    with pytest.raises(StageError, match="'reweigh' counts each row by its weight in the column 'weight', which holds str"):
        validate_against_source(load_job(job))
    (tmp_path / "pets.csv").write_text("name,weight,sex,adopted\nrex,30,M,1\ntom,4.5,F,0\n")
    (note,) = validate_against_source(load_job(job))
    assert "counts each row by the source's column 'weight' as its sample weight (and reweigh multiplies it)" in note
    assert validate_against_source(load_job({**job, "columns": {**job["columns"], "weight": "w"}})) == []
    assert validate_against_source(load_job({**job, "columns": {**job["columns"], "weight": "weight"}})) == []


def test_label_issues_weighing_its_last_round_says_whose_weight_column_it_multiplies(tmp_path):
    """The default label_issues multiplies the weight of the rows its last round flags: a
    body weight named ``weight`` would have been multiplied without a word, text made NaN."""
    from dsbuild.job import load_job
    from dsbuild.pipeline import validate_against_source

    job = {"name": "pets", "source": {"format": "csv", "path": str(tmp_path / "pets.csv")},
           "columns": {"id": "name", "label": "adopted"}, "stages": ["label_issues"], "sink": {"path": str(tmp_path / "out")}}
    (tmp_path / "pets.csv").write_text("name,weight,age,adopted\nrex,30 kg,3,1\ntom,4.5,2,0\n")
    with pytest.raises(StageError, match="'label_issues' multiplies the weights in the column 'weight', which holds str"):
        validate_against_source(load_job(job))
    (tmp_path / "pets.csv").write_text("name,weight,age,adopted\nrex,30,3,1\ntom,4.5,2,0\n")
    (note,) = validate_against_source(load_job(job))
    assert "'label_issues' multiplies the source's column 'weight', taking it for each row's sample weight" in note
    dropping = {**job, "stages": [{"label_issues": {"last_round": "drop"}}]}
    assert validate_against_source(load_job(dropping)) == []


def test_rows_that_repeat_an_id_the_data_gives_are_rejected_but_the_first(client, tmp_path):
    """Two rows under one id were one row to the stages: near_dedup_text joined two clusters
    through a shared id and kept no copy of one of them."""
    fox, ml = "the quick brown fox jumps over the lazy dog near the river bank today", "completely different sentence about machine learning data sets and pipelines here"
    frame = pd.DataFrame({"uid": ["B", "B", "A", "C", "D", "B"], "text": [fox, ml, fox + "!", ml + "!", "something else entirely, said once", fox]})
    outputs = []
    for rows in (6, 2, 1):
        job = {"name": "repeats", "source": {"format": "frame", "frame": frame, "rows_per_partition": rows}, "columns": {"id": "uid"},
               "stages": [{"near_dedup_text": {"fields": ["text"]}}], "sink": {"path": str(tmp_path / f"out{rows}")}}
        manifest = dsbuild.run(job, client=client)
        kept, rejects = read_output(tmp_path / f"out{rows}")
        assert manifest["stages"][0]["rejected_by_reason"] == {"id:repeated": 2}
        assert sorted(rejects.loc[rejects["reason"] == "id:repeated", "text"]) == sorted([fox, ml])  # the first B is kept
        assert sorted(kept["id"]) == ["A", "C", "D"] and rejects.set_index("reason").loc["duplicate-of=A", "id"] == "B"
        outputs.append((kept, rejects))
    for kept, rejects in outputs[1:]:
        pd.testing.assert_frame_equal(kept, outputs[0][0])
        pd.testing.assert_frame_equal(rejects, outputs[0][1])


def test_the_id_check_reads_a_parquet_sources_ids_alone(client, tmp_path):
    """The check read the whole source once more, image bytes included; Parquet can read the
    id column alone, in the same partitions, and the repeats found are the same."""
    from dsbuild.io.sources import read_source
    from dsbuild.job import load_job
    from dsbuild.pipeline import _ids_alone

    frame = pd.DataFrame({"uid": ["a", "b", "a", "c", None, "b", "d"], "blob": [bytes([i]) * 1000 for i in range(7)]})
    for name, column in (("uid", "uid"), ("id", None)):
        data = frame.rename(columns={"uid": name})
        for group in (2, 7):
            path = tmp_path / f"{name}{group}.parquet"
            data.to_parquet(path, row_group_size=group)
            job = {"name": "ids", "source": {"format": "parquet", "path": str(path), "rows_per_partition": group},
                   "columns": {"id": column} if column else {}, "sink": {"path": str(tmp_path / f"out-{name}{group}")}}
            ids = _ids_alone(read_source(load_job(job).source), column)
            assert "blob" not in ids.columns and ids.npartitions == (4 if group == 2 else 1)
            manifest = dsbuild.run(job, client=client)
            kept, rejects = read_output(tmp_path / f"out-{name}{group}")
            assert manifest["stages"][0]["rejected_by_reason"] == {"id:repeated": 2, "id:missing": 1}
            assert sorted(b[0] for b in kept["blob"]) == [0, 1, 3, 6]  # the first a and the first b are kept


def test_the_id_check_runs_one_task_per_partition_in_each_of_its_passes(client, tmp_path):
    """``dask.compute`` fuses no DataFrame collection (dask 2026.8), so the check's passes
    ran the read, the ids, their hashes and the count (then the read, the ids, their hashes
    and the suspects) as four tasks per partition: 53 tasks for 4 partitions, 21 fused."""
    from dask.utils import key_split
    from distributed import get_task_stream

    frame = pd.DataFrame({"uid": [f"k{i % 90}" for i in range(100)], "x": np.arange(100.0)})
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=25)
    job = {"name": "ids", "source": {"format": "parquet", "path": str(tmp_path / "in.parquet"), "rows_per_partition": 25},
           "columns": {"id": "uid"}, "sink": {"path": str(tmp_path / "out")}}
    with get_task_stream(client) as stream:
        manifest = dsbuild.run(job, client=client)
    assert manifest["stages"][0]["rejected_by_reason"] == {"id:repeated": 10}
    alone = [key_split(t["key"]) for t in stream.data
             if key_split(t["key"]) in ("read-parquet", "dsbuild-ids", "dsbuild-id-places", "dsbuild-id-suspects", "chunk")]
    assert alone == [], sorted(set(alone))


def test_rows_a_stage_adds_carry_their_id_in_the_jobs_id_column(client, tmp_path):
    """A SMOTE row kept its parent's value in columns.id's column: the column named two rows
    alike. A column of numbers cannot hold 'r5#smote0': it is left empty there."""
    rng = np.random.default_rng(0)
    for ids in ([f"A{i:03d}" for i in range(40)], list(range(40))):
        frame = pd.DataFrame({"animal": ids, "f": rng.random(40), "y": [0] * 32 + [1] * 8})
        job = {"name": "added", "source": {"format": "frame", "frame": frame}, "columns": {"id": "animal", "label": "y"},
               "stages": ["oversample"], "sink": {"path": str(tmp_path / f"out{type(ids[0]).__name__}")}}
        dsbuild.run(job, client=client)
        kept = pd.read_parquet(tmp_path / f"out{type(ids[0]).__name__}" / "data")
        added = kept[kept["id"].str.contains("#smote")]
        assert len(added) == 24
        if isinstance(ids[0], str):
            assert (added["animal"] == added["id"]).all() and kept["animal"].is_unique
        else:
            assert added["animal"].isna().all() and kept["animal"].dtype == "Int64"


def test_a_stage_that_copies_rows_twice_in_a_job_gives_each_copy_an_id_of_its_own(client, tmp_path):
    """resample then resample#2 both named the first copy of a row 'r#rs1' (oversample
    'r#smote0' twice): the output held one id twice, the rows that share it sorted in
    either order, and a later stage keyed both by it. The second stage of a name numbers
    its copies with its own number (r#rs2.1), which split still takes for a copy of r."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"f": rng.random(60), "g": ["a", "b"] * 30, "y": [0] * 45 + [1] * 15})
    job = {"name": "twice", "source": {"format": "frame", "frame": frame}, "columns": {"label": "y", "sensitive": ["g"]},
           "stages": [{"oversample": {"ratio": 0.5}}, {"oversample": {"ratio": 1.0}},
                      {"resample": {"favorable": 1}}, {"resample": {"favorable": 1, "strength": 2.0}}, {"split": {}}],
           "sink": {"path": str(tmp_path / "out")}}
    with pytest.warns(Warning, match="stage 'split' runs after 'oversample"):  # split last, for split's part
        dsbuild.run(job, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data")
    assert kept["id"].is_unique
    assert kept["id"].str.contains("#smote2\\.").any()
    from dsbuild.stages.split import origin_ids

    assert (origin_ids(kept["id"]) == kept["id"].str.split("#").str[0]).all()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_redraws_a_terminal_line_and_logs_lines_to_a_file(monkeypatch, terminal):
    """Into a batch job's log the redrawn bar was one line of carriage returns."""
    from dsbuild.progress import ProgressBar

    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = ProgressBar(5, "source, impute")
    for _ in range(5):
        bar.update()
    bar.close()
    text = err.getvalue()
    if terminal:
        assert text.count("\r") == 6 and text.endswith("| source, impute\n")
    else:
        assert "\r" not in text and text.splitlines() == [text.strip()]
        assert text.startswith("[" + "#" * 30 + "] 5/5 partition results | ") and text.endswith(" s | source, impute\n")


def test_manifest_names_the_job_by_its_hash_and_the_libraries_that_built_it(client, tmp_path):
    """The manifest had no hash of the job (two outputs could be told to be one build only by
    comparing whole jobs) and no versions of the libraries whose kernels make the rows."""
    import importlib.metadata

    job = {"name": "bc", "seed": 0, "source": {"format": "sample", "name": "breast_cancer"}, "stages": [{"split": {}}]}
    one = dsbuild.run({**job, "sink": {"path": str(tmp_path / "a")}}, client=client)
    again = dsbuild.run({**job, "sink": {"path": str(tmp_path / "b")}}, client=client)
    other = dsbuild.run({**job, "seed": 1, "sink": {"path": str(tmp_path / "c")}}, client=client)
    assert one["job_hash"] == again["job_hash"] != other["job_hash"]  # where it is written is not the job
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["job_hash"] == one["job_hash"]
    versions = one["versions"]
    assert versions["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert versions["fairlearn"] == importlib.metadata.version("fairlearn") and versions["opencv"]


def test_a_partition_without_rejects_builds_no_frame_of_them(tmp_path, monkeypatch):
    """Accounting a stage's partition built its (empty) rejects frame, renamed, retyped and
    all, for every stage and partition: half the accounting where nothing was rejected."""
    from dsbuild.io.sink import Sink
    from dsbuild.pipeline import accounting as pipeline
    from dsbuild.stages.base import REJECT

    built = []
    real = pipeline.rejected_rows
    monkeypatch.setattr(pipeline, "rejected_rows", lambda part, stage: built.append(len(part)) or real(part, stage))
    sink = Sink(str(tmp_path / "out"), shard_rows=100, shard_bytes=2**20, compression="zstd")
    part = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], REJECT: pd.Series([None] * 3, dtype=object)})
    counted = pipeline._account(part, sink, str(tmp_path / "rejects"), "ranges", None)
    assert built == [] and counted["files"][0] == [] and counted["counts"][0]["kept"] == 3
    part.loc[1, REJECT] = "range:x"
    counted = pipeline._account(part, sink, str(tmp_path / "rejects"), "ranges", None)
    assert built == [3] and counted["files"][0][0]["rows"] == 1 and counted["counts"][0]["rejected"] == {"range:x": 1}


def test_a_checkpoint_partition_casts_only_its_differing_columns(tmp_path, monkeypatch):
    """A stage's numpy bool flag reads back from the checkpoint as ``boolean``: every
    partition was cast whole (``DataFrame.astype`` rebuilds every column); now the flag
    alone, to the same dtypes."""
    from dsbuild import pipeline
    from dsbuild.io.sink import Sink

    sink = Sink(str(tmp_path / "out"), shard_rows=100, shard_bytes=2**20, compression="zstd")
    part = pd.DataFrame({"id": ["a", "b"], "n": pd.array([1, None], dtype="Int64"), "s": pd.Series(["x", None], dtype="str"),
                         "flag": np.array([True, False])})
    (written,) = sink.write_scratch(part, str(tmp_path / "checkpoint"), 0)
    cast = []
    real = pd.DataFrame.astype
    monkeypatch.setattr(pd.DataFrame, "astype", lambda self, *a, **k: cast.append(a) or real(self, *a, **k))
    back = pipeline._CheckpointPart(sink, part.iloc[:0])(written["path"])
    assert cast == []
    assert back.dtypes.to_dict() == part.dtypes.to_dict()
    assert back.columns.dtype == object  # Python strings: a stage's column steps cost less than on Arrow-backed labels
    pd.testing.assert_frame_equal(back, part, check_column_type=False)
