"""Cleaning rules: how well they find and fix planted errors on UCI Adult, and how fast the
six-rule job runs on Dask (2 worker processes) against the same rules in plain pandas.

Quality: the whole Adult training split (32,561 rows) with 2 % of rows per error kind
planted (see :mod:`dsbuild.cleaning_eval`). Speed: Adult tiled to ``ROWS`` rows with the
same kinds of error, read from the same Parquet files and written back to Parquet by
every side, all measured in this process: the idiomatic one-process pandas version of
the rules; ``dsbuild.run`` of the job (what a user runs: rejects, per-rule counts,
manifest, checkpoints before multi-pass stages); and the same stages as one Dask graph
with kept rows persisted in memory (the engine without the job runner's bookkeeping).
Wall times depend on the machine's load, so CPU seconds of every process are recorded too."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import cpu_seconds
from dsbuild.cleaning_eval import (
    ADULT_RULES,
    adult,
    clean_with_stages,
    inject_errors,
    score,
)
from dsbuild.records import ID

ROWS, ROWS_PER_FILE, ROUNDS = 10_000_000, 250_000, 1

SEX = {"male": "Male", "m": "Male", "female": "Female", "f": "Female"}
RACE = {
    "white": "White",
    "black": "Black",
    "asian-pac-islander": "Asian-Pac-Islander",
    "asian pacific islander": "Asian-Pac-Islander",
    "api": "Asian-Pac-Islander",
    "amer-indian-eskimo": "Amer-Indian-Eskimo",
    "american indian": "Amer-Indian-Eskimo",
    "aie": "Amer-Indian-Eskimo",
    "other": "Other",
}


def quality(rows: int | None) -> pd.DataFrame:
    clean = adult(rows=rows, seed=0)
    dirty, truth = inject_errors(clean, rate=0.02, seed=0)
    kept, _, _ = clean_with_stages(dirty, npartitions=4)
    return score(clean, dirty, kept, truth)


def tiled_input(folder: Path, rows: int, rows_per_file: int) -> None:
    """Adult repeated to ``rows`` rows with planted errors, as Parquet files (snappy)."""
    dirty, _ = inject_errors(adult(), rate=0.02, seed=0)
    for f, first in enumerate(range(0, rows, rows_per_file)):
        take = np.arange(first, min(first + rows_per_file, rows)) % len(dirty)
        part = dirty.iloc[take].reset_index(drop=True)
        part[ID] = pd.array([f"{f}:{i}" for i in range(len(part))], dtype="str")
        part.to_parquet(folder / f"part-{f:05d}.parquet", index=False, compression="snappy")


def clean_in_pandas(df: pd.DataFrame) -> pd.DataFrame:
    """The six rules of ADULT_RULES, written the way one would in a notebook."""
    text = df["hours-per-week"].astype("str")
    minutes = text.str.extract(r"^\s*([\d.]+)\s*(?:min|mins|minutes)\s*$")[0].astype(float)
    df["hours-per-week"] = pd.to_numeric(text, errors="coerce").fillna(minutes / 60)
    df["age"] = df["age"].where(df["age"].between(17, 90) | df["age"].isna())
    for column, table in (("sex", SEX), ("race", RACE)):
        key = df[column].str.normalize("NFKC").str.strip().str.casefold()
        vocab = {v.casefold(): v for v in table.values()}
        df[column] = key.map({**vocab, **table}).fillna(df[column])
    x = df["fnlwgt"]
    med = x.median()
    dev = (x - med).abs()
    scale = 1.4826 * dev.median() or 1.2533 * dev.mean()
    df["fnlwgt_outlier"] = ((x - med) / scale).abs() > 6
    df["fnlwgt"] = x.mask(df["fnlwgt_outlier"])
    counts = df.groupby(["education", "education-num"]).size()
    top = counts.groupby(level=0).idxmax().map(lambda t: t[1])
    share = counts.groupby(level=0).max() / counts.groupby(level=0).sum()
    majority = df["education"].map(top.where(share > 0.5))
    wrong = majority.notna() & (df["education-num"] != majority)
    df["education-num_repaired_from"] = df["education-num"].where(wrong).astype("Int64")
    df["education-num"] = df["education-num"].mask(wrong, majority).astype(np.int64)
    for column, fill in (
        ("age", df.groupby("relationship")["age"].transform("median")),
        ("marital-status", df.groupby("relationship")["marital-status"].transform(lambda s: s.mode().iloc[0])),
        ("fnlwgt", df["fnlwgt"].median()),
    ):
        df[f"{column}_imputed"] = df[column].isna()
        df[column] = df[column].fillna(fill)
    return df


def pandas_side(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    df = clean_in_pandas(pd.read_parquet(src))
    df.to_parquet(dst / "out.parquet", index=False, compression="snappy")
    return time.perf_counter() - t


def dsbuild_side(src: Path, dst: Path, client, rows_per_file: int, checkpoints: str = "disk") -> float:
    """``dsbuild.run`` of the six-rule job: rejects, counts, manifest and checkpoints included."""
    import dsbuild

    job = {
        "name": "clean-bench",
        "source": {"format": "parquet", "path": str(src), "rows_per_partition": rows_per_file},
        "stages": [{name: options} for name, options in ADULT_RULES],
        "sink": {"path": str(dst), "shard_rows": rows_per_file, "compression": "snappy", "checkpoints": checkpoints},
    }
    t = time.perf_counter()
    manifest = dsbuild.run(job, client=client)
    elapsed = time.perf_counter() - t
    assert manifest["ledger"]["balanced"]
    return elapsed


def stages_side(src: Path, dst: Path, client) -> float:
    """The same stages as one Dask graph, kept rows persisted in memory before each stage that
    reads its input twice; no rejects, counts, manifest or checkpoints."""
    import dask.dataframe as dd
    from distributed import wait

    from dsbuild.pipeline import kept_rows
    from dsbuild.stages import Shapes, StageContext, stage_class

    t = time.perf_counter()
    frame = dd.read_parquet(str(src))
    for name, options in ADULT_RULES:
        stage = stage_class(name)(options).bind(StageContext(name, 0))
        stage.check(frame._meta)
        if stage.shape not in ("map", "group"):
            frame = client.persist(frame)
            wait(frame)
        out = stage.build(frame, Shapes())
        frame = out.map_partitions(kept_rows, meta=kept_rows(out._meta))
    frame.to_parquet(str(dst), write_index=False, compression="snappy")
    return time.perf_counter() - t


CHECKED = ["hours-per-week", "age", "sex", "race", "fnlwgt", "marital-status", "education-num", "fnlwgt_outlier"]


def same_output(pandas_out: Path, dask_out: Path) -> None:
    """The cleaned columns agree cell for cell (rows matched by id)."""
    ref = pd.read_parquet(pandas_out, columns=[ID, *CHECKED]).sort_values(ID, ignore_index=True)
    got = pd.read_parquet(dask_out, columns=[ID, *CHECKED]).sort_values(ID, ignore_index=True)
    assert ref[ID].tolist() == got[ID].tolist()
    for column in CHECKED:
        a, b = ref[column], got[column]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            assert np.allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), equal_nan=True), column
        else:
            assert (a.astype("str").to_numpy() == b.astype("str").to_numpy()).all(), column


def speed(rows: int, rows_per_file: int, rounds: int) -> dict:
    """Best of ``rounds`` interleaved runs per side (so drifting load hits every side), and
    the 1-minute load average seen by each run."""
    from distributed import Client

    from dsbuild.runtime import DsbuildWorkerSetup, local_cluster

    root = Path(tempfile.mkdtemp(prefix="dsbuild-bench-clean-"))
    times: dict[str, list[float]] = {"pandas": [], "dsbuild": [], "dsbuild-memory": [], "stages": []}
    cpu: dict[str, list[float]] = {side: [] for side in times}
    loads: list[float] = []
    try:
        src = root / "in"
        src.mkdir()
        tiled_input(src, rows, rows_per_file)
        with local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
            client.register_plugin(DsbuildWorkerSetup())
            client.run(importlib.import_module, "dsbuild.stages")  # imports are start-up, not work
            workers = len(client.scheduler_info()["workers"])
            for r in range(rounds):
                for side, seconds in times.items():
                    dst = root / f"{side}-{r}"
                    dst.mkdir()
                    loads.append(os.getloadavg()[0])
                    used = cpu_seconds()
                    if side == "pandas":
                        seconds.append(pandas_side(src, dst))
                    elif side == "dsbuild":
                        seconds.append(dsbuild_side(src, dst / "out", client, rows_per_file))
                    elif side == "dsbuild-memory":
                        seconds.append(dsbuild_side(src, dst / "out", client, rows_per_file, checkpoints="memory"))
                    else:
                        seconds.append(stages_side(src, dst, client))
                    cpu[side].append(cpu_seconds() - used)
            same_output(root / "pandas-0" / "out.parquet", root / "dsbuild-0" / "out" / "data")
            same_output(root / "pandas-0" / "out.parquet", root / "dsbuild-memory-0" / "out" / "data")
            same_output(root / "pandas-0" / "out.parquet", root / "stages-0")
        return {"best": {k: min(v) for k, v in times.items()}, "all": times, "cpu": {k: min(v) for k, v in cpu.items()}, "load": loads, "workers": workers}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False) -> str:
    table = quality(5000 if quick else None)
    rows, rows_per_file, rounds = (60_000, 15_000, 1) if quick else (ROWS, ROWS_PER_FILE, ROUNDS)
    result = speed(rows, rows_per_file, rounds)
    lines = [
        "## clean",
        "",
        (
            f"Planted errors on UCI Adult ({'5,000-row sample' if quick else 'all 32,561 rows'}; 2 % of rows per kind, "
            "disjoint rows), cleaned by the six-rule job in `dsbuild.cleaning_eval.ADULT_RULES` "
            "(normalize_units, ranges, canonicalize, outliers, impute, constraints). Detection: the job "
            "changed the cell; repair: it now holds the clean value. `repair_mae` is the mean absolute "
            "error left in planted numeric cells (imputation cannot recover exact ages)."
        ),
        "",
        "| kind | column | planted | changed | detect P | detect R | repair P | repair R | repair MAE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        mae = "" if np.isnan(r.repair_mae) else f"{r.repair_mae:.1f}"
        lines.append(
            f"| {r.kind} | {r.column} | {r.planted} | {r.changed} | {r.detect_precision:.3f} | "
            f"{r.detect_recall:.3f} | {r.repair_precision:.3f} | {r.repair_recall:.3f} | {mae} |"
        )
    best, loads = result["best"], result["load"]
    lines += [
        "",
        (
            f"Speed: the same six rules on Adult tiled to {rows:,} rows ({rows // rows_per_file} snappy Parquet files of "
            f"{rows_per_file:,} rows in, snappy Parquet out), measured in one process: plain pandas in that process "
            f"against dsbuild on a LocalCluster of {result['workers']} worker processes (one thread each) started "
            f"beforehand. Best of {rounds} interleaved round{'s' if rounds > 1 else ''}; outputs checked equal cell for "
            f"cell on {', '.join(CHECKED)}. The machine has {os.cpu_count()} cores and was shared: the 1-minute load "
            f"average was {min(loads):.1f}–{max(loads):.1f} during the runs (above {os.cpu_count()} means the sides "
            "competed with other work for the cores)."
        ),
        "",
        "| side | seconds (best) | all rounds | speed-up vs pandas | CPU seconds, all processes | CPU vs pandas |",
        "|---|---:|---|---:|---:|---:|",
    ]
    labels = {
        "pandas": "pandas, one process",
        "dsbuild": "`dsbuild.run` (job: rejects, counts, manifest, checkpoints on disk)",
        "dsbuild-memory": "`dsbuild.run`, `sink.checkpoints: memory` (not resumable)",
        "stages": "dsbuild stages as one Dask graph, persisted in memory, no bookkeeping",
    }
    cpu = result["cpu"]
    for side, label in labels.items():
        runs = ", ".join(f"{t:.1f}" for t in result["all"][side])
        lines.append(
            f"| {label} | {best[side]:.1f} | {runs} | {best['pandas'] / best[side]:.2f}× | {cpu[side]:.1f} | "
            f"{cpu[side] / cpu['pandas']:.2f}× |"
        )
    lines += [
        "",
        (
            "CPU seconds (this process and its children: scheduler, workers, nannies; least of the rounds) do not "
            "depend on the load: two workers can at most halve the wall time of the same work, so a side whose CPU "
            f"is c× pandas' can reach at most {2:d}/c× on a quiet machine of this size."
        ),
    ]
    return "\n".join(lines)
