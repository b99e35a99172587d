"""Connected components that merge: partial forests from different partitions combine.

A forest is stored flattened, as (node, root) pairs with nodes sorted, so combining two
is one connected-components pass over both sets of pairs (scipy's C code), and the
result does not depend on which partition saw which edge. For graphs too big for one
process, the star steps at the end find components by shuffles of links.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


# -- connected components by shuffles ------------------------------------------------------
#
# The alternating large-star / small-star rounds of Kiveris et al. 2014 ("Connected
# Components in MapReduce and Beyond"): each step sees, per node, only the links that name
# it (the rows a shuffle by that node brings together), so no process ever holds the whole
# graph. Nodes are byte strings whose order picks each component's representative: once
# no step moves a link, every component is a star around its smallest node, each other
# node linked to it alone. A link is a row (u, v, u_at, v_at): two nodes and a number
# carried along with each (where its record lives).

LINK_COLUMNS = ("u", "v", "u_at", "v_at")


def local_stars(links: pd.DataFrame) -> pd.DataFrame:
    """The links as stars around the smallest node of each component they form among
    themselves (scipy's connected components): the same components, and where one
    partition saw a whole component (most of them), it is settled before any shuffle."""
    if links.empty:
        return links
    nodes = pa.concat_arrays([as_arrow(links["u"]), as_arrow(links["v"])])
    at = np.concatenate([links["u_at"].to_numpy(dtype=np.int64), links["v_at"].to_numpy(dtype=np.int64)])
    order = pc.sort_indices(nodes).to_numpy()
    ordered = nodes.take(pa.array(order))
    new = np.r_[True, ~pc.equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)]
    codes = np.empty(len(nodes), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1  # a node's code is its rank: a component's smallest code is its smallest node
    first = order[new]  # where each node (by code) is
    n, half = len(first), len(links)
    graph = sp.coo_matrix((np.ones(half, dtype=np.int8), (codes[:half], codes[half:])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    root = smallest[labels]
    leaf = np.flatnonzero(root != np.arange(n))
    return link_frame(nodes.take(pa.array(first[leaf])), nodes.take(pa.array(first[root[leaf]])), at[first[leaf]],
                  at[first[root[leaf]]], np.zeros(len(leaf), dtype=bool))


def both_ways(links: pd.DataFrame) -> pd.DataFrame:
    """Each link also from its other end, for a step that needs all of a node's neighbours."""
    swapped = links.rename(columns={"u": "v", "v": "u", "u_at": "v_at", "v_at": "u_at"})
    return pd.concat([links, swapped[list(links.columns)]], ignore_index=True)


def large_star(links: pd.DataFrame) -> pd.DataFrame:
    """Links grouped by ``u`` (both ways): every larger neighbour v of u is linked to the
    smallest of u and its neighbours. ``moved`` marks links that changed (u had a smaller
    neighbour)."""
    t, starts, run = _runs(links)
    u, v = t["u"], t["v"]
    smaller = pc.less(v.take(starts), u.take(starts)).to_numpy(zero_copy_only=False)  # v at a run's start: u's smallest neighbour
    m = pc.if_else(pa.array(smaller), v.take(starts), u.take(starts))
    m_at = np.where(smaller, t["v_at"].to_numpy()[starts], t["u_at"].to_numpy()[starts])
    out = np.flatnonzero(pc.greater(v, u).to_numpy(zero_copy_only=False))
    owner = run[out]
    return link_frame(v.take(out), m.take(owner), t["v_at"].to_numpy()[out], m_at[owner], smaller[owner])


def small_star(links: pd.DataFrame) -> pd.DataFrame:
    """Links with u > v, grouped by ``u``: u and each of its neighbours are linked to the
    smallest neighbour m. ``moved`` marks the links that changed (a neighbour other than m)."""
    t, starts, run = _runs(links)
    v, v_at = t["v"], t["v_at"].to_numpy()
    others = np.setdiff1d(np.arange(len(run)), starts, assume_unique=True)
    owner = run[others]
    return pd.concat([
        link_frame(v.take(others), v.take(starts[owner]), v_at[others], v_at[starts[owner]], np.ones(len(others), dtype=bool)),
        link_frame(t["u"].take(starts), v.take(starts), t["u_at"].to_numpy()[starts], v_at[starts], np.zeros(len(starts), dtype=bool)),
    ], ignore_index=True)


def star_sizes(links: pd.DataFrame) -> np.ndarray:
    """For links grouped by ``v`` that form stars (every u linked to its component's
    smallest node v alone): each link's component size, in the links' order."""
    centers = np.asarray(pd.factorize(links["v"])[0]) if len(links) else np.zeros(0, dtype=np.int64)
    return np.bincount(centers)[centers] + 1 if len(centers) else np.zeros(0, dtype=np.int64)


def _runs(links: pd.DataFrame) -> tuple[dict, np.ndarray, np.ndarray]:
    """The links sorted by (u, v), each once (as Arrow arrays and numbers), where each
    run of one u starts, and each link's run."""
    t = pa.table({c: as_arrow(links[c]) for c in LINK_COLUMNS})
    t = t.take(pc.sort_indices(t, sort_keys=[("u", "ascending"), ("v", "ascending")]))
    cols = {c: t[c].combine_chunks() for c in LINK_COLUMNS}
    n = len(t)
    if n > 1:
        same = pc.and_(pc.equal(cols["u"][1:], cols["u"][:-1]), pc.equal(cols["v"][1:], cols["v"][:-1]))
        keep = pa.array(np.r_[True, ~same.to_numpy(zero_copy_only=False)])
        cols = {c: a.filter(keep) for c, a in cols.items()}
        n = len(cols["u"])
    new = np.r_[True, ~pc.equal(cols["u"][1:], cols["u"][:-1]).to_numpy(zero_copy_only=False)] if n else np.zeros(0, bool)
    return cols, np.flatnonzero(new), np.cumsum(new) - 1


def as_arrow(values) -> pa.Array:
    """A pandas column as one Arrow array."""
    arr = pa.array(values, from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def link_frame(u: pa.Array, v: pa.Array, u_at: np.ndarray, v_at: np.ndarray, moved: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "u": pd.arrays.ArrowExtensionArray(u), "v": pd.arrays.ArrowExtensionArray(v),
        "u_at": np.asarray(u_at, dtype=np.int64), "v_at": np.asarray(v_at, dtype=np.int64),
        "moved": np.asarray(moved, dtype=bool),
    })
