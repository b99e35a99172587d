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


def _star_components(a, b):
    """Components by rounds of large-star and small-star steps, each over all links at
    once (one partition holds every node's links): dropped node -> its component's smallest."""
    import pandas as pd
    import pyarrow as pa

    from dsbuild.kernels.unionfind import both_ways, large_star, link_frame, small_star

    def keys(xs):
        return pa.array([x.encode() for x in xs], pa.large_binary())

    hi, lo = [max(x, y) for x, y in zip(a, b)], [min(x, y) for x, y in zip(a, b)]
    links = link_frame(keys(hi), keys(lo), np.arange(len(hi)), np.arange(len(hi)), np.zeros(len(hi), bool))
    while True:
        links = large_star(both_ways(links.drop(columns="moved")))
        moved = links["moved"].sum()
        links = small_star(links)
        if moved + links["moved"].sum() == 0:
            return {bytes(u).decode(): bytes(v).decode() for u, v in zip(links["u"], links["v"])}, pd.Series(links["u"]).is_unique


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60))
def test_star_steps_settle_on_the_components_of_a_forest(edges):
    """The shuffled components (no process holds the graph) are the forest's: each node
    but the smallest of its component linked to that smallest node alone."""
    edges = [(x, y) for x, y in edges if x != y]
    a = [f"n{x:02d}" for x, _ in edges]
    b = [f"n{y:02d}" for _, y in edges]
    got, once = _star_components(a, b)
    whole = Forest.from_edges(a, b)
    assert once and got == {n: r for n, r in zip(whole.nodes, whole.roots) if n != r}


def test_star_steps_settle_a_long_path_in_few_rounds():
    order = np.random.default_rng(1).permutation(500)
    names = [f"p{i:04d}" for i in order]
    got, _ = _star_components(names[:-1], names[1:])
    assert got == {n: "p0000" for n in names if n != "p0000"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60))
def test_local_stars_keep_the_components(edges):
    import pyarrow as pa

    from dsbuild.kernels.unionfind import link_frame, local_stars

    edges = [(max(x, y), min(x, y)) for x, y in edges if x != y]
    keys = lambda xs: pa.array([f"n{x:02d}".encode() for x in xs], pa.large_binary())
    links = link_frame(keys([x for x, _ in edges]), keys([y for _, y in edges]), [x for x, _ in edges], [y for _, y in edges],
                   np.zeros(len(edges), bool))
    stars = local_stars(links)
    whole = Forest.from_edges([f"n{x:02d}" for x, _ in edges], [f"n{y:02d}" for _, y in edges])
    want = {n: r for n, r in zip(whole.nodes, whole.roots) if n != r}
    assert {bytes(u).decode(): bytes(v).decode() for u, v in zip(stars["u"], stars["v"])} == want
    assert all(f"n{a:02d}" == bytes(u).decode() for a, u in zip(stars["u_at"], stars["u"]))
    assert all(f"n{a:02d}" == bytes(v).decode() for a, v in zip(stars["v_at"], stars["v"]))
