"""Fixed-length feature vectors from image bytes, with OpenCV and no downloaded weights,
and from categorical columns (one-hot, :class:`CategoryCounts`).

Sanitization needs a vector per image to measure distances. Three cheap, well-understood
descriptors: downscaled grey pixels (what the image looks like), HOG (shapes and edges,
Dalal & Triggs 2005) and colour histograms (palette). An undecodable image gives a row of
NaN, which standardisation maps to the mean. A 16-bit (or float) image is brought to 8 bits
by its type's range, as augment converts it, not stretched from its own darkest to its
brightest pixel: stretched, an image 50 times too dark had the features of a good one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from dsbuild.kernels.decode import decode_image, levels_problem, to_uint8

KINDS = ("pixels", "hog", "color_hist")


def _levels(pixels: np.ndarray) -> np.ndarray:
    """8-bit levels to take features of. A float image outside 0-1 (0-255 levels, a depth
    map) and a 32-bit integer one are scaled from their own finite range: to_uint8 reads
    floats as 0-1 and int32 by its dtype's range, which made such images all white or flat
    grey, one feature vector for all of them. Their own range hides an image too dark as a
    whole (which 8- and 16-bit images keep), but they have no 8-bit scale to keep."""
    if levels_problem(pixels, "png") is None:  # 8 or 16 bits, or floats in 0-1
        return to_uint8(pixels)
    values = pixels.astype(np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = (np.where(finite, values, low) - low) * (255.0 / (high - low) if high > low else 0.0)
    return np.rint(scaled).astype(np.uint8)


def _grey(pixels: np.ndarray) -> np.ndarray:
    pixels = _levels(pixels)
    if pixels.ndim == 2:
        return pixels
    code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(pixels, code)


def _bgr(pixels: np.ndarray) -> np.ndarray:
    pixels = _levels(pixels)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR) if pixels.shape[2] == 4 else pixels


def grey_pixels(pixels: np.ndarray, side: int = 16) -> np.ndarray:
    """The image shrunk to side x side grey levels in [0, 1] (area interpolation)."""
    small = cv2.resize(_grey(pixels), (side, side), interpolation=cv2.INTER_AREA)
    return small.astype(np.float64).ravel() / 255.0


def hog(pixels: np.ndarray, side: int = 32) -> np.ndarray:
    """HOG of the image resized to side x side: 8-pixel cells, 2x2-cell blocks, 9 bins.

    OpenCV 5 dropped ``HOGDescriptor`` from its main modules, so the descriptor itself
    comes from scikit-image (same layout and L2-Hys block normalisation).
    """
    from skimage.feature import hog as skimage_hog

    side = max(16, side - side % 8)
    small = cv2.resize(_grey(pixels), (side, side), interpolation=cv2.INTER_AREA)
    return skimage_hog(
        small, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True
    ).astype(np.float64)


def color_histogram(pixels: np.ndarray, bins: int = 8) -> np.ndarray:
    """Joint B, G, R histogram with ``bins`` levels per channel, as fractions of pixels."""
    bgr = _bgr(pixels)
    hist = cv2.calcHist([bgr], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
    return hist.astype(np.float64) / max(hist.sum(), 1.0)


def feature_length(kind: str, size: int) -> int:
    if kind == "pixels":
        return size * size
    if kind == "hog":
        side = max(16, size - size % 8)
        blocks = (side - 16) // 8 + 1
        return blocks * blocks * 4 * 9
    if kind == "color_hist":
        return size**3
    raise ValueError(f"unknown image feature {kind!r}; choose from {KINDS}")


def image_features(images: Iterable[bytes | None], kind: str = "hog", size: int | None = None) -> np.ndarray:
    """(n, d) feature matrix for encoded images; NaN rows for images that do not decode."""
    size = size or {"pixels": 16, "hog": 32, "color_hist": 8}[kind]
    fn = {"pixels": grey_pixels, "hog": hog, "color_hist": color_histogram}[kind]
    d = feature_length(kind, size)
    rows = []
    for data in images:
        pixels = decode_image(data) if data is not None and len(data) else None
        rows.append(np.full(d, np.nan) if pixels is None or pixels.size == 0 else fn(pixels, size))
    return np.vstack(rows) if rows else np.zeros((0, d))


MAX_DISTINCT = 10_000  # distinct values of one categorical feature counted before it is called an id or free text


@dataclass
class CategoryCounts:
    """Rows per value of each categorical feature column, whole numbers merged across
    partitions, so the one-hot columns chosen from them (:meth:`encoder`) are the same at
    any partitioning. A column with more than ``MAX_DISTINCT`` values keeps only that mark
    (``None``): its counts would fill the driver and it is no category.

    Not :class:`dsbuild.kernels.copula.CategoryCounts`, which synthesize samples from: that
    one counts values by their text, without a bound (every category is a value to draw);
    this one stops counting a column at the bound, and keys the cells as they are, which
    :class:`OneHot` then looks up."""

    counts: dict[str, dict | None]

    @classmethod
    def of(cls, part: pd.DataFrame, columns: list[str]) -> CategoryCounts:
        counts: dict[str, dict | None] = {}
        for c in columns:
            try:
                values = part[c].astype(object).dropna().value_counts(sort=False)
            except TypeError:  # unhashable cells (lists): no category either
                values = None
            counts[c] = None if values is None or len(values) > MAX_DISTINCT else {k: int(v) for k, v in values.items()}
        return cls(counts)

    def merge(self, other: CategoryCounts) -> CategoryCounts:
        out: dict[str, dict | None] = {}
        for c, a in self.counts.items():
            b = other.counts[c]
            if a is None or b is None:
                out[c] = None
                continue
            merged = dict(a)
            for k, v in b.items():
                merged[k] = merged.get(k, 0) + v
            out[c] = None if len(merged) > MAX_DISTINCT else merged
        return CategoryCounts(out)

    def too_many(self) -> list[str]:
        return [c for c, counts in self.counts.items() if counts is None]

    def encoder(self, max_categories: int) -> OneHot:
        """scikit-learn's ``OneHotEncoder(max_categories=...)``: a column per value, or,
        past ``max_categories`` values, one per most frequent value (ties by the value's
        text) and one more for all the others."""
        categories = {}
        for c, counts in self.counts.items():
            ranked = sorted(counts, key=lambda v: (-counts[v], str(v)))
            kept = ranked if len(ranked) <= max_categories else ranked[: max_categories - 1]
            categories[c] = (sorted(kept, key=str), len(kept) < len(ranked))
        return OneHot(categories)


@dataclass
class OneHot:
    """Indicator columns of categorical features, in the column order given, each
    column's values sorted by their text, then its ``infrequent`` column where it has one.
    A missing cell is missing (NaN) in each of its column's indicators, as a missing number
    is: the standardizer counts it as the mean."""

    categories: dict[str, tuple[list, bool]]  # column -> (values with a column of their own, whether others share one)

    def width(self) -> int:
        return sum(len(values) + infrequent for values, infrequent in self.categories.values())

    def names(self) -> list[str]:
        return [f"{c}={v}" for c, (values, infrequent) in self.categories.items()
                for v in [*values, *(["infrequent"] if infrequent else [])]]

    def transform(self, part: pd.DataFrame) -> np.ndarray:
        blocks = []
        for c, (values, infrequent) in self.categories.items():
            cells = part[c].astype(object)
            codes = pd.Index(values, dtype=object).get_indexer(cells.to_numpy(dtype=object))
            block = np.zeros((len(cells), len(values) + infrequent))
            seen = codes >= 0
            block[np.flatnonzero(seen), codes[seen]] = 1.0
            if infrequent:
                block[~seen, -1] = 1.0
            block[cells.isna().to_numpy()] = np.nan
            blocks.append(block)
        return np.hstack(blocks) if blocks else np.zeros((len(part), 0))
