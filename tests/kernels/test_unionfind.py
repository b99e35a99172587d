import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components
import scipy.sparse as sp

from dsbuild.kernels.unionfind import Forest, add_histograms, size_histogram


def test_components_and_roots():
    f = Forest.from_edges(["c", "b", "x"], ["b", "a", "y"])
    assert f.clusters() == {"a": ["a", "b", "c"], "x": ["x", "y"]}
    assert sorted(f.sizes().tolist()) == [2, 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60), st.integers(1, 59))
def test_merging_partial_forests_equals_one_pass(edges, cut):
    a = [f"n{x:02d}" for x, _ in edges]
    b = [f"n{y:02d}" for _, y in edges]
    cut = cut % len(edges)
    whole = Forest.from_edges(a, b)
    merged = Forest.from_edges(a[:cut], b[:cut]).merge(Forest.from_edges(a[cut:], b[cut:]))
    swapped = Forest.from_edges(a[cut:], b[cut:]).merge(Forest.from_edges(a[:cut], b[:cut]))
    for f in (merged, swapped):
        assert f.nodes.tolist() == whole.nodes.tolist()
        assert f.roots.tolist() == whole.roots.tolist()
    ids = {n: i for i, n in enumerate(whole.nodes)}
    g = sp.coo_matrix((np.ones(len(a)), ([ids[x] for x in a], [ids[y] for y in b])), shape=(len(ids),) * 2)
    assert connected_components(g, directed=False)[0] == len(set(whole.roots.tolist()))


def test_size_histogram():
    assert size_histogram(np.array([2, 2, 3, 4, 7, 40])) == {"2": 2, "3-4": 2, "5-8": 1, "33-64": 1}


def test_histograms_of_parts_add_up_to_the_whole():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 300, size=500)
    whole = size_histogram(sizes)
    assert add_histograms(size_histogram(sizes[:123]), size_histogram(sizes[123:])) == whole
    assert list(whole) == sorted(whole, key=lambda label: int(label.split("-")[-1]))
