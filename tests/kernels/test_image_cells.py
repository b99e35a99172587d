"""records.image_bytes / image_blobs / image_cell_like: both forms of an image column."""

import numpy as np
import pandas as pd
import pyarrow as pa

from dsbuild.records import (
    IMAGE_DTYPE,
    image_blobs,
    image_bytes,
    image_cell_like,
    missing_image_reason,
)

HF_IMAGE = pd.ArrowDtype(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


def test_image_bytes_of_every_cell_form():
    assert image_bytes(b"\x89PNG") == b"\x89PNG"
    assert image_bytes({"bytes": b"\xff\xd8\xff", "path": "a.jpg"}) == b"\xff\xd8\xff"
    assert image_bytes({"bytes": None, "path": "a.jpg"}) is None
    assert image_bytes(memoryview(b"ab")) == b"ab"
    for missing in (None, np.nan, pd.NA, "not bytes"):
        assert image_bytes(missing) is None


def test_missing_image_reason_names_a_path_without_bytes():
    assert missing_image_reason({"bytes": None, "path": "cats/1.png"}) == "empty-image:path-only=cats/1.png"
    assert missing_image_reason({"bytes": None, "path": None}) == "empty-image"
    assert missing_image_reason(None) == "empty-image"


def test_image_blobs_of_binary_struct_and_object_columns():
    binary = pd.Series([b"a", None], dtype=IMAGE_DTYPE)
    struct = pd.Series([{"bytes": b"a", "path": "x.png"}, {"bytes": None, "path": "y.png"}, None], dtype=HF_IMAGE)
    dicts = pd.Series([{"bytes": b"a", "path": "x.png"}, np.nan], dtype=object)
    assert image_blobs(binary).tolist() == [b"a", None]
    assert image_blobs(struct).tolist() == [b"a", None, None]
    assert image_blobs(dicts).tolist() == [b"a", None]
    assert image_blobs(np.array([b"a"], dtype=object)).dtype == object


def test_image_cell_like_keeps_the_parent_form_with_a_null_path():
    assert image_cell_like(b"old", b"new") == b"new"
    assert image_cell_like({"bytes": b"old", "path": "a.png"}, b"new") == {"bytes": b"new", "path": None}
