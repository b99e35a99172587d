from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage import data

from dsbuild.dedup_samples import dedup_scores, near_copy_frame
from dsbuild.kernels.decode import encode_image
from dsbuild.kernels.minhash import shingle_hashes
from dsbuild.records import IMAGE_DTYPE
from dsbuild.stages import Roles, StageError
from dsbuild.stages.dedup import Decontaminate, ExactDedup, NearDedupImages, NearDedupText
from dsbuild.testing import run_stage


@pytest.fixture(scope="module")
def copies():
    """Photos, tiles and faces with 120 edited copies (JPEG 30-90, resize, light, crop, rotate)."""
    return near_copy_frame(120, seed=3, tile=128, faces=True)


@pytest.fixture(scope="module")
def mirrored():
    return near_copy_frame(60, seed=4, tile=0, faces=True, mirror=True)


def _pairs(rejected):
    return list(zip(rejected["id"].astype(str), rejected["reason"].astype(str)))


def _adult(n=400):
    df = pd.read_csv("dsbuild/io/data/adult.csv.gz", nrows=n)
    return df.assign(id=[f"r{i:05d}" for i in range(len(df))])


def test_exact_dedup_keeps_lowest_id_and_same_for_any_partitioning(client):
    df = _adult()
    dup = df.sample(80, random_state=0).assign(id=lambda d: "z" + d["id"])
    frame = pd.concat([df, dup], ignore_index=True)
    stage = ExactDedup()
    runs = [run_stage(stage, frame, npartitions=n) for n in (1, 4)]
    kept, rej = runs[0]
    assert stage.summary() == {"clusters": 80, "rows_in_clusters": 160, "cluster_sizes": {"2": 80}}
    assert len(kept) + len(rej) == len(frame)
    assert rej["id"].str.startswith("z").sum() == 80
    assert rej["reason"].str.startswith("duplicate-of=r").all()
    assert kept.drop(columns="id").duplicated().sum() == 0
    for k, r in runs[1:]:
        assert k["id"].tolist() == kept["id"].tolist()
        assert _pairs(r) == _pairs(rej)


@pytest.mark.parametrize("stage", [ExactDedup, NearDedupText], ids=["exact", "near_text"])
def test_the_copy_that_stays_is_the_lowest_id_with_its_number_read_as_a_number(stage):
    """As text, f.csv:10 came before f.csv:9 and id 10 before id 9: the copy read later
    stayed, where pandas' drop_duplicates keeps the first. Both stages now read a number at
    the end of an id as a number (x7 and x07 still differ, so the order is total)."""
    text = "the same few words of a duplicated review, nearly"
    for ids, keeper in ((["f.csv:10", "f.csv:9", "f.csv:11"], "f.csv:9"), (["10", "9", "100"], "9"),
                        (["x07", "x7", "y1"], "x7"), (["b.csv:2", "a.csv:30"], "a.csv:30")):
        frame = pd.DataFrame({"id": ids, "body": [text] * len(ids)})
        for parts in (1, 2):
            kept, rej = run_stage(stage(), frame, npartitions=parts, roles=Roles(text="body"))
            assert kept["id"].tolist() == [keeper] and set(rej["reason"]) == {f"duplicate-of={keeper}"}, (ids, parts)


def test_exact_dedup_quality_rule_and_columns():
    frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "x": [1, 1, 1, 2], "note": ["p", "q", "r", "s"], "score": [0.1, 0.9, 0.5, 0.0]})
    kept, rej = run_stage(ExactDedup(columns=["x"], quality="score"), frame, npartitions=2)
    assert kept["id"].tolist() == ["b", "d"]
    assert sorted(rej["reason"]) == ["duplicate-of=b", "duplicate-of=b"]
    kept, _ = run_stage(ExactDedup(columns=["x"], quality="score", prefer="min"), frame.assign(score=[0.3, None, 0.3, 1.0]), npartitions=3)
    assert kept["id"].tolist() == ["a", "d"]
    with pytest.raises(StageError, match="did you mean"):
        run_stage(ExactDedup(columns=["xx"]), frame)


def test_exact_dedup_images_by_pixels_not_bytes():
    img = encode_image(data.camera(), "png")
    same_pixels = encode_image(data.camera(), "bmp")
    other = encode_image(data.moon(), "png")
    frame = pd.DataFrame({"id": ["a", "b", "c"], "image": pd.Series([img, same_pixels, other], dtype=IMAGE_DTYPE)})
    kept, rej = run_stage(ExactDedup(), frame, roles=Roles(image="image"))
    assert rej["id"].tolist() == ["b"] and rej["reason"].tolist() == ["duplicate-of=a"]
    kept, rej = run_stage(ExactDedup(image_hash="bytes"), frame, roles=Roles(image="image"))
    assert rej.empty


def test_exact_dedup_of_an_image_folder_compares_pictures_not_their_files(tmp_path):
    """The images source gives each row its file's path, format and size: compared by
    default, the path made every row unique, so a folder's duplicates were never found."""
    from dsbuild.io.sources import read_source

    (tmp_path / "cats").mkdir()
    for name, fmt in (("a.png", "png"), ("a.bmp", "bmp"), ("b.png", "png")):
        picture = data.camera() if name.startswith("a") else data.moon()
        (tmp_path / "cats" / name).write_bytes(encode_image(picture, fmt))
    frame = read_source({"format": "images", "path": str(tmp_path)}).frame.compute()
    assert {"path", "label", "image_format"} <= set(frame.columns)
    kept, rej = run_stage(ExactDedup(), frame, roles=Roles(image="image"))
    assert sorted(kept["id"]) == ["cats/a.bmp", "cats/b.png"] and rej["reason"].tolist() == ["duplicate-of=cats/a.bmp"]


def test_near_dedup_images_precision_recall_on_photo_copies_any_partitioning(client, copies):
    stage = NearDedupImages()
    frame = copies.drop(columns=["edits"])
    kept, rej = run_stage(stage, frame, npartitions=4)
    scores = dedup_scores(copies, kept, rej)
    assert scores["precision"] >= 0.99, scores
    assert scores["recall"] >= 0.95, scores
    s = stage.summary()
    assert s["clusters"] > 0 and s["close_comparisons"] > 0 and s["comparisons"] >= s["close_comparisons"]
    assert sum(s["cluster_sizes"].values()) == s["clusters"]
    stage1 = NearDedupImages()
    kept1, rej1 = run_stage(stage1, frame, npartitions=1)
    assert kept1["id"].tolist() == kept["id"].tolist()
    assert _pairs(rej1) == _pairs(rej)
    assert stage1.summary() == s  # pairs found in several partitions' bands are checked and counted once


def test_near_dedup_images_checks_look_alike_digits_on_the_pictures(client):
    """Digits hash as close as edited copies; the aligned check on thumbnails keeps them apart."""
    frame = near_copy_frame(80, seed=5, tile=0, faces=False, digits=150)
    trusting = run_stage(NearDedupImages(min_similarity=None), frame.drop(columns=["edits"]), npartitions=3)
    stage = NearDedupImages()
    checked = run_stage(stage, frame.drop(columns=["edits"]), npartitions=3)
    assert dedup_scores(frame, *trusting)["precision"] < 0.8
    scores = dedup_scores(frame, *checked)
    assert scores["precision"] >= 0.98 and scores["recall"] >= 0.9, scores
    s = stage.summary()
    assert s["pairs_checked_on_images"] >= s["pairs_rejected_on_images"] > 0
    assert _pairs(run_stage(NearDedupImages(), frame.drop(columns=["edits"]), npartitions=1)[1]) == _pairs(checked[1])


def test_near_dedup_images_checks_doubtful_pairs_on_the_workers(client, monkeypatch):
    """The doubtful pairs (those checked on the pictures) came to the driver, which sent a
    dict of their pictures' ids to every partition. They now travel by shuffles to the
    partitions of their pictures, and only counts reach the driver; the rows rejected
    and the counts are the same at any partitioning."""
    import pickle

    from dsbuild.stages.shapes import Shapes

    seen = []
    reduce, broadcast = Shapes._reduce, Shapes.broadcast
    monkeypatch.setattr(Shapes, "_reduce", lambda self, *a, **k: seen.append(reduce(self, *a, **k)) or seen[-1])
    monkeypatch.setattr(Shapes, "broadcast", lambda self, value, graph=None: seen.append(value) or broadcast(self, value, graph))
    frame = near_copy_frame(30, seed=5, tile=0, faces=False, digits=60).drop(columns=["edits"])
    outs = []
    for n in (1, 3):
        seen.clear()
        stage = NearDedupImages()
        _, rej = run_stage(stage, frame, npartitions=n)
        assert max(len(pickle.dumps(v)) for v in seen) < 2_000
        outs.append((_pairs(rej), stage.summary()))
    assert outs[0] == outs[1]
    assert outs[0][1]["pairs_checked_on_images"] >= outs[0][1]["pairs_rejected_on_images"] > 0


def test_near_dedup_images_moves_no_pair_when_none_is_doubtful(client, monkeypatch, copies):
    """With trust_distance at max_distance every pair the hashes find is trusted: none
    needs the pictures, and no pair is shuffled to their partitions to learn so."""
    from dsbuild.stages.shapes import Shapes

    routed = []
    route = Shapes.route
    monkeypatch.setattr(Shapes, "route", lambda self, rows, *a, **k: routed.append(list(rows.columns)) or route(self, rows, *a, **k))
    frame = copies.drop(columns=["edits"]).iloc[::3]
    stage = NearDedupImages(trust_distance=20)
    _, rej = run_stage(stage, frame, npartitions=3)
    assert len(rej) > 0 and stage.summary()["pairs_checked_on_images"] == 0
    assert not any("thumb_a" in columns for columns in routed)


def test_pigeonhole_search_finds_every_pair_within_distance(copies):
    frame = copies.drop(columns=["edits"]).iloc[::4]
    sampled = run_stage(NearDedupImages(max_distance=6), frame, npartitions=3)[1]
    exact = run_stage(NearDedupImages(max_distance=6, search="pigeonhole"), frame, npartitions=3)[1]
    assert set(sampled["id"]) <= set(exact["id"])
    assert len(exact) > 0


def test_mirror_option_catches_flipped_copies(mirrored):
    frame = mirrored.drop(columns=["edits"])
    flipped = mirrored["edits"].str.contains("mirror")
    assert flipped.sum() >= 10
    _, plain = run_stage(NearDedupImages(), frame, npartitions=2)
    kept, both = run_stage(NearDedupImages(mirror=True), frame, npartitions=2)
    def caught(rej):
        """Flipped copies that ended in a cluster (rejected, or kept with their original rejected)."""
        named = set(rej["id"]) | set(rej["reason"].str.split("=").str[1])
        return mirrored.loc[flipped, "id"].isin(named).mean()

    assert caught(both) >= 0.9 > caught(plain)
    assert dedup_scores(mirrored, kept, both)["precision"] >= 0.99


def _texts(n=100, seed=0):
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(4000)])
    docs = [" ".join(rng.choice(vocab, 120)) for _ in range(n)]
    rows = [{"id": f"d{i:04d}", "body": d, "group": i} for i, d in enumerate(docs)]
    for k in range(30):
        src = int(rng.integers(0, n))
        words = docs[src].split()
        pos = rng.integers(0, len(words), size=3)
        for p in pos:
            words[p] = "changed"
        rows.append({"id": f"e{k:04d}", "body": " ".join(words).upper(), "group": src})
    return pd.DataFrame(rows)


def test_near_dedup_text_finds_edited_copies_any_partitioning(client):
    frame = _texts()
    outs = [run_stage(NearDedupText(threshold=0.5), frame, npartitions=n, roles=Roles(text="body")) for n in (1, 4)]
    kept, rej = outs[0]
    scores = dedup_scores(frame, kept, rej)
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.95, scores
    assert _pairs(outs[1][1]) == _pairs(rej)


def test_near_dedup_text_finds_copies_a_little_above_the_threshold(client):
    """Bands were cut at the balanced S-curve, where a pair at the threshold (0.8) shares
    a band 40 % of the time and one at 0.87 80 %: a fifth of the copies with 4 words in
    300 changed (Jaccard 0.87, estimated above 0.8) were never compared."""
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    rows = []
    for k in range(80):
        words = list(rng.choice(vocab, 300))
        rows.append({"id": f"a{k:03d}", "body": " ".join(words)})
        for p in (30, 100, 170, 240):  # 4 changed words, far apart: 20 of 296 shingles each side
            words[p] = "changed"
        rows.append({"id": f"b{k:03d}", "body": " ".join(words)})
    kept, rej = run_stage(NearDedupText(), pd.DataFrame(rows), npartitions=2, roles=Roles(text="body"))
    assert (rej["id"].str[0] == "b").all() and (rej["reason"] == "duplicate-of=a" + rej["id"].str[1:]).all()
    assert len(rej) >= 0.95 * 80, len(rej)


def test_near_dedup_text_ignores_punctuation_case_and_width_but_not_words(client):
    frame = pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f"],
        "body": ["The quick brown fox jumps over the lazy dog", "the quick brown fox jumps over the lazy dog!",
                 "ＴＨＥ quick, brown fox — jumps over the lazy dog.", "A quick brown cat sleeps under the lazy dog",
                 "!!!", "???"],
    })
    kept, rej = run_stage(NearDedupText(), frame, roles=Roles(text="body"))
    assert sorted(rej["id"]) == ["b", "c"] and set(rej["reason"]) == {"duplicate-of=a"}
    assert sorted(kept["id"]) == ["a", "d", "e", "f"]  # texts without a word match nothing
    kept, rej = run_stage(NearDedupText(normalize=False), frame, roles=Roles(text="body"))
    assert rej.empty


def test_near_dedup_text_on_texts_shorter_than_a_shingle(client):
    """Titles: one shingle each, the same in every band. This crashed the verify step."""
    titles = [f"title number {i}" for i in range(40)] + ["Title number 7!"]
    frame = pd.DataFrame({"id": [f"t{i:02d}" for i in range(41)], "body": titles})
    kept, rej = run_stage(NearDedupText(), frame, roles=Roles(text="body"))
    assert rej["id"].tolist() == ["t40"] and rej["reason"].tolist() == ["duplicate-of=t07"]
    assert len(kept) == 40


def test_many_identical_texts_join_their_cluster_by_one_edge_each(client):
    """1,000 copies of a boilerplate review made half a million verified pairs, and a
    worker ran out of memory on 500; identical signatures now join by one edge each."""
    texts = ["Great product, would buy again, five stars"] * 800 + [f"review number {i} about item {i * 7} and more" for i in range(100)]
    frame = pd.DataFrame({"id": [f"r{i:04d}" for i in range(len(texts))], "body": texts})
    for n in (1, 3):
        stage = NearDedupText()
        kept, rejected = run_stage(stage, frame, npartitions=n, roles=Roles(text="body"))
        assert len(rejected) == 799 and set(rejected["reason"]) == {"duplicate-of=r0000"}
        assert stage.summary()["clusters"] == 1 and stage.summary()["close_comparisons"] < 799 * 30  # not 319,201 pairs


@pytest.mark.parametrize("stage", [ExactDedup, NearDedupText], ids=["exact", "near_text"])
def test_a_quality_column_of_text_is_an_error(stage):
    """Text read as numbers is all missing: the lowest id stayed, and nothing said the
    quality column was not used."""
    frame = pd.DataFrame({"id": ["a", "b"], "body": ["same words here and there", "same words here and there"],
                          "source": pd.array(["wiki", "web"], dtype="string")})
    with pytest.raises(StageError, match="quality column 'source' holds text"):
        run_stage(stage(quality="source", columns=["body"]) if stage is ExactDedup else stage(quality="source"),
                  frame, roles=Roles(text="body"))


def test_near_dedup_text_fields_empty_is_refused_not_read_as_the_default():
    """fields: [] compared columns.text, as if fields had not been given."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fields"):
        NearDedupText(fields=[])


def test_near_dedup_text_keeps_distinct_short_titles_apart(client):
    """200 titles of 3 shingles, any two sharing 2 (Jaccard 0.5), at the threshold 0.8:
    verified on the densified estimate, 18 rows over 10 seeds were dropped as duplicates
    (46 with bands cut for recall). What remains are the few titles whose one own shingle
    lost its bin to a shared one, so that their signature is another title's."""
    names = [a + b for a in ["Sequence", "Mapping", "Hashable", "Iterable", "Sized", "Container", "Callable",
                             "Awaitable", "Coroutine", "Generator"]
             for b in ["", "View", "Type", "Like", "Base", "Proxy", "Meta", "Spec", "Impl", "Item", "Key", "Value",
                       "Set", "List", "Dict", "Tuple", "Queue", "Stack", "Heap", "Tree"]]
    frame = pd.DataFrame({"id": [f"t{i:03d}" for i in range(200)], "body": [f"A generic version of collections.abc.{n}." for n in names]})
    dropped = sum(len(run_stage(NearDedupText(), frame, roles=Roles(text="body"), seed=seed)[1]) for seed in range(10))
    assert dropped <= 8, dropped


def test_near_dedup_text_judges_short_texts_on_their_shingles_not_the_estimate(client):
    """1,000 texts of 24-34 words, each with a copy one word apart in the middle (Jaccard
    0.6-0.7 at 5-word shingles), at the threshold 0.8: the signatures' estimate, few
    shingles spread over 128 bins, dropped 6 of the 2,000 rows (0.3 %). Texts of up to
    32 shingles are judged on the shingles themselves: none is a duplicate, and a copy
    edited in its last word (Jaccard 0.86-0.9) still is."""
    rng = np.random.default_rng(3)
    rows, close = [], []
    for k in range(1000):
        words = [f"w{i}" for i in rng.integers(0, 10**6, int(rng.integers(24, 35)))]
        rows.append({"id": f"a{k:03d}", "body": " ".join(words)})
        middle = list(words)
        middle[len(words) // 2] = "edited"
        rows.append({"id": f"m{k:03d}", "body": " ".join(middle)})
        if k % 20 == 0:
            rows.append({"id": f"z{k:03d}", "body": " ".join(words[:-1] + ["edited"])})
            close.append(f"z{k:03d}")
    kept, rej = run_stage(NearDedupText(), pd.DataFrame(rows), npartitions=2, roles=Roles(text="body"))
    assert set(rej["id"]) <= set(close) and len(rej) >= 0.9 * len(close), (sorted(rej["id"]), close)
    assert (rej["reason"] == "duplicate-of=a" + rej["id"].str[1:]).all()


def test_near_dedup_text_needs_a_text_column():
    with pytest.raises(StageError, match="columns.text"):
        run_stage(NearDedupText(), _texts(5))


def test_decontaminate_drops_exact_and_near_copies_of_the_reference(tmp_path, copies):
    from dsbuild.stages.dedup import Decontaminate

    originals = copies[copies["edits"] == "original"]
    test_split = originals.iloc[:40][["id", "image"]].assign(id=lambda d: "test-" + d["id"])
    test_split.to_parquet(tmp_path / "test.parquet")
    train = copies[~copies["id"].isin(originals.iloc[:40]["id"])].drop(columns=["edits"])
    leaked = train["group"].isin(originals.iloc[:40]["group"])
    stage = Decontaminate(reference={"format": "parquet", "path": str(tmp_path / "test.parquet")})
    kept, rej = run_stage(stage, train, npartitions=3, roles=Roles(image="image"))
    assert leaked.sum() > 0
    assert rej["reason"].str.startswith("contaminated=test-img-").all()
    caught = train.loc[leaked, "id"].isin(rej["id"]).mean()
    assert caught >= 0.85 and not train.loc[~leaked, "id"].isin(rej["id"]).any()


@pytest.mark.parametrize("match", ["exact", "near", "contained"])
def test_decontaminate_an_empty_text_is_no_leak_of_an_empty_reference_text(tmp_path, match):
    """A test set with one empty or missing question made every empty or missing text of
    the data 'contaminated' by it (equal hashes), while near_dedup_text leaves such texts out."""
    pd.DataFrame({"text": ["what is the capital of france answer paris", "", None, "  "]}).to_json(
        tmp_path / "ref.jsonl", orient="records", lines=True)
    data = pd.DataFrame({"id": list("abcde"), "text": ["what is the capital of france answer paris", "", None, "   ", "other"]})
    stage = Decontaminate(reference={"format": "jsonl", "path": str(tmp_path / "ref.jsonl")}, match=match)
    kept, rej = run_stage(stage, data, roles=Roles(text="text"))
    assert rej["id"].tolist() == ["a"] and rej["reason"].tolist() == ["contaminated=ref.jsonl:0"]
    assert kept["id"].tolist() == ["b", "c", "d", "e"]


def test_decontaminate_contained_finds_a_test_item_quoted_inside_a_long_document(tmp_path):
    """near compares whole texts: a test paragraph inside a page five times its length
    has a Jaccard of about 0.2 with it and was kept. contained finds it, and keeps pages
    that share a phrase or two with the test set."""
    from sklearn import datasets

    paragraphs = [p for load in (datasets.load_breast_cancer, datasets.load_diabetes, datasets.load_wine, datasets.load_iris)
                  for p in load().DESCR.split("\n\n") if len(p.split()) >= 25]
    test_items, others = paragraphs[:6], paragraphs[6:]
    pd.DataFrame({"id": [f"t{i}" for i in range(len(test_items))], "text": test_items}).to_parquet(tmp_path / "test.parquet")
    pages = []
    for i in range(30):
        body = [others[(i + k) % len(others)] for k in range(5)]
        if i % 3 == 0:
            body.insert(2, test_items[i % len(test_items)])
        elif i % 3 == 1:
            body.insert(1, " ".join(test_items[i % len(test_items)].split()[:6]))  # a phrase, not the item
        pages.append("\n\n".join(body))
    data = pd.DataFrame({"id": [f"p{i:02d}" for i in range(30)], "text": pages})
    reference = {"format": "parquet", "path": str(tmp_path / "test.parquet")}
    leaked = [f"p{i:02d}" for i in range(0, 30, 3)]
    for n in (1, 4):
        _, near = run_stage(Decontaminate(reference=reference), data, npartitions=n, roles=Roles(text="text"))
        kept, rej = run_stage(Decontaminate(reference=reference, match="contained"), data, npartitions=n, roles=Roles(text="text"))
        assert near.empty
        assert rej["id"].tolist() == leaked and len(kept) == 20
        assert rej["reason"].tolist() == [f"contaminated=t{i % 6}" for i in range(0, 30, 3)]


def test_decontaminate_contained_needs_text(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "ref.parquet")
    stage = Decontaminate(reference={"format": "parquet", "path": str(tmp_path / "ref.parquet")}, match="contained")
    with pytest.raises(StageError, match="match: contained looks for reference texts inside rows, and this stage compares rows"):
        run_stage(stage, pd.DataFrame({"id": ["x", "y"], "a": [1, 3]}))


def test_decontaminate_with_no_column_shared_with_the_reference_is_an_error(tmp_path):
    """Compared on no columns, every row hashed alike and every row of the data was
    rejected as contaminated by the reference's first row; validate said ok."""
    pd.DataFrame({"question": ["what is 2 + 2"]}).to_json(tmp_path / "ref.jsonl", orient="records", lines=True)
    stage = Decontaminate(reference={"format": "jsonl", "path": str(tmp_path / "ref.jsonl")})
    with pytest.raises(StageError, match=r"share no column to compare; the reference's columns are \['question'\]"):
        run_stage(stage, pd.DataFrame({"id": ["a", "b"], "body": ["x", "y"]}))


def test_decontaminate_names_the_reference_when_it_lacks_a_column(tmp_path):
    """The error said the column was 'not in the data' and listed the reference's internal columns."""
    pd.DataFrame({"question": ["what is 2 + 2"]}).to_json(tmp_path / "ref.jsonl", orient="records", lines=True)
    stage = Decontaminate(reference={"format": "jsonl", "path": str(tmp_path / "ref.jsonl")}, kind="text")
    with pytest.raises(StageError, match=r"column 'text' is not in the reference .*ref.jsonl; its columns are \['question'\]"):
        run_stage(stage, pd.DataFrame({"id": ["a"], "text": ["what is 2 + 2"]}), roles=Roles(text="text"))


def test_decontaminate_rows_of_a_reference_written_with_other_types(tmp_path):
    """The test split written by pandas (integers as floats beside a missing value,
    timestamps in nanoseconds) and the data by another tool (nullable integers,
    microseconds, booleans with nulls): equal rows hashed apart and no leak was caught."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsbuild.io.sources import to_pandas
    from dsbuild.stages.dedup import Decontaminate

    start = datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc)
    data = to_pandas(pa.table({
        "id": [f"r{i}" for i in range(6)],
        "n": pa.array([1, 2, 3, None, 5, 6], pa.int64()),
        "t": pa.array([start + datetime.timedelta(hours=i) for i in range(6)], pa.timestamp("us", tz="UTC")),
        "b": pa.array([True, False, None, True, False, True]),
    }))
    reference = data.iloc[[0, 2, 3]].assign(
        id=lambda d: "test-" + d["id"], n=lambda d: d["n"].astype("float64"),
        t=lambda d: d["t"].dt.tz_convert("Europe/Paris").astype("datetime64[ns, Europe/Paris]"), b=lambda d: d["b"].astype(object),
    )
    reference.to_parquet(tmp_path / "test.parquet")
    assert pq.read_schema(tmp_path / "test.parquet").field("n").type == pa.float64()
    stage = Decontaminate(reference={"format": "parquet", "path": str(tmp_path / "test.parquet")}, match="exact", kind="rows")
    kept, rej = run_stage(stage, data, npartitions=2)
    assert rej["id"].tolist() == ["r0", "r2", "r3"] and rej["reason"].tolist() == ["contaminated=test-r0", "contaminated=test-r2", "contaminated=test-r3"]


def test_keeper_is_the_lowest_id_in_long_and_short_runs():
    import pyarrow as pa

    from dsbuild.stages.dedup import segment_argmin

    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 17, 40, 5]
    values = [f"id{v:04d}" for v in rng.permutation(sum(sizes))]
    starts = np.cumsum([0, *sizes[:-1]])
    best = segment_argmin(pa.array(values), starts)
    for lo, n, b in zip(starts, sizes, best):
        assert values[b] == min(values[lo : lo + n])


def test_spread_text_places_values_at_the_marked_rows_and_nulls_elsewhere():
    import pyarrow as pa

    from dsbuild.stages.dedup import spread_text

    values = pa.array(["skip", "a", "", "ccc"], pa.large_string()).slice(1)  # offset into a buffer
    where = np.array([False, True, False, False, True, True, False])
    out = spread_text(values, where)
    out.validate(full=True)
    assert out.to_pylist() == [None, "a", None, None, "", "ccc", None]


def test_rejecting_pass_keeps_an_earlier_reason_and_checks_the_ids():
    import pyarrow as pa

    from dsbuild.stages.base import REJECT
    from dsbuild.stages.dedup import _drop_routed

    def text(values):
        return pd.arrays.ArrowExtensionArray(pa.array(values, pa.large_string()))

    part = pd.DataFrame({"id": ["a", "b", "c", "d"], "x": [1, 2, 1, 2]})
    dropped = pd.DataFrame({"_at": np.array([3, 1, 2], dtype=np.int64), "id": text(["d", "b", "c"]), "_keeper": text(["b", "a", "a"])})
    fresh = _drop_routed(part, dropped)
    assert fresh[REJECT].tolist()[1:] == ["duplicate-of=a", "duplicate-of=a", "duplicate-of=b"] and pd.isna(fresh[REJECT].iloc[0])
    marked = _drop_routed(part.assign(**{REJECT: [None, "range:x", None, None]}), dropped)
    assert marked[REJECT].tolist()[1:] == ["range:x", "duplicate-of=a", "duplicate-of=b"]
    with pytest.raises(RuntimeError, match="changed between its two passes"):
        _drop_routed(part.iloc[::-1].reset_index(drop=True), dropped)


def test_duplicate_groups_split_hashes_that_share_their_leading_bits():
    """The sort keys rows by a hash's leading bits: rows that differ only below them
    (A, B, A here) share a run, and only the equal ones form a group."""
    import pyarrow as pa

    from dsbuild.stages.dedup import cluster_stats, duplicates_in_groups

    a, b, c = np.uint64(0xABCD << 40), np.uint64((0xABCD << 40) | 1), np.uint64(7 << 60)
    thin = pd.DataFrame({
        "_h1": np.array([a, b, a, c, a, b], dtype=np.uint64),
        "_h2": np.array([1, 2, 1, 3, 1, 2], dtype=np.uint64),
        "id": pd.arrays.ArrowExtensionArray(pa.array(["r5", "r1", "r3", "r0", "r4", "r9"], pa.large_string())),
        "_at": np.arange(6, dtype=np.int64) + (np.int64(2) << np.int64(32)),
    })
    out = duplicates_in_groups(thin).sort_values("id")
    assert out["id"].tolist() == ["r4", "r5", "r9"]
    assert out["_keeper"].tolist() == ["r3", "r3", "r1"]
    assert out["_size"].tolist() == [3, 3, 2]
    assert (out["_partition"] == 2).all() and sorted(out["_at"] & 0xFFFFFFFF) == [0, 4, 5]
    stats = cluster_stats(out)
    assert (stats["clusters"], stats["rows_in_clusters"], stats["cluster_sizes"]) == (2, 5, {"2": 1, "3-4": 1})


def test_exact_dedup_encodes_each_text_column_once(monkeypatch):
    """The thin frame's two hashes: each text column was dictionary-encoded for each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dsbuild.io.sources import to_pandas

    part = to_pandas(pa.Table.from_pandas(_adult(300), preserve_index=False))
    text = [c for c in ExactDedup().columns(part) if pd.api.types.is_string_dtype(part[c].dtype)]
    encodes = []
    real = pc.dictionary_encode
    monkeypatch.setattr(pc, "dictionary_encode", lambda *a, **k: encodes.append(1) or real(*a, **k))
    thin = ExactDedup().fingerprints(part)
    assert len(text) == 9 and len(encodes) == len(text)
    assert thin["_h1"].nunique() == len(part.drop(columns="id").drop_duplicates())


def test_exact_dedup_decodes_each_image_once(monkeypatch, copies):
    """The two hashes of a row of pixels: every image was decoded for each."""
    from dsbuild.kernels import hashing
    from dsbuild.stages import StageContext

    part = copies.iloc[:40].reset_index(drop=True)
    stage = ExactDedup()
    stage.bind(StageContext("exact_dedup", 0, Roles(image="image")))
    decoded = []
    real = hashing.decode_image
    monkeypatch.setattr(hashing, "decode_image", lambda data: decoded.append(1) or real(data))
    thin = stage.fingerprints(part)
    assert len(decoded) == len(part)
    assert thin["_h1"].nunique() == thin["_h2"].nunique() == len(set(zip(thin["_h1"], thin["_h2"])))


def test_exact_dedup_rows_sharing_the_shuffle_hash_stay_apart(monkeypatch):
    """Every row's 64-bit shuffle hash collides: the second hash alone keeps distinct rows
    apart, so the result is the same as with real hashes (the documented guarantee:
    rows merge only if both hashes, 128 bits, agree)."""
    import dask

    df = _adult(200)
    frame = pd.concat([df, df.sample(30, random_state=1).assign(id=lambda d: "z" + d["id"])], ignore_index=True)
    want_kept, want_rej = run_stage(ExactDedup(), frame, npartitions=3)
    real = ExactDedup.content_hashes

    collided = []

    def colliding(self, part):
        h, check = real(self, part)
        collided.append(len(part) > 0)
        return np.zeros_like(h), check

    monkeypatch.setattr(ExactDedup, "content_hashes", colliding)
    with dask.config.set(scheduler="sync"):  # the patched method runs in this process
        kept, rej = run_stage(ExactDedup(), frame, npartitions=3)
    assert any(collided)
    assert len(rej) == 30 and rej["id"].str.startswith("z").all()
    assert kept["id"].tolist() == want_kept["id"].tolist()
    assert _pairs(rej) == _pairs(want_rej)


def test_near_dedup_images_decides_alike_on_hugging_face_image_structs(client, as_hf_images):
    """The struct ``datasets`` writes for Image(): the same duplicates as the bytes, the
    column kept as it came; a path without bytes is not hashed, like a missing image."""
    frame = near_copy_frame(30, seed=6, tile=0, faces=True).drop(columns=["edits", "group"])
    frame["image"] = frame["image"].where(frame.index != 3)
    plain = run_stage(NearDedupImages(), frame, npartitions=2, roles=Roles(image="image"))
    hf_frame = as_hf_images(frame)
    kept, rej = run_stage(NearDedupImages(), hf_frame, npartitions=2, roles=Roles(image="image"))
    assert len(plain[1]) > 0 and frame["id"][3] in set(plain[0]["id"])
    assert kept["id"].tolist() == plain[0]["id"].tolist() and _pairs(rej) == _pairs(plain[1])
    assert kept["image"].dtype == hf_frame["image"].dtype
    assert kept["image"].tolist() == hf_frame.set_index("id")["image"][kept["id"]].tolist()


def test_exact_dedup_and_decontaminate_decide_alike_on_hugging_face_image_structs(tmp_path, copies, as_hf_images):
    """Train rows and the reference file both in the struct ``datasets`` writes for
    Image(): the same rows removed for the same reasons as with plain bytes."""
    from dsbuild.stages.dedup import Decontaminate

    originals = copies[copies["edits"] == "original"].iloc[:10]
    train = copies[copies["group"].isin(copies["group"].unique()[:20]) & ~copies["id"].isin(originals["id"])]
    train = pd.concat([train, train.iloc[:5].assign(id=lambda d: "z" + d["id"])], ignore_index=True)[["id", "image"]]
    reference = originals[["id", "image"]].assign(id=lambda d: "test-" + d["id"])
    roles = Roles(image="image")
    decisions = {}
    for form, convert in (("bytes", lambda f: f), ("struct", as_hf_images)):
        reference_path = tmp_path / f"reference-{form}.parquet"
        convert(reference).to_parquet(reference_path)
        frame = convert(train)
        decisions[form] = [
            _pairs(run_stage(stage, frame, npartitions=2, roles=roles)[1])
            for stage in (ExactDedup(), Decontaminate(reference={"format": "parquet", "path": str(reference_path)}))
        ]
    dedup, contaminated = decisions["bytes"]
    assert len(dedup) == 5 and all(reason.startswith("duplicate-of=") for _, reason in dedup)
    assert len(contaminated) > 0 and all(reason.startswith("contaminated=test-") for _, reason in contaminated)
    assert decisions["struct"] == decisions["bytes"]


@pytest.mark.parametrize("stage, options", [(ExactDedup, {}), (NearDedupText, {"threshold": 0.5})], ids=["exact", "near_text"])
def test_action_group_keeps_every_row_and_names_the_kept_copy(client, stage, options):
    """The group column holds what drop would have named in duplicate-of=, and a row in no
    cluster its own id; the same at any partitioning, and nothing is rejected."""
    if stage is ExactDedup:
        df = _adult()
        frame = pd.concat([df, df.sample(80, random_state=0).assign(id=lambda d: "z" + d["id"])], ignore_index=True)
        roles = None
    else:
        frame, roles = _texts(), Roles(text="body")
    _, dropped = run_stage(stage(**options), frame, npartitions=3, roles=roles)
    named = dict(zip(dropped["id"], dropped["reason"].str.removeprefix("duplicate-of=")))
    assert named
    groups = []
    for n in (1, 4):
        kept, rejected = run_stage(stage(**options, action="group"), frame, npartitions=n, roles=roles)
        assert rejected.empty and sorted(kept["id"]) == sorted(frame["id"])
        group = dict(zip(kept["id"], kept["duplicate_group"]))
        assert group == {i: named.get(i, i) for i in frame["id"]}
        groups.append(group)
    assert groups[0] == groups[1]


def test_action_group_column_must_be_new_and_split_is_told_to_keep_groups_together():
    from dsbuild.stages import StageContext
    from dsbuild.stages.split import Split

    frame = _adult(20).assign(duplicate_group="x")
    with pytest.raises(StageError, match="group_column 'duplicate_group' is already a column"):
        run_stage(ExactDedup(action="group"), frame)
    dedup = NearDedupText(action="group").bind(StageContext("near_dedup_text", 0))
    (note,) = Split().bind(StageContext("split", 0)).order_warnings([dedup], [])
    assert "give 'split' by: [duplicate_group]" in note
    assert Split(by=["duplicate_group"]).bind(StageContext("split", 0)).order_warnings([dedup], []) == []
    assert list(dedup.columns_after(frame.drop(columns="duplicate_group").iloc[:0]).columns)[-1] == "duplicate_group"


def test_an_image_column_of_file_names_is_text_to_exact_dedup_and_refused_by_image_stages():
    """A CSV manifest (image,label) names its pictures' files in a column called image:
    exact_dedup read each name as a picture that did not decode, so every row of a class
    was the same one and all but one were dropped. Image stages say the column is text."""
    from dsbuild.stages.augment import Augment
    from dsbuild.stages.clean import ValidateImages
    from dsbuild.stages.sanitize import Sanitize

    frame = pd.DataFrame({"id": ["r0", "r1", "r2", "r3"], "image": ["cats/1.jpg", "cats/2.jpg", "cats/2.jpg", "cats/3.jpg"],
                          "label": ["cat"] * 4})
    for image in ("image", None):
        kept, rej = run_stage(ExactDedup(), frame, roles=Roles(image=image, label="label"))
        assert kept["id"].tolist() == ["r0", "r1", "r3"] and rej["reason"].tolist() == ["duplicate-of=r1"]
    for stage in (ValidateImages(), NearDedupImages(), Augment(copies=1), Sanitize(features="image")):
        with pytest.raises(StageError, match="image column 'image' holds text"):
            run_stage(stage, frame, roles=Roles(image="image", label="label"))


def test_near_dedup_images_with_one_hash_keeps_apart_what_the_pair_of_hashes_does():
    """max_distance 20 is the default for pHash and dHash side by side (128 bits): with one
    64-bit hash it kept the same 20, a third of the bits, and took a page of text for a
    photo of coins (and made 25,652 sampled bands). One hash's default is 10; a distance
    no band can reach is refused before the run (it failed with a traceback, or hung
    making millions of bands)."""
    from pydantic import ValidationError

    pictures = {"coins": data.coins(), "page": data.page()}
    frame = pd.DataFrame({"id": list(pictures), "image": pd.Series([encode_image(p, "png") for p in pictures.values()],
                                                                    dtype=IMAGE_DTYPE)})
    for kind in ("phash+dhash", "phash", "dhash"):
        kept, rej = run_stage(NearDedupImages(hash=kind), frame, roles=Roles(image="image"))
        assert rej.empty, kind
    assert NearDedupImages(hash="phash").options.distance == 10 and NearDedupImages().options.distance == 20
    assert NearDedupImages(hash="dhash", max_distance=12).options.distance == 12
    for bad in ({"hash": "phash", "max_distance": 64}, {"max_distance": 64}, {"hash": "phash", "search": "pigeonhole", "max_distance": 64}):
        with pytest.raises(ValidationError, match="max_distance 64"):
            NearDedupImages(**bad)
    with pytest.raises(ValidationError, match="max_distance 64 of phash.dhash's 128 bits needs 14,042,995 sampled bands"):
        Decontaminate(reference={"format": "sample", "name": "digits"}, max_distance=64)  # the same search, for leaks


def test_a_cluster_of_licence_variants_costs_comparisons_linear_in_its_size(client):
    """3,000 variants of one licence (a copyright line apart) were verified pair by pair:
    4.5 M pairs in each of 16 bands, 30 s and 2.9 GB. Each row is now compared with its
    bucket's leaders, about one comparison per row and band."""
    body = open("/usr/share/common-licenses/BSD").read() if Path("/usr/share/common-licenses/BSD").exists() else \
        " ".join(f"clause{i} of the licence" for i in range(60))
    n = 600
    frame = pd.DataFrame({"id": [f"l{(i * 7919) % n:04d}" for i in range(n)],
                          "body": [f"Copyright (c) {1980 + i % 40} holder number {i}. {body}" for i in range(n)]})
    runs = []
    for parts in (1, 3):
        stage = NearDedupText()
        kept, rej = run_stage(stage, frame, npartitions=parts, roles=Roles(text="body"))
        runs.append((_pairs(rej), stage.summary()))
    (pairs, summary), (pairs3, summary3) = runs
    assert len(pairs) == n - 1 and {r for _, r in pairs} == {"duplicate-of=l0000"}
    assert summary["comparisons"] <= 16 * n, summary  # 16 bands: not n (n - 1) / 2 = 179,700
    assert pairs3 == pairs and summary3 == summary  # the counts too, at any partitioning


def test_a_row_close_to_two_leaders_joins_both():
    """Leaders that are not close to each other are joined through a row close to both, as
    comparing every pair would; a row far from every leader leads in turn."""
    from dsbuild.stages.dedup import leader_pairs

    close_pairs = {(0, 2), (1, 2), (3, 4)}
    keys = np.array([5, 5, 5, 9, 9, 9], dtype=np.uint64)

    def close(i, j):
        good = np.array([(a, b) in close_pairs for a, b in zip(i, j)])
        return good, np.where(good, 0.1, 0.9)

    i, j, _, compared = leader_pairs(keys, lambda i, j: np.ones(len(i), bool), close)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (1, 2), (3, 4)]
    assert compared == 2 + 1 + 2 + 0  # leader 0: 1, 2; leader 1: 2; leader 3: 4, 5; leader 5: none


def test_verifying_a_big_bucket_hashes_each_row_once_not_each_pair():
    """1,500 variants of one license (a copyright line apart) made 1.1 M pairs in every
    band, and each pair's band keys were recomputed from both signatures: 113 s and
    6.4 GB of worker memory for 1,500 rows. Keys now come once per row."""
    from dsbuild.stages.dedup import TextSigner, band_rows, signatures, verify_buckets, with_payloads

    class Counting(TextSigner):
        most = 0

        def keys(self, payload):
            Counting.most = max(Counting.most, len(payload))
            return super().keys(payload)

    body = " ".join(f"word{i}" for i in range(120))
    frame = pd.DataFrame({"id": [f"r{i:03d}" for i in range(150)], "body": [f"copyright {i} holder {i} {body}" for i in range(150)]})
    signer = Counting(["body"], 128, 5, "word", 0.8, seed=1)
    signed = signatures(frame, signer, None)
    exploded = with_payloads(signed, band_rows(signed, signer, np.uint32))
    Counting.most = 0
    edges = verify_buckets(exploded, signer, np.uint32)
    assert Counting.most <= len(exploded)  # rows, not the pairs of every band (104,000 here)
    assert edges["verified"].sum() >= edges["a"].notna().sum() > 0  # close pairs counted in every band they share


@pytest.mark.parametrize("rounds", [False, True], ids=["one-task", "rounds"])
@pytest.mark.parametrize("options", [{}, {"quality": "stars"}, {"action": "group"}], ids=["drop", "quality", "group"])
def test_near_dedup_text_brings_counts_to_the_driver_not_its_clusters(client, monkeypatch, options, rounds):
    """Every edge went into one union-find forest on the driver, and a dict of every
    dropped id was sent to every partition: tens of millions of entries at 100 M texts.
    Components now come from shuffles (or, for few close pairs, one task on a worker),
    and only counts reach the driver; a chain of copies of copies is still one cluster
    whose keeper follows the keep rule, at any partitioning."""
    import pickle

    from dsbuild.stages.shapes import Shapes
    from dsbuild.stages.dedup import near

    if rounds:  # this path of 300 copies takes several rounds of star steps
        monkeypatch.setattr(near, "ONE_TASK_EDGES", 0)
    seen = []
    reduce, broadcast = Shapes._reduce, Shapes.broadcast
    monkeypatch.setattr(Shapes, "_reduce", lambda self, *a, **k: seen.append(reduce(self, *a, **k)) or seen[-1])
    monkeypatch.setattr(Shapes, "broadcast", lambda self, value, graph=None: seen.append(value) or broadcast(self, value, graph))
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in rng.integers(0, 5000, 80)]
    rows = []
    for k in range(300):  # each text a copy of the one before with one more word changed: a path of edges
        words[(k * 37) % 80] = f"x{k}"
        rows.append({"id": f"c{(k * 101) % 300}", "body": " ".join(words), "stars": float(k % 7)})
    rows += [{"id": f"u{k}", "body": " ".join(rng.choice(words, 40)) + f" u{k}", "stars": 1.0} for k in range(20)]
    frame = pd.DataFrame(rows)
    outs = []
    for n in (1, 3):
        seen.clear()
        stage = NearDedupText(threshold=0.5, **options)
        kept, rej = run_stage(stage, frame, npartitions=n, roles=Roles(text="body"))
        assert max(len(pickle.dumps(v)) for v in seen) < 2_000  # sums and counts, not 300 ids
        outs.append((kept.astype(str).values.tolist(), _pairs(rej), stage.summary()))
    assert outs[0] == outs[1]
    kept, rej, summary = outs[0]
    assert summary["clusters"] >= 1 and summary["rows_in_clusters"] >= 250
    if options.get("action") == "group":
        assert not rej
    else:
        keepers = {reason for _, reason in rej}
        want = "c0" if not options else frame.loc[frame["id"].str.startswith("c")].sort_values(
            ["stars", "id"], ascending=[False, True], key=lambda s: s.str[1:].astype(int) if s.name == "id" else s)["id"].iloc[0]
        assert f"duplicate-of={want}" in keepers


@pytest.mark.parametrize("options", [{}, {"quality": "stars"}], ids=["id", "quality"])
def test_few_close_pairs_find_their_components_in_one_task(client, monkeypatch, options):
    """Each round of star steps costs two shuffles and two computes, most of a small
    job's time in the stage. Where the close pairs are few, the links meet in one task;
    the clusters, keepers and counts are those the rounds of shuffles find."""
    from dsbuild.stages.shapes import Shapes
    from dsbuild.stages.dedup import near

    labels = []
    group = Shapes.group
    monkeypatch.setattr(Shapes, "group", lambda self, frame, *a, **k: labels.append(k.get("label", "")) or group(self, frame, *a, **k))
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in rng.integers(0, 5000, 60)]
    rows = []
    for k in range(120):  # a path of copies, each one word further from the first, and some strangers
        words[(k * 13) % 60] = f"x{k}"
        rows.append({"id": f"c{(k * 37) % 120}", "body": " ".join(words), "stars": float(k % 5)})
    rows += [{"id": f"u{k}", "body": " ".join(rng.choice(words, 30)) + f" u{k}", "stars": 2.0} for k in range(20)]
    frame = pd.DataFrame(rows)
    outs = []
    for bound, parts in ((near.ONE_TASK_EDGES, 1), (near.ONE_TASK_EDGES, 3), (0, 3)):
        monkeypatch.setattr(near, "ONE_TASK_EDGES", bound)
        labels.clear()
        stage = NearDedupText(threshold=0.5, **options)
        kept, rej = run_stage(stage, frame, npartitions=parts, roles=Roles(text="body"))
        assert any("large-star" in label for label in labels) == (bound == 0)
        outs.append((kept["id"].tolist(), _pairs(rej), stage.summary()))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0][2]["rows_in_clusters"] >= 100


def test_band_rows_carry_a_signature_only_where_their_bucket_is_shared(client, monkeypatch):
    """Every band row carried its record's whole signature into the shuffle by band key
    (512 bytes, 16 times a text: 599 MB of shuffled pieces for 100,000 texts); rows
    whose bucket holds no other row are never compared. Thin band rows meet first, and
    only rows of shared buckets fetch their signature."""
    from dsbuild.stages.shapes import Shapes
    from dsbuild.stages.dedup import TextSigner

    grouped = []
    group = Shapes.group
    monkeypatch.setattr(Shapes, "group", lambda self, frame, *a, **k: grouped.append(frame) or group(self, frame, *a, **k))
    rng = np.random.default_rng(4)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 50_000, 60)) for _ in range(200)]
    copies = [t.rsplit(" ", 1)[0] + " changed" for t in texts[:10]]  # the last word: one shingle of 56 differs
    frame = pd.DataFrame({"id": [f"t{i:03d}" for i in range(210)], "body": texts + copies})
    kept, rej = run_stage(NearDedupText(), frame, npartitions=2, roles=Roles(text="body"))
    assert sorted(rej["id"]) == [f"t{i:03d}" for i in range(200, 210)]
    bands = TextSigner(["body"], 128, 5, "word", 0.8, seed=1).bands
    signed_rows = sum(len(f) for f in grouped if "_payload" in f.columns)
    assert 0 < signed_rows <= 2 * bands * len(copies), (signed_rows, 210 * bands)


def test_near_dedup_shuffles_by_band_key_take_their_partition_count_from_their_size(client, monkeypatch):
    """The shuffles by band key kept their input's partition count: the same 50,000 texts
    took 41-43 s in 32 partitions (32 x 32 pieces a shuffle) and 15-21 s in 8. Their count
    now follows the bytes the signatures measured; the output does not depend on it."""
    from dsbuild.stages.shapes import Shapes
    from dsbuild.stages.dedup import near

    counts = []
    group = Shapes.group

    def counted(self, frame, key, fn, meta=None, label="group", npartitions=None):
        if label.endswith(("-shared", "-buckets")):
            counts.append(npartitions or frame.npartitions)
        return group(self, frame, key, fn, meta=meta, label=label, npartitions=npartitions)

    monkeypatch.setattr(Shapes, "group", counted)
    frame = _texts()
    outs = []
    for parts, partition_bytes in ((1, None), (8, None), (8, 65536)):
        if partition_bytes:
            monkeypatch.setattr(near, "SHUFFLE_PARTITION_BYTES", partition_bytes, raising=False)
        counts.clear()
        kept, rej = run_stage(NearDedupText(threshold=0.5), frame, npartitions=parts, roles=Roles(text="body"))
        outs.append((kept["id"].tolist(), _pairs(rej)))
        assert len(counts) == 2 and all(1 <= c <= parts for c in counts), counts
        assert counts == [1, 1] if partition_bytes is None else 1 < counts[0] < parts, counts
    assert outs[0] == outs[1] == outs[2] and len(outs[0][1]) >= 28


def _near_copy_texts(path: Path, seed: int = 6) -> None:
    """JSON lines of 160 texts and 80 copies edited near the default threshold (0.8), where
    MinHash's estimate decides: some copies fall on either side under another seed."""
    rng = np.random.default_rng(seed)
    docs = [[f"w{i}" for i in rng.integers(0, 20_000, 80)] for _ in range(160)]
    rows = [{"id": f"d{i:03d}", "body": " ".join(d)} for i, d in enumerate(docs)]
    for k in range(80):
        words = list(docs[k])
        for p in rng.choice(80, 2, replace=False):
            words[p] = f"edit{k}"
        rows.append({"id": f"e{k:03d}", "body": " ".join(words)})
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)


def test_near_dedup_output_is_the_seeds_whatever_the_workers_and_partitions(client, tmp_path):
    """The output of near_dedup_text (MinHash permutations from the job's seed) and of
    near_dedup_images (band bits sampled from it) is the same on 1 and 2 workers and at
    any partitioning; another seed may find other pairs near the threshold, each judged
    on its exact similarity."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    import dsbuild

    _near_copy_texts(tmp_path / "texts.jsonl")
    images = near_copy_frame(30, seed=5, tile=0, faces=False, digits=60).drop(columns=["edits"])
    for partitions in (2, 5):
        pq.write_table(pa.Table.from_pandas(images, preserve_index=False), tmp_path / f"images-{partitions}.parquet",
                       row_group_size=-(-len(images) // partitions))

    def jobs(tag, partitions, seed=0):
        texts = {"name": "texts", "seed": seed, "columns": {"text": "body"}, "stages": [{"near_dedup_text": {}}],
                 "source": {"format": "jsonl", "path": str(tmp_path / "texts.jsonl"), "blocksize": 4096 * 8 // partitions},
                 "sink": {"path": str(tmp_path / f"texts-{tag}")}}
        pictures = {"name": "images", "seed": seed, "columns": {"image": "image"}, "stages": [{"near_dedup_images": {}}],
                    "source": {"format": "parquet", "path": str(tmp_path / f"images-{partitions}.parquet")},
                    "sink": {"path": str(tmp_path / f"images-{tag}")}}
        return texts, pictures

    def outputs(manifests):
        out = []
        for m in manifests:
            folder = Path(m["job"]["sink"]["path"])
            rejects = pd.read_parquet(folder / "rejects")
            out.append((sorted(pd.read_parquet(folder / "data")["id"]), sorted(zip(rejects["id"], rejects["reason"])),
                        m["stages"][-1]["summary"]))
        return out

    two = outputs([dsbuild.run(j, client=client) for j in jobs("two", 5)])
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="2GiB", dashboard_address=":0") as cluster, Client(cluster) as one:
        single = outputs([dsbuild.run(j, client=one) for j in jobs("one", 2)])
    assert single == two
    (_, text_rejects, _), (_, image_rejects, image_summary) = two
    assert len(text_rejects) >= 20 and len(image_rejects) > 0 and image_summary["pairs_rejected_on_images"] > 0
    other_seed = outputs([dsbuild.run(jobs("seed", 5, seed=1)[0], client=client)])[0]
    texts = pd.read_json(tmp_path / "texts.jsonl", lines=True).set_index("id")["body"]

    def jaccard(a, b):
        sa, sb = (set(shingle_hashes([texts[i]])[0].tolist()) for i in (a, b))
        return len(sa & sb) / len(sa | sb)

    for rejects in (text_rejects, other_seed[1]):  # the seed picks which pairs the bands find; each is judged exactly
        assert all(jaccard(rid, reason.split("=")[1]) >= 0.8 for rid, reason in rejects)


def test_near_dedup_says_how_many_rows_it_could_not_compare():
    """An image that does not decode, or an empty text, has no signature and is compared
    with none; the summary counted clusters only, so a folder a third unreadable looked
    deduplicated."""
    png = encode_image(data.camera(), "png")
    images = pd.DataFrame({"id": ["a", "b", "c", "d"], "image": pd.Series([png, png, b"not an image", b""], dtype=IMAGE_DTYPE)})
    stage = NearDedupImages()
    kept, _ = run_stage(stage, images, roles=Roles(image="image"), npartitions=2)
    assert stage.summary()["rows_signed"] == 2 and len(kept) == 3
    (note,) = stage.result_warnings({"in": 4, "summary": stage.summary(), "metrics": {}})
    assert "2 of its 4 rows have no picture that decodes" in note, note
    texts = pd.DataFrame({"id": ["a", "b", "c"], "text": ["one two three four five six", "", None]})
    stage = NearDedupText()
    run_stage(stage, texts, roles=Roles(text="text"))
    (note,) = stage.result_warnings({"in": 3, "summary": stage.summary(), "metrics": {}})
    assert "2 of its 3 rows have no words to compare" in note, note
    stage = NearDedupText()
    run_stage(stage, texts.head(1), roles=Roles(text="text"))
    assert not stage.result_warnings({"in": 1, "summary": stage.summary(), "metrics": {}})


def test_near_dedup_images_crops_finds_cropped_copies_and_keeps_distinct_tiles_apart(client):
    """JPEG copies of photos and 128-px tiles cut by 4-7 % of each side: a crop moves
    what the 32-px thumbnail shows, and 18 of 81 copies drifted past max_distance from
    their originals. With ``crops`` each picture's 18 windows are hashed too and a copy
    matches the window it was cut as; the brick and retina tiles, whose windows come
    close to one another, stay apart."""
    from dsbuild.dedup_samples import cropped_copy_frame

    frame = cropped_copy_frame()
    plain = dedup_scores(frame, *run_stage(NearDedupImages(), frame.drop(columns=["group", "edits"]), npartitions=2))
    assert plain["recall"] < 0.8, plain  # what crops is for
    runs = [run_stage(NearDedupImages(crops=True), frame.drop(columns=["group", "edits"]), npartitions=n) for n in (1, 3)]
    scores = dedup_scores(frame, *runs[0])
    assert scores["precision"] == 1.0 and scores["recall"] >= 0.98, scores
    assert _pairs(runs[1][1]) == _pairs(runs[0][1])


def _copies_near(threshold, n=120, seed=2):
    """Texts of 300 words and one copy of each with words replaced until its exact
    Jaccard similarity (word 5-grams) is just above or just below ``threshold``."""
    def jaccard(a, b):
        sa, sb = (set(shingle_hashes([" ".join(t)])[0].tolist()) for t in (a, b))
        return len(sa & sb) / len(sa | sb)

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    rows = []
    for k in range(n):
        words = list(rng.choice(vocab, 300))
        target = threshold + (0.005 if k % 2 else -0.04)  # above: 0.805-0.85; below: 0.76-0.8
        copy = list(words)
        for position in rng.permutation(300):
            trial = copy[:position] + ["changed"] + copy[position + 1 :]
            if jaccard(words, trial) < target:
                break
            copy = trial
        rows += [{"id": f"a{k:03d}", "body": " ".join(words), "j": 1.0}, {"id": f"b{k:03d}", "body": " ".join(copy), "j": jaccard(words, copy)}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_near_dedup_text_judges_copies_near_the_threshold_on_their_exact_jaccard(client, verify):
    """MinHash's estimate errs by 0.035 at 0.8 (128 permutations): judged on it, copies
    at 0.805-0.85 were missed and copies at 0.76-0.8 taken. Verified on the shingles
    (verify: exact, the default) no copy below the threshold goes, and those above are
    lost only where no band brought them to their original (the bands find a pair at the
    threshold 9 times in 10)."""
    frame = _copies_near(0.8)
    copies = frame[frame["id"].str[0] == "b"].set_index("id")["j"]
    stage = NearDedupText(verify=verify)
    kept, rej = run_stage(stage, frame[["id", "body"]], npartitions=3, roles=Roles(text="body"))
    gone = copies.index.isin(rej["id"])
    above = (copies >= 0.8).to_numpy()
    assert (rej["id"].str[0] == "b").all() and above.sum() > 40 and (~above).sum() > 40
    if verify == "exact":
        assert not gone[~above].any(), copies[gone & ~above]
        assert gone[above].mean() >= 0.9, gone[above].mean()
        assert stage.summary()["pairs_checked_exactly"] >= gone.sum()
    else:  # what the estimate did: both kinds of error
        assert gone[~above].any() and gone[above].mean() < 0.9


def test_a_dedup_stage_after_augment_says_to_put_it_first(tmp_path):
    """A folder of photos deduplicated after augmenting kept the copies of the photos it
    removed as duplicates (each copy transformed apart from the others), and copies alike
    their parent would go as its duplicates: validate and the run say so."""
    import dsbuild
    from dsbuild.pipeline import validate_against_source as validate

    for i, (name, picture) in enumerate((("cat", data.chelsea()), ("cat", data.chelsea()[:, ::-1]), ("dog", data.astronaut()))):
        (tmp_path / "photos" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name / f"{i}.png").write_bytes(encode_image(np.ascontiguousarray(picture), "png"))
    stages = [{"augment": {"copies": 1, "transforms": [{"rotate": {"p": 1.0}}, {"gaussian_noise": {"p": 1.0}}]}},
              {"near_dedup_images": {"mirror": True}}, {"exact_dedup": {}}]
    job = dsbuild.job(name="photos", seed=0, source={"format": "images", "path": str(tmp_path / "photos")},
                      columns={"label": "label", "image": "image"}, stages=stages, sink={"path": str(tmp_path / "out")})
    notes = [n for n in validate(job) if "runs after 'augment'" in n]
    assert len(notes) == 2 and all("before 'augment'" in n for n in notes), notes
    first = dsbuild.job(name="photos", seed=0, source={"format": "images", "path": str(tmp_path / "photos")},
                        columns={"label": "label", "image": "image"}, stages=stages[1:] + stages[:1], sink={"path": str(tmp_path / "out")})
    assert not [n for n in validate(first) if "augment" in n]


@pytest.mark.parametrize(("keep", "kept"), [("largest", ["astronaut-d-large.png", "coffee-c-large.jpg"]),
                                            ("lossless", ["astronaut-d-large.png", "coffee-b-small.png"])])
def test_near_dedup_images_keeps_the_largest_or_the_lossless_copy(client, keep, kept):
    """Copies of a photo as small and large JPEGs and PNGs, under ids that put the small
    JPEG first: the lowest id stayed, a thumbnail where the user wanted the original.
    ``keep: largest`` keeps the most pixels (a large PNG before a large JPEG: lossless
    breaks the tie), ``keep: lossless`` a lossless file first (the larger of the PNGs,
    a small PNG over a large JPEG); copies of equal rank go to the lowest id, whatever
    the partitioning."""
    import cv2

    rows = []
    for name, large_pngs in (("astronaut", 2), ("coffee", 0)):
        photo = cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)
        small = cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        rows += [(f"{name}-a-small.jpg", encode_image(small, "jpeg", 85)), (f"{name}-b-small.png", encode_image(small, "png")),
                 (f"{name}-c-large.jpg", encode_image(photo, "jpeg", 90))]
        rows += [(f"{name}-{'de'[k]}-large.png", encode_image(photo, "png")) for k in range(large_pngs)]
    frame = pd.DataFrame({"id": [r[0] for r in rows], "image": pd.Series([r[1] for r in rows], dtype=IMAGE_DTYPE)})
    _, default = run_stage(NearDedupImages(), frame, npartitions=2)
    assert set(default["reason"]) == {"duplicate-of=astronaut-a-small.jpg", "duplicate-of=coffee-a-small.jpg"}
    runs = [run_stage(NearDedupImages(keep=keep), frame.sample(frac=1, random_state=n), npartitions=n) for n in (1, 3)]
    for survivors, rejected in runs:
        assert sorted(survivors["id"]) == kept
        assert set(rejected["reason"]) == {f"duplicate-of={k}" for k in kept} and len(rejected) == len(frame) - 2
    with pytest.raises(ValueError, match="give one of the two"):
        NearDedupImages(keep=keep, quality="score")


@pytest.mark.parametrize("side", [40, 160])
def test_near_dedup_images_turns_finds_copies_turned_by_a_quarter(client, side):
    """JPEG copies of scikit-image's photos turned by 90, 180 and 270 degrees were never
    found (their hashes are those of other pictures). With ``turns`` each picture's
    quarter turns are hashed too; a pair of small pictures (under check_below) is checked
    with the copy turned back, so 40-px ones are found as 160-px ones are, and only
    copies are taken."""
    from dsbuild.dedup_samples import turned_copy_frame

    frame = turned_copy_frame(side, turns=("rot90", "rot180", "rot270"))
    rows = frame.drop(columns=["group", "edits"])
    plain = dedup_scores(frame, *run_stage(NearDedupImages(), rows, npartitions=2))
    assert plain["recall"] < 0.1, plain
    runs = [run_stage(NearDedupImages(turns=True, mirror=mirror), rows, npartitions=n) for n, mirror in ((1, False), (3, False), (2, True))]
    for kept, rejected in runs:
        scores = dedup_scores(frame, kept, rejected)
        assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores
    assert _pairs(runs[1][1]) == _pairs(runs[0][1])


def test_near_dedup_images_crops_finds_crops_of_small_pictures_and_keeps_digits_apart(client):
    """Pictures under check_below (80 px) got no crop windows, so a 90 % crop of a 48-px
    photo was missed (1 of 13; 6 found now). Their windows are hashed now, and a pair found through a
    window is checked on that window's thumbnail (at 0.993), not on the whole ones, which
    cannot undo the crop's change of scale; distinct digits, which come as close through
    windows, are not taken for one another."""
    from dsbuild.dedup_samples import turned_copy_frame

    frame = turned_copy_frame(48, turns=("crop90",))
    rows = frame.drop(columns=["group", "edits"])
    plain = dedup_scores(frame, *run_stage(NearDedupImages(), rows, npartitions=2))
    cropped = dedup_scores(frame, *run_stage(NearDedupImages(crops=True), rows, npartitions=2))
    assert plain["recall"] <= 2 / 13 and cropped["recall"] >= 5 / 13 and cropped["precision"] == 1.0, (plain, cropped)
    digits = near_copy_frame(0, tile=0, faces=False, digits=300)
    _, plain = run_stage(NearDedupImages(), digits.drop(columns=["group", "edits"]), npartitions=2)
    _, cropped = run_stage(NearDedupImages(crops=True), digits.drop(columns=["group", "edits"]), npartitions=2)
    assert _pairs(cropped) == _pairs(plain)
