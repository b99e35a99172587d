"""Shingle containment: a reference text found inside a longer document."""

import numpy as np

from dsbuild.kernels.containment import ShingleIndex
from dsbuild.kernels.minhash import shingle_hashes

QUESTIONS = [
    "What is the boiling point of water at sea level in degrees Celsius",
    "Name the largest planet in the solar system and its number of moons",
    "Which element has the chemical symbol Fe and what is its atomic number",
]


def index_of(texts, ids, size=5):
    return ShingleIndex.of(*shingle_hashes(texts, size), np.array(ids, dtype=object))


def test_a_question_quoted_inside_a_long_page_is_contained():
    index = index_of(QUESTIONS, ["q0", "q1", "q2"])
    filler = " ".join(f"word{i}" for i in range(400))
    docs = [
        f"{filler} forum post: {QUESTIONS[1].upper()}? thanks {filler}",  # inside, case and punctuation aside
        filler,
        f"{filler} the boiling point of water is 100 {filler}",  # shares a few shingles, not half
    ]
    found = index.contained(*shingle_hashes(docs, 5), len(docs), 0.5)
    assert found.tolist() == ["q1", None, None]


def test_the_threshold_is_the_share_of_the_items_shingles():
    index = index_of([QUESTIONS[0]], ["q0"])
    words = QUESTIONS[0].split()  # 13 words: 9 shingles of 5
    half = " ".join(words[:9])  # the first 5 shingles
    got = [index.contained(*shingle_hashes([half], 5), 1, t)[0] for t in (0.5, 5 / 9, 0.6)]
    assert got == ["q0", "q0", None]


def test_merged_indexes_find_what_one_index_finds_and_the_lowest_id_wins():
    doc = [" ".join(QUESTIONS)]
    whole = index_of(QUESTIONS + [QUESTIONS[2]], ["b", "c", "z", "a"])
    parts = index_of(QUESTIONS[:2], ["b", "c"]).merge(index_of([QUESTIONS[2], QUESTIONS[2]], ["z", "a"]))
    assert len(parts) == 4
    for index in (whole, parts):
        assert index.contained(*shingle_hashes(doc, 5), 1, 1.0).tolist() == ["a"]


def test_empty_documents_and_index():
    index = index_of(["", "   "], ["e0", "e1"])
    assert len(index) == 0
    assert index.contained(*shingle_hashes(["some words here"], 5), 1, 0.5).tolist() == [None]
    assert index_of(QUESTIONS, ["q0", "q1", "q2"]).contained(*shingle_hashes(["", "!!"], 5), 2, 0.5).tolist() == [None, None]
