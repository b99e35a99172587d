"""Real photos with injected near-copies: ground truth for near-duplicate detection.

Distinct images come from the photos bundled with scikit-image and scikit-learn (whole,
and as non-overlapping tiles), scikit-image's face patches and scikit-learn's digits.
Copies are edited the way copies are in the wild: re-encoded as JPEG at quality 30-90,
resized by up to ±30 %, brightened or darkened by up to 20 %, cropped by up to 5 %,
rotated by up to 3°, and (when asked) mirrored. Every random choice comes from the
copy's id, so the set is the same on every machine.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from dsbuild.kernels.decode import encode_image
from dsbuild.records import IMAGE_DTYPE, record_rng

PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page",
    "retina", "rocket", "text", "cell", "microaneurysms", "logo",
)
EDITS = ("jpeg", "resize", "brightness", "crop", "rotate", "mirror")


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return img


def photos() -> dict[str, np.ndarray]:
    """The bundled photos that load without a download, as BGR/gray uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {}
    for name in PHOTOS:
        try:
            out[name] = _bgr(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a photo that needs a download is skipped
            continue
    sample = load_sample_images()
    for fname, img in zip(sample.filenames, sample.images):
        out[fname.rsplit("/", 1)[-1].split(".")[0]] = _bgr(img)
    return out


def texture(img: np.ndarray) -> float:
    """Contrast of the 32×32 gray thumbnail: near-flat tiles (sky, black borders) are alike."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return float(cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).std())


def distinct_images(tile: int = 128, faces: bool = True, digits: int = 0, min_texture: float = 20.0) -> dict[str, np.ndarray]:
    """Distinct pictures: whole photos, their non-overlapping ``tile``-pixel tiles, faces, digits.

    Near-flat pictures (``texture`` below ``min_texture``) are left out: two black
    corners of the retina photo are the same picture, not distinct ones.
    """
    out: dict[str, np.ndarray] = {}
    for name, img in photos().items():
        out[name] = img
        h, w = img.shape[:2]
        if tile:
            for y in range(0, h - tile + 1, tile):
                for x in range(0, w - tile + 1, tile):
                    out[f"{name}@{y},{x}"] = img[y : y + tile, x : x + tile]
    if faces:
        import skimage.data

        for i, face in enumerate(skimage.data.lfw_subset()):
            out[f"lfw{i}"] = cv2.resize(_bgr(face), (64, 64), interpolation=cv2.INTER_CUBIC)
    if digits:
        from sklearn.datasets import load_digits

        for i, d in enumerate(load_digits().images[:digits]):
            out[f"digit{i}"] = cv2.resize((d * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC)
    return {k: v for k, v in out.items() if texture(v) >= min_texture}


def edit(img: np.ndarray, rng: np.random.Generator, edits: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """One near-copy: 1-3 random edits from ``edits``, then JPEG (q30-90) or PNG bytes."""
    chosen = [e for e in edits if e != "jpeg"]
    picks = list(rng.choice(chosen, size=min(len(chosen), int(rng.integers(1, 4))), replace=False)) if chosen else []
    out = img
    h, w = out.shape[:2]
    for e in picks:
        if e == "resize":
            f = rng.uniform(0.7, 1.3)
            out = cv2.resize(out, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        elif e == "brightness":
            out = np.clip(out.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        elif e == "crop":
            hh, ww = out.shape[:2]
            fy, fx = rng.uniform(0, 0.05, size=2)
            top, left = int(rng.uniform(0, fy) * hh), int(rng.uniform(0, fx) * ww)
            bottom, right = hh - int(fy * hh) + top, ww - int(fx * ww) + left
            out = out[top:bottom, left:right]
        elif e == "rotate":
            hh, ww = out.shape[:2]
            m = cv2.getRotationMatrix2D((ww / 2, hh / 2), rng.uniform(-3, 3), 1.0)
            out = cv2.warpAffine(out, m, (ww, hh), borderMode=cv2.BORDER_REFLECT)
        elif e == "mirror":
            out = out[:, ::-1]
    out = np.ascontiguousarray(out)
    if "jpeg" in edits and rng.random() < 0.7:
        q = int(rng.integers(30, 91))
        return encode_image(out, "jpeg", q), [*picks, f"jpeg{q}"]
    return encode_image(out, "png"), picks


def near_copy_frame(
    n_copies: int = 300,
    *,
    seed: int = 0,
    mirror: bool = False,
    tile: int = 128,
    faces: bool = True,
    digits: int = 0,
    limit: int | None = None,
) -> pd.DataFrame:
    """Frame of ``id``, ``image`` (bytes), ``group`` (the original's id), ``edits``.

    Originals are PNG; ``n_copies`` copies of originals chosen by ``seed`` follow.
    Two rows are true near-duplicates exactly when their ``group`` is equal.
    """
    bases = distinct_images(tile=tile, faces=faces, digits=digits)
    names = sorted(bases)
    if limit is not None:
        names = names[:limit]
    rows = [{"id": f"img-{n}", "image": encode_image(bases[n], "png"), "group": n, "edits": "original"} for n in names]
    edits = EDITS if mirror else tuple(e for e in EDITS if e != "mirror")
    picker = np.random.default_rng(seed)
    for k, idx in enumerate(picker.integers(0, len(names), size=n_copies)):
        name = names[idx]
        cid = f"copy{k}-{name}"
        data, applied = edit(bases[name], record_rng(seed, "near-copies", cid), edits)
        rows.append({"id": cid, "image": data, "group": name, "edits": "+".join(applied)})
    frame = pd.DataFrame(rows)
    frame["image"] = frame["image"].astype(IMAGE_DTYPE)
    return frame


def cropped_copy_frame(every: int = 3, cut: tuple[float, float] = (0.04, 0.07), seed: int = 0) -> pd.DataFrame:
    """The photos and their 128-px tiles (no faces: pictures under ``check_below`` get no
    crop windows), and of every ``every``-th a JPEG (q85) copy with a share drawn from
    ``cut`` cut off each side's length, at a drawn place: the crops a web scrape or a
    re-upload makes, which move a 32-px thumbnail past max_distance. Columns as
    :func:`near_copy_frame`'s."""
    bases = distinct_images(tile=128, faces=False)
    names = sorted(bases)
    rows = [{"id": f"img-{n}", "image": encode_image(bases[n], "png"), "group": n, "edits": "original"} for n in names]
    for n in names[::every]:
        img = bases[n]
        h, w = img.shape[:2]
        rng = record_rng(seed, "cropped-copies", n)
        fy, fx = rng.uniform(*cut, size=2)
        top, left = int(fy * h * rng.random()), int(fx * w * rng.random())
        out = np.ascontiguousarray(img[top : top + h - int(fy * h), left : left + w - int(fx * w)])
        rows.append({"id": f"crop-{n}", "image": encode_image(out, "jpeg", 85), "group": n, "edits": f"crop{fy:.3f}x{fx:.3f}+jpeg85"})
    frame = pd.DataFrame(rows)
    frame["image"] = frame["image"].astype(IMAGE_DTYPE)
    return frame


def dedup_scores(truth: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, float]:
    """Precision and recall of a dedup run against the ``group`` column of ``truth``.

    A rejected row is right when its group is the group of the row it names as kept
    (``duplicate-of=<id>``); recall is right rejections over the rows that should go
    (all rows but one per group).
    """
    group = dict(zip(truth["id"], truth["group"]))
    kept_of = rejected["reason"].str.split("=", n=1).str[1]
    right = sum(group[r] == group.get(k) for r, k in zip(rejected["id"], kept_of))
    should = len(truth) - truth["group"].nunique()
    return {
        "precision": right / len(rejected) if len(rejected) else 1.0,
        "recall": right / should if should else 1.0,
        "rejected": float(len(rejected)),
        "should_reject": float(should),
    }


TURNS = ("crop50", "crop70", "crop90", "rot90", "rot180", "rot270", "rot5", "crop80+rot5", "crop80+rot90")


def turned_copy_frame(side: int, turns: tuple[str, ...] = TURNS, seed: int = 0) -> pd.DataFrame:
    """scikit-image's photos with their shorter side made ``side`` pixels, and a JPEG (q85)
    copy of each for every one of ``turns``: ``cropN`` keeps N % of each side at a drawn
    place, ``rotN`` turns by N degrees (90, 180, 270 exactly; another angle about the
    centre, cropped to the largest upright rectangle inside, as a straightened photo is),
    ``crop80+rot5`` does both. Columns as :func:`near_copy_frame`'s, ``edits`` the turn."""
    import skimage.data

    bases = {}
    for name in PHOTOS:
        try:
            img = _bgr(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a photo that needs a download is left out
            continue
        h, w = img.shape[:2]
        scale = side / min(h, w)
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if texture(img) >= 20.0:
            bases[name] = img
    rows = [{"id": f"img-{n}", "image": encode_image(img, "png"), "group": n, "edits": "original"} for n, img in sorted(bases.items())]
    for name, img in sorted(bases.items()):
        for turn in turns:
            rng = record_rng(seed, "turned-copies", f"{name}/{turn}")
            out = img
            for step in turn.split("+"):
                out = _turn(out, step, rng)
            rows.append({"id": f"{turn}-{name}", "image": encode_image(np.ascontiguousarray(out), "jpeg", 85), "group": name,
                         "edits": turn})
    frame = pd.DataFrame(rows)
    frame["image"] = frame["image"].astype(IMAGE_DTYPE)
    return frame


def _turn(img: np.ndarray, step: str, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    if step.startswith("crop"):
        keep = int(step[4:]) / 100
        ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return img[top : top + ch, left : left + cw]
    angle = int(step[3:])
    if angle in (90, 180, 270):
        return np.rot90(img, angle // 90)
    angle *= rng.choice([-1, 1])
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(angle), 1.0)
    turned = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = np.radians(abs(angle))  # the largest upright rectangle inside the turned one, about the centre
    sin, cos = np.sin(a), np.cos(a)
    long, short = max(w, h), min(w, h)
    if short <= 2 * sin * cos * long:
        x = 0.5 * short
        iw, ih = (x / sin, x / cos) if w >= h else (x / cos, x / sin)
    else:
        cos2 = cos * cos - sin * sin
        iw, ih = (w * cos - h * sin) / cos2, (h * cos - w * sin) / cos2
    iw, ih = int(iw), int(ih)
    top, left = (h - ih) // 2, (w - iw) // 2
    return turned[top : top + ih, left : left + iw]
