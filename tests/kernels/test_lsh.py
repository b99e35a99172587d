import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dsbuild.kernels.lsh import (
    band_hit_probability,
    band_keys,
    bucket_pairs,
    pigeonhole_masks,
    sampled_bands_for,
    sampled_masks,
    unique_pairs,
)


def test_pigeonhole_masks_cover_all_bits_once():
    for bands in (1, 3, 9, 64):
        m = pigeonhole_masks(bands)[:, 0]
        assert len(m) == bands
        assert int(np.bitwise_or.reduce(m)) == (1 << 64) - 1
        assert sum(bin(int(x)).count("1") for x in m) == 64


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 8), st.integers(0, 2**32))
def test_every_pair_within_k_shares_a_pigeonhole_band(h, k, seed):
    rng = np.random.default_rng(seed)
    flip = 0
    for bit in rng.choice(64, size=k, replace=False):
        flip |= 1 << int(bit)
    keys = band_keys(np.array([h, h ^ flip], dtype=np.uint64), pigeonhole_masks(k + 1))
    assert (keys[0] == keys[1]).any()


def test_bucket_pairs_are_exactly_the_pairs_sharing_a_key():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 40, size=300)
    a, b = bucket_pairs(keys)
    got = set(zip(a.tolist(), b.tolist()))
    want = {(i, j) for i in range(300) for j in range(i + 1, 300) if keys[i] == keys[j]}
    assert got == want and len(a) == len(want)


def test_two_word_codes_use_bits_of_both_words():
    masks = pigeonhole_masks(4, words=2)
    assert masks.shape == (4, 2)
    codes = np.array([[1, 2], [1, 2 ^ (1 << 63)]], dtype=np.uint64)
    keys = band_keys(codes, masks)
    assert (keys[0] == keys[1]).sum() == 3


def test_unique_pairs():
    a, b = unique_pairs(np.array([3, 1, 3]), np.array([5, 2, 5]))
    assert list(zip(a.tolist(), b.tolist())) == [(1, 2), (3, 5)]


def test_sampled_bands_meet_their_detection_rate():
    k, rows = 8, 20
    bands = sampled_bands_for(k, rows, miss=0.05)
    masks = sampled_masks(bands, rows, seed=3)
    rng = np.random.default_rng(1)
    found = 0
    trials = 400
    for _ in range(trials):
        h = int(rng.integers(0, 2**63)) * 2 + 1
        flip = sum(1 << int(b) for b in rng.choice(64, size=k, replace=False))
        keys = band_keys(np.array([h, h ^ flip], dtype=np.uint64), masks)
        found += bool((keys[0] == keys[1]).any())
    assert found / trials >= 0.9
    assert band_hit_probability(0, rows) == 1.0
