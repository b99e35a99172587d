"""Connected components that merge: partial forests from different partitions combine.

A forest is stored flattened, as (node, root) pairs with nodes sorted, so combining two
is one connected-components pass over both sets of pairs (scipy's C code), and the
result does not depend on which partition saw which edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class Forest:
    """Each node with the smallest node of its component (its root)."""

    nodes: np.ndarray
    roots: np.ndarray

    @classmethod
    def empty(cls) -> Forest:
        return cls(np.array([], dtype=object), np.array([], dtype=object))

    @classmethod
    def from_edges(cls, a, b) -> Forest:
        """Components of the undirected graph with edges ``a[i] -- b[i]``."""
        a = np.asarray(a, dtype=object)
        b = np.asarray(b, dtype=object)
        if len(a) == 0:
            return cls.empty()
        nodes, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        n = len(nodes)
        graph = sp.coo_matrix((np.ones(len(a), dtype=np.int8), (codes[: len(a)], codes[len(a) :])), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        first = np.full(labels.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, labels, np.arange(n))
        return cls(nodes, nodes[first[labels]])

    def merge(self, other: Forest) -> Forest:
        """The forest of both edge sets: associative and commutative."""
        if len(self.nodes) == 0:
            return other
        if len(other.nodes) == 0:
            return self
        return Forest.from_edges(
            np.concatenate([self.nodes, other.nodes]), np.concatenate([self.roots, other.roots])
        )

    def clusters(self) -> dict:
        """root -> sorted members."""
        out: dict = {}
        for node, root in zip(self.nodes, self.roots):
            out.setdefault(root, []).append(node)
        return out

    def sizes(self) -> np.ndarray:
        """Size of every component with at least two nodes."""
        _, counts = np.unique(self.roots, return_counts=True)
        return counts


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Cluster sizes in power-of-two bins (2, 3-4, 5-8, ...), for the manifest.

    Bins are fixed, so histograms of parts of the data add up (:func:`add_histograms`).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    sizes = sizes[sizes >= 1]
    if not len(sizes):
        return {}
    hi = np.left_shift(1, np.ceil(np.log2(sizes)).astype(np.int64))
    bins, counts = np.unique(np.where(sizes <= 2, sizes, hi), return_counts=True)
    return {_bin_label(int(b)): int(c) for b, c in zip(bins, counts)}


def _bin_label(hi: int) -> str:
    return str(hi) if hi <= 2 else f"{hi // 2 + 1}-{hi}"


def add_histograms(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """The histogram of two parts' clusters together, bins in size order."""
    both = {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
    return dict(sorted(both.items(), key=lambda kv: int(kv[0].split("-")[-1])))
