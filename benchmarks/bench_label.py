"""Crowd label aggregation against crowd-kit: accuracy on simulated crowds over real labels,
time at 500 k annotations, and large runs on 2 workers with 2 GB each.

Crowds: annotators with random confusion matrices, 3–7 answers per item, 20 % spammers and
10 % adversaries (:mod:`dsbuild.kernels.crowd_simulation`). Both sides get the same
annotations; crowd-kit runs its defaults (tolerance 1e-5 on the bound per annotation),
and dsbuild uses the same rule and tolerance (at ``smoothing: 0`` its Dawid–Skene stops
after the same round as crowd-kit's; by default it smooths the confusion matrices).

Sizes of the large runs: ``DSBUILD_BENCH_LABEL_ANNOTATIONS`` (comma-separated, default
``1000000,10000000``, the largest beyond what crowd-kit holds; the issue's target is
``50000000``). crowd-kit gets the first shards (1 M annotations each, all answers of their
items) of the largest crowd: ``DSBUILD_BENCH_LABEL_CROWDKIT_ANNOTATIONS`` is ``largest``
(default: as many shards as its peak resident memory keeps within one worker's memory
limit, 2 GB) or a number of annotations. Without crowd-kit installed its columns are skipped.
"""

from __future__ import annotations

import importlib.util
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
import pyarrow.parquet as pq

from benchmarks import cpu_seconds
from dsbuild.io.sources import bundled_path
from dsbuild.kernels.crowd import DawidSkene, Votes, majority_vote
from dsbuild.kernels.crowd_simulation import random_confusions, simulate_annotations

SPAM = {"spammers": 0.2, "adversaries": 0.1}


def as_votes(ann: pd.DataFrame, n_items: int, n_annotators: int, k: int) -> Votes:
    return Votes(ann["item"].to_numpy(), ann["annotator"].to_numpy(), ann["label"].to_numpy(), n_items, n_annotators, k)


def crowdkit_ds(ann: pd.DataFrame, one_coin: bool = False):
    from crowdkit.aggregation import DawidSkene as CK
    from crowdkit.aggregation import OneCoinDawidSkene as CK1

    data = ann.rename(columns={"item": "task", "annotator": "worker"})
    start = time.perf_counter()
    model = (CK1 if one_coin else CK)(n_iter=100).fit(data)
    seconds = time.perf_counter() - start
    confidence = model.probas_.sort_index().max(axis=1).to_numpy()
    return model.labels_.sort_index().to_numpy(), seconds, len(model.loss_history_), confidence


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
    return kept["label"].to_numpy()[order], seconds, stage.summary()["rounds"] - 1, kept["label_confidence"].to_numpy()[order]


HAVE_CROWDKIT = importlib.util.find_spec("crowdkit") is not None


def top_label_brier(labels: np.ndarray, confidence: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared gap between the chosen label's posterior and whether it is right: 0 for
    sure and right, and it grows with confidence a label does not earn."""
    return float(((confidence - (labels == truth)) ** 2).mean())


def accuracy_rows(name: str, truth: np.ndarray, ann: pd.DataFrame, n_annotators: int, k: int) -> list[dict]:
    votes = as_votes(ann, len(truth), n_annotators, k)
    mv = (majority_vote(votes)[0] == truth).mean()
    rows = []
    for method, one_coin in (("dawid_skene", False), ("one_coin_dawid_skene", True)):
        ours, _, our_iter, our_conf = stage_labels(ann, len(truth), method)
        row = {"data": name, "method": method, "annotations": len(ann), "majority vote": mv, "dsbuild": (ours == truth).mean(),
               "Brier dsbuild": top_label_brier(ours, our_conf, truth)}
        if HAVE_CROWDKIT:
            ck, _, ck_iter, ck_conf = crowdkit_ds(ann, one_coin)
            row.update({"crowd-kit": (ck == truth).mean(), "Brier crowd-kit": top_label_brier(ck, ck_conf, truth),
                        "iterations (ck / ours)": f"{ck_iter} / {our_iter}"})
        else:
            row["iterations"] = our_iter
        rows.append(row)
    return rows


def binary_crowd(n_items: int, n_annotators: int, seed: int, confusions=None):
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_items) < 0.24).astype(np.int64)  # Adult's share of >50K
    ann, conf, _ = simulate_annotations(truth, n_annotators, rng, confusions=confusions, **({} if confusions is not None else SPAM))
    return truth, ann, conf


def rare_class_crowd(n_items: int, seed: int = 0, n_annotators: int = 100, **answers) -> tuple[np.ndarray, pd.DataFrame]:
    """A binary crowd on items of which 1 % are of one class: majority vote's noise puts
    17 % of them there, the start Dawid–Skene's warm-up is for. ``answers``: min_votes,
    max_votes per item (3-7)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_items) < 0.01).astype(np.int64)
    ann, _, _ = simulate_annotations(truth, n_annotators, rng, **answers, **SPAM)
    return truth, ann


def speed_at(n_annotations: int) -> dict:
    n_items = n_annotations // 5
    truth, ann, _ = binary_crowd(n_items, 1000, seed=1)
    votes = as_votes(ann, n_items, 1000, 2)
    start = time.perf_counter()
    model = DawidSkene(2, 1000).fit(votes)
    model.predict(votes)  # timed: prediction is part of the work
    kernel_s = time.perf_counter() - start
    ours, stage_s, our_iter, _ = stage_labels(ann, n_items, npartitions=2)
    row = {"annotations": len(ann), "kernel s": kernel_s, "stage s": stage_s, "acc dsbuild": (ours == truth).mean()}
    if not HAVE_CROWDKIT:
        return {**row, "iterations (kernel / stage)": f"{model.n_iter_} / {our_iter}"}
    ck, ck_s, ck_iter, _ = crowdkit_ds(ann)
    return {
        **row, "crowd-kit s": ck_s, "iterations": f"{ck_iter} / {model.n_iter_} / {our_iter}",
        "acc crowd-kit": (ck == truth).mean(), "kernel vs crowd-kit": ck_s / kernel_s, "stage vs crowd-kit": ck_s / stage_s,
    }


CROWDKIT_CHILD = """
import json, resource, sys, time
import numpy as np, pandas as pd
sys.path.insert(0, {root!r})
from benchmarks.bench_label import crowdkit_ds
folder, files = {folder!r}, {files!r}
ann = pd.concat([pd.read_parquet(f"{{folder}}/annotations/part-{{c:04d}}.parquet") for c in range(files)], ignore_index=True)
truth = pd.concat([pd.read_parquet(f"{{folder}}/items/part-{{c:04d}}.parquet") for c in range(files)]).set_index("id")["truth"]
ann["annotator"] = ann["annotator"].astype(np.int64)
ann["label"] = ann["label"].astype(np.int64)

def peak_kib():  # since exec: ru_maxrss starts from the size of the process that started this one
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

base, input_kib = resource.getrusage(resource.RUSAGE_SELF), peak_kib()
labels, seconds, iters, _ = crowdkit_ds(ann)
end, peak = resource.getrusage(resource.RUSAGE_SELF), peak_kib()
items = np.sort(ann["item"].unique())
print(json.dumps({{"annotations": len(ann), "seconds": seconds,
                  "CPU s": end.ru_utime + end.ru_stime - base.ru_utime - base.ru_stime, "iterations": iters,
                  "peak_gib": peak / 2**20, "input_gib": input_kib / 2**20,
                  "accuracy": float((labels == truth.loc[items].to_numpy()).mean())}}))
"""

WORKER_MEMORY = "2GB"  # each worker's memory limit in the large runs, and crowd-kit's budget


def crowdkit_on_sample(folder: Path, files: int, budget: float = float("inf")) -> dict:
    """crowd-kit in a fresh process on the first ``files`` shards of a generated crowd (every
    answer of those items), so its peak resident memory is its own; stopped once its
    resident memory (polled every 0.1 s) passes ``budget`` bytes."""
    import psutil

    root = str(Path(__file__).resolve().parent.parent)
    code = CROWDKIT_CHILD.format(root=root, folder=str(folder), files=files)
    start, seen = time.perf_counter(), 0
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            seen = max(seen, watch.memory_info().rss)
        except psutil.Error:
            continue
        if seen > budget:
            proc.kill()
        time.sleep(0.1)
    out, err = proc.communicate()
    if seen > budget:
        n = sum(pq.read_metadata(folder / "annotations" / f"part-{c:04d}.parquet").num_rows for c in range(files))
        return {"annotations": n, "seconds": f"stopped at {time.perf_counter() - start:.0f}", "CPU s": "",
                "iterations": "", "peak_gib": seen / 2**30, "input_gib": "", "accuracy": "", "fits": False}
    if proc.returncode:
        raise RuntimeError(f"crowd-kit on {files} shards failed:\n{err}")
    row = json.loads(out.strip().splitlines()[-1])
    return {**row, "fits": row["peak_gib"] * 2**30 <= budget}


def crowdkit_largest(folder: Path, files: int, budget: float) -> tuple[list[dict], int]:
    """crowd-kit on the first 1 and 2 shards, then on the number of shards their growth
    predicts fits ``budget``, then one shard more or less until the largest that fits and
    the next that does not are both measured (runs over budget stop early). The runs, and
    the largest number of shards that fit (0 if none)."""
    runs: dict[int, dict] = {}

    def fits(k: int) -> bool:
        if k not in runs:
            runs[k] = crowdkit_on_sample(folder, k, budget)
        return runs[k]["fits"]

    k = 1
    if fits(1) and files > 1 and fits(2):
        one, per_shard = runs[1]["peak_gib"] * 2**30, (runs[2]["peak_gib"] - runs[1]["peak_gib"]) * 2**30
        k = min(files, 1 + int((budget - one) // per_shard)) if per_shard > 0 else files
    while k < files and fits(k):
        k += 1
    while k > 1 and not fits(k):
        k -= 1
    return [runs[c] for c in sorted(runs)], k if fits(k) else 0


CHUNK_ITEMS = 200_000


def write_large_crowd(folder: Path, n_items: int, chunk: int = CHUNK_ITEMS, seed: int = 7) -> tuple[int, int]:
    """Annotations and the true labels as Parquet shards, made a chunk of items at a time.

    Every size draws from the same 1,000 annotators, and shard ``c`` is the same at every
    size, so the first shards are a sample of any larger crowd.
    """
    rng = np.random.default_rng(seed)
    conf, _ = random_confusions(1000, 2, rng, **SPAM)
    (folder / "annotations").mkdir(parents=True)
    (folder / "items").mkdir()
    total = 0
    for c, start in enumerate(range(0, n_items, chunk)):
        n = min(chunk, n_items - start)
        crowd_rng = np.random.default_rng([seed, c])
        truth = (crowd_rng.random(n) < 0.24).astype(np.int64)
        ids = np.char.add("i", np.char.zfill(np.arange(start, start + n).astype(str), 9))
        ann, _, _ = simulate_annotations(truth, 1000, crowd_rng, confusions=conf, item_ids=ids)
        ann["annotator"] = ann["annotator"].astype(np.int32)
        ann["label"] = ann["label"].astype(np.int8)
        ann.to_parquet(folder / "annotations" / f"part-{c:04d}.parquet", index=False)
        pd.DataFrame({"id": ids, "truth": truth.astype(np.int8)}).to_parquet(folder / "items" / f"part-{c:04d}.parquet", index=False)
        total += len(ann)
    return total, n_items


class PeakWorkerMemory:
    """Largest resident memory any worker process reached, polled from a thread."""

    def __init__(self, pids: list[int], every: float = 0.2):
        import threading

        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peak = self._since = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(every,), daemon=True)

    def _poll(self, every: float) -> None:
        while not self._stop.wait(every):
            for proc in self.procs:
                try:
                    rss = proc.memory_info().rss
                except Exception:  # noqa: BLE001 - a worker that died is counted by its restarts
                    continue
                self.peak, self._since = max(self.peak, rss), max(self._since, rss)

    def since_last(self) -> int:
        """The peak since the previous call, to tell the phases of a run apart."""
        peak, self._since = self._since, 0
        return peak

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed_shapes(memory: PeakWorkerMemory):
    """Shapes that record wall seconds, CPU seconds and peak worker memory of each fit (the
    inventory, then one per EM round)."""
    from dsbuild.stages.shapes import Shapes

    class TimedShapes(Shapes):
        def __init__(self):
            super().__init__()
            self.fits: list[tuple[float, float, int]] = []

        def fit(self, *args, **kwargs):
            wall, cpu = time.perf_counter(), cpu_seconds()
            out = super().fit(*args, **kwargs)
            self.fits.append((time.perf_counter() - wall, cpu_seconds() - cpu, memory.since_last()))
            return out

    return TimedShapes()


def large_run(folder: Path, n_annotations: int, sample_items: int) -> dict:
    """``aggregate_labels`` on a LocalCluster of 2 workers with a 2 GB memory limit each,
    reading the ``n_annotations`` annotations and the items in ``folder``; accuracy is
    counted on the workers, overall and on the first ``sample_items`` items (the sample
    crowd-kit is given)."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from dsbuild.stages.base import StageContext
    from dsbuild.stages.label import AggregateLabels

    boundary = f"i{sample_items:09d}"
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=WORKER_MEMORY, dashboard_address=None,
                      local_directory=str(folder / "spill")) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        with PeakWorkerMemory(pids) as memory:
            shapes = timed_shapes(memory)
            start, cpu = time.perf_counter(), cpu_seconds()
            ann = dd.read_parquet(str(folder / "annotations"))
            data = dd.read_parquet(str(folder / "items"))
            stage = AggregateLabels(annotations=ann, method="dawid_skene", ties="first").bind(StageContext("aggregate_labels"))
            out = stage.build(data, shapes)
            fitted, cpu_fitted = time.perf_counter() - start, cpu_seconds()
            right = out["label"].astype("int64") == out["truth"].astype("int64")
            in_sample = out["id"] < boundary
            counts = client.compute([right.sum(), out["id"].count(), (right & in_sample).sum(), in_sample.sum()], sync=True)
            seconds, cpu_end = time.perf_counter() - start, cpu_seconds()
            after_peak = memory.since_last()
        restarts = len(set(client.run(os.getpid).values()) - set(pids))
    right, n, right_sample, n_sample = (int(c) for c in counts)
    setup, rounds = shapes.fits[:2], shapes.fits[2:]  # the inventory and the first round wait for the reads and the shuffle
    cpu_round = float(np.median([c for _, c, _ in rounds]))
    gib = 2**30
    return {
        "stage s": seconds, "CPU s": cpu_end - cpu,
        "to first round s": sum(w for w, _, _ in setup), "to first round CPU s": sum(c for _, c, _ in setup),
        "rounds": len(shapes.fits) - 1,
        "s / round": float(np.median([w for w, _, _ in rounds])), "CPU s / round": cpu_round,
        "CPU s / round / M ann.": cpu_round / (n_annotations / 1e6), "after rounds s": seconds - fitted,
        "after rounds CPU s": cpu_end - cpu_fitted,
        "accuracy": right / n, "accuracy on sample": right_sample / n_sample, "rows out": n,
        "peak worker GiB (setup / rounds / after)": f"{max(m for _, _, m in setup) / gib:.2f} / "
        f"{max(m for _, _, m in rounds) / gib:.2f} / {after_peak / gib:.2f}",
        "peak worker GiB": memory.peak / 2**30, "worker restarts": restarts,
    }


def large_scale(sizes: list[int], crowdkit: str | None) -> tuple[list[dict], list[dict]]:
    """The stage at each size, and crowd-kit on the first shards of the largest crowd
    (``crowdkit``: ``largest``, a number of annotations, or None to leave it out). The
    largest crowd goes first so that crowd-kit's shards are the sample every run counts."""
    from dask.utils import parse_bytes

    sample_files = max(1, int(float(crowdkit)) // (5 * CHUNK_ITEMS)) if crowdkit and crowdkit != "largest" else 1
    budget = parse_bytes(WORKER_MEMORY)
    runs, ck = [], []
    for n in sorted(sizes, reverse=True):
        folder = Path(tempfile.mkdtemp(prefix="dsbuild-bench-label-"))
        try:
            start = time.perf_counter()
            total, n_items = write_large_crowd(folder, n // 5)
            made = time.perf_counter() - start
            files = len(list((folder / "items").iterdir()))
            if crowdkit == "largest" and not ck:
                ck, sample_files = crowdkit_largest(folder, files, budget)
            elif crowdkit and not ck:
                ck = [crowdkit_on_sample(folder, min(sample_files, files), budget)]
            sample = min(max(1, sample_files) * CHUNK_ITEMS, n_items)
            stage = large_run(folder, total, sample)
            runs.insert(0, {"annotations": total, "items": n_items, "generate s": made, **stage})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return runs, ck


def table(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = ""
    for row in frame.itertuples(index=False):
        body += "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
    return head + body


def by_size(rows: list[dict]) -> str:
    """One column per run: the large runs have more figures than fit across a page."""
    frame = pd.DataFrame(rows)
    head = "| | " + " | ".join(f"{n:,}" for n in frame["annotations"]) + " |\n|---|" + "---|" * len(frame) + "\n"
    body = ""
    for name in frame.columns[1:]:
        body += f"| {name} | " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in frame[name]) + " |\n"
    return head + body


def sizes_from_env(name: str, default: str) -> list[int]:
    return [int(float(v)) for v in os.environ.get(name, default).split(",") if v.strip()]


def run(quick: bool = False) -> str:
    from dask.utils import parse_bytes

    digits_y = __import__("sklearn.datasets", fromlist=["load_digits"]).load_digits().target
    adult = pd.read_csv(bundled_path("adult"), usecols=["income"])["income"]
    adult_y = (adult == ">50K").to_numpy().astype(np.int64)
    if quick:
        digits_y, adult_y = digits_y[:200], adult_y[:500]
    rng = np.random.default_rng(0)
    d_ann, _, _ = simulate_annotations(digits_y, 60, rng, **SPAM)
    a_ann, _, _ = simulate_annotations(adult_y, 300, np.random.default_rng(1), **SPAM)
    sparse, _, _ = simulate_annotations(digits_y, 400, np.random.default_rng(2), min_votes=1, max_votes=3, **SPAM)
    rare_y, rare_ann = rare_class_crowd(2_000 if quick else 10_000)
    sparse_rare_y, sparse_rare = rare_class_crowd(2_000 if quick else 10_000, n_annotators=400, min_votes=1, max_votes=3)
    acc = (accuracy_rows("digits (10 classes)", digits_y, d_ann, 60, 10) + accuracy_rows("Adult (2 classes)", adult_y, a_ann, 300, 2)
           + accuracy_rows("digits, sparse (400 annotators, 1-3 answers)", digits_y, sparse, 400, 10)
           + accuracy_rows("binary, 1 % class (100 annotators)", rare_y, rare_ann, 100, 2)
           + accuracy_rows("binary, 1 % class, sparse (400 annotators, 1-3 answers)", sparse_rare_y, sparse_rare, 400, 2))

    speed = [speed_at(5_000 if quick else 500_000)]
    sizes = [10_000] if quick else sizes_from_env("DSBUILD_BENCH_LABEL_ANNOTATIONS", "1000000,10000000")
    sample = os.environ.get("DSBUILD_BENCH_LABEL_CROWDKIT_ANNOTATIONS", "largest").strip()
    large, ck = large_scale(sizes, sample if HAVE_CROWDKIT and not quick else None)

    out = [
        "## Label aggregation (aggregate_labels) vs crowd-kit",
        "",
    ]
    if not HAVE_CROWDKIT:
        out += ["_crowd-kit is not installed (`pip install crowd-kit`): its columns are skipped._", ""]
    out += [
        "Accuracy against the true labels of simulated crowds (60 or 300 annotators with random "
        "confusion matrices, 3–7 answers per item, 20 % spammers, 10 % adversaries; the sparse "
        "crowd 400 annotators, 1–3 answers per item; the 1 % crowd 10,000 binary items of which 1 % "
        "are of one class, 100 annotators, or 400 with 1–3 answers per item). crowd-kit 1.4 `DawidSkene` / `OneCoinDawidSkene` "
        "at their defaults; dsbuild's stage on Dask with the same stopping rule, at its defaults "
        "(Dawid–Skene's confusion matrices smoothed and its first 5 rounds one-coin's, one-coin's class "
        "prior uniform for 3 rounds, so the rounds differ; `smoothing: 0, warm_start: 0` is crowd-kit's "
        "model). `Brier`: the mean squared gap between the chosen label's posterior and "
        "whether it is right (lower: confidences nearer the truth).",
        "",
        table(acc),
        "Time at 500 k: binary labels, 1,000 annotators, 5 answers per item on average. "
        "`kernel` is dsbuild's EM in one process; `stage` is `aggregate_labels` end to end on "
        "Dask's threaded scheduler (inventory pass, shuffle by item, the EM rounds, the join "
        "to the data). Iterations: crowd-kit / kernel / stage. Ratios are crowd-kit's time "
        "over ours (above 1: we are faster), timed back to back in one process.",
        "",
        table(speed),
        "At scale: `aggregate_labels` on a LocalCluster of 2 workers (1 thread each) with a 2 GB "
        "memory limit each, reading annotations and items from Parquet, accuracy counted on the "
        "workers. The same 1,000 annotators at every size; `accuracy on sample` is on the items "
        "crowd-kit is given below. `to first round` covers reading, the inventory, coding, the "
        "shuffle by item and the first round; per-round figures are medians over the later rounds, "
        "CPU seconds of every process (driver, scheduler, workers), which do not grow with the "
        "machine's load as wall seconds do; `after rounds` is the join to the data and the count. "
        "`peak worker` is the largest resident memory of either worker process (polled every 0.2 s).",
        "",
        by_size(large),
    ]
    if quick:
        out += ["_--quick: crowd-kit on a sample of the large crowd is left out (it is compared above)._", ""]
    elif ck:
        out += [
            "crowd-kit `DawidSkene` alone in a fresh process on the first items of the largest crowd "
            "(every answer of those items, 1 M annotations a shard); `CPU s` and `seconds` are its fit, "
            "`peak_gib` the process's peak resident memory, which includes reading the annotations "
            f"(`input_gib`: the peak before the fit). `fits`: the peak stays within {WORKER_MEMORY} "
            f"({parse_bytes(WORKER_MEMORY) / 2**30:.2f} GiB), the "
            "memory limit of one of the stage's workers above; a run that passes it is stopped there. "
            "`accuracy on sample` above is the stage's on the items of the largest run that fits."
            + (" It held the whole largest crowd: a larger one would find its limit."
               if ck[-1]["fits"] and ck[-1]["annotations"] == large[-1]["annotations"] else ""),
            "",
            table(ck),
        ]
    return "\n".join(out) + "\n"
