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


def seconds_per_image(run, images, repeat: int, rounds: int) -> float:
    """Best of ``rounds`` of ``repeat`` passes over the images (least disturbed by others)."""
    run(images[0])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            for img in images:
                run(img)
        best = min(best, (time.perf_counter() - start) / (repeat * len(images)))
    return best


def per_transform(quick: bool) -> str:
    A = albumentations()
    cv2.setNumThreads(1)
    images = photos()
    repeat, rounds = (2, 2) if quick else (10, 7)
    rows = []
    for label, spec, theirs in pairs(A):
        ours = Compose([transform_from_spec(spec)])
        rng = np.random.default_rng(0)
        alb = A.Compose([theirs], seed=0)
        t_ours = t_alb = float("inf")
        for _ in range(rounds):  # interleave the sides so drifting load hits both
            t_ours = min(t_ours, seconds_per_image(lambda im: ours(im, rng), images, repeat, 1))
            t_alb = min(t_alb, seconds_per_image(lambda im: alb(image=im), images, repeat, 1))
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
    ]
    return "\n".join(parts)
