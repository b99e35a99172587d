"""Banded locality-sensitive hashing over the bits of 64-bit hashes, and bucket pairs.

Exact ("pigeonhole") bands: split the 64 bits into ``bands`` disjoint groups; two
hashes within Hamming distance k differ in at most k groups, so with ``bands > k`` they
agree on at least one whole group and meet in its bucket. That guarantee costs buckets
of 64/(k+1) bits, which are crowded when k is large and the set is big, so sampled
bands (bit sampling, the classic LSH for Hamming space) trade the guarantee for a
chosen detection probability with ~20-bit buckets.
"""

from __future__ import annotations

from math import comb

import numpy as np

BITS = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: spreads every input bit over the whole output."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _masks(bit_sets, words: int) -> np.ndarray:
    """(bands, words) uint64 masks from lists of bit positions (bit b is in word b // 64)."""
    out = np.zeros((len(bit_sets), words), dtype=np.uint64)
    for band, bits in enumerate(bit_sets):
        for bit in bits:
            out[band, int(bit) // BITS] |= np.uint64(1) << np.uint64(int(bit) % BITS)
    return out


def pigeonhole_masks(bands: int, words: int = 1) -> np.ndarray:
    """``bands`` disjoint contiguous bit masks covering all ``64 * words`` bits."""
    bits = BITS * words
    if not 1 <= bands <= bits:
        raise ValueError(f"bands must be in 1..{bits}, got {bands}")
    edges = np.linspace(0, bits, bands + 1).round().astype(int)
    return _masks([range(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])], words)


def sampled_masks(bands: int, rows: int, seed: int = 0, words: int = 1) -> np.ndarray:
    """``bands`` masks of ``rows`` bit positions each, drawn once from ``seed``."""
    rng = np.random.default_rng(seed)
    return _masks([rng.choice(BITS * words, size=rows, replace=False) for _ in range(bands)], words)


def band_hit_probability(distance: int, rows: int, bits: int = BITS) -> float:
    """Chance that a band of ``rows`` sampled bits misses all ``distance`` differing bits."""
    if rows > bits - distance:
        return 0.0
    return comb(bits - distance, rows) / comb(bits, rows)


def sampled_bands_for(max_distance: int, rows: int = 20, miss: float = 0.05, bits: int = BITS) -> int:
    """Fewest bands so a pair at ``max_distance`` is missed with probability <= ``miss``.

    Closer pairs are missed far less often (at half the distance, about ``miss**4``), and
    connected components recover most of the rest through the other copies.
    """
    p = band_hit_probability(max_distance, rows, bits)
    if p <= 0:
        raise ValueError(f"rows={rows} leaves no chance at distance {max_distance}")
    if p >= 1:
        return 1
    return max(1, int(np.ceil(np.log(miss) / np.log1p(-p))))


def band_keys(hashes: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(n, bands) bucket keys: the masked bits mixed with the band number.

    ``hashes`` is (n,) for 64-bit codes or (n, words) for longer ones, with ``masks``
    (bands,) or (bands, words) to match.
    """
    masks = np.asarray(masks, dtype=np.uint64).reshape(len(masks), -1)
    words = masks.shape[1]
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, words)
    with np.errstate(over="ignore"):
        key = np.broadcast_to(mix64(np.arange(1, len(masks) + 1, dtype=np.uint64) * _GOLDEN), (len(hashes), len(masks)))
        for w in range(words):
            key = mix64(key ^ (hashes[:, w : w + 1] & masks[None, :, w]))
        return key


def bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of rows that share a key, each pair once per shared key.

    Sort once, then walk offsets 1, 2, ... inside runs of equal keys; the work is the
    number of pairs plus one pass per offset over the rows still in a long enough run.
    """
    keys = np.asarray(keys)
    if len(keys) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    left_parts, right_parts = [], []
    alive = np.arange(len(keys) - 1)
    offset = 1
    while len(alive):
        alive = alive[alive + offset < len(keys)]
        alive = alive[sorted_keys[alive] == sorted_keys[alive + offset]]
        if len(alive):
            i, j = order[alive], order[alive + offset]
            left_parts.append(np.minimum(i, j))
            right_parts.append(np.maximum(i, j))
        offset += 1
    if not left_parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(left_parts).astype(np.int64), np.concatenate(right_parts).astype(np.int64)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (a, b) index pairs (found in more than one band)."""
    if len(a) == 0:
        return a, b
    packed = np.unique(np.asarray(a, dtype=np.int64) << np.int64(32) | np.asarray(b, dtype=np.int64))
    return packed >> np.int64(32), packed & np.int64(0xFFFFFFFF)
