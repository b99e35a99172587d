"""Connected components of verified pairs as stars around their keepers: links between
keys that sort as the keep rule does, and the dropped rows of finished stars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dsbuild.kernels import unionfind
from dsbuild.records import ID
from dsbuild.stages.dedup.keep import KeepRule, ids_of_keys, node_keys

_LINKS_META = pd.DataFrame({
    "u": pd.Series([], dtype=pd.ArrowDtype(pa.large_binary())), "v": pd.Series([], dtype=pd.ArrowDtype(pa.large_binary())),
    "u_at": pd.Series([], dtype=np.int64), "v_at": pd.Series([], dtype=np.int64), "moved": pd.Series([], dtype=bool),
})


def edge_links(edges: pd.DataFrame, rule: KeepRule) -> pd.DataFrame:
    """The verified edges as links between :func:`node_keys` (larger key first), so that
    each component's smallest key is its keeper; as stars where this partition's edges
    already join a component (:func:`unionfind.local_stars`)."""
    real = edges[edges["a"].notna()]
    a, b = node_keys(real["a"], real["qa"].to_numpy(), rule), node_keys(real["b"], real["qb"].to_numpy(), rule)
    at_a, at_b = real["at_a"].to_numpy(dtype=np.int64), real["at_b"].to_numpy(dtype=np.int64)
    a_first = pc.greater(a, b).to_numpy(zero_copy_only=False)
    flag = pa.array(a_first)
    return unionfind.local_stars(unionfind.link_frame(pc.if_else(flag, a, b), pc.if_else(flag, b, a), np.where(a_first, at_a, at_b),
                                                  np.where(a_first, at_b, at_a), np.zeros(len(real), dtype=bool)))


def count_moved(links: pd.DataFrame, state=None) -> int:
    return int(links["moved"].sum())


def _add(a: int, b: int) -> int:
    return a + b


def star_drops(links: pd.DataFrame, rule: KeepRule) -> pd.DataFrame:
    """The dropped rows of star-shaped components (links grouped by their centre, the
    keeper): where each lives, its id, the kept id, its cluster's size."""
    at = links["u_at"].to_numpy(dtype=np.int64)
    skip = 8 if rule.ranked else 0
    return pd.DataFrame({
        "_partition": at >> np.int64(32),
        "_at": at,
        ID: pd.arrays.ArrowExtensionArray(ids_of_keys(unionfind.as_arrow(links["u"]), skip)),
        "_keeper": pd.arrays.ArrowExtensionArray(ids_of_keys(unionfind.as_arrow(links["v"]), skip)),
        "_size": unionfind.star_sizes(links).astype(np.int32),
    }, index=pd.RangeIndex(len(links)))
