"""Augmentation speed: dsbuild's OpenCV transforms against Albumentations 2.0.8, and the
augment stage end to end against a loop that only decodes and re-encodes.

Per transform: the same 512×512 RGB photos, the same fixed parameters, one OpenCV
thread, each side called through its own pipeline object (our ``Compose``, their
``A.Compose``), so per-call overhead counts on both sides.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from statistics import median

import cv2
import numpy as np

from benchmarks import cpu_seconds
from dsbuild.kernels.images import Compose, transform_from_spec


def photos(n: int = 4) -> list[np.ndarray]:
    from skimage import data

    shots = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [cv2.resize(cv2.cvtColor(s, cv2.COLOR_RGB2BGR), (512, 512), interpolation=cv2.INTER_AREA) for s in shots[:n]]


def albumentations():
    """Import Albumentations without its optional torch bridge or update check."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # a broken torch install must not stop the import
    import albumentations as A

    return A


def pairs(A) -> list[tuple[str, dict | str, object]]:
    """(label, our spec, their transform) with the same fixed parameters."""
    const = cv2.BORDER_CONSTANT
    return [
        ("hflip", "hflip", A.HorizontalFlip(p=1)),
        ("vflip", "vflip", A.VerticalFlip(p=1)),
        ("rotate 30°", {"rotate": {"limit": [30, 30]}}, A.Rotate(limit=(30, 30), border_mode=const, p=1)),
        (
            "affine (scale 1.2, shift 5 %, rotate 15°, shear 10°)",
            {"affine": {"scale": [1.2, 1.2], "translate": [0.05, 0.05], "rotate": [15, 15], "shear": [10, 10]}},
            A.Affine(scale=(1.2, 1.2), translate_percent=(0.05, 0.05), rotate=(15, 15), shear=(10, 10), border_mode=const, p=1),
        ),
        ("random crop 256", {"random_crop": {"height": 256, "width": 256}}, A.RandomCrop(256, 256, p=1)),
        ("centre crop 256", {"center_crop": {"height": 256, "width": 256}}, A.CenterCrop(256, 256, p=1)),
        ("resize 256", {"resize": {"height": 256, "width": 256}}, A.Resize(256, 256, p=1)),
        (
            "random resized crop 256 (scale 0.5)",
            {"random_resized_crop": {"height": 256, "width": 256, "scale": [0.5, 0.5], "ratio": [1, 1]}},
            A.RandomResizedCrop(size=(256, 256), scale=(0.5, 0.5), ratio=(1, 1), p=1),
        ),
        (
            "brightness +0.2",
            {"brightness": {"limit": [0.2, 0.2]}},
            A.RandomBrightnessContrast(brightness_limit=(0.2, 0.2), contrast_limit=(0, 0), p=1),
        ),
        (
            "contrast +0.2",
            {"contrast": {"limit": [0.2, 0.2]}},
            A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(0.2, 0.2), p=1),
        ),
        ("gamma 1.5", {"gamma": {"limit": [1.5, 1.5]}}, A.RandomGamma(gamma_limit=(150, 150), p=1)),
        (
            "hue +10, saturation +20",
            {"hue_saturation": {"hue": [10, 10], "saturation": [20, 20], "value": [0, 0]}},
            A.HueSaturationValue(hue_shift_limit=(10, 10), sat_shift_limit=(20, 20), val_shift_limit=(0, 0), p=1),
        ),
        (
            "gaussian blur σ=2 (13×13)",
            {"gaussian_blur": {"sigma": [2, 2]}},
            A.GaussianBlur(blur_limit=(13, 13), sigma_limit=(2, 2), p=1),
        ),
        (
            "gaussian noise σ=0.05",
            {"gaussian_noise": {"std": [0.05, 0.05]}},
            A.GaussNoise(std_range=(0.05, 0.05), mean_range=(0, 0), per_channel=True, p=1),
        ),
        ("JPEG quality 80", {"jpeg": {"quality": [80, 80]}}, A.ImageCompression(quality_range=(80, 80), p=1)),
        (
            "cutout 4 holes of 10 %",
            {"cutout": {"holes": [4, 4], "size": [0.1, 0.1]}},
            A.CoarseDropout(num_holes_range=(4, 4), hole_height_range=(0.1, 0.1), hole_width_range=(0.1, 0.1), fill=0, p=1),
        ),
    ]


def seconds_per_image(run, images, budget: float) -> float:
    """CPU seconds of this thread per image, over whole passes until ``budget`` is spent.

    Thread CPU time, not wall time: on a shared machine a few-millisecond wall window
    measures the scheduler (whether another process got the core meanwhile), not the
    transform. With one OpenCV thread all the work runs on the calling thread.
    """
    run(images[0])
    done, start = 0, time.thread_time()
    while True:
        for img in images:
            run(img)
        done += len(images)
        spent = time.thread_time() - start
        if spent >= budget:
            return spent / done


def per_transform(quick: bool) -> str:
    try:
        A = albumentations()
    except ImportError:
        return "_Skipped: Albumentations is not installed (`pip install albumentations==2.0.8`)._\n"
    cv2.setNumThreads(1)
    images = photos()
    budget, rounds = (0.02, 2) if quick else (0.25, 5)
    rows = []
    for label, spec, theirs in pairs(A):
        ours = Compose([transform_from_spec(spec)])
        rng = np.random.default_rng(0)
        alb = A.Compose([theirs], seed=0)
        t_ours = t_alb = float("inf")
        for _ in range(rounds):  # interleave the sides so drifting conditions hit both
            t_ours = min(t_ours, seconds_per_image(lambda im: ours(im, rng), images, budget))
            t_alb = min(t_alb, seconds_per_image(lambda im: alb(image=im), images, budget))
        rows.append((label, 1 / t_ours, 1 / t_alb))
    lines = [
        "| transform | dsbuild img/s | Albumentations 2.0.8 img/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, ours, theirs in rows:
        lines.append(f"| {label} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}× |")
    worst = min(r[1] / r[2] for r in rows)
    return "\n".join(lines) + f"\n\nSlowest ratio: {worst:.2f}×.\n"


def run(quick: bool = False) -> str:
    size = e2e_size(quick)
    parts = [
        "## augment\n",
        "### Per transform, 512×512 RGB, one thread\n",
        "Four scikit-image photos resized to 512×512, fixed parameters on both sides, each side "
        "through its own pipeline object (`Compose` / `A.Compose`), best of interleaved rounds of "
        "thread CPU time. Resize and random resized crop are bilinear on both sides "
        "(`cv2.INTER_LINEAR`, Albumentations' default). Contrast differs in kind: ours scales "
        "about the image's mean grey, theirs about 0. Ratio = dsbuild / Albumentations (higher "
        "is faster).\n",
        per_transform(quick),
        "### End to end: Parquet → decode → three transforms → encode → Parquet\n",
        f"{size.images} distinct 512×512 JPEGs (q90) in row groups of {size.partition} "
        f"(one partition each), one augmented copy each (hflip, brightness, gamma), written as "
        f"{size.format}; against a plain loop that reads the same Parquet, decodes and re-encodes "
        f"each image as {size.format} and writes Parquet. The stage runs in a Dask graph "
        "(read_parquet → augment → to_parquet); `dsbuild.run` adds the job's source, ledger, "
        "rejects, manifest and report. Clusters are dsbuild's own (`runtime.local_cluster`, the "
        "worker setup). CPU is user+system seconds of every process (driver, scheduler, "
        "nannies, workers), which a shared machine does not inflate. Every run is repeated in "
        f"{size.rounds} interleaved rounds with the loop, and compared with the loop run of its own "
        "round (this machine's speed drifts by ±20 % over minutes); figures are medians over the "
        "rounds. Sizes: `DSBUILD_BENCH_AUGMENT_IMAGES`, `DSBUILD_BENCH_AUGMENT_PARTITION`, "
        "`DSBUILD_BENCH_AUGMENT_FORMAT` (jpeg, png, webp).\n",
        end_to_end(size),
        FINDINGS,
    ]
    return "\n".join(parts)


FINDINGS = """What the figures rest on:

- Per transform, both sides are timed in thread CPU time. An earlier record timed ~24
  calls of ~100 µs in wall time on a loaded machine and showed resize at 0.27×; both sides
  call `cv2.resize` with `INTER_LINEAR` (OpenCV takes its area-average path at an exact
  halving), and our per-call overhead is the smaller.
- Dask's nanny starts workers with `MALLOC_TRIM_THRESHOLD_=65536`, which also pins glibc's
  mmap threshold at 128 KiB: every decoded image and transform output was a fresh mmap, and
  the stage took ~1.5× the CPU in a worker that it takes in a plain process. The worker
  setup raises the thresholds (`runtime.keep_freed_buffers`).
- Brightness, contrast and gamma compose into one lookup table, applied in one pass; flips
  write in place once the pipeline owns the decoded image.
- An idle 2-worker cluster uses ~0.15 CPU-seconds per second on this machine (heartbeats,
  the 10 ms profiler, memory monitors), so when the machine is shared and wall time
  stretches, the cluster rows' CPU grows with it.
- `dsbuild.run` has a fixed cost per job of ~3 CPU-seconds, ~2.5 of them drawing the
  report's two matplotlib figures: amortised at real sizes, not at a few hundred images.
"""


# -- end to end -------------------------------------------------------------------------

E2E_TRANSFORMS = ["hflip", {"brightness": {"limit": [-0.2, 0.2]}}, {"gamma": {"limit": [0.8, 1.2]}}]
QUALITY = {"jpeg": 90, "webp": 90, "png": None}


@dataclass(frozen=True)
class Size:
    images: int
    partition: int
    format: str
    rounds: int
    workers: tuple[int, ...]


def e2e_size(quick: bool) -> Size:
    env = os.environ.get
    fmt = env("DSBUILD_BENCH_AUGMENT_FORMAT", "jpeg")
    if fmt not in QUALITY:
        raise ValueError(f"DSBUILD_BENCH_AUGMENT_FORMAT={fmt!r}: expected one of {sorted(QUALITY)}")
    return Size(
        images=int(env("DSBUILD_BENCH_AUGMENT_IMAGES", 32 if quick else 960)),
        partition=int(env("DSBUILD_BENCH_AUGMENT_PARTITION", 16 if quick else 96)),
        format=fmt,
        rounds=1 if quick else 3,
        workers=(2,) if quick else (1, 2),  # --quick: one cluster, to stay well under a minute
    )


def write_images(path, n: int, rows_per_group: int, quality: int = 90) -> None:
    """n distinct 512×512 JPEGs (q90) from the photos, shifted and flipped, in one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = photos()
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(n):
        img = np.roll(base[i % len(base)], int(rng.integers(0, 512)), axis=1)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        blobs.append(buf.tobytes())
    table = pa.table({"id": [f"img{i:05d}" for i in range(n)], "image": pa.array(blobs, pa.binary())})
    pq.write_table(table, path, row_group_size=rows_per_group)


def codec_loop(src, dst, fmt: str) -> None:
    """The limit: read, decode, re-encode in the same format, write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuild.kernels.decode import encode_image

    table = pq.read_table(src)
    out = []
    for blob in table.column("image").to_pylist():
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        out.append(encode_image(img, fmt, QUALITY[fmt]))
    pq.write_table(pa.table({"id": table.column("id"), "image": pa.array(out, pa.binary())}), dst)


def stage_run(src, dst, fmt: str, scheduler=None) -> None:
    """Parquet -> augment (one copy each, three transforms) -> Parquet, the copies only."""
    import dask
    import dask.dataframe as dd

    from dsbuild.stages.augment import Augment
    from dsbuild.stages.base import ADDED, REJECT, Roles, StageContext
    from dsbuild.stages.shapes import Shapes

    stage = Augment(transforms=E2E_TRANSFORMS, copies=1, format=fmt, quality=QUALITY[fmt])
    stage.bind(StageContext("augment", 0, Roles(image="image")))
    frame = dd.read_parquet(src, split_row_groups=True, dtype_backend="pyarrow")
    out = stage.build(frame, Shapes())
    out = out[out[ADDED]].drop(columns=[REJECT, ADDED, "_m_copies", "_m_undecodable"])
    with dask.config.set(scheduler=scheduler) if scheduler else contextlib.nullcontext():
        out.to_parquet(dst, write_index=False)


def job_run(src, dst, fmt: str, client) -> None:
    """The same through ``dsbuild.run``: parents and copies kept, ledger, manifest, report."""
    import dsbuild

    dsbuild.run(
        {
            "name": "bench-augment",
            "seed": 0,
            "source": {"format": "parquet", "path": str(src)},
            "columns": {"image": "image"},
            "stages": [{"augment": {"transforms": E2E_TRANSFORMS, "copies": 1, "format": fmt, "quality": QUALITY[fmt]}}],
            "sink": {"path": str(dst)},
        },
        client=client,
        overwrite=True,
    )


def measure(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def interleaved(runs: dict, rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Each of ``runs`` (one of them "loop") once per round, in an order that turns round
    by round, so every run has a loop run beside it. This machine's speed drifts by ±20 %
    over minutes (the same 200 decodes and encodes: 350-480 a second), so a run compares
    with the loop of its own round, not with one timed minutes apart."""
    names = list(runs)
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(measure(runs[name]))
    return out


def idle_rate(seconds: float) -> float:
    """CPU seconds per second that this process and its children use doing nothing
    (for a cluster: heartbeats, the workers' profiler, memory monitors)."""
    cpu = cpu_seconds()
    time.sleep(seconds)
    return (cpu_seconds() - cpu) / seconds


def end_to_end(size: Size) -> str:
    import shutil
    import tempfile
    from pathlib import Path

    from distributed import Client

    from dsbuild.runtime import DsbuildWorkerSetup, local_cluster

    cv2.setNumThreads(1)
    n, fmt = size.images, size.format
    tmp = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    counter = iter(range(10**6))

    def out() -> Path:
        return tmp / f"out{next(counter)}"

    try:
        src = tmp / "images.parquet"
        write_images(src, n, size.partition)
        loop = lambda: codec_loop(src, out(), fmt)
        idle, rounds = {}, {}
        for workers in size.workers:
            with local_cluster(workers, dashboard_address=None) as cluster, Client(cluster) as client:
                client.register_plugin(DsbuildWorkerSetup())
                stage_run(src, out(), fmt)  # warm: imports and connections in every worker
                idle[workers] = idle_rate(1.0 if size.rounds == 1 else 3.0)
                runs = {"loop": loop, f"stage{workers}": lambda: stage_run(src, out(), fmt),
                        f"job{workers}": lambda: job_run(src, out(), fmt, client)}
                if workers == size.workers[0]:
                    runs["sync"] = lambda: stage_run(src, out(), fmt, "synchronous")
                for name, timings in interleaved(runs, size.rounds).items():
                    rounds.setdefault(name, []).extend(timings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = {
        "loop": ("decode + re-encode loop (the limit)", 1),
        "sync": ("augment stage, Dask synchronous", 1),
        "stage1": ("augment stage, 1 worker", 1),
        "stage2": ("augment stage, 2 workers", 2),
        "job1": ("`dsbuild.run`, 1 worker", 1),
        "job2": ("`dsbuild.run`, 2 workers", 2),
    }
    first = size.workers[0]
    loops = {w: rounds["loop"][i * size.rounds : (i + 1) * size.rounds] for i, w in enumerate(size.workers)}
    lines = [
        "| run | images/s (median) | images/s per core | vs loop, per core | images per CPU-second "
        "| vs loop, CPU | vs loop, CPU less idle cluster |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    speedup = {}  # run -> median over its rounds of (loop's wall / its wall)
    for key, (label, cores) in labels.items():
        if key not in rounds:
            continue
        block = first if key in ("loop", "sync") else int(key[-1])
        pairs = list(zip(rounds[key], rounds["loop"] if key == "loop" else loops[block]))
        idle_cpu = idle[block] if key[-1].isdigit() else 0.0
        wall, cpu = median(w for (w, _), _ in pairs), median(c for (_, c), _ in pairs)
        speedup[key] = median(lw / w for (w, _), (lw, _) in pairs)
        per_cpu = median(lc / c for (_, c), (_, lc) in pairs)
        per_busy = median(lc / (c - idle_cpu * w) for (w, c), (_, lc) in pairs)
        lines.append(
            f"| {label} | {n / wall:,.0f} | {n / wall / cores:,.0f} | {speedup[key] / cores:.2f}× "
            f"| {n / cpu:,.0f} | {per_cpu:.2f}× | {per_busy:.2f}× |"
        )
    rates = ", ".join(f"{w} worker{'s' if w > 1 else ''} {r:.2f}" for w, r in sorted(idle.items()))
    table = "\n".join(lines) + f"\n\nIdle cluster CPU-seconds per second (measured after the warm-up run): {rates}.\n"
    if size.workers != (1, 2):
        return table
    return table + (
        f"2 workers / 1 worker (wall, each against the loop of its own rounds): augment stage "
        f"{speedup['stage2'] / speedup['stage1']:.2f}×, `dsbuild.run` {speedup['job2'] / speedup['job1']:.2f}×.\n"
    )
