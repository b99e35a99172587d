"""augment stage: copies with stable ids and bytes for any partitioning; exact class balancing."""

import io
import json
import re

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from dsbuild.kernels.decode import decode_image, encode_image
from dsbuild.stages.augment import Augment
from dsbuild.stages.clean.images import ValidateImages
from dsbuild.stages.base import Roles
from dsbuild.testing import run_stage

ROLES = Roles(label="label", image="image")


@pytest.fixture(scope="module")
def digits():
    """Imbalanced digits as 32×32 PNGs: class 0 has 40 rows, class 1 has 15, class 2 has 7."""
    d = load_digits()
    rows = []
    for label, n in ((0, 40), (1, 15), (2, 7)):
        for j, i in enumerate(np.flatnonzero(d.target == label)[:n]):
            img = cv2.resize((d.images[i] * 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_NEAREST)
            rows.append({"id": f"d{label}-{j:02d}", "image": encode_image(img, "png"), "label": int(label),
                         "image_height": 32, "image_width": 32, "boxes": [[8.0, 8.0, 24.0, 24.0]], "box_labels": ["digit"]})
    frame = pd.DataFrame(rows)
    frame["image"] = frame["image"].astype(pd.ArrowDtype(pa.binary()))  # as the image sources give it
    frame["boxes"] = frame["boxes"].astype(pd.ArrowDtype(pa.list_(pa.list_(pa.float64()))))
    frame["box_labels"] = frame["box_labels"].astype(pd.ArrowDtype(pa.list_(pa.string())))
    return frame


def parquet_bytes(frame):
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


SPECS = ["hflip", {"affine": {"scale": [0.8, 1.2], "rotate": 20}}, {"some_of": ["brightness", "gaussian_noise", "gamma"], "n": 1}]


def test_n_copies_with_ids_params_and_moved_boxes(digits):
    stage = Augment(transforms=SPECS, copies=2, boxes="boxes", box_labels="box_labels")
    kept, rejected = run_stage(stage, digits, npartitions=2, roles=ROLES)
    assert rejected.empty and len(kept) == 3 * len(digits)
    copies = kept[kept["id"].str.contains("#aug")]
    assert set(copies["id"]) == {f"{i}#aug{k}" for i in digits["id"] for k in range(2)}
    params = [json.loads(p) for p in copies["augment_params"]]
    assert all(p[0]["op"] == "hflip" and p[1]["op"] == "affine" for p in params)
    assert kept.loc[~kept["id"].str.contains("#aug"), "augment_params"].isna().all()
    for _, row in copies.head(10).iterrows():
        img = decode_image(row["image"])
        assert img.shape == (32, 32)
        for box in row["boxes"]:  # a box follows the digit: its painted pixels lie inside
            assert 0 <= box[0] < box[2] <= 32 and 0 <= box[1] < box[3] <= 32
        assert list(row["box_labels"]) == ["digit"] * len(row["boxes"])


def test_same_bytes_for_any_partitioning(digits):
    stage = lambda: Augment(transforms=SPECS, copies=1, format="jpeg", quality=90)  # noqa: E731
    one, _ = run_stage(stage(), digits, npartitions=1, roles=ROLES)
    three, _ = run_stage(stage(), digits, npartitions=3, roles=ROLES)
    assert parquet_bytes(one) == parquet_bytes(three)
    other_seed, _ = run_stage(stage(), digits, npartitions=1, roles=ROLES, seed=1)
    assert parquet_bytes(one) != parquet_bytes(other_seed)


def test_balancing_reaches_the_target_exactly(digits):
    for npartitions in (1, 3):
        kept, _ = run_stage(Augment(transforms=["hflip"], balance_to="max"), digits, npartitions=npartitions, roles=ROLES)
        assert kept["label"].value_counts().to_dict() == {0: 40, 1: 40, 2: 40}
        if npartitions == 1:
            first = kept
    assert parquet_bytes(first) == parquet_bytes(kept)
    kept, _ = run_stage(Augment(transforms=["hflip"], balance_to=30), digits, npartitions=2, roles=ROLES)
    assert kept["label"].value_counts().to_dict() == {0: 40, 1: 30, 2: 30}


def test_where_copies_only_the_rows_it_names(digits):
    """Augment the training split only: validation and test rows pass through uncopied and
    count towards no class when balancing."""
    split = digits.assign(split=np.where(np.arange(len(digits)) % 4 == 0, "test", "train"))
    train = [{"column": "split", "op": "==", "value": "train"}]
    kept, _ = run_stage(Augment(transforms=["hflip"], copies=2, where=train), split, roles=ROLES)
    copies = kept[kept["id"].str.contains("#aug")]
    assert len(copies) == 2 * (split["split"] == "train").sum() and set(copies["split"]) == {"train"}
    kept, _ = run_stage(Augment(transforms=["hflip"], balance_to="max", where=train), split, npartitions=2, roles=ROLES)
    grown = kept[kept["split"] == "train"]["label"].value_counts()
    assert grown.nunique() == 1 and grown.iloc[0] == (split[split["split"] == "train"]["label"] == 0).sum()
    assert kept[kept["split"] == "test"]["id"].tolist() == sorted(split[split["split"] == "test"]["id"])


def test_a_where_that_names_no_row_is_warned_about_or_refused(digits, client, tmp_path):
    """'training' for 'train': no copy was made, without a word. Copies per row warn after
    the run; balancing, which fits on those rows, has nothing to fit on."""
    import dsbuild
    from dsbuild.stages import StageError

    typo = [{"column": "split", "op": "==", "value": "training"}]
    manifest = dsbuild.run({
        "name": "typo", "seed": 0, "source": {"format": "sample", "name": "digits", "partitions": 2},
        "columns": {"image": "image", "label": "label"},
        "stages": [{"split": {}}, {"augment": {"transforms": ["hflip"], "where": typo}}],
        "sink": {"path": str(tmp_path / "out")},
    }, client=client)
    assert manifest["totals"]["added"] == 0
    assert [w for w in manifest["warnings"] if "where (split == 'training') matched none of its 1,797 rows" in w]
    split = digits.assign(split="train")
    with pytest.raises(StageError, match=r"where \(split == 'training'\) matched none of the rows"):
        run_stage(Augment(transforms=["hflip"], balance_to="max", where=typo), split, roles=ROLES)


def test_same_bytes_on_a_cluster(digits, client):
    stage = lambda: Augment(transforms=SPECS, balance_to=20)  # noqa: E731
    local, _ = run_stage(stage(), digits, npartitions=1, roles=ROLES)
    distributed, _ = run_stage(stage(), digits, npartitions=3, roles=ROLES)
    assert parquet_bytes(local) == parquet_bytes(distributed)


def test_balancing_without_a_label_is_an_error(digits):
    with pytest.raises(Exception, match="label"):
        run_stage(Augment(balance_to="max"), digits, roles=Roles(image="image"))


def test_generators_made_ahead_in_batches_are_each_copys_own():
    """Made a batch at a time before the images, each copy still gets record_rng(parent#k)."""
    from dsbuild.records import record_rng
    from dsbuild.stages.augment import _copy_generators

    ids = np.array([f"p{i}" for i in range(7)], dtype=object)
    copies = np.array([1, 0, 3, 300, 2, 0, 5])
    made = list(_copy_generators(3, "augment", ids, copies, batch=4))
    assert [len(g) for g in made] == copies.tolist()
    for rid, gens in zip(ids, made):
        for k, g in enumerate(gens):
            assert g.random(3).tolist() == record_rng(3, "augment", f"{rid}#{k}").random(3).tolist()


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow-struct", "dicts"])
def test_hugging_face_image_structs_give_the_same_copies_and_stay_structs(client, digits, as_hf_images, arrow):
    """The struct ``datasets`` writes for Image(): same copies, pixels and counts as bytes;
    parents keep their cells, copies are structs with a null path, a path-only row gets none."""
    plain = digits.drop(columns=["boxes", "box_labels"])
    plain["image"] = plain["image"].where(plain["id"] != "d0-03")  # no bytes: no copies
    hf = as_hf_images(plain, arrow=arrow)
    runs = {}
    for form, frame in (("bytes", plain), ("struct", hf)):
        stage = Augment(transforms=SPECS, copies=2)
        kept, rejected = run_stage(stage, frame, npartitions=2, roles=ROLES)
        runs[form] = kept.set_index("id")
        assert rejected.empty
    a, b = runs["bytes"], runs["struct"]
    assert a.index.tolist() == b.index.tolist() and len(a) == 3 * len(digits) - 2
    assert not any(i.startswith("d0-03#") for i in b.index)
    if arrow:
        assert pa.types.is_struct(b["image"].dtype.pyarrow_dtype)
    parents = hf.set_index("id")["image"]
    for rid, cell in b["image"].items():
        if "#aug" in rid:
            assert cell["path"] is None
            assert np.array_equal(decode_image(cell["bytes"]), decode_image(a.at[rid, "image"]))
        else:
            assert cell == parents[rid]
    assert a["augment_params"].fillna("").tolist() == b["augment_params"].fillna("").tolist()


def test_sixteen_bit_images_get_sixteen_bit_copies_and_float_ones_moved_or_rejected():
    """16-bit PNGs (depth maps, medical images) go through every pixel transform as
    16-bit images; the lookup tables crashed the task on them. A float TIFF, which no
    pixel transform takes, stopped the whole run on its one row: it is rejected, saying
    why and what to do, whether or not a copy drew that transform, and the run goes on;
    transforms that only move pixels copy it as a float TIFF."""
    rng = np.random.default_rng(1)
    deep = (rng.random((24, 32, 3)) * 65535).astype(np.uint16)
    frame = pd.DataFrame({"id": ["d16"], "image": [encode_image(deep, "png")]})
    transforms = ["hflip", "brightness", "contrast", "gamma", {"hue_saturation": {}}, {"gaussian_noise": {}}, {"jpeg": {}}]
    kept, rejected = run_stage(Augment(transforms=transforms, copies=2), frame, npartitions=1, roles=Roles(image="image"))
    copies = kept[kept["id"].str.contains("#aug")]
    assert rejected.empty and len(copies) == 2
    assert all(decode_image(b).dtype == np.uint16 and decode_image(b).shape == deep.shape for b in copies["image"])
    floating = cv2.imencode(".tiff", deep.astype(np.float32) / 65535)[1].tobytes()
    floats = pd.DataFrame({"id": ["f32", "d16"], "image": [floating, encode_image(deep, "png")]})
    some = [{"one_of": [{"gamma": {}}, {"hflip": {}}]}, {"brightness": {"p": 0.01}}]
    kept, rejected = run_stage(Augment(transforms=some, copies=3), floats, npartitions=1, roles=Roles(image="image"))
    assert kept["id"].tolist() == ["d16", "d16#aug0", "d16#aug1", "d16#aug2"]
    assert rejected["id"].tolist() == ["f32"] and rejected["reason"][0] == (
        "cannot-augment=a float32 image: gamma, brightness take 8- or 16-bit integer levels only; convert it "
        "(a 16-bit PNG keeps 65,536 levels), or augment it with transforms that only move pixels (flips, affine, crops)")
    _, rejected = run_stage(Augment(transforms=["gamma"], copies=1), floats, npartitions=1, roles=Roles(image="image"))
    assert rejected["reason"][0].startswith("cannot-augment=a float32 image: gamma takes 8- or 16-bit integer levels only")
    kept, rejected = run_stage(Augment(transforms=["hflip", "affine"], copies=1), floats, npartitions=1, roles=Roles(image="image"))
    assert rejected.empty and decode_image(kept.set_index("id")["image"]["f32#aug0"]).dtype == np.float32


BOXES = [[2.0, 2.0, 8.0, 10.0], [12.0, 4.0, 8.0, 8.0], [22.0, 20.0, 8.0, 10.0]]  # coco: x, y, w, h
OBJECTS = pa.struct([("id", pa.list_(pa.int64())), ("area", pa.list_(pa.float64())),
                     ("bbox", pa.list_(pa.list_(pa.float64()))), ("category", pa.list_(pa.string()))])
CROP = dict(transforms=["hflip", {"random_crop": {"height": 32, "width": 16}}], copies=2, box_format="coco", min_visibility=0.5)


def _detection_set(digits, n=12):
    """The same boxes as plain columns and as the ``objects`` struct ``datasets`` writes."""
    plain = digits.drop(columns=["boxes", "box_labels"]).head(n)
    plain = plain.assign(boxes=[BOXES] * n, box_labels=[["a", "b", "c"]] * n)
    cells = [{"id": [10, 11, 12], "area": [48.0, 64.0, 80.0], "bbox": BOXES, "category": ["a", "b", "c"]}] * n
    hf = plain.drop(columns=["boxes", "box_labels"]).assign(objects=pd.Series(cells, index=plain.index, dtype=pd.ArrowDtype(OBJECTS)))
    return plain, hf


def _same_boxes(flat, nested):
    """Copies of the plain run and the struct run carry the same boxes and labels; the
    struct's ids and areas are those of the surviving boxes."""
    survivors = [len(b) for b in flat["boxes"]]
    assert len(flat) == len(nested) > 0 and 0 < min(survivors) and max(survivors) < 3  # every copy lost a box, none all
    for (_, f), (_, n) in zip(flat.iterrows(), nested.iterrows()):
        assert [list(b) for b in n["objects"]["bbox"]] == [list(b) for b in f["boxes"]]
        assert list(n["objects"]["category"]) == list(f["box_labels"])
        kept = ["abc".index(label) for label in f["box_labels"]]
        assert list(n["objects"]["id"]) == [10 + j for j in kept] and list(n["objects"]["area"]) == [48.0 + 16 * j for j in kept]


def test_boxes_in_a_hugging_face_objects_struct_follow_as_in_plain_columns(digits):
    """``objects.bbox`` / ``objects.category`` as ``datasets`` stores a detection set."""
    plain, hf = _detection_set(digits)
    flat, _ = run_stage(Augment(boxes="boxes", box_labels="box_labels", **CROP), plain, npartitions=2, roles=ROLES)
    nested, _ = run_stage(Augment(boxes="objects.bbox", box_labels="objects.category", **CROP), hf, npartitions=2, roles=ROLES)
    flat, nested = (f[f["id"].str.contains("#aug")].set_index("id").sort_index() for f in (flat, nested))
    assert nested["objects"].dtype == hf["objects"].dtype
    _same_boxes(flat, nested)
    with pytest.raises(Exception, match="no field 'boxes'.*'bbox'"):
        run_stage(Augment(boxes="objects.boxes", **CROP), hf, roles=ROLES)
    unannotated = hf.assign(objects=hf["objects"].where(hf["id"] != "d0-00"))
    kept, _ = run_stage(Augment(boxes="objects.bbox", box_labels="objects.category", **CROP), unannotated, roles=ROLES)
    assert kept.loc[kept["id"].str.startswith("d0-00"), "objects"].isna().all()  # no annotation: none on its copies
    assert kept["objects"].notna().sum() == 3 * (len(hf) - 1)


def test_boxes_in_a_list_of_structs_follow_as_in_plain_columns(digits):
    """``objects: [{bbox, category, id, area}, ...]``, how ``datasets`` writes a list of
    dicts: each copy keeps the structs of its surviving boxes, with their boxes moved."""
    plain, hf = _detection_set(digits)
    listed = pa.list_(pa.struct([("id", pa.int64()), ("area", pa.float64()), ("bbox", pa.list_(pa.float64())), ("category", pa.string())]))
    cells = [[{"id": 10 + j, "area": 48.0 + 16 * j, "bbox": b, "category": c} for j, (b, c) in enumerate(zip(BOXES, "abc"))]] * len(hf)
    hf = hf.assign(objects=pd.Series(cells, index=hf.index, dtype=pd.ArrowDtype(listed)))
    flat, _ = run_stage(Augment(boxes="boxes", box_labels="box_labels", **CROP), plain, npartitions=2, roles=ROLES)
    nested, _ = run_stage(Augment(boxes="objects.bbox", box_labels="objects.category", **CROP), hf, npartitions=2, roles=ROLES)
    flat, nested = (f[f["id"].str.contains("#aug")].set_index("id").sort_index() for f in (flat, nested))
    assert nested["objects"].dtype == hf["objects"].dtype
    as_columns = nested.assign(objects=[{key: [o[key] for o in objects] for key in ("id", "area", "bbox", "category")} for objects in nested["objects"]])
    _same_boxes(flat, as_columns)


def test_a_job_on_a_hugging_face_detection_parquet_keeps_the_struct(digits, client, tmp_path):
    """Through the Parquet source (which hands structs over as dicts of arrays) and the
    sink: the output's ``objects`` has the file's type, and a field typo names the row."""
    import dsbuild

    plain, hf = _detection_set(digits)
    hf.to_parquet(tmp_path / "detection.parquet", index=False)
    job = {
        "name": "hf-detection", "seed": 0, "columns": {"image": "image"},
        "source": {"format": "parquet", "path": str(tmp_path / "detection.parquet")},
        "stages": [{"augment": {"boxes": "objects.bbox", "box_labels": "objects.category", **CROP}}],
        "sink": {"path": str(tmp_path / "out")},
    }
    dsbuild.run(job, client=client)
    table = pq.read_table(tmp_path / "out" / "data")
    assert table.schema.field("objects").type == OBJECTS
    nested = table.to_pandas().set_index("id").sort_index()
    nested = nested[nested.index.str.contains("#aug")]
    flat, _ = run_stage(Augment(boxes="boxes", box_labels="box_labels", **CROP), plain, npartitions=2, roles=ROLES)
    _same_boxes(flat[flat["id"].str.contains("#aug")].set_index("id").sort_index(), nested)
    job["stages"] = [{"augment": {"boxes": "objects.boxes", **CROP}}]
    job["sink"]["path"] = str(tmp_path / "typo")
    with pytest.raises(Exception, match=r"row 'd0-0\d'.*no field 'boxes'.*'bbox'"):
        dsbuild.run(job, client=client)


def test_a_phone_photo_is_copied_upright_as_it_is_shown():
    """A portrait stored as landscape pixels with EXIF orientation 6: copies are made from
    the upright image (as PIL, viewers and ``datasets`` show the parent, and as its boxes
    were drawn) and written upright, with no orientation left to apply."""
    from PIL import Image
    from skimage import data

    portrait = data.astronaut()[:300, :200]
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(portrait, 1))).save(buf, "JPEG", exif=exif.tobytes(), quality=95)  # stored 200×300
    frame = pd.DataFrame({"id": ["phone"], "image": pd.Series([buf.getvalue()], dtype=pd.ArrowDtype(pa.binary())),
                          "boxes": [[[20.0, 30.0, 60.0, 90.0]]]})
    kept, _ = run_stage(Augment(transforms=[{"hflip": {"p": 0.0}}], boxes="boxes", format="png"), frame, roles=Roles(image="image"))
    copy = kept[kept["id"] == "phone#aug0"].iloc[0]
    pixels = decode_image(copy["image"])
    assert pixels.shape == (300, 200, 3)
    assert np.abs(pixels[..., ::-1].astype(int) - portrait).mean() < 3  # the portrait, not the stored pixels
    assert [list(b) for b in copy["boxes"]] == [[20.0, 30.0, 60.0, 90.0]]  # boxes of the upright image, unmoved


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_copies_in_a_format_that_cannot_hold_them_are_converted_as_their_columns_say(fmt):
    """A grey PNG, a 16-bit PNG and one with alpha, copied as JPEG or WebP: the 16-bit
    copy is the image scaled to 8 bits (OpenCV's encoder made it all 255), JPEG drops
    alpha and keeps grey, WebP makes grey 3 channels and keeps alpha; each copy's
    ``image_channels`` (and size and format) is that of its decoded pixels."""
    from skimage import data

    camera, coins = data.camera(), data.coins()
    bgra = np.dstack([data.astronaut()[..., ::-1], camera])  # a real alpha plane
    images = {"grey": camera, "deep": coins.astype(np.uint16) * 257, "alpha": bgra}
    frame = pd.DataFrame({
        "id": list(images), "image": [encode_image(p, "png") for p in images.values()],
        "image_height": [p.shape[0] for p in images.values()], "image_width": [p.shape[1] for p in images.values()],
        "image_channels": [1, 1, 4], "image_format": ["png"] * 3,
    })
    kept, rejected = run_stage(Augment(transforms=[{"hflip": {"p": 1.0}}], format=fmt), frame, npartitions=2, roles=Roles(image="image"))
    copies = kept[kept["id"].str.contains("#aug")].set_index("id")
    assert rejected.empty and len(copies) == 3 and set(copies["image_format"]) == {fmt}
    decoded = {rid.split("#")[0]: decode_image(b) for rid, b in copies["image"].items()}
    for rid, row in copies.iterrows():
        pixels = decoded[rid.split("#")[0]]
        assert pixels.dtype == np.uint8
        assert (row["image_height"], row["image_width"]) == pixels.shape[:2]
        assert row["image_channels"] == (1 if pixels.ndim == 2 else pixels.shape[2]), rid

    def close(a, b):  # within what a lossy codec changes
        return np.abs(a.astype(float) - b).mean() < 2.5

    deep = decoded["deep"] if fmt == "jpeg" else decoded["deep"][..., 0]
    assert close(deep, coins[:, ::-1])  # the coins, not white
    if fmt == "jpeg":
        assert decoded["grey"].ndim == 2 and close(decoded["grey"], camera[:, ::-1])
        assert decoded["alpha"].shape == (512, 512, 3) and close(decoded["alpha"], bgra[:, ::-1, :3])
    else:
        assert decoded["grey"].shape == (512, 512, 3) and close(decoded["grey"], np.dstack([camera[:, ::-1]] * 3))
        assert decoded["alpha"].shape == (512, 512, 4) and close(decoded["alpha"], bgra[:, ::-1])


def _grey_alpha_png(pixels) -> bytes:
    """A PNG of grey with alpha (colour type 4) at 8 or 16 bits, unfiltered: written here,
    as PIL writes no 16-bit grey with alpha and OpenCV no 2 channels."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels.astype(">u2") if pixels.dtype == np.uint16 else pixels).reshape(h, -1).view(np.uint8)
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", w, h, 16 if pixels.dtype == np.uint16 else 8, 4, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["same", "png", "jpeg", "webp"])
def test_a_grey_png_with_alpha_stays_grey_in_every_format(fmt):
    """A grey+alpha PNG (the camera man, the horse's silhouette as alpha), 8- and 16-bit,
    copied with noise: OpenCV decodes it to BGRA, so a JPEG copy was 3-channel colour and
    noise made it colour speckled. Grey stays grey: a PNG holds grey with alpha (2
    channels, alpha kept), a JPEG grey (alpha dropped), a WebP (no grey in it) equal
    colour channels with alpha. validate_images says 2 channels."""
    from PIL import Image
    from skimage import data

    grey = data.camera()[::2, ::2]
    alpha = cv2.resize((~data.horse()).astype(np.uint8) * 255, grey.shape[::-1], interpolation=cv2.INTER_AREA)
    images = {"eight": np.dstack([grey, alpha]), "deep": np.dstack([grey, alpha]).astype(np.uint16) * 257}
    frame = pd.DataFrame({"id": list(images), "image": [_grey_alpha_png(p) for p in images.values()]})
    checked, _ = run_stage(ValidateImages(), frame, roles=Roles(image="image"))
    assert checked.set_index("id")["image_channels"].to_dict() == {"eight": 2, "deep": 2}
    stage = Augment(transforms=["hflip", {"gaussian_noise": {"std": 0.05, "p": 1.0}}], format=fmt)
    kept, rejected = run_stage(stage, checked, npartitions=2, roles=Roles(image="image"))
    copies = kept[kept["id"].str.contains("#aug")].set_index("id")
    assert rejected.empty and len(copies) == 2
    for rid, row in copies.iterrows():
        parent = images[rid.split("#")[0]]
        deep = parent.dtype == np.uint16 and fmt in ("same", "png")
        pixels = decode_image(row["image"])
        assert pixels.dtype == (np.uint16 if deep else np.uint8), rid
        flipped_alpha = parent[:, ::-1, 1] if deep else (parent[:, ::-1, 1].astype(np.uint32) * 255 // np.iinfo(parent.dtype).max)
        if fmt == "jpeg":
            assert pixels.ndim == 2 and row["image_channels"] == 1, rid
            continue
        assert pixels.shape[2] == 4 and row["image_channels"] == (4 if fmt == "webp" else 2), rid
        spread = pixels[..., :3].max(axis=2).astype(int) - pixels[..., :3].min(axis=2)
        assert spread.max() <= (0 if fmt != "webp" else 3), rid  # grey: no colour speckle
        assert np.array_equal(pixels[..., 3], flipped_alpha), rid
        if fmt in ("same", "png") and not deep:
            assert Image.open(io.BytesIO(row["image"])).mode == "LA"


def test_images_that_do_not_decode_are_kept_without_copies_and_said(digits, client, tmp_path):
    """Corrupt and empty image bytes passed through with no word (only a metric counted them)."""
    import dsbuild

    frame = digits[["id", "image", "label"]].head(6).copy()
    frame["image"] = pd.Series([b"not an image", b"", *frame["image"].iloc[2:]], dtype=frame["image"].dtype)
    job = {"name": "broken", "source": {"format": "frame", "frame": frame}, "columns": {"label": "label", "image": "image"},
           "stages": [{"augment": {"transforms": ["hflip"]}}], "sink": {"path": str(tmp_path / "out")}}
    manifest = dsbuild.run(job, client=client)
    assert manifest["stages"][1]["added"] == 4 and manifest["stages"][1]["metrics"]["undecodable"] == 2
    assert any("augment': 2 images did not decode and were kept without copies" in w for w in manifest["warnings"])


@pytest.mark.parametrize("unmasked", [0, 2])
def test_masks_flip_with_their_images_whichever_row_has_none(unmasked):
    """A row without a mask beside rows with one: every copy's mask is its own moved mask
    (or none). When the partition's first row had none, the other copies kept their
    parents' unmoved masks (a flipped image labelled by the unflipped mask); when a later
    one had none, the stage failed with KeyError."""

    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(3):
        images.append(encode_image(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "png"))
        left = np.zeros((20, 30), np.uint8)
        left[:, :5] = 255
        masks.append(encode_image(left, "png"))
    masks[unmasked] = None
    frame = pd.DataFrame({"id": ["m0", "m1", "m2"], "image": images, "mask": masks})
    for column in ("image", "mask"):
        frame[column] = frame[column].astype(pd.ArrowDtype(pa.binary()))
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1, mask="mask"), frame, npartitions=1, roles=Roles(image="image"))
    copies = kept[kept["id"].str.contains("#aug")].set_index("id")
    assert rejected.empty and len(copies) == 3
    for i in range(3):
        mask = copies.loc[f"m{i}#aug0", "mask"]
        if i == unmasked:
            assert pd.isna(mask)
        else:
            assert (decode_image(mask)[:, -5:] == 255).all() and (decode_image(mask)[:, :-5] == 0).all()
    small = frame.assign(mask=[encode_image(np.zeros((10, 10), np.uint8), "png")] + list(frame["mask"].iloc[1:]))
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1, mask="mask"), small, npartitions=1, roles=Roles(image="image"))
    (reason,) = rejected["reason"]  # the row whose mask is not its image's size; the others are copied
    assert rejected["id"].tolist() == ["m0"] and reason.startswith("cannot-augment=its mask in column 'mask' is 10x10, its image 20x30")
    assert sorted(kept["id"]) == ["m1", "m1#aug0", "m2", "m2#aug0"]


@pytest.mark.parametrize("points, says", [
    ([[10.0, 20.0, 2.0], [30.0, 40.0, 2.0]], r"keypoints are \[x, y\] pairs.*COCO"),  # read as 3 made-up points
    ([10.0, 20.0, 2.0, 30.0, 40.0, 2.0], r"a list of \[numbers\] per box or point"),  # COCO's flat list: a TypeError
    ([[10.0, 20.0], [30.0]], "each point 2"),
])
def test_keypoints_not_in_x_y_pairs_reject_their_row(points, says):
    """COCO keeps keypoints as [x, y, visibility]: the triples were read as pairs, and two
    points became three made-up ones in every copy. The row is rejected saying why."""
    image = encode_image(np.zeros((50, 60), np.uint8), "png")
    frame = pd.DataFrame({"id": ["p", "q"], "image": [image, image], "kps": [points, [[1.0, 2.0]]]})
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1, keypoints="kps"), frame, npartitions=1, roles=Roles(image="image"))
    assert rejected["id"].tolist() == ["p"] and re.match(f"cannot-augment=.*{says}", rejected["reason"].iloc[0])
    assert sorted(kept["id"]) == ["q", "q#aug0"]


@pytest.mark.parametrize("labels", [["a"], ["a", "b", "c"]])
def test_box_labels_not_one_a_box_reject_their_row(labels):
    """Fewer labels than boxes failed with a bare IndexError; more were cut to the boxes'
    number in the copies, with no word. So do boxes that cannot move as given."""
    image = encode_image(np.zeros((50, 60), np.uint8), "png")
    frame = pd.DataFrame({"id": ["p", "q", "r"], "image": [image] * 3,
                          "boxes": [[[1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]], [[1.0, 1.0, 10.0, 10.0]], [[9.0, 9.0, 1.0, 1.0]]],
                          "labels": [labels, ["a"], ["a"]]})
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1, boxes="boxes", box_labels="labels"), frame, npartitions=1,
                               roles=Roles(image="image"))
    reasons = dict(zip(rejected["id"], rejected["reason"]))
    assert reasons["p"] == f"cannot-augment=2 boxes in 'boxes' but {len(labels)} labels in 'labels'; one label a box"
    assert reasons["r"].startswith("cannot-augment=box 0 [9.0, 9.0, 1.0, 1.0] (pascal_voc) ends before it starts")
    assert sorted(kept["id"]) == ["q", "q#aug0"]


def test_a_copy_has_no_file_path_and_its_id_names_its_parent(digits):
    """The images source's ``path`` column: a copy kept its parent's, so a reader could
    not tell the copy from the file it came from (a Hugging Face struct's path was
    already null in a copy)."""
    from dsbuild.io.sources.images import images_frame

    head = digits.head(6)
    frame = images_frame(list(head["id"]), list(head["image"]), [f"/data/digits/{i}.png" for i in head["id"]])
    kept, _ = run_stage(Augment(transforms=["hflip"], copies=2), frame, npartitions=2, roles=ROLES)
    copies = kept["id"].str.contains("#aug")
    assert kept["path"].dtype == "string" and copies.sum() == 12
    assert kept.loc[copies, "path"].isna().all()
    assert kept.loc[~copies].set_index("id")["path"].to_dict() == dict(zip(frame["id"], frame["path"]))


def test_a_float_image_outside_zero_to_one_is_rejected_not_whitened_in_an_eight_bit_format():
    """Float TIFFs copied into PNG or JPEG were scaled as if their values were 0-1: one of
    0-255 levels came out all white, a depth map in metres nearly so. Only a 0-1 float
    image is converted; another is rejected with its range, and kept as a float TIFF
    with format: same."""
    from skimage import data

    camera = data.camera().astype(np.float32)
    tiffs = {"unit": camera / 255, "levels": camera, "metres": camera / 255 * 40 - 3}
    frame = pd.DataFrame({"id": list(tiffs), "image": [cv2.imencode(".tiff", v)[1].tobytes() for v in tiffs.values()]})
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1, format="png"), frame, npartitions=1,
                               roles=Roles(image="image"))
    assert np.array_equal(decode_image(kept.set_index("id")["image"]["unit#aug0"]), camera.astype(np.uint8)[:, ::-1])
    assert rejected["id"].tolist() == ["levels", "metres"]
    assert rejected["reason"].tolist() == [
        "cannot-augment=a float32 image with values from 0 to 255 cannot be written as png: its 8-bit levels are made "
        "from float levels 0-1; scale the image to 0-1, or keep it a float TIFF (format: same)",
        "cannot-augment=a float32 image with values from -3 to 37 cannot be written as png: its 8-bit levels are made "
        "from float levels 0-1; scale the image to 0-1, or keep it a float TIFF (format: same)"]
    kept, rejected = run_stage(Augment(transforms=["hflip"], copies=1), frame, npartitions=1, roles=Roles(image="image"))
    assert rejected.empty and np.array_equal(decode_image(kept.set_index("id")["image"]["levels#aug0"]), camera[:, ::-1])


def test_an_image_smaller_than_a_crop_is_rejected_not_the_run_stopped():
    """One thumbnail among photos stopped the whole run: random_crop's 'crop 100x100 is
    larger than the image' was the job's error. It is the row's: rejected, saying so."""
    from skimage import data

    frame = pd.DataFrame({"id": ["photo", "thumb"], "image": [encode_image(data.camera(), "png"), encode_image(data.camera()[:40, :60], "png")]})
    kept, rejected = run_stage(Augment(transforms=[{"random_crop": {"height": 100, "width": 100}}], copies=1), frame,
                               npartitions=1, roles=Roles(image="image"))
    assert kept["id"].tolist() == ["photo", "photo#aug0"] and decode_image(kept["image"][1]).shape == (100, 100)
    assert rejected[["id", "reason"]].values.tolist() == [
        ["thumb", "cannot-augment=random_crop: crop 100x100 is larger than the image 40x60 (height x width)"]]


def test_a_jpeg_2000_copy_too_small_for_its_encoder_is_a_png():
    """A copy of a JPEG 2000 image cropped under 32 px a side stopped the run: OpenJPEG
    cannot write it (6 resolution levels need 32 px). It is written as a PNG, its format
    column says so, and a larger copy stays JPEG 2000."""
    from skimage import data

    deep = cv2.cvtColor(data.astronaut()[:48, :64], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    frame = pd.DataFrame({"id": ["scan"], "image": [encode_image(deep, "jp2")], "image_format": ["jp2"]})
    for side, fmt in ((16, "png"), (40, "jp2")):
        crop = {"random_crop": {"height": side, "width": side}}
        kept, rejected = run_stage(Augment(transforms=[crop], copies=1), frame, npartitions=1, roles=Roles(image="image"))
        copy = kept.set_index("id").loc["scan#aug0"]
        assert rejected.empty and copy["image_format"] == fmt
        pixels = decode_image(copy["image"])
        assert pixels.dtype == np.uint16 and pixels.shape == (side, side, 3)
