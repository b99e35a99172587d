import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data

from dsbuild.kernels.decode import encode_image
from dsbuild.kernels.hashing import (
    aligned_similarity,
    dct_matrix,
    dhash_from_thumbnails,
    hamming,
    image_content_hashes,
    perceptual_hashes,
    phash_from_thumbnails,
    row_hashes,
    thumbnails,
    verification_thumbnails,
)


def test_row_hashes_of_nested_values():
    """Arrow list and struct columns reach pandas as arrays and dicts, which pandas cannot
    hash: equal nested values still hash equal, whatever the dict's key order."""
    import pyarrow as pa

    table = pa.table({
        "emb": pa.array([[0.5, 1.0], [0.5, 1.0], [0.5, 2.0], None], pa.list_(pa.float32())),
        "box": pa.array([{"x": 1, "y": 2}, {"x": 1, "y": 2}, {"x": 1, "y": 2}, {"x": 1, "y": 2}]),
        "name": ["a", "a", "a", "a"],
    })
    frame = table.to_pandas()
    h = row_hashes(frame)
    assert h[0] == h[1] and len({h[0], h[2], h[3]}) == 3
    frame["box"] = pd.Series([{"x": 1, "y": 2}, {"y": 2, "x": 1}, {"x": 1, "y": 2}, {"x": 1, "y": 2}], dtype=object)
    mixed = pd.DataFrame({"v": [[1, 2], "[1,2]x", [1, 2]]})  # a JSON lines field, a list or a string
    assert row_hashes(frame)[1] == h[0] and row_hashes(mixed)[0] == row_hashes(mixed)[2] != row_hashes(mixed)[1]


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def test_row_hashes_same_in_another_process():
    frame = pd.DataFrame({"a": [1, 2, 1], "b": ["x", "y", "x"]})
    here = row_hashes(frame).tolist()
    code = (
        "import pandas as pd; from dsbuild.kernels.hashing import row_hashes;"
        "print(row_hashes(pd.DataFrame({'a': [1, 2, 1], 'b': ['x', 'y', 'x']})).tolist())"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(here) == there.strip()
    assert here[0] == here[2] != here[1]


def test_pixel_hash_ignores_container_but_not_content(astronaut):
    png = encode_image(astronaut, "png")
    bmp = encode_image(astronaut, "bmp")
    changed = astronaut.copy()
    changed[0, 0, 0] ^= 1
    h = image_content_hashes([png, bmp, encode_image(changed, "png")])
    assert h[0] == h[1] != h[2]
    raw = image_content_hashes([png, bmp], pixels=False)
    assert raw[0] != raw[1]


def test_pixel_hash_ignores_the_channel_layout_but_not_the_picture(astronaut):
    """A grey picture saved as lossless WebP (which has no grey mode) decodes to three
    equal channels, and an opaque picture may be stored with an alpha channel: exact_dedup
    kept both beside their PNGs though their pixels are the same."""
    grey = data.camera()
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    half = rgba.copy()
    half[0, 0, 3] = 128
    h = image_content_hashes([encode_image(grey, "png"), encode_image(grey, "webp", quality=101),
                              encode_image(np.dstack([grey] * 3), "png"), encode_image(astronaut, "png"),
                              encode_image(rgba, "png"), encode_image(half, "png"), encode_image(grey // 2, "png")])
    assert h[0] == h[1] == h[2] and h[3] == h[4]
    assert len({h[0], h[3], h[5], h[6]}) == 4


def test_batched_dct_equals_opencv(astronaut):
    thumbs = thumbnails([astronaut, data.camera()])
    d = dct_matrix(32)
    for t in thumbs:
        assert np.allclose(d @ t @ d.T, cv2.dct(t), atol=1e-2)


def test_mirrored_phash_equals_phash_of_mirror(astronaut):
    thumbs = thumbnails([astronaut, astronaut[:, ::-1]])
    h = phash_from_thumbnails(thumbs)
    hm = phash_from_thumbnails(thumbs, mirrored=True)
    assert hamming(hm[0], h[1]) <= 2
    assert hamming(h[0], h[1]) > 20


@pytest.mark.parametrize("kind", ["phash", "dhash"])
def test_perceptual_hash_close_for_copies_far_for_other_photos(astronaut, kind):
    small = cv2.resize(astronaut, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    images = [
        encode_image(astronaut, "png"),
        encode_image(astronaut, "jpeg", 40),
        encode_image(small, "jpeg", 70),
        encode_image(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), "png"),
        b"not an image",
    ]
    h, ok = perceptual_hashes(images, kind)
    assert ok.tolist() == [True, True, True, True, False]
    assert hamming(h[0], h[1]) <= 4 and hamming(h[0], h[2]) <= 4
    assert hamming(h[0], h[3]) >= 16


def test_batched_dhash_equals_opencv_area_resize_of_the_thumbnail(astronaut):
    thumbs = thumbnails([astronaut, data.camera(), data.coins()])
    for t, h in zip(thumbs, dhash_from_thumbnails(thumbs)):
        small = cv2.resize(t, (9, 8), interpolation=cv2.INTER_AREA)
        bits = (np.rint(small[:, 1:]) > np.rint(small[:, :-1])).reshape(-1)
        assert int(h) == int("".join("1" if b else "0" for b in bits), 2)


def test_thumbnails_of_large_and_odd_sized_images_hash_like_a_direct_area_resize():
    big = cv2.resize(data.camera(), (1401, 999), interpolation=cv2.INTER_CUBIC)
    images = [big, big[:333, :517], data.coins()]
    direct = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA) for img in images]).astype(np.float32)
    halved = thumbnails(images)
    assert np.abs(halved - direct).mean() < 5
    assert (hamming(phash_from_thumbnails(halved), phash_from_thumbnails(direct)) <= 4).all()


def test_aligned_similarity_tells_an_edited_digit_from_a_look_alike():
    """Two distinct 'zeros' hash as close as a copy; aligned, the copy correlates better."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    zeros = np.flatnonzero(digits.target == 0)[:2]
    big = [cv2.resize((digits.images[i] * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC) for i in zeros]
    shift = cv2.warpAffine(big[0], cv2.getRotationMatrix2D((16, 16), 2.5, 1.0) + [[0, 0, 1], [0, 0, 0]], (32, 32), borderMode=cv2.BORDER_REFLECT)
    copy = encode_image(np.clip(shift * 1.15, 0, 255).astype(np.uint8), "jpeg", 60)
    thumbs, ok = verification_thumbnails([encode_image(big[0], "png"), copy, encode_image(big[1], "png"), b"junk"])
    assert ok.tolist() == [True, True, True, False]
    same = aligned_similarity(thumbs[0], thumbs[1])
    other = aligned_similarity(thumbs[0], thumbs[2])
    assert same >= 0.99 > other
    assert aligned_similarity(thumbs[0], thumbs[0][:, ::-1].copy(), turn=4) > 0.999
    assert aligned_similarity(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)) == 1.0


def test_check_hash_differs_from_row_hash_on_numeric_rows():
    """pandas ignores the hash key for numbers; the check hash must still be another function."""
    from dsbuild.kernels.hashing import CHECK_KEY

    frame = pd.DataFrame({"a": [1, 2, 3], "b": [1.5, 2.5, 3.5]})
    h1, h2 = row_hashes(frame), row_hashes(frame, key=CHECK_KEY)
    assert (h1 != h2).all()
    assert (row_hashes(frame.iloc[[0, 0]], key=CHECK_KEY) == h2[0]).all()


def test_row_hash_pair_encodes_each_text_column_once(monkeypatch):
    """exact_dedup hashes every row with two keys; pandas dictionary-encoded each Arrow
    text column again for each key. Once now, and the hashes are the same as each key's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dsbuild.kernels.hashing import CHECK_KEY, ROW_KEY, row_hash_pair

    n = 1000
    rng = np.random.default_rng(0)
    words = np.array(["a", "b", "", None], dtype=object)
    frame = pd.DataFrame({
        "s": pd.Series(words[rng.integers(0, 4, n)], dtype="str"),
        "t": pd.array(words[rng.integers(0, 4, n)], dtype="string[pyarrow]"),
        "large": pd.arrays.ArrowExtensionArray(pa.array(words[rng.integers(0, 3, n)], pa.large_string())),
        "none": pd.array([None] * n, dtype="string[pyarrow]"),
        "obj": pd.Series(words[rng.integers(0, 4, n)], dtype=object),
        "cat": pd.Categorical(words[rng.integers(0, 3, n)]),
        "i": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 3, n)), dtype="Int64"),
        "f": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 3, n) / 2),
        "nested": pd.Series([[1, 2], [3]] * (n // 2), dtype=object),
    })
    encodes = []
    real = pc.dictionary_encode
    monkeypatch.setattr(pc, "dictionary_encode", lambda *a, **k: encodes.append(1) or real(*a, **k))
    row_hash_pair(frame, ["s", "t", "large", "none", "obj", "cat", "i", "f"])
    assert len(encodes) == 4  # s, t, large, none
    monkeypatch.setattr(pc, "dictionary_encode", real)
    first, check = row_hash_pair(frame, list(frame.columns))
    assert (first == row_hashes(frame, key=ROW_KEY)).all() and (check == row_hashes(frame, key=CHECK_KEY)).all()
    assert len(set(first.tolist())) > 100


def test_row_hash_pair_writes_each_nested_value_as_text_once(monkeypatch):
    """exact_dedup's two hashes of a list or struct column: each key tried pandas' hash,
    failed, and wrote every value as JSON again. Once now, with the same hashes."""
    import pyarrow as pa

    from dsbuild.kernels import hashing
    from dsbuild.kernels.hashing import CHECK_KEY, ROW_KEY, row_hash_pair

    n = 400
    rng = np.random.default_rng(1)
    frame = pa.table({
        "emb": pa.array([None if k % 50 == 0 else [float(k % 7), 0.5] for k in rng.integers(0, 100, n)], pa.list_(pa.float32())),
        "box": pa.array([{"x": int(k % 3), "label": f"c{k % 2}"} for k in rng.integers(0, 100, n)]),
        "name": pa.array([f"n{k % 5}" for k in rng.integers(0, 100, n)], pa.large_string()),
    }).to_pandas()
    want = row_hashes(frame, key=ROW_KEY), row_hashes(frame, key=CHECK_KEY)
    written = []
    real = hashing.canonical_text
    monkeypatch.setattr(hashing, "canonical_text", lambda v: written.append(1) or real(v))
    first, check = row_hash_pair(frame, list(frame.columns))
    assert len(written) == 2 * n  # emb and box, each value once
    assert (first == want[0]).all() and (check == want[1]).all()
    assert len(set(zip(first.tolist(), check.tolist()))) == len(frame.astype(str).drop_duplicates())


@pytest.mark.parametrize("kind", ["phash", "dhash", "phash+dhash"])
@pytest.mark.parametrize("mirrored", [False, True])
def test_crop_windows_are_hashed_after_the_picture_and_its_mirror(kind, mirrored):
    """With ``crops`` each picture has CROP_WINDOWS more hashes after its own (and its
    mirror's), and a copy of the astronaut cut by 6 % at the top and left is far from the
    whole picture but within crop_distance of one of its windows."""
    from dsbuild.kernels.hashing import CROP_WINDOWS
    from dsbuild.stages.dedup.signers import crop_distance

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    h, w = photo.shape[:2]
    cropped = np.ascontiguousarray(photo[int(0.06 * h) :, int(0.06 * w) :])
    images = [encode_image(photo, "png"), encode_image(cropped, "jpeg", 85), b"not an image"]
    plain, ok = perceptual_hashes(images, kind, mirrored=mirrored)
    hashes, ok_crops = perceptual_hashes(images, kind, mirrored=mirrored, crops=True)
    turned = 2 if mirrored else 1
    assert hashes.shape[:2] == (3, turned + CROP_WINDOWS) and np.array_equal(ok, ok_crops) and list(ok) == [True, True, False]
    assert np.array_equal(hashes[:, :turned], plain if mirrored else plain[:, None])
    if kind == "phash+dhash":
        whole = hamming(hashes[0, 0], hashes[1, 0]).sum()
        windows = hamming(hashes[0, turned:], np.broadcast_to(hashes[1, 0], hashes[0, turned:].shape))
        assert whole > 20 and windows.min() <= crop_distance(20), (whole, windows.min())
