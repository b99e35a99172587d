"""Crowd label aggregation against crowd-kit: accuracy on simulated crowds over real labels,
time at 500 k annotations, and a large run on 2 workers with 2 GB each (5 M annotations
by default; set DSBUILD_BENCH_LABEL_ANNOTATIONS=50000000 for the issue's 50 M).

Crowds: annotators with random confusion matrices, 3–7 answers per item, 20 % spammers and
10 % adversaries (:mod:`dsbuild.kernels.crowd_simulation`). Both sides get the same
annotations; crowd-kit runs its defaults (tolerance 1e-5 on the bound per annotation),
and dsbuild uses the same rule and tolerance, so both stop after the same round.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dsbuild.io.sources import bundled_path
from dsbuild.kernels.crowd import DawidSkene, Votes, majority_vote
from dsbuild.kernels.crowd_simulation import random_confusions, simulate_annotations

SPAM = {"spammers": 0.2, "adversaries": 0.1}


def as_votes(ann: pd.DataFrame, n_items: int, n_annotators: int, k: int) -> Votes:
    return Votes(ann["item"].to_numpy(), ann["annotator"].to_numpy(), ann["label"].to_numpy(), n_items, n_annotators, k)


def crowdkit_ds(ann: pd.DataFrame, one_coin: bool = False):
    from crowdkit.aggregation import DawidSkene as CK, OneCoinDawidSkene as CK1

    data = ann.rename(columns={"item": "task", "annotator": "worker"})
    start = time.perf_counter()
    model = (CK1 if one_coin else CK)(n_iter=100).fit(data)
    seconds = time.perf_counter() - start
    return model.labels_.sort_index().to_numpy(), seconds, len(model.loss_history_)


def stage_labels(ann: pd.DataFrame, n_items: int, method: str = "dawid_skene", npartitions: int = 2):
    """The aggregate_labels stage on Dask (threads), end to end: read, group, fit, join."""
    from dsbuild.stages.label import AggregateLabels
    from dsbuild.testing import run_stage

    ids = np.array([f"i{i:09d}" for i in range(n_items)])
    frame = ann.assign(item=ids[ann["item"].to_numpy()])
    data = pd.DataFrame({"id": ids})
    stage = AggregateLabels(annotations=frame, method=method, ties="first")
    start = time.perf_counter()
    kept, _ = run_stage(stage, data, npartitions=npartitions)
    seconds = time.perf_counter() - start
    order = pd.Index(kept["id"]).get_indexer(ids)
    return kept["label"].to_numpy()[order], seconds, stage.summary()["rounds"] - 1


def accuracy_rows(name: str, truth: np.ndarray, ann: pd.DataFrame, n_annotators: int, k: int) -> list[dict]:
    votes = as_votes(ann, len(truth), n_annotators, k)
    mv = (majority_vote(votes)[0] == truth).mean()
    rows = []
    for method, one_coin in (("dawid_skene", False), ("one_coin_dawid_skene", True)):
        ck, _, ck_iter = crowdkit_ds(ann, one_coin)
        ours, _, our_iter = stage_labels(ann, len(truth), method)
        rows.append(
            {
                "data": name, "method": method, "annotations": len(ann), "majority vote": mv,
                "crowd-kit": (ck == truth).mean(), "dsbuild": (ours == truth).mean(),
                "iterations (ck / ours)": f"{ck_iter} / {our_iter}",
            }
        )
    return rows


def binary_crowd(n_items: int, n_annotators: int, seed: int, confusions=None):
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_items) < 0.24).astype(np.int64)  # Adult's share of >50K
    ann, conf, _ = simulate_annotations(truth, n_annotators, rng, confusions=confusions, **({} if confusions is not None else SPAM))
    return truth, ann, conf


def speed_at(n_annotations: int) -> dict:
    n_items = n_annotations // 5
    truth, ann, _ = binary_crowd(n_items, 1000, seed=1)
    ck, ck_s, ck_iter = crowdkit_ds(ann)
    votes = as_votes(ann, n_items, 1000, 2)
    start = time.perf_counter()
    model = DawidSkene(2, 1000).fit(votes)
    model.predict(votes)  # timed: prediction is part of the work
    kernel_s = time.perf_counter() - start
    ours, stage_s, our_iter = stage_labels(ann, n_items, npartitions=2)
    return {
        "annotations": len(ann), "crowd-kit s": ck_s, "kernel s": kernel_s, "stage s": stage_s,
        "iterations": f"{ck_iter} / {model.n_iter_} / {our_iter}",
        "acc crowd-kit": (ck == truth).mean(), "acc dsbuild": (ours == truth).mean(),
        "kernel vs crowd-kit": ck_s / kernel_s, "stage vs crowd-kit": ck_s / stage_s,
    }


CROWDKIT_CHILD = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from benchmarks.bench_label import binary_crowd, crowdkit_ds
truth, ann, _ = binary_crowd({n_items}, 1000, seed=1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels, seconds, iters = crowdkit_ds(ann)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"annotations": len(ann), "seconds": seconds, "iterations": iters,
                  "peak_gib": peak / 2**20, "input_gib": base / 2**20, "accuracy": float((labels == truth).mean())}}))
"""


def crowdkit_memory(n_annotations: int) -> dict:
    """crowd-kit in a fresh process, so its peak resident memory is its own."""
    root = str(Path(__file__).resolve().parent.parent)
    code = CROWDKIT_CHILD.format(root=root, n_items=n_annotations // 5)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_large_crowd(folder: Path, n_items: int, chunk: int, seed: int = 7) -> tuple[int, int]:
    """Annotations and the true labels as Parquet shards, made a chunk of items at a time."""
    rng = np.random.default_rng(seed)
    conf, _ = random_confusions(1000, 2, rng, **SPAM)
    (folder / "annotations").mkdir(parents=True)
    (folder / "items").mkdir()
    total = 0
    for c, start in enumerate(range(0, n_items, chunk)):
        n = min(chunk, n_items - start)
        truth = (rng.random(n) < 0.24).astype(np.int64)
        ids = np.char.add("i", np.char.zfill(np.arange(start, start + n).astype(str), 9))
        ann, _, _ = simulate_annotations(truth, 1000, np.random.default_rng(seed * 1000 + c), confusions=conf, item_ids=ids)
        ann["annotator"] = ann["annotator"].astype(np.int32)
        ann["label"] = ann["label"].astype(np.int8)
        ann.to_parquet(folder / "annotations" / f"part-{c:04d}.parquet", index=False)
        pd.DataFrame({"id": ids, "truth": truth.astype(np.int8)}).to_parquet(folder / "items" / f"part-{c:04d}.parquet", index=False)
        total += len(ann)
    return total, n_items


def large_run(n_annotations: int) -> dict:
    """The stage on a LocalCluster of 2 workers with a 2 GB memory limit each."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from dsbuild.stages.base import Shapes, StageContext
    from dsbuild.stages.label import AggregateLabels

    folder = Path(tempfile.mkdtemp(prefix="dsbuild-bench-label-"))
    try:
        start = time.perf_counter()
        total, n_items = write_large_crowd(folder, n_annotations // 5, chunk=min(200_000, n_annotations // 5))
        made = time.perf_counter() - start
        with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GB", dashboard_address=None,
                          local_directory=str(folder / "spill")) as cluster, Client(cluster) as client:
            start = time.perf_counter()
            ann = dd.read_parquet(str(folder / "annotations"))
            data = dd.read_parquet(str(folder / "items"))
            stage = AggregateLabels(annotations=ann, method="dawid_skene", ties="first").bind(StageContext("aggregate_labels"))
            out = stage.build(data, Shapes())
            right = (out["label"].astype("int64") == out["truth"].astype("int64")).sum()
            right, n = client.compute([right, out["id"].count()], sync=True)
            seconds = time.perf_counter() - start
            peak = max(w["metrics"].get("memory", 0) for w in client.scheduler_info()["workers"].values())
        return {
            "annotations": total, "items": n_items, "generate s": made, "stage s": seconds,
            "rounds": stage.summary()["rounds"] - 1, "accuracy": right / n, "rows out": int(n),
            "worker memory at end GiB": peak / 2**30,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def table(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = ""
    for row in frame.itertuples(index=False):
        body += "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
    return head + body


def run(quick: bool = False) -> str:
    digits_y = __import__("sklearn.datasets", fromlist=["load_digits"]).load_digits().target
    adult = pd.read_csv(bundled_path("adult"), usecols=["income"])["income"]
    adult_y = (adult == ">50K").to_numpy().astype(np.int64)
    if quick:
        digits_y, adult_y = digits_y[:200], adult_y[:500]
    rng = np.random.default_rng(0)
    d_ann, _, _ = simulate_annotations(digits_y, 60, rng, **SPAM)
    a_ann, _, _ = simulate_annotations(adult_y, 300, np.random.default_rng(1), **SPAM)
    acc = accuracy_rows("digits (10 classes)", digits_y, d_ann, 60, 10) + accuracy_rows("Adult (2 classes)", adult_y, a_ann, 300, 2)

    speed = [speed_at(5_000 if quick else 500_000)]
    memory = [crowdkit_memory(n) for n in ((5_000,) if quick else (500_000, 2_000_000))]
    large = None if quick else large_run(int(os.environ.get("DSBUILD_BENCH_LABEL_ANNOTATIONS", 5_000_000)))

    out = [
        "## Label aggregation (aggregate_labels) vs crowd-kit",
        "",
        "Accuracy against the true labels of simulated crowds (60 or 300 annotators with random "
        "confusion matrices, 3–7 answers per item, 20 % spammers, 10 % adversaries). "
        "crowd-kit 1.4 `DawidSkene` / `OneCoinDawidSkene` at their defaults; dsbuild's stage "
        "on Dask with the same stopping rule.",
        "",
        table(acc),
        "Time at scale: binary labels, 1,000 annotators, 5 answers per item on average. "
        "`kernel` is dsbuild's EM in one process; `stage` is `aggregate_labels` end to end on "
        "Dask's threaded scheduler (inventory pass, shuffle by item, the EM rounds, the join "
        "to the data). Iterations: crowd-kit / kernel / stage. Ratios are crowd-kit's time "
        "over ours (above 1: we are faster).",
        "",
        table(speed),
        "crowd-kit alone in a fresh process (peak resident memory, including the annotations "
        "frame it is given):",
        "",
        table(memory),
    ]
    if large is not None:
        out += [
            "dsbuild at large scale: `aggregate_labels` on a LocalCluster of 2 workers with a 2 GB "
            "memory limit each, reading the annotations and items from Parquet, accuracy counted "
            "on the workers (nothing collected to the driver):",
            "",
            table([large]),
        ]
    return "\n".join(out) + "\n"
