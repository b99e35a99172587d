"""Signatures for near duplicates: perceptual hashes of images and MinHash of texts, their
LSH band keys, and how a pair of them is verified."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsbuild.kernels import lsh as lsh_kernels
from dsbuild.kernels.hashing import (
    hamming,
    inverse_turn,
    perceptual_hashes,
    turn_codes,
)
from dsbuild.kernels.minhash import (
    EMPTY,
    MinHasher,
    bands_for_recall,
    set_similarity,
    shingle_hashes,
    signature_similarity,
)
from dsbuild.kernels.minhash import band_keys as minhash_band_keys
from dsbuild.records import image_blobs


class ImageSigner:
    """Perceptual hashes + bit-sampled (or pigeonhole) bands; verified by Hamming distance.

    Sampled bands are set so a pair at ``max_distance`` is found with probability 0.9
    by the bands alone; closer pairs, which most copies are, almost surely.

    Variants: 0 the picture as is, 1 mirrored (``mirror``), its quarter turns
    (``turns``: :func:`turn_codes`), then with ``crops`` its windows
    (:data:`CROP_WINDOWS`), each paired only with other pictures as they are and within
    :func:`crop_distance`: a window of one picture matching another whole.
    """

    MISS_AT_MAX = 0.1

    def __init__(self, column: str, kind: str, max_distance: int, mirror: bool, search: str, bands: int | None, band_bits: int, seed: int,
                 crops: bool = False, turns: bool = False):
        self.column, self.kind, self.max_distance, self.mirror, self.crops = column, kind, max_distance, mirror, crops
        self.turns = turns
        self.codes = np.array(turn_codes(mirror, turns), dtype=np.int8)
        self.first_window = len(self.codes)
        self.window_distance = crop_distance(max_distance)
        self.words = 2 if kind == "phash+dhash" else 1
        if search == "pigeonhole":
            self.masks = lsh_kernels.pigeonhole_masks(bands or max_distance + 1, self.words)
        else:
            n = bands or lsh_kernels.sampled_bands_for(max_distance, band_bits, self.MISS_AT_MAX, bits=64 * self.words)
            self.masks = lsh_kernels.sampled_masks(n, band_bits, seed, self.words)

    def sign(self, part: pd.DataFrame):
        """(ok, entries): entries[:, v] is the code of variant v (0 as is, then its other
        orientations and windows)."""
        images = image_blobs(part[self.column])
        hashes, ok = perceptual_hashes(images, self.kind, mirrored=self.mirror, crops=self.crops, turns=self.turns)
        entries = hashes.reshape(len(part), -1) if self.words == 1 else hashes if self.first_window > 1 or self.crops else hashes[:, None, :]
        return ok, entries

    def turn(self, variant_a: np.ndarray, variant_b: np.ndarray) -> np.ndarray:
        """What the pair's check compares, for a pair of variants of which one is 0 (as
        is): the :func:`turn_codes` code that puts picture b in a's orientation (b's own
        where b was turned to match, the inverse of a's where a was); for a window,
        ``B_WINDOW`` + its index where it is b's, ``A_WINDOW`` + it where it is a's."""
        def code(variant):
            return self.codes[np.minimum(variant, self.first_window - 1)]

        window_a, window_b = variant_a - self.first_window, variant_b - self.first_window
        out = np.where(variant_b != 0, code(variant_b), inverse_turn(code(variant_a)))
        out = np.where(window_b >= 0, B_WINDOW + window_b, np.where(window_a >= 0, A_WINDOW + window_a, out))
        return out.astype(np.int8)

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return lsh_kernels.band_keys(payload, self.masks)

    @property
    def band_count(self) -> int:
        return len(self.masks)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return hamming(a, b).astype(float)

    def close(self, a: np.ndarray, b: np.ndarray, variant: np.ndarray | int = 0) -> np.ndarray:
        """Within max_distance; a window's pair (``variant``, the larger of the pair's) within
        :func:`crop_distance`."""
        limit = np.where(np.asarray(variant) >= self.first_window, self.window_distance, self.max_distance)
        return self.distance(a, b) <= limit


B_WINDOW, A_WINDOW = 8, 64  # turn codes above: b's window 8 + k, a's 64 + k (CROP_WINDOWS = 18)


def crop_distance(max_distance: int) -> int:
    """How close a window of one picture must be to another picture: 7/10 of max_distance
    (14 of 20 bits). Each picture has 18 windows, each a chance for a distinct picture to
    come close: within 20 bits, distinct 128-px tiles of the brick and retina photos
    matched each other's windows, within 16 two brick tiles; within 14 none did, and
    every copy cropped by 4-7 % of a side was still found."""
    return max_distance * 7 // 10


class TextSigner:
    """MinHash signatures, bands from the threshold's S-curve; verified by the exact Jaccard
    similarity of the shingles where both texts have at most ``num_perm // 4`` of them,
    by the signatures' estimate otherwise.

    A short text's signature misjudges it: a few shingles leave most bins to be borrowed,
    and two that fall in one bin leave one value. Two titles of 3 shingles sharing 2
    (Jaccard 0.5) had equal signatures where each one's own shingle lost its bin to a
    shared one; pairs of texts of 10-30 words, one word apart (Jaccard 0.37-0.72), were
    judged above 0.8 in 0.5-3.2 % of cases. Their shingles ride after the signature
    (the payload grows by a quarter), so they are judged on what they hold.
    """

    def __init__(self, columns: list[str], num_perm: int, shingle: int, unit: str, threshold: float, seed: int,
                 normalize: bool = True, margin: float = 0.0):
        self.columns, self.shingle, self.unit, self.threshold = columns, shingle, unit, threshold
        self.margin = margin  # a pair estimated within it below the threshold is close too, to be checked exactly
        self.normalize = normalize
        self.hasher = MinHasher(num_perm, seed=seed)
        self.sets = num_perm // 4
        self.bands, self.rows = bands_for_recall(threshold, num_perm)  # candidates are verified: recall first

    def text(self, part: pd.DataFrame) -> list[str]:
        return joined_text(part, self.columns)

    def sign(self, part: pd.DataFrame):
        """A text without a word (empty, or only punctuation when normalized) has no
        shingle and is left out: two of them are not duplicates of each other."""
        payload = self.hasher(self.text(part), size=self.shingle, unit=self.unit, normalize=self.normalize, sets=self.sets)
        return (self._signature(payload) != EMPTY).any(axis=1), payload[:, None, :]

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return minhash_band_keys(self._signature(payload), self.bands, self.rows)

    def _signature(self, payload: np.ndarray) -> np.ndarray:
        return np.atleast_2d(payload)[:, : self.hasher.num_perm]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        exact, known = set_similarity(a[:, self.hasher.num_perm :], b[:, self.hasher.num_perm :])
        return np.where(known, exact, signature_similarity(self._signature(a), self._signature(b)))

    @property
    def band_count(self) -> int:
        return self.bands

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1.0 - self.similarity(a, b)

    def close(self, a: np.ndarray, b: np.ndarray, variant: np.ndarray | int = 0) -> np.ndarray:
        return self.similarity(a, b) >= self.threshold - self.margin

    def shingle_sets(self, part: pd.DataFrame, rows: np.ndarray) -> list[np.ndarray]:
        """The distinct shingle hashes of the texts of ``part`` at ``rows``, sorted, as
        the signatures shingle them."""
        hashes, doc = shingle_hashes(joined_text(part.iloc[rows], self.columns), size=self.shingle, unit=self.unit,
                                     normalize=self.normalize)
        cuts = np.searchsorted(doc, np.arange(1, len(rows)))
        return [np.unique(h) for h in np.split(hashes, cuts)]

    def turn(self, variant_a: np.ndarray, variant_b: np.ndarray) -> np.ndarray:
        return np.zeros(len(variant_a), dtype=np.int8)


def joined_text(part: pd.DataFrame, columns: list[str]) -> list[str]:
    """Each row's text: its fields joined by a space, a missing one empty."""
    if len(columns) == 1:
        return part[columns[0]].astype("string").fillna("").tolist()
    return part[columns].astype("string").fillna("").agg(" ".join, axis=1).tolist()
