"""MinHash signatures of many documents at once, and LSH bands from a Jaccard threshold.

Shingling is vectorised over the whole batch: each distinct word is hashed once, and
word k-grams combine neighbouring word hashes; character k-grams come from one array
of code points with a polynomial prefix hash (mod 2**64, where the odd base has an
inverse). Signatures use one permutation with densification, so the cost is one pass
over the shingles, not ``num_perm``. No Python loop runs per shingle.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from typing import Literal

import numpy as np
import pandas as pd

from dsbuild.kernels.canonical import without_invisible
from dsbuild.kernels.lsh import mix64

_BASE = np.uint64(0x100000001B3)
_BASE_INV = np.uint64(pow(int(_BASE), -1, 1 << 64))
_SEPARATOR = 0

_TOKEN_KEY = "dsbuild-tokens01"
EMPTY = np.uint32(0xFFFFFFFF)


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)


_WORD = re.compile(r"[^\W_]+")
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def words(text: str, normalize: bool = True) -> list[str]:
    """The words of ``text``. Normalized (what near-dedup tools compare by default): Unicode
    NFKC, case-folded, and a word is a run of letters and digits, so ``Dog!``, ``dog`` and
    a full-width ``ｄｏｇ`` are one word and punctuation never joins or splits a match.
    Otherwise, the runs of non-space characters as they are.

    ASCII text, where NFKC changes nothing and case-folding is ``lower``, takes a path
    twice as fast as the regular expression, with the same words."""
    if not normalize:
        return text.split()
    if text.isascii():
        return text.lower().translate(_ASCII_NON_WORD).split()
    # invisible characters taken out, not read as breaks: a copy with soft hyphens
    # (hyphen\u00adation) in its words had other words, and other shingles, than it shows
    return _WORD.findall(without_invisible(unicodedata.normalize("NFKC", text)).casefold())


def shingle_hashes(
    texts, size: int = 5, unit: Literal["word", "char"] = "word", normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, doc) for every shingle: word ``size``-grams or character ``size``-grams.

    Words as ``words`` splits them; character shingles of a normalized text run over its
    words joined by single spaces. A document shorter than one shingle gets its whole
    text as its only shingle; an empty document gets none. ``doc`` is sorted.
    """
    texts = ["" if t is None else str(t) for t in texts]
    if unit == "word":
        return _grams(*token_hashes(texts, normalize), size)
    if normalize:
        texts = [" ".join(words(t)) for t in texts]
    if not texts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    joined = "\x00".join(texts) + "\x00"
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    n = len(cps)
    # Documents end where their lengths say, not at every NUL: a text may hold one (JSON's
    # "\u0000"), which shifted every later document's number, and the signatures failed.
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    bounds = np.cumsum(lengths + 1) - 1
    is_separator = np.zeros(n, dtype=bool)
    is_separator[bounds] = True
    doc_of = np.repeat(np.arange(len(texts)), lengths + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(cps.astype(np.uint64) * _powers(_BASE, n), out=prefix[1:])
        inv = _powers(_BASE_INV, n)

        def span(s: np.ndarray, e: np.ndarray) -> np.ndarray:
            return mix64((prefix[e] - prefix[s]) * inv[s] ^ (e - s).astype(np.uint64))

        if unit == "char":
            text_char = ~is_separator
            pos = np.flatnonzero(text_char)
            ok = pos + size <= n
            pos = pos[ok]
            whole = doc_of[pos] == doc_of[np.minimum(pos + size - 1, n - 1)]
            whole &= np.concatenate([text_char[size - 1 :], np.zeros(size - 1, bool)])[pos]
            grams = span(pos[whole], pos[whole] + size)
            gdoc = doc_of[pos[whole]]
            short_docs = np.setdiff1d(np.unique(doc_of[text_char]), gdoc)
            if len(short_docs):
                begin = np.concatenate([[0], bounds[:-1] + 1])
                grams = np.concatenate([grams, span(begin[short_docs], bounds[short_docs])])
                gdoc = np.concatenate([gdoc, short_docs])
                order = np.argsort(gdoc, kind="stable")
                grams, gdoc = grams[order], gdoc[order]
            return grams, gdoc
    raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")


def token_hashes(texts: list[str], normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(hash, doc) per word. Each distinct word is hashed once (pandas' SipHash)."""
    tokens = [words(t, normalize) for t in texts]
    counts = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    flat = np.fromiter(itertools.chain.from_iterable(tokens), dtype=object, count=int(counts.sum()))
    if len(flat) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    codes, uniques = pd.factorize(flat)
    hashed = pd.util.hash_array(np.asarray(uniques, dtype=object), hash_key=_TOKEN_KEY, categorize=False)
    return hashed[codes].astype(np.uint64), np.repeat(np.arange(len(texts)), counts)


def _grams(token: np.ndarray, tdoc: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ``size``-grams within each document; short documents keep one shingle of all words."""
    if size == 1 or len(token) == 0:
        return token, tdoc
    n = len(token)
    with np.errstate(over="ignore"):
        acc = token.copy()
        for m in range(1, size):
            shifted = np.zeros(n, dtype=np.uint64)
            if m < n:  # fewer words in the whole batch than a shingle: nothing to shift in
                shifted[: n - m] = token[m:]
            acc = mix64(acc * _BASE + shifted)
        last = np.arange(n) + size - 1
        full = (last < n) & (tdoc == tdoc[np.minimum(last, n - 1)])
        grams, gdoc = acc[full], tdoc[full]
        docs, first, counts = np.unique(tdoc, return_index=True, return_counts=True)
        short = np.setdiff1d(docs, gdoc)
        if len(short):
            idx = np.searchsorted(docs, short)
            whole = np.zeros(len(short), dtype=np.uint64)
            for k, (f, c) in enumerate(zip(first[idx], counts[idx])):
                h = token[f]
                for t in token[f + 1 : f + c]:
                    h = mix64(h * _BASE + t)
                whole[k] = h
            grams = np.concatenate([grams, whole])
            gdoc = np.concatenate([gdoc, short])
            order = np.argsort(gdoc, kind="stable")
            grams, gdoc = grams[order], gdoc[order]
    return grams, gdoc


class MinHasher:
    """MinHash by one permutation with optimal densification (Shrivastava, 2017).

    Each shingle hash is mixed once; its top bits pick one of ``num_perm`` bins and the
    rest is its value; a bin keeps its smallest value. That costs one pass over the
    shingles instead of ``num_perm`` passes. An empty bin borrows the value of the first
    non-empty bin along a fixed pseudo-random probe sequence, the same for every
    document, so two documents agree on a bin with probability equal to their Jaccard
    similarity, as with ``num_perm`` independent permutations. The same ``seed`` gives
    the same signatures in every process.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1, max_probes: int = 64):
        self.num_perm = num_perm
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.salt_ = rng.integers(0, 1 << 63, dtype=np.uint64)
        self.probes_ = rng.integers(0, num_perm, size=(max_probes, num_perm))

    def signatures(self, shingles: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
        """(n_docs, num_perm) uint32; a document without shingles is all ``EMPTY``."""
        k = self.num_perm
        flat = np.full(n_docs * k, EMPTY, dtype=np.uint32)
        if len(shingles):
            with np.errstate(over="ignore"):
                h = mix64(np.asarray(shingles, dtype=np.uint64) ^ self.salt_)
            bins = ((h >> np.uint64(32)) * np.uint64(k)) >> np.uint64(32)
            values = (h & np.uint64(0xFFFFFFFE)).astype(np.uint32)
            np.minimum.at(flat, np.asarray(doc, dtype=np.int64) * k + bins.astype(np.int64), values)
        sig = flat.reshape(n_docs, k)
        return self._densify(sig)

    def _densify(self, sig: np.ndarray) -> np.ndarray:
        empty = sig == EMPTY
        has_any = ~empty.all(axis=1)
        if not empty[has_any].any():
            return sig
        out = sig.copy()
        todo = empty & has_any[:, None]
        for probe in self.probes_:
            rows, cols = np.nonzero(todo)
            if len(rows) == 0:
                break
            src = probe[cols]
            hit = ~empty[rows, src]
            out[rows[hit], cols[hit]] = sig[rows[hit], src[hit]]
            todo[rows[hit], cols[hit]] = False
        rows, cols = np.nonzero(todo)
        if len(rows):
            first = np.argmax(~empty[rows], axis=1)
            out[rows, cols] = sig[rows, first]
        return out

    def __call__(self, texts, size: int = 5, unit: str = "word", normalize: bool = True, sets: int = 0) -> np.ndarray:
        """Signatures of ``texts``, shingled a batch of about ``BATCH_CHARS`` characters at a
        time: a document's signature is its own, whatever shares its batch. With ``sets``,
        each row goes on with the document's :func:`shingle_sets` of up to ``sets`` shingles."""
        texts = ["" if t is None else str(t) for t in texts]
        out = np.empty((len(texts), self.num_perm + (sets + 1 if sets else 0)), dtype=np.uint32)
        for start, stop in _batches(texts, BATCH_CHARS):
            shingles, doc = shingle_hashes(texts[start:stop], size=size, unit=unit, normalize=normalize)
            out[start:stop, : self.num_perm] = self.signatures(shingles, doc, stop - start)
            if sets:
                out[start:stop, self.num_perm :] = shingle_sets(shingles, doc, stop - start, sets)
        return out


# Characters shingled at once. A batch's words (a Python string each), shingle hashes and
# their documents take tens of bytes per character, so a partition of 50,000 texts
# (19 MiB of Parquet, one row group, so one partition) signed at once grew its worker by
# 700 MiB (peak 1.1 GiB), and took twice as long as in batches, whose arrays stay in the caches.
BATCH_CHARS = 1 << 21


def _batches(texts: list[str], chars: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive runs of ``texts`` of about ``chars`` characters each
    (a longer text alone), covering every text."""
    if not texts:
        return []
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    cuts = np.searchsorted(ends, np.arange(chars, ends[-1], chars), side="left") + 1
    bounds = np.unique(np.r_[0, np.minimum(cuts, len(texts)), len(texts)])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def shingle_sets(shingles: np.ndarray, doc: np.ndarray, n_docs: int, limit: int) -> np.ndarray:
    """(n_docs, limit + 1) uint32: each document's count of distinct shingles, then, where
    that is at most ``limit``, those shingles (the top 32 bits of their hashes, sorted;
    ``EMPTY`` after them). A document with more has the count ``limit + 1`` and no shingles:
    its similarity is estimated from its signature. See :func:`set_similarity`."""
    out = np.full((n_docs, limit + 1), EMPTY, dtype=np.uint32)
    keys = np.unique((np.asarray(doc, dtype=np.uint64) << np.uint64(32)) | (np.asarray(shingles, dtype=np.uint64) >> np.uint64(32)))
    owner = (keys >> np.uint64(32)).astype(np.int64)
    counts = np.bincount(owner, minlength=n_docs)
    out[:, 0] = np.minimum(counts, limit + 1)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    slot = np.arange(len(keys)) - first[owner]
    held = counts[owner] <= limit
    out[owner[held], 1 + slot[held]] = (keys[held] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return out


def set_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row by row, of two :func:`shingle_sets` arrays: (the Jaccard similarity of the
    shingles, whether both rows hold theirs). Two empty sets are alike."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    limit = a.shape[1] - 1
    na, nb = a[:, 0].astype(np.int64), b[:, 0].astype(np.int64)
    known = (na <= limit) & (nb <= limit)
    rows = np.flatnonzero(known)
    tag = (np.arange(len(rows), dtype=np.uint64) << np.uint64(32))[:, None]
    slots = np.arange(limit)
    ka = (tag | a[rows, 1:].astype(np.uint64))[slots < na[rows, None]]
    kb = (tag | b[rows, 1:].astype(np.uint64))[slots < nb[rows, None]]
    shared = np.bincount((np.intersect1d(ka, kb, assume_unique=True) >> np.uint64(32)).astype(np.int64), minlength=len(rows))
    union = na[rows] + nb[rows] - shared
    similarity = np.zeros(len(a))
    similarity[rows] = np.where(union > 0, shared / np.maximum(union, 1), 1.0)
    return similarity, known


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature slots, row by row (the MinHash Jaccard estimate)."""
    return (np.asarray(a) == np.asarray(b)).mean(axis=-1)


def signature_similarity(a: np.ndarray, b: np.ndarray, small: int | None = None) -> np.ndarray:
    """Row by row: the Jaccard estimate, or, where both signatures hold at most ``small``
    distinct values (default num_perm // 8), the Jaccard similarity of those values.

    A short text's few shingles each keep a bin of their own, so its signature's distinct
    values are its shingles (a value is 31 bits of a 64-bit hash) and their overlap is the
    true similarity. The densified estimate draws every other bin from those few: for two
    titles of 3 shingles sharing 2 (Jaccard 0.5), its standard deviation was 0.09, twice
    num_perm independent permutations', and 200 such titles put 2 to 11 rows in
    duplicate clusters at a threshold of 0.8."""
    a, b = np.atleast_2d(np.asarray(a)), np.atleast_2d(np.asarray(b))
    est = (a == b).mean(axis=-1)
    if not len(a):
        return est
    small = max(1, a.shape[1] // 8) if small is None else small
    sa, sb = np.sort(a, axis=1), np.sort(b, axis=1)
    da = np.ones(sa.shape, dtype=bool)
    db = np.ones(sb.shape, dtype=bool)
    da[:, 1:] = sa[:, 1:] != sa[:, :-1]
    db[:, 1:] = sb[:, 1:] != sb[:, :-1]
    na, nb = da.sum(axis=1), db.sum(axis=1)
    rows = np.flatnonzero((na <= small) & (nb <= small))
    if len(rows):
        tag = (np.arange(len(rows), dtype=np.uint64) << np.uint64(32))[:, None]
        ka = (tag | sa[rows].astype(np.uint64))[da[rows]]
        kb = (tag | sb[rows].astype(np.uint64))[db[rows]]
        shared = np.bincount((np.intersect1d(ka, kb, assume_unique=True) >> np.uint64(32)).astype(np.int64), minlength=len(rows))
        est[rows] = np.minimum(est[rows], shared / (na[rows] + nb[rows] - shared))
    return est


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity of two sets of shingle hashes (repeats count once); two
    empty sets are alike."""
    a, b = np.unique(a), np.unique(b)
    union = len(a) + len(b)
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (union - shared) if union else 1.0


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising weighted S-curve errors.

    A pair with Jaccard s shares a band with probability 1 - (1 - s**rows)**bands; false
    positives are the area under that curve below ``threshold``, false negatives the
    area above it that the curve misses.
    """
    s = np.linspace(0.0, 1.0, 1001)
    below, above = s <= threshold, s >= threshold
    best, best_err = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - s**rows) ** bands
            fp = np.trapezoid(p[below], s[below])
            fn = np.trapezoid(1.0 - p[above], s[above])
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (bands, rows), err
    return best


def bands_for_recall(threshold: float, num_perm: int, recall: float = 0.9) -> tuple[int, int]:
    """(bands, rows): the longest bands (fewest chance candidates) with which a pair of
    Jaccard similarity ``threshold`` shares a band with probability ``recall`` or more.

    For candidates that are verified afterwards, as near duplicates are: a candidate
    below the threshold costs one comparison, a pair above it that no band brings
    together is lost. ``optimal_bands``' balanced S-curve found a pair at the threshold
    with probability 0.31-0.55 (0.8: 0.40, and only 0.69 at 0.85)."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 bucket keys, one per band of ``rows`` signature slots."""
    sig = np.asarray(signatures, dtype=np.uint64)
    out = np.empty((len(sig), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(sig), np.uint64(band + 1) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
            for col in sig[:, band * rows : (band + 1) * rows].T:
                h = mix64(h * _BASE + col)
            out[:, band] = h
    return out
