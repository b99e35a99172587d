"""Fixed-length feature vectors from image bytes, with OpenCV and no downloaded weights.

Sanitization needs a vector per image to measure distances. Three cheap, well-understood
descriptors: downscaled grey pixels (what the image looks like), HOG (shapes and edges,
Dalal & Triggs 2005) and colour histograms (palette). An undecodable image gives a row of
NaN, which standardisation maps to the mean. A 16-bit (or float) image is brought to 8 bits
by its type's range, as augment converts it, not stretched from its own darkest to its
brightest pixel: stretched, an image 50 times too dark had the features of a good one.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from dsbuild.kernels.decode import decode_image, to_uint8

KINDS = ("pixels", "hog", "color_hist")


def _grey(pixels: np.ndarray) -> np.ndarray:
    pixels = to_uint8(pixels)
    if pixels.ndim == 2:
        return pixels
    code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(pixels, code)


def _bgr(pixels: np.ndarray) -> np.ndarray:
    pixels = to_uint8(pixels)
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
