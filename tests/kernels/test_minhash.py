import re
import unicodedata

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsbuild.kernels.minhash import (
    MinHasher,
    band_keys,
    exact_jaccard,
    jaccard_estimate,
    optimal_bands,
    shingle_hashes,
    words,
)


def _docs(n, words=200, vocab=3000, seed=0):
    rng = np.random.default_rng(seed)
    lex = np.array([f"w{i}" for i in range(vocab)])
    return [" ".join(rng.choice(lex, words)) for _ in range(n)]


def test_word_shingles_respect_document_bounds():
    h, doc = shingle_hashes(["a b c d", "", "x y", "a b c"], size=3)
    assert doc.tolist() == [0, 0, 2, 3]
    assert h[0] == h[3]


def test_a_batch_with_fewer_words_than_a_shingle_gives_each_document_one():
    """Two one-word titles in one partition: 2 words, 5-word shingles, and the shift past
    the batch's end failed to broadcast; the same titles in two partitions worked."""
    together, doc = shingle_hashes(["hello", "hello"], size=5)
    apart = [shingle_hashes([t], size=5)[0] for t in ("hello", "hello")]
    assert doc.tolist() == [0, 1] and together.tolist() == [apart[0][0], apart[1][0]]
    assert shingle_hashes(["a b", "c"], size=4)[1].tolist() == [0, 1]


def test_char_shingles_count_and_short_docs():
    h, doc = shingle_hashes(["abcdef", "ab", "", "ABCDEF"], size=4, unit="char")
    assert np.bincount(doc, minlength=4).tolist() == [3, 1, 0, 3]
    assert h[:3].tolist() == h[4:].tolist()


def test_normalized_words_fold_case_width_and_punctuation():
    assert words("Don't STOP—the ｄｏｇ, e-mail_x!") == ["don", "t", "stop", "the", "dog", "e", "mail", "x"]
    assert words("Don't stop!", normalize=False) == ["Don't", "stop!"]
    (a, _), (b, _) = shingle_hashes(["Hello, World!"], 4, unit="char"), shingle_hashes(["hello   world"], 4, unit="char")
    assert a.tolist() == b.tolist()
    assert len(shingle_hashes(["?!", "..."], 2)[0]) == 0


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_words_take_a_fast_path_to_the_same_words(text):
    assert words(text) == re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold())


def test_signatures_are_batch_independent():
    docs = _docs(50)
    m = MinHasher(64, seed=7)
    assert np.array_equal(m(docs), np.vstack([m(docs[:20]), m(docs[20:])]))


@pytest.mark.parametrize("unit", ["word", "char"])
def test_many_texts_are_shingled_in_batches_of_bounded_size(monkeypatch, unit):
    """A partition of 50,000 texts was shingled in one batch: its words, shingles and hashes
    grew the worker by 700 MiB. The signatures are the same as from one batch."""
    from dsbuild.kernels import minhash

    docs = _docs(60, words=30) + [None, "", "short"]
    whole = MinHasher(64, seed=3).signatures(*shingle_hashes(docs, 5, unit), len(docs))
    seen = []
    real = minhash.shingle_hashes
    monkeypatch.setattr(minhash, "shingle_hashes", lambda texts, *a, **k: seen.append(texts) or real(texts, *a, **k))
    monkeypatch.setattr(minhash, "BATCH_CHARS", 1000, raising=False)
    assert np.array_equal(MinHasher(64, seed=3)(docs, unit=unit), whole)
    assert len(seen) > 5 and sum(map(len, seen)) == len(docs)
    assert max(sum(len(t or "") for t in batch[:-1]) for batch in seen) < 1000


def test_estimates_track_exact_jaccard():
    base = _docs(60, seed=1)
    rng = np.random.default_rng(2)
    edited = []
    for d in base:
        w = d.split()
        keep = int(rng.integers(150, 200))
        edited.append(" ".join(w[:keep] + list(rng.choice(["q1", "q2", "q3", "q4"], 200 - keep))))
    m = MinHasher(256, seed=3)
    sa, sb = m(base), m(edited)
    est = jaccard_estimate(sa, sb)
    exact = []
    for x, y in zip(base, edited):
        (hx, _), (hy, _) = shingle_hashes([x], 5), shingle_hashes([y], 5)
        exact.append(exact_jaccard(hx, hy))
    err = est - np.array(exact)
    assert abs(err.mean()) < 0.02
    assert np.abs(err).mean() < 0.05


def test_empty_document_signature_matches_nothing():
    sig = MinHasher(32)(["", "some words here and more", ""])
    assert jaccard_estimate(sig[0], sig[1]) == 0


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_optimal_bands_put_the_s_curve_at_the_threshold(threshold):
    b, r = optimal_bands(threshold, 128)
    assert b * r <= 128
    p = lambda s: 1 - (1 - s**r) ** b  # noqa: E731
    assert p(threshold - 0.2) < 0.5 < p(min(threshold + 0.1, 1.0))


def test_band_keys_equal_when_bands_equal():
    sig = MinHasher(16)(_docs(3))
    sig[1, :4] = sig[0, :4]
    keys = band_keys(sig, 4, 4)
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] != keys[1, 1]


@pytest.mark.parametrize("normalize", [False, True])
def test_char_shingles_of_a_text_holding_a_nul_stay_in_its_document(normalize):
    """Documents were told apart by the NUL between them, so a NUL inside a text (JSON's
    "\\u0000") shifted every later document's number: un-normalized character shingles
    failed with an IndexError, or gave a document another's signature."""
    texts = ["abc\x00def ghi jkl", "hello world this is", "tiny", ""]
    hasher = MinHasher(64)
    together = hasher(texts, size=5, unit="char", normalize=normalize)
    for i, t in enumerate(texts):
        assert (together[i] == hasher([t], size=5, unit="char", normalize=normalize)[0]).all()


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.9, 1.0])
@pytest.mark.parametrize("num_perm", [16, 128, 256])
def test_bands_for_recall_find_a_pair_at_the_threshold_nine_times_in_ten(threshold, num_perm):
    from dsbuild.kernels.minhash import bands_for_recall

    b, r = bands_for_recall(threshold, num_perm)
    assert b * r <= num_perm
    assert 1 - (1 - threshold**r) ** b >= 0.9


def test_invisible_format_characters_do_not_split_words():
    """A soft hyphen, zero-width space or bidirectional mark inside a word was read as a
    break between words: docstrings with soft hyphens in about a tenth of their words had
    a Jaccard similarity of 0.53 with the text they show."""
    from dsbuild.kernels.minhash import words

    shown = "hyphenation zerowidth שלום 2024 café"
    hidden = "hy\u00adphen\u00ada\u00adtion zero\u200bwidth \u200fשלום\u200e \u2066202\u200d4\u2069 \ufeffcafé"
    assert words(hidden) == words(shown) == ["hyphenation", "zerowidth", "שלום", "2024", "café"]
    assert words("two\u200b words", normalize=False) == ["two\u200b", "words"]  # as it is, when not normalized


def test_signature_similarity_of_short_texts_is_their_shingles_overlap():
    """Two titles of 3 shingles sharing 2 (Jaccard 0.5): the densified estimate, drawn
    from their few bins, had a standard deviation of 0.09 and reached 0.8 for some seeds,
    which made distinct titles duplicates. Where both signatures hold few distinct values,
    those values are the shingles, and the similarity is no more than their overlap."""
    from dsbuild.kernels.minhash import signature_similarity

    a, b = "a generic version of collections abc sequence", "a generic version of collections abc hashable"
    estimates, similarities = [], []
    for seed in range(1, 301):
        sig = MinHasher(128, seed=seed)([a, b])
        if len(set(sig[0])) == len(set(sig[1])) == 3:  # no shingle lost to a shared bin
            estimates.append(jaccard_estimate(sig[0], sig[1]))
            similarities.append(signature_similarity(sig[0], sig[1])[0])
    assert len(similarities) > 250
    assert max(estimates) >= 0.75 and np.std(estimates) > 0.08  # what verifying compared
    assert max(similarities) <= 0.5 + 1e-9
    long_a = " ".join(f"w{i}" for i in range(300))
    long_b = long_a.replace("w150 ", "x150 ")
    sig = MinHasher(128, seed=1)([long_a, long_b])
    assert signature_similarity(sig[0], sig[1])[0] == jaccard_estimate(sig[0], sig[1])  # long texts: the estimate


def test_shingle_sets_give_the_exact_jaccard_of_short_documents_only():
    from dsbuild.kernels.minhash import set_similarity, shingle_sets

    docs = ["a b c d e f g", "a b c d e f x", "", "one", " ".join(f"w{i}" for i in range(50))]
    sets = shingle_sets(*shingle_hashes(docs, 5), len(docs), 4)
    assert sets[:, 0].tolist() == [3, 3, 0, 1, 5]  # 46 shingles: more than 4, not held
    similarity, known = set_similarity(sets[[0, 0, 2, 3, 4]], sets[[1, 0, 2, 1, 0]])
    assert known.tolist() == [True, True, True, True, False]
    assert similarity[:4].tolist() == [0.5, 1.0, 1.0, 0.0]
    assert np.array_equal(MinHasher(16)(docs, sets=4)[:, 16:], sets)
