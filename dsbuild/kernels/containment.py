"""Which reference texts a document contains: exact shingle containment, |R ∩ D| / |R|.

Decontamination asks whether a test item appears *inside* a training document, which a
whole-document Jaccard misses when the document is much longer than the item (a test
question quoted in a forum page). Containment of the item's word shingles in the
document answers it exactly; the index holds every shingle of the reference, which is
small next to the data (a test split), as one sorted array.
"""

from __future__ import annotations

import numpy as np


class ShingleIndex:
    """The reference's shingles: sorted hashes, the item each belongs to, and each item's
    number of distinct shingles. Mergeable, so it is built per partition of the reference."""

    def __init__(self, hashes: np.ndarray, item: np.ndarray, ids: np.ndarray, sizes: np.ndarray):
        self.hashes, self.item, self.ids, self.sizes = hashes, item, ids, sizes

    @classmethod
    def of(cls, hashes: np.ndarray, doc: np.ndarray, ids: np.ndarray) -> ShingleIndex:
        """From ``(hash, doc)`` pairs (as ``shingle_hashes`` returns) of the items ``ids``;
        items without a shingle are left out."""
        doc, hashes = _distinct(doc, hashes)
        present, item, sizes = np.unique(doc, return_inverse=True, return_counts=True)
        return cls._sorted(hashes, item, np.asarray(ids, dtype=object)[present], sizes)

    @classmethod
    def _sorted(cls, hashes, item, ids, sizes) -> ShingleIndex:
        order = np.lexsort((item, hashes))
        return cls(hashes[order], item[order].astype(np.int64), ids, sizes.astype(np.int64))

    def merge(self, other: ShingleIndex) -> ShingleIndex:
        return ShingleIndex._sorted(
            np.concatenate([self.hashes, other.hashes]),
            np.concatenate([self.item, other.item + len(self.ids)]),
            np.concatenate([self.ids, other.ids]),
            np.concatenate([self.sizes, other.sizes]),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def contained(self, hashes: np.ndarray, doc: np.ndarray, n_docs: int, threshold: float) -> np.ndarray:
        """Per document, the lowest id of a reference item with at least ``threshold`` of
        its shingles in the document, or None."""
        out = np.full(n_docs, None, dtype=object)
        if not len(hashes) or not len(self.hashes):
            return out
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        found = self.hashes[at] == hashes  # most shingles of the data are in no reference item
        if not found.any():
            return out
        doc, hashes = _distinct(doc[found], hashes[found])  # a shingle the document repeats counts once
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hi = np.searchsorted(self.hashes, hashes, side="right")
        n = hi - lo  # a shingle many items share (boilerplate) counts for each of them
        at = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
        item, doc = self.item[at], np.repeat(doc, n)
        key, hits = np.unique(doc * len(self.ids) + item, return_counts=True)
        d, i = np.divmod(key, len(self.ids))
        enough = hits >= np.ceil(threshold * self.sizes[i] - 1e-9)  # 0.8 × 5 is 4.000000000000001
        for d_, i_ in zip(d[enough].tolist(), i[enough].tolist()):
            rid = self.ids[i_]
            if out[d_] is None or rid < out[d_]:
                out[d_] = rid
        return out


def _distinct(doc: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (doc, hash) pairs, sorted by doc."""
    order = np.lexsort((hashes, doc))
    doc, hashes = doc[order].astype(np.int64), hashes[order].astype(np.uint64)
    new = np.ones(len(doc), dtype=bool)
    new[1:] = (doc[1:] != doc[:-1]) | (hashes[1:] != hashes[:-1])
    return doc[new], hashes[new]
