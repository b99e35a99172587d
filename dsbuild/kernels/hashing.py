"""Content hashes of rows and images, the same in every process and release.

Exact duplicates are found by equal hashes, so a hash must not depend on the process
(Python's ``hash`` is salted) nor on how a picture was stored: image content is hashed
over decoded pixels, so the same picture saved twice with different metadata matches.

Perceptual hashes (pHash, dHash) are 64-bit fingerprints that stay close in Hamming
distance when an image is re-encoded, resized, brightened or slightly cropped.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dsbuild.kernels.decode import decode_image
from dsbuild.kernels.dtypes import CONTAINERS, canonical_text
from dsbuild.records import image_size, sniff_image_format

ROW_KEY = "dsbuild-rowhash1"
CHECK_KEY = "dsbuild-rowhash2"
MISSING_IMAGE = np.uint64(0x9E3779B97F4A7C15)


# -- exact content hashes --------------------------------------------------------------


def row_hashes(frame: pd.DataFrame, columns: list[str] | None = None, key: str = ROW_KEY) -> np.ndarray:
    """One uint64 per row over the values of ``columns`` (default all), stable everywhere.

    pandas' SipHash with a fixed key: equal values give equal hashes in any process.
    Hash with two different ``key`` values for a 128-bit check against collisions.
    pandas hashes numbers without the key, so any key but ``ROW_KEY`` also combines
    the columns in reverse order: a different function even for all-numeric rows.
    """
    cols = list(frame.columns) if columns is None else list(columns)
    if not cols:
        return np.zeros(len(frame), dtype=np.uint64)
    sub = frame[cols if key == ROW_KEY else cols[::-1]]
    try:
        hashed = pd.util.hash_pandas_object(sub, index=False, hash_key=key, categorize=True)
    except TypeError:  # lists, arrays or dicts in a column (Arrow list and struct types)
        hashed = pd.util.hash_pandas_object(_nested_as_text(sub), index=False, hash_key=key, categorize=True)
    return hashed.to_numpy(dtype=np.uint64)


def _nested_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each column that holds lists, arrays or dicts (which pandas cannot
    hash) as their :func:`canonical_text`, encoded as pandas encodes a column it hashes:
    a categorical of the distinct values in the order they come, a missing one as code -1."""
    nested = {}
    for c in frame.columns:
        if frame[c].dtype == object and _holds_containers(frame[c]):
            codes, uniques = pd.factorize(np.asarray(frame[c].map(canonical_text), dtype=object))
            nested[c] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(pd.Index(uniques, dtype=object)), validate=False)
    return frame.assign(**nested) if nested else frame


def row_hash_pair(frame: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`row_hashes` with ``ROW_KEY`` and with ``CHECK_KEY``, each text column
    dictionary-encoded, and each nested one written as text, once for both.

    pandas hashes an Arrow text column by encoding it (its distinct values hashed, then
    taken by code), and each key encoded every column again: half of the two hashes' CPU.
    A categorical is hashed from its categories the same way, so the hashes are the ones
    :func:`row_hashes` gives the column as it is. A list or struct column was written as
    JSON text for each key, after a failed try: its hashes cost three times a text column's."""
    encoded = _nested_as_text(frame[list(columns)])
    text = {c: _encoded_text(encoded[c]) for c in encoded.columns if _is_arrow_text(encoded[c])}
    if text:
        encoded = encoded.assign(**text)
    return row_hashes(encoded, columns, key=ROW_KEY), row_hashes(encoded, columns, key=CHECK_KEY)


def _is_arrow_text(col: pd.Series) -> bool:
    values = col.array
    return isinstance(values, pd.arrays.ArrowExtensionArray) and (
        pa.types.is_string(values._pa_array.type) or pa.types.is_large_string(values._pa_array.type))


def _encoded_text(col: pd.Series) -> pd.Categorical:
    """The column as a categorical of its distinct values (a missing value as code -1)."""
    encoded = pc.dictionary_encode(col.array._pa_array).combine_chunks()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    categories = pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories), validate=False)


def _holds_containers(col: pd.Series) -> bool:
    return any(isinstance(v, CONTAINERS) for v in col)


def bytes_digest(data: bytes | None, salt: bytes = b"") -> np.uint64:
    """A 64-bit BLAKE2b digest of raw bytes (missing data has its own fixed value)."""
    if data is None:
        return MISSING_IMAGE
    return np.uint64(int.from_bytes(hashlib.blake2b(data, digest_size=8, key=salt).digest(), "little"))


def canonical_pixels(pixels: np.ndarray) -> np.ndarray:
    """The picture rather than its channel layout: an alpha channel opaque everywhere is
    dropped, and colour channels equal everywhere become one grey channel. Each is a
    lossless choice of the file, not of the picture: WebP has no grey mode, so a grey PNG
    saved as lossless WebP decodes to three equal channels, and exact_dedup, which says
    it matches "identical pixels, whatever the file bytes", kept both (4 of 10 grey
    scikit-image pictures next to their WebP copies); an RGBA PNG of an opaque picture
    did not match its RGB PNG either."""
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        opaque = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0
        if (pixels[..., -1] == opaque).all():
            pixels = pixels[..., :-1]
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        colour = pixels[..., :3]
        if (colour[..., 0] == colour[..., 1]).all() and (colour[..., 1] == colour[..., 2]).all():
            pixels = np.concatenate([colour[..., :1], pixels[..., 3:]], axis=2)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    return pixels


def pixel_digest(pixels: np.ndarray | None, salt: bytes = b"") -> np.uint64:
    """A 64-bit digest of decoded pixels with their shape, blind to how they were stored
    (the file's format, and its channel layout: :func:`canonical_pixels`)."""
    if pixels is None:
        return MISSING_IMAGE
    pixels = canonical_pixels(pixels)
    h = hashlib.blake2b(digest_size=8, key=salt)
    h.update(repr((pixels.shape, pixels.dtype.str)).encode())
    h.update(np.ascontiguousarray(pixels).data)
    return np.uint64(int.from_bytes(h.digest(), "little"))


def image_content_hashes(images, *, pixels: bool = True, salt: bytes = b"") -> np.ndarray:
    """uint64 per encoded image: over decoded pixels (default), or over the raw bytes.

    Undecodable bytes fall back to the raw-byte digest, so two copies of the same broken
    file still match each other and nothing else.
    """
    return salted_image_hashes(images, pixels=pixels, salts=(salt,))[0]


def salted_image_hashes(images, *, pixels: bool = True, salts: tuple[bytes, ...] = (b"",)) -> np.ndarray:
    """:func:`image_content_hashes` with each of ``salts``, a row each, every image decoded
    once for all of them: exact_dedup's two keys decoded every image twice."""
    out = np.empty((len(salts), len(images)), dtype=np.uint64)
    for i, data in enumerate(images):
        decoded = decode_image(data) if data is not None and pixels else None
        for j, salt in enumerate(salts):
            out[j, i] = pixel_digest(decoded, salt) if decoded is not None else bytes_digest(data, salt)
    return out


# -- perceptual hashes ----------------------------------------------------------------

PHASH_SIDE = 32
PHASH_KEEP = 8
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix, so ``D @ X @ D.T`` equals ``cv2.dct(X)``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_DCT_LOW = dct_matrix(PHASH_SIDE)[:PHASH_KEEP]
# Mirroring an image left-right multiplies DCT column frequency v by (-1)**v.
_MIRROR_SIGNS = np.where(np.arange(PHASH_KEEP) % 2 == 0, 1.0, -1.0).astype(np.float32)[None, None, :]


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """Single-channel uint8/float view of any OpenCV image (gray, BGR, BGRA, 16-bit)."""
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 3:
        if pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        elif pixels.shape[2] == 4:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY)
        else:
            pixels = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2GRAY)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return pixels


def thumbnails(images: list[np.ndarray], side: int = PHASH_SIDE) -> np.ndarray:
    """Gray ``side``×``side`` float32 stack (area-averaged), the input of pHash and dHash."""
    out = np.empty((len(images), side, side), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = cv2.resize(halve_to(to_gray(img), side), (side, side), interpolation=cv2.INTER_AREA)
    return out


def halve_to(gray: np.ndarray, side: int) -> np.ndarray:
    """Halve (2×2 means) while both sides stay at least ``side``.

    OpenCV's area resize by exactly 2 is a fast vectorised path, while its general
    area resize of a large image to a tiny one is up to ~40× slower; halving first and
    area-resizing the last factor below 2 gives nearly the same means. An odd side is
    padded by repeating its edge rather than cropped, so copies do not shift.
    """
    h, w = gray.shape[:2]
    while min(h, w) >= 2 * side:
        if h % 2 or w % 2:
            gray = cv2.copyMakeBorder(gray, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        gray = cv2.resize(gray, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        h, w = gray.shape[:2]
    return gray


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(n, 64) booleans -> n uint64, first bit most significant."""
    return (bits.reshape(len(bits), 64).astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash_from_thumbnails(thumbs: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """64-bit pHash of 32×32 thumbnails: low 8×8 DCT coefficients above their median.

    The DCT is done as two batched matrix products (``D8 @ X @ D8.T``), which equals the
    top-left block of ``cv2.dct`` per image and runs as one BLAS call for the batch.
    ``mirrored`` gives the hash of each image flipped left-right, from the same DCT.
    """
    if len(thumbs) == 0:
        return np.zeros(0, dtype=np.uint64)
    low = _DCT_LOW @ thumbs.astype(np.float32) @ _DCT_LOW.T
    if mirrored:
        low = low * _MIRROR_SIGNS
    flat = low.reshape(len(low), -1)
    median = np.median(flat, axis=1, keepdims=True)
    return pack_bits(flat > median)


def area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights that average ``n_in`` samples into ``n_out`` equal bins by overlap.

    ``A @ X @ B.T`` is an area resize (what ``cv2.INTER_AREA`` computes), batched.
    """
    edges = np.linspace(0.0, n_in, n_out + 1)
    j = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], j + 1) - np.maximum(edges[:-1, None], j)
    return (np.clip(overlap, 0, None) * (n_out / n_in)).astype(np.float32)


_DHASH_ROWS = area_matrix(8, PHASH_SIDE)
_DHASH_COLS = area_matrix(9, PHASH_SIDE)


def dhash_from_thumbnails(thumbs: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """64-bit difference hash: is each pixel of a 9×8 thumbnail brighter than its right neighbour.

    The 9×8 thumbnail is an area resize of pHash's 32×32 one, done for the whole batch
    as two matrix products, so dHash costs no extra pass over the pixels. Means are
    rounded to whole grey levels as OpenCV's uint8 resize does, so near-flat regions
    give stable ties (0 bits) instead of bits that flip with float noise.
    """
    if len(thumbs) == 0:
        return np.zeros(0, dtype=np.uint64)
    small = np.rint(_DHASH_ROWS @ thumbs.astype(np.float32) @ _DHASH_COLS.T)
    if mirrored:
        small = small[:, :, ::-1]
    return pack_bits(small[:, :, 1:] > small[:, :, :-1])


def decode_for_hash(data: bytes | None, side: int = PHASH_SIDE) -> np.ndarray | None:
    """Gray pixels decoded at the smallest JPEG scale still at least ``side``×``side``.

    A perceptual hash only needs a thumbnail; JPEG can decode at 1/2, 1/4 or 1/8 size
    directly, which skips most of the decoding work.
    """
    if not data:
        return None
    flags = cv2.IMREAD_GRAYSCALE
    if sniff_image_format(data) == "jpeg":
        size = image_size(data)
        if size is not None:
            for factor, flag in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
                if min(size) // factor >= side * 2:
                    flags = flag
                    break
    return decode_image(data, flags)


# Windows of a picture hashed beside it, so a crop of it is found: a copy cut by up to ~7 %
# of a side (3 % and 7 % off, at 3 x 3 positions). A crop moves what the 32-px thumbnail
# shows, and a copy cut by 5 % had drifted past max_distance from its original.
CROP_SCALES = (0.97, 0.93)
CROP_PLACES = (0.0, 0.5, 1.0)
CROP_WINDOWS = len(CROP_SCALES) * len(CROP_PLACES) ** 2


def crop_thumbnails(images: list[np.ndarray], side: int = PHASH_SIDE) -> np.ndarray:
    """(n, CROP_WINDOWS, side, side) thumbnails of each picture's windows
    (:data:`CROP_SCALES` of each side at :data:`CROP_PLACES`), cut from the picture
    halved to at least four times ``side``: the windows' edges are within a pixel of
    a full-size cut at an eighth of the cost for a photo."""
    out = np.empty((len(images), CROP_WINDOWS, side, side), dtype=np.float32)
    for i, img in enumerate(images):
        gray = halve_to(to_gray(img), 4 * side)
        h, w = gray.shape[:2]
        k = 0
        for scale in CROP_SCALES:
            wh, ww = max(1, round(h * scale)), max(1, round(w * scale))
            for fy in CROP_PLACES:
                for fx in CROP_PLACES:
                    y, x = round((h - wh) * fy), round((w - ww) * fx)
                    out[i, k] = cv2.resize(gray[y : y + wh, x : x + ww], (side, side), interpolation=cv2.INTER_AREA)
                    k += 1
    return out


def perceptual_hashes(images, kind: str = "phash", mirrored: bool = False, crops: bool = False,
                      turns: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, ok) for encoded images; ``ok`` is False where bytes did not decode.

    With ``mirrored`` the result has two columns: the hash and the hash of the mirror;
    with ``turns`` the picture's quarter turns follow (:func:`turn_codes`); with ``crops``
    :data:`CROP_WINDOWS` more, the hashes of the picture's windows (:func:`crop_thumbnails`).
    """
    if kind == "phash+dhash":
        return combined_hashes(images, mirrored, crops, turns)
    if kind not in ("phash", "dhash"):
        raise ValueError(f"unknown perceptual hash {kind!r}; use phash, dhash or phash+dhash")
    if crops or turns:
        pairs, ok = combined_hashes(images, mirrored, crops, turns)
        return pairs[..., 0 if kind == "phash" else 1], ok
    decoded = [decode_for_hash(data) for data in images]
    ok = np.array([d is not None for d in decoded], dtype=bool)
    good = [d for d in decoded if d is not None]
    n = len(decoded)
    out = np.zeros((n, 2 if mirrored else 1), dtype=np.uint64)
    if good:
        thumbs = thumbnails(good)
        hash_of = phash_from_thumbnails if kind == "phash" else dhash_from_thumbnails
        out[ok, 0] = hash_of(thumbs)
        if mirrored:
            out[ok, 1] = hash_of(thumbs, mirrored=True)
    return (out if mirrored else out[:, 0]), ok


def turn_codes(mirrored: bool, turns: bool) -> list[int]:
    """The orientations hashed, in order, as codes: quarter turns counter-clockwise (0-3)
    plus 4 where the turned picture is then mirrored left-right. As is (0), mirrored (4)
    with ``mirrored``, then with ``turns`` the turns by 90, 180 and 270 degrees (and, with
    ``mirrored`` too, each mirrored: all eight)."""
    flips = (0, 4) if mirrored else (0,)
    return list(flips) + ([flip + k for flip in flips for k in (1, 2, 3)] if turns else [])


def turned(thumb: np.ndarray, code: int) -> np.ndarray:
    """A thumbnail in the orientation of :func:`turn_codes`' ``code``. A thumbnail squashed
    to a square turns as the picture does: resizing each axis commutes with a quarter turn."""
    out = np.rot90(thumb, code % 4, axes=(-2, -1))
    return np.ascontiguousarray(out[..., ::-1] if code >= 4 else out)


def inverse_turn(code: np.ndarray) -> np.ndarray:
    """The code that undoes ``code``: a turn by k quarters, one by 4 - k; a mirrored one is
    its own (a reflection)."""
    code = np.asarray(code)
    return np.where(code >= 4, code, (4 - code) % 4).astype(np.int8)


def combined_hashes(images, mirrored: bool = False, crops: bool = False, turns: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) pHash and dHash side by side (a 128-bit code); with ``mirrored``, ``turns``
    or ``crops`` (n, variants, 2): the orientations of :func:`turn_codes`, then the windows
    (:func:`crop_thumbnails`).

    The two look at different things (low frequencies, local gradients), so distinct
    pictures rarely come close on both: their summed distance separates copies from
    look-alikes better than either alone.
    """
    decoded = [decode_for_hash(data) for data in images]
    ok = np.array([d is not None for d in decoded], dtype=bool)
    good = [d for d in decoded if d is not None]
    orientations = turn_codes(mirrored, turns)
    out = np.zeros((len(decoded), len(orientations) + (CROP_WINDOWS if crops else 0), 2), dtype=np.uint64)
    if good:
        thumbs = thumbnails(good)
        for v, code in enumerate(orientations):
            oriented = turned(thumbs, code % 4)  # the mirror is taken from the same DCT and gradients
            out[ok, v, 0] = phash_from_thumbnails(oriented, mirrored=code >= 4)
            out[ok, v, 1] = dhash_from_thumbnails(oriented, mirrored=code >= 4)
        if crops:
            windows = crop_thumbnails(good).reshape(-1, PHASH_SIDE, PHASH_SIDE)
            codes = np.stack([phash_from_thumbnails(windows), dhash_from_thumbnails(windows)], axis=1)
            out[ok, len(orientations):] = codes.reshape(len(good), CROP_WINDOWS, 2)
    return (out if mirrored or crops or turns else out[:, 0]), ok


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 codes, elementwise; (n, words) codes sum over words."""
    d = np.bitwise_count(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))).astype(np.int64)
    return d.sum(axis=-1) if d.ndim > 1 else d


# -- verifying near-duplicate pairs by the pictures themselves ---------------------------

VERIFY_SIDE = 32
COMPARE_SIDE = 8
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def verification_thumbnails(images, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (n, 32, 32) gray thumbnails, ok): what ``aligned_similarity`` compares; of
    the picture's window ``windows[i]`` (a :func:`crop_thumbnails` index) where it is not
    -1, so a copy found through a window is checked against what it was cut as."""
    decoded = [decode_for_hash(data, VERIFY_SIDE) for data in images]
    ok = np.array([d is not None for d in decoded], dtype=bool)
    out = np.zeros((len(decoded), VERIFY_SIDE, VERIFY_SIDE), dtype=np.float32)
    good = [d for d in decoded if d is not None]
    if good:
        out[ok] = thumbnails(good, VERIFY_SIDE)
    cut = np.flatnonzero(ok & (windows >= 0)) if windows is not None else []
    for i in cut:
        out[i] = crop_thumbnails([decoded[i]], VERIFY_SIDE)[0, windows[i]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), ok


def aligned_similarity(a: np.ndarray, b: np.ndarray, turn: int = 0) -> float:
    """Correlation of two thumbnails after aligning ``b`` onto ``a`` (shift + rotation).

    Perceptual hashes of small, simple pictures (digits, icons) collide: distinct ones
    come as close in Hamming distance as edited copies. Registering ``b`` on ``a`` with
    OpenCV's ECC undoes the crop, shift and rotation a copy went through; the 8×8
    area means of the aligned pair then correlate at 0.99 or more for nearly all copies, while
    distinct pictures, even aligned at their best, stay lower. Correlation ignores
    brightness and contrast changes. Where ECC does not converge the pair is compared
    as it is. ``turn`` (a :func:`turn_codes` code) puts ``b`` in ``a``'s orientation first.
    """
    x = a.astype(np.float32)
    y = turned(b, turn).astype(np.float32)  # b in a's orientation, as its hash matched (turn_codes)
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(x, y, warp, cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA, None, 1)
    except cv2.error:
        pass
    side = x.shape[1], x.shape[0]
    y = cv2.warpAffine(y, warp, side, flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    u = cv2.resize(x, (COMPARE_SIDE, COMPARE_SIDE), interpolation=cv2.INTER_AREA).ravel()
    v = cv2.resize(y, (COMPARE_SIDE, COMPARE_SIDE), interpolation=cv2.INTER_AREA).ravel()
    u, v = u - u.mean(), v - v.mean()
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    if norm == 0.0:
        return 1.0 if not u.any() and not v.any() else 0.0
    return float(u @ v) / norm
