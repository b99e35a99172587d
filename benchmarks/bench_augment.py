"""Augmentation speed: dsbuild's OpenCV transforms against Albumentations 2.0.8, and the
augment stage end to end against a loop that only decodes and re-encodes.

Per transform: the same 512×512 RGB photos, the same fixed parameters, one OpenCV
thread, each side called through its own pipeline object (our ``Compose``, their
``A.Compose``), so per-call overhead counts on both sides.
"""

from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np

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
    A = albumentations()
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
    parts = [
        "## augment\n",
        "### Per transform, 512×512 RGB, one thread\n",
        "Four scikit-image photos resized to 512×512, fixed parameters on both sides, each side "
        "through its own pipeline object (`Compose` / `A.Compose`), best of interleaved rounds. "
        "Ratio = dsbuild / Albumentations (higher is faster).\n",
        per_transform(quick),
        "### End to end: Parquet → decode → three transforms → encode → Parquet\n",
        f"{'32' if quick else '240'} distinct 512×512 JPEGs (q90), one augmented copy each "
        "(hflip, brightness, gamma), written as JPEG q90; against a plain loop that reads the "
        "same Parquet, decodes and re-encodes each image as JPEG q90 and writes Parquet. "
        "Includes Dask's graph and Parquet I/O; best of two runs.\n",
        end_to_end(quick),
    ]
    return "\n".join(parts)


# -- end to end -------------------------------------------------------------------------

E2E_TRANSFORMS = ["hflip", {"brightness": {"limit": [-0.2, 0.2]}}, {"gamma": {"limit": [0.8, 1.2]}}]


def write_images(path, n: int, quality: int = 90) -> None:
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
    pq.write_table(table, path, row_group_size=max(1, n // 8))


def codec_loop(src, dst, quality: int = 90) -> float:
    """The limit: read, decode, re-encode in the same format, write. Seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(src)
    out = []
    for blob in table.column("image").to_pylist():
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    pq.write_table(pa.table({"id": table.column("id"), "image": pa.array(out, pa.binary())}), dst)
    return time.perf_counter() - start


def stage_run(src, dst, scheduler=None) -> float:
    """Parquet -> augment (one copy each, three transforms, JPEG q90) -> Parquet. Seconds."""
    import dask
    import dask.dataframe as dd

    from dsbuild.stages.augment import Augment
    from dsbuild.stages.base import REJECT, Roles, Shapes, StageContext

    stage = Augment(transforms=E2E_TRANSFORMS, copies=1, format="jpeg", quality=90)
    stage.bind(StageContext("augment", 0, Roles(image="image")))
    start = time.perf_counter()
    frame = dd.read_parquet(src, split_row_groups=True, dtype_backend="pyarrow")
    out = stage.build(frame, Shapes())
    out = out[out["_added"]].drop(columns=[REJECT, "_added", "_m_copies", "_m_undecodable"])
    with dask.config.set(scheduler=scheduler) if scheduler else _nothing():
        out.to_parquet(dst, write_index=False)
    return time.perf_counter() - start


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def end_to_end(quick: bool) -> str:
    import shutil
    import tempfile
    from pathlib import Path

    from distributed import Client, LocalCluster

    cv2.setNumThreads(1)
    n = 32 if quick else 240
    tmp = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    try:
        src = tmp / "images.parquet"
        write_images(src, n)
        loop = min(codec_loop(src, tmp / f"loop{i}.parquet") for i in range(2))
        single = min(stage_run(src, tmp / f"sync{i}", "synchronous") for i in range(2))
        per_workers = {}
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
                client.run(cv2.setNumThreads, 1)
                stage_run(src, tmp / f"warm{workers}", None)
                per_workers[workers] = min(stage_run(src, tmp / f"w{workers}-{i}", None) for i in range(2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("decode + re-encode loop (the limit), 1 core", n / loop, 1.0),
        ("augment stage, Dask synchronous, 1 core", n / single, loop / single),
        ("augment stage, LocalCluster 1 worker", n / per_workers[1], loop / per_workers[1]),
        ("augment stage, LocalCluster 2 workers", n / per_workers[2], loop / per_workers[2]),
    ]
    lines = ["| run | images/s | vs the codec loop |", "|---|---:|---:|"]
    lines += [f"| {label} | {rate:,.0f} | {ratio:.2f}× |" for label, rate, ratio in rows]
    scaling = per_workers[1] / per_workers[2]
    return "\n".join(lines) + f"\n\n2 workers / 1 worker: {scaling:.2f}×.\n"
