"""``augment``: more images from the ones there are — N copies each, or per class up to a count.

Every copy is a new row ``parent#aug<k>`` whose transforms draw from a generator seeded by
(job seed, stage, ``parent#k``), so a copy is the same whatever the partitioning, worker
or retry. The parameters a copy got are stored as JSON beside it, and boxes, keypoints
and masks named in the options move with the pixels.

Class balancing needs the class sizes (a fit pass) and, to hit each target exactly, the
extra copies that do not divide evenly go to the rows with the smallest per-record
uniforms in their class — chosen with :mod:`dsbuild.kernels.selection` in two mergeable
passes, never by gathering a class in one place.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator

from dsbuild.kernels import selection
from dsbuild.kernels.decode import as_stored, decode_image, encode_image, for_format, levels_problem
from dsbuild.kernels.images import BOX_FORMATS, AnnotationError, Compose, TooSmall, transform_from_spec
from dsbuild.records import (
    ID,
    child_id,
    copy_kind,
    image_bytes,
    image_cell_like,
    record_rng,
    record_uniform,
    sniff_image_format,
)
from dsbuild.stages.base import ADDED, WHERE_METRIC, FitApplyStage, StageError, StageOptions, register, reject
from dsbuild.stages.conditions import Condition, all_hold

DEFAULT_QUALITY = {"jpeg": 95, "webp": 90}
FILE_PATH = "path"  # the images source's column of each image's file


class AugmentOptions(StageOptions):
    transforms: list[Any] = Field(
        default_factory=lambda: [{"hflip": {"p": 0.5}}, {"affine": {"scale": [0.9, 1.1], "rotate": 10}}, {"brightness": {"p": 0.5}}],
        description="transforms in order: a name, {name: {options}}, {one_of: [...]}, {some_of: [...], n: 2}",
    )
    copies: int = Field(1, ge=0, le=1000, description="copies per image (when balance_to is not set)")
    where: list[Condition] = Field(
        default_factory=list, description="rows to make new rows from, e.g. [{column: split, op: ==, value: train}]; "
        "the others pass through and count towards no class")
    balance_to: int | Literal["max"] | None = Field(
        None, description="make per-class copies until every class has this many rows ('max': the largest class)"
    )
    max_copies: int = Field(50, ge=1, description="at most this many copies of one image when balancing")
    format: Literal["same", "jpeg", "png", "webp"] = Field(
        "same", description="encoding of copies; 'same' keeps each parent's depth and channels. A copy another format "
        "cannot hold is converted (and <image>_channels says so): to 8 bits by the dtype's range (16-bit: value * 255 / 65535, "
        "rounded; floats from 0-1, a float image with other values is rejected), JPEG drops alpha (grey, with alpha or not, "
        "stays grey), WebP makes grey 3 channels and keeps alpha (unless fully opaque), PNG keeps grey with alpha")
    quality: int | None = Field(None, ge=1, le=100, description="JPEG/WebP quality (default 95 / 90)")
    params_column: str = Field("augment_params", description="column for each copy's applied parameters (JSON)")
    boxes: str | None = Field(
        None, description="column of boxes (a list of [4 numbers] per row), or column.field of a struct column (objects.bbox)"
    )
    box_format: Literal["pascal_voc", "coco", "yolo"] = "pascal_voc"
    box_labels: str | None = Field(
        None, description="column (or column.field) of per-box labels, kept in step with surviving boxes"
    )
    keypoints: str | None = Field(
        None, description="column (or column.field) of keypoints (a list of [x, y] per row); NaN once outside"
    )
    mask: str | None = Field(None, description="column of encoded segmentation masks (PNG)")
    min_visibility: float = Field(0.0, ge=0, le=1, description="drop a box when less than this share of it is left")

    @field_validator("transforms")
    @classmethod
    def _transforms_build(cls, v):
        for spec in v:
            transform_from_spec(spec)
        return v


@register
class Augment(FitApplyStage):
    """Image copies through a transform pipeline; boxes, keypoints and masks follow."""

    name = "augment"
    adds_rows = True
    Options = AugmentOptions

    def __init__(self, options=None, **settings):
        super().__init__(options, **settings)
        o = self.options
        assert o.box_format in BOX_FORMATS
        self.pipeline = Compose([transform_from_spec(s) for s in o.transforms], o.box_format, o.min_visibility)

    @property
    def multi_pass(self) -> bool:
        """Only class balancing fits (class sizes) before it copies: a fixed number of
        copies is one map pass, with no checkpoint of the images before it."""
        return self.options.balance_to is not None

    def _image(self) -> str:
        return self.ctx.roles.image_column

    def check(self, meta):
        o = self.options
        self.require_image_column(meta)
        self.require_columns(meta, [c for c in (o.mask,) if c])
        for name in (o.boxes, o.box_labels, o.keypoints):
            if name:
                self._check_field(meta, name)
        self.check_where(meta, o.where)
        if o.balance_to is not None:
            if not self.ctx.roles.label:
                raise StageError(f"stage {self.ctx.name!r}: balance_to needs the job's label column (columns.label)")
            self.require_columns(meta, [self.ctx.roles.label], what="label column (columns.label)")

    def build(self, frame, shapes):
        if self.options.balance_to is None:
            return shapes.map(frame, self._augment_fixed, label=self.ctx.name)
        counts = shapes.fit(frame, self._class_histogram, _add_histograms, label=self.ctx.name)
        self.require_where_rows(sum(int(h.sum()) for h in counts.values()))
        plan = self._plan(counts)
        candidates = shapes.fit(frame, self._boundary_keys, selection.merge_boundary_keys, shapes.broadcast(plan).value, label=self.ctx.name)
        plan["key_limit"], plan["tie_limit"] = selection.thresholds(candidates, plan["inside"])
        self.state_ = plan
        return shapes.map(frame, self._augment_balanced, shapes.broadcast(plan), label=self.ctx.name)

    def _check_field(self, meta, name: str) -> None:
        column, field = _locate(name, meta.columns)
        self.require_columns(meta, [column])
        struct = getattr(meta[column].dtype, "pyarrow_dtype", None)
        if struct is not None and pa.types.is_list(struct):
            struct = struct.value_type
        if field is not None and struct is not None and pa.types.is_struct(struct):
            fields = [struct.field(i).name for i in range(struct.num_fields)]
            if field not in fields:
                raise StageError(f"stage {self.ctx.name!r}: {name!r}: the struct column {column!r} has no field {field!r}; its fields are {fields}")

    # -- class balancing plan -----------------------------------------------------------
    def _keys(self, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        ids = part[ID].astype(str).tolist()
        return record_uniform(self.ctx.seed, self.ctx.name, ids), record_uniform(self.ctx.seed, self.ctx.name + "#tie", ids)

    def _labels(self, part: pd.DataFrame) -> np.ndarray:
        """Each row's class; None for a row without one or outside ``where`` (not copied)."""
        col = part[self.ctx.roles.label]
        return np.where(col.isna().to_numpy() | ~all_hold(self.options.where, part), None, col.astype(str).to_numpy(dtype=object))

    def _class_histogram(self, part: pd.DataFrame, state=None) -> dict[str, np.ndarray]:
        labels = self._labels(part)
        keys, _ = self._keys(part)
        out = {}
        for label in sorted({x for x in labels if x is not None}):
            out[label] = np.bincount(selection.bucket_of(keys[labels == label]), minlength=selection.BUCKETS)
        return out

    def _plan(self, hist: dict[str, np.ndarray]) -> dict:
        classes = sorted(hist)
        counts = np.array([int(hist[c].sum()) for c in classes], dtype=np.int64)
        target = int(counts.max(initial=0)) if self.options.balance_to == "max" else int(self.options.balance_to)
        need = np.maximum(target - counts, 0)
        base = np.minimum(need // np.maximum(counts, 1), self.options.max_copies)
        extra = np.where(base < self.options.max_copies, need - base * counts, 0)
        histogram = np.stack([hist[c] for c in classes]) if classes else np.zeros((0, selection.BUCKETS), np.int64)
        bucket, inside = selection.boundaries(histogram, extra)
        return {
            "classes": classes, "counts": counts.tolist(), "target": target, "base": base,
            "extra": extra, "bucket": bucket, "inside": inside,
        }

    def _cells(self, part: pd.DataFrame, plan: dict) -> np.ndarray:
        index = {c: i for i, c in enumerate(plan["classes"])}
        return np.array([index.get(x, -1) if x is not None else -1 for x in self._labels(part)], dtype=np.int64)

    def _boundary_keys(self, part: pd.DataFrame, plan: dict) -> pd.DataFrame:
        keys, ties = self._keys(part)
        return selection.boundary_keys(self._cells(part, plan), keys, ties, plan["bucket"])

    def copies_per_row(self, part: pd.DataFrame, plan: dict) -> np.ndarray:
        cells = self._cells(part, plan)
        keys, ties = self._keys(part)
        chosen = selection.chosen(cells, keys, ties, plan["bucket"], plan["key_limit"], plan["tie_limit"])
        base = np.where(cells >= 0, plan["base"][np.maximum(cells, 0)], 0)
        return base + chosen.astype(np.int64)

    def summary(self) -> dict:
        plan = getattr(self, "state_", None)
        if not plan:
            return {"copies_per_image": self.options.copies}
        per_class = {c: {"rows": n, "copies": int(plan["base"][i] * n + plan["extra"][i])} for i, (c, n) in enumerate(zip(plan["classes"], plan["counts"]))}
        return {"target": plan["target"], "classes": per_class}

    # -- making copies ------------------------------------------------------------------
    def result_warnings(self, entry: dict) -> list[str]:
        """Images that do not decode pass through with no copies; a user who skipped
        validate_images would not know that some of the training images are broken."""
        notes = super().result_warnings(entry)
        broken = int(entry.get("metrics", {}).get("undecodable", 0))
        if broken:
            notes.append(f"stage {self.ctx.name!r}: {broken:,} image{'s' if broken > 1 else ''} did not decode and "
                         f"{'were' if broken > 1 else 'was'} kept without copies; put validate_images before it to reject "
                         "broken images with their reason")
        unmovable = int(entry.get("rejected_by_reason", {}).get("cannot-augment", 0))
        if unmovable:
            notes.append(f"stage {self.ctx.name!r}: {unmovable:,} row{'s' if unmovable > 1 else ''} rejected as cannot-augment: "
                         "boxes, keypoints or a mask that cannot move with the image, an image smaller than a crop, or a float "
                         "image a pixel transform cannot take or the format cannot hold (the rejects' reason says which and why)")
        return notes

    def _augment_fixed(self, part: pd.DataFrame) -> pd.DataFrame:
        named = all_hold(self.options.where, part)
        out = self.apply_copies(self._with_marks(part), np.where(named, self.options.copies, 0).astype(np.int64))
        if self.options.where:  # for the warning when where names no row (base.Stage.result_warnings)
            out[WHERE_METRIC] = np.r_[named.astype(np.int64), np.zeros(len(out) - len(part), dtype=np.int64)]
        return out

    def _augment_balanced(self, part: pd.DataFrame, plan: dict) -> pd.DataFrame:
        part = self._with_marks(part)
        return self.apply_copies(part, self.copies_per_row(part, plan) if len(part) else np.zeros(0, np.int64))

    @staticmethod
    def _with_marks(part):
        from dsbuild.stages.base import with_marks

        return with_marks(part)

    def apply_copies(self, part: pd.DataFrame, copies: np.ndarray) -> pd.DataFrame:
        o = self.options
        col = self._image()
        described = [c for c in (f"{col}_height", f"{col}_width", f"{col}_channels", f"{col}_format", FILE_PATH) if c in part.columns]
        made: list[dict] = []
        parents: list[int] = []
        undecodable = np.zeros(len(part), dtype=np.int64)
        todo = np.flatnonzero(copies > 0)
        ids = part[ID].to_numpy(dtype=object)[todo]
        cells = part[col].to_numpy(dtype=object)[todo]
        generators = _copy_generators(self.ctx.seed, self.ctx.name, ids, copies[todo])
        unmovable = np.full(len(part), None, dtype=object)
        for i, rid, cell, rngs in zip(todo, ids, cells, generators):
            data = image_bytes(cell)
            pixels = as_stored(decode_image(data), data)
            if pixels is None:
                undecodable[i] = 1
                continue
            if pixels.dtype not in (np.uint8, np.uint16) and (refusing := self.pipeline.integer_only()):
                unmovable[i] = (f"cannot-augment=a {pixels.dtype} image: {', '.join(refusing)} take{'s' if len(refusing) == 1 else ''} "
                                "8- or 16-bit integer levels only; convert it (a 16-bit PNG keeps 65,536 levels), or augment "
                                "it with transforms that only move pixels (flips, affine, crops)")
                continue
            fmt = o.format if o.format != "same" else _format_of(data, pixels)
            if (why := levels_problem(pixels, fmt)) is not None:
                unmovable[i] = f"cannot-augment={why}"
                continue
            row = part.iloc[i] if (o.boxes or o.keypoints or o.mask) else None
            try:
                copied = self._copies_of(rid, cell, row, pixels, rngs, int(copies[i]), fmt, described)
            except (AnnotationError, TooSmall) as e:  # the row's own: a crop larger than this one image
                unmovable[i] = f"cannot-augment={' '.join(str(e).split())[:200]}"
                continue
            except StageError as e:  # the job's mistake (a field its structs lack): every row would fail alike
                raise StageError(f"stage {self.ctx.name!r}: row {rid!r}: {e}") from None
            except (ValueError, cv2.error) as e:  # an image no transform takes
                raise StageError(f"stage {self.ctx.name!r}: row {rid!r}, a {pixels.dtype} image of shape {pixels.shape}: {e}") from None
            made += copied
            parents += [i] * len(copied)
        part = reject(part.assign(**{
            o.params_column: pd.Series([None] * len(part), index=part.index, dtype="str"),
            "_m_copies": np.where((undecodable > 0) | pd.notna(unmovable), 0, copies),
            "_m_undecodable": undecodable,
        }), pd.notna(unmovable), unmovable)
        if not made:
            return part
        for m in made:  # here, not beside each codec call: ~80 µs there, ~10 here
            m[o.params_column] = json.dumps(m[o.params_column], separators=(",", ":"))
        made_columns = list(made[0])
        new = part.drop(columns=made_columns).iloc[parents].reset_index(drop=True)  # not the parents' image bytes
        new = new.assign(
            **{name: _column([m[name] for m in made], part[name].dtype) for name in made_columns},
            **{ADDED: True, "_m_copies": 0, "_m_undecodable": 0},
        )
        return pd.concat([part.reset_index(drop=True), new[part.columns]], ignore_index=True)

    def _copies_of(self, rid, cell, row: pd.Series | None, pixels: np.ndarray, rngs, n: int, fmt: str, described) -> list[dict]:
        """A row's ``n`` copies. Annotations that cannot move with the image (boxes and
        keypoints as the pipeline checks them, box labels and the mask here) raise
        :class:`AnnotationError`, and the row is rejected with it (it had stopped the whole
        run, or been moved wrong without a word)."""
        o = self.options
        boxes, keypoints = _points(_read(row, o.boxes)), _points(_read(row, o.keypoints))
        if o.box_labels:
            labels = _read(row, o.box_labels)
            if (len(labels) if _is_list(labels) else 0) != (0 if boxes is None else len(boxes)):  # fewer: IndexError; more: dropped
                raise AnnotationError(f"{0 if boxes is None else len(boxes)} boxes in {o.boxes!r} but "
                                      f"{len(labels) if _is_list(labels) else 0} labels in {o.box_labels!r}; one label a box")
        masks = self._mask(row, pixels) if o.mask else None
        copied = []
        for k in range(n):
            out = self.pipeline(pixels, rngs[k], boxes=boxes, keypoints=keypoints, mask=masks,
                                owned=k == n - 1)  # the last copy may overwrite the decoded pixels
            copied.append(self._copy_fields(rid, cell, row, k, out, fmt, described))
        return copied

    def _copy_fields(self, rid, parent, row: pd.Series | None, k: int, out, fmt: str, described: list[str]) -> dict:
        """The copy's own cells, its image in the form of the ``parent``'s cell; ``described``
        are the image's size/channels/format columns present, given the copy's own, and
        its file's ``path``, null: a copy is no file (as its struct's path is null), and
        the parent's path made the copy look like the file it came from. Its id names
        the parent (``parent#aug<k>``)."""
        o = self.options
        col = self._image()
        if fmt == "jp2" and min(out.image.shape[:2]) < 32:
            fmt = "png"  # OpenJPEG's 6 resolution levels need 32 px a side; a PNG keeps the depth and channels too
        pixels = for_format(out.image, fmt)  # converted here, as the columns say, not clipped by the encoder
        fields = {
            ID: child_id(str(rid), copy_kind(self.ctx.name, "aug"), k),
            col: image_cell_like(parent, encode_image(pixels, fmt, o.quality or DEFAULT_QUALITY.get(fmt))),
            o.params_column: out.params,  # as JSON once every copy is made
        }
        h, w = pixels.shape[:2]
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        for name, value in ((f"{col}_height", h), (f"{col}_width", w), (f"{col}_channels", channels), (f"{col}_format", fmt),
                            (FILE_PATH, None)):
            if name in described:
                fields[name] = value
        if o.boxes:
            _put(fields, row, o.boxes, out.boxes.tolist(), box_index=out.box_index)
            if o.box_labels:
                labels = _read(row, o.box_labels)
                labels = list(labels) if _is_list(labels) else []  # one a box, as _copies_of checked
                _put(fields, row, o.box_labels, [labels[j] for j in out.box_index])
        if o.keypoints:
            _put(fields, row, o.keypoints, out.keypoints.tolist())
        if o.mask:  # every copy sets it: the copies' cells replace the column's (none for a parent without one)
            fields[o.mask] = None if out.mask is None else image_cell_like(row[o.mask], encode_image(out.mask, "png"))
        return fields

    def _mask(self, row: pd.Series, pixels: np.ndarray) -> np.ndarray | None:
        """The row's decoded mask, None where it has none; one that does not decode or is
        not the image's size is the row's AnnotationError (moved with the image, it would no
        longer label its pixels)."""
        data = image_bytes(row[self.options.mask])
        if data is None or len(data) == 0:
            return None
        mask = decode_image(data)
        if mask is None:
            raise AnnotationError(f"its mask in column {self.options.mask!r} does not decode")
        if mask.shape[:2] != pixels.shape[:2]:
            raise AnnotationError(f"its mask in column {self.options.mask!r} is {mask.shape[0]}x{mask.shape[1]}, its image "
                             f"{pixels.shape[0]}x{pixels.shape[1]} (height x width, the image upright); a mask must be the image's size")
        return mask


def _copy_generators(seed: int, stage: str, ids, copies: np.ndarray, batch: int = 256):
    """Per row, the generators of its copies (``record_rng`` of ``parent#k``), made about
    ``batch`` copies at a time, ahead of the images they transform.

    Made one at a time between a decode and an encode, ``default_rng`` took ~200 µs (the
    codec leaves its code and data out of the caches), against ~30 µs in a run of them:
    at one copy per 512 px JPEG, ~5 % of the stage's time. A batch bounds the memory.
    """
    start = 0
    while start < len(ids):
        stop, total = start, 0
        while stop < len(ids) and (stop == start or total + copies[stop] <= batch):
            total += int(copies[stop])
            stop += 1
        yield from [
            [record_rng(seed, stage, f"{rid}#{k}") for k in range(int(n))]
            for rid, n in zip(ids[start:stop], copies[start:stop])
        ]
        start = stop


def _add_histograms(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


def _format_of(data: bytes, pixels: np.ndarray) -> str:
    """The format of a parent's copies under ``format: same``: its own where OpenCV writes
    it with the parent's depth and channels; a netpbm image with alpha (a PAM, which
    OpenCV writes but does not read back) a PNG; an EXR a float TIFF (OpenCV writes EXR
    only where it is built with OpenEXR, and a job's output should not depend on the
    build), and so are a PFM's and an HDR's; a GIF a PNG."""
    fmt = sniff_image_format(data)
    if fmt == "pnm" and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        return "png"
    if fmt in ("exr", "pfm", "hdr"):  # float images
        return "tiff"
    return fmt if fmt in ("png", "jpeg", "webp", "bmp", "tiff", "pnm", "jp2") else "png"


def _locate(name: str, columns) -> tuple[str, str | None]:
    """(column, field) named by a label option: a column as it is named, else
    ``column.field`` of a struct column, which is how Hugging Face ``datasets`` keeps a
    detection set's labels (``objects: {bbox: [...], category: [...], area: [...]}``)."""
    if name in columns:
        return name, None
    for column in columns:
        if isinstance(column, str) and name.startswith(column + "."):
            return column, name[len(column) + 1 :]
    return name, None


def _json(value):
    return json.loads(value) if isinstance(value, str) else value  # as a CSV or a string-converting reader leaves it


def _read(row: pd.Series | None, name: str | None):
    """The value an option names in ``row``: a cell, a field of a struct cell, or that
    field of each struct in a list of them (``datasets`` writes a ``Sequence`` of dicts
    as a struct of lists, a list of dicts as a list of structs)."""
    if not name or row is None:
        return None
    column, field = _locate(name, row.index)
    value = _json(row[column])
    if field is None:
        return value
    if isinstance(value, dict):
        return _field(value, field, name, column)
    if _is_list(value) and all(isinstance(item, dict) for item in value):
        return [_field(item, field, name, column) for item in value]
    return None  # a missing struct: nothing to move


def _field(struct: dict, field: str, name: str, column: str):
    if field not in struct:
        raise StageError(f"{name!r}: the struct in column {column!r} has no field {field!r}; its fields are {list(struct)}")
    return struct[field]


def _put(fields: dict, row: pd.Series, name: str, value, box_index: np.ndarray | None = None) -> None:
    """Set what ``name`` names in the copy's ``fields``, in a copy of the parent's struct
    or list of structs (a missing one stays missing). With ``box_index`` (the boxes
    that survived), the rest stays in step with the boxes: a list of structs keeps the
    surviving boxes' structs, and a struct's other per-box lists — those as long as the
    parent's boxes, such as categories, ids and areas — keep their entries."""
    column, field = _locate(name, row.index)
    if field is None:
        fields[column] = value
        return
    if column in fields and fields[column] is None:
        return
    cell = fields.get(column)
    if cell is None:
        parent = _json(row[column])
        if isinstance(parent, dict):
            cell = dict(parent)
            if box_index is not None:
                boxes = cell.get(field)
                n = len(boxes) if _is_list(boxes) else -1
                for key, entries in cell.items():
                    if key != field and _is_list(entries) and len(entries) == n:
                        cell[key] = [entries[j] for j in box_index]
        elif _is_list(parent) and all(isinstance(item, dict) for item in parent):
            cell = [dict(parent[j]) for j in (range(len(parent)) if box_index is None else box_index)]
        else:  # a missing struct (no annotation) stays missing
            fields[column] = None
            return
    if isinstance(cell, list):
        if len(value) != len(cell):
            raise StageError(f"{name!r}: {len(value)} values for a list of {len(cell)} structs in column {column!r}; "
                             "only boxes and their labels can be fields of a list of structs (one per struct)")
        for item, v in zip(cell, value):
            item[field] = v
    else:
        cell[field] = value
    fields[column] = cell


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _points(value) -> np.ndarray | None:
    """Boxes or keypoints as an (n, k) array, or None when there are none."""
    if not _is_list(value) or len(value) == 0:  # None, NaN, NA or empty
        return None
    if not all(_is_list(v) for v in value):  # a flat list, as COCO stores keypoints: a TypeError escaped
        raise AnnotationError(f"a list of [numbers] per box or point is expected, got {list(value)!r}")
    try:
        return np.array([list(v) for v in value], dtype=np.float64)
    except ValueError:  # boxes or points of different lengths
        raise AnnotationError(f"each box has 4 numbers and each point 2, got {[list(v) for v in value]!r}") from None


def _column(values: list, dtype) -> pd.Series:
    series = pd.Series(values, dtype=object)
    if dtype is not None and dtype != object:
        try:
            return series.astype(dtype)
        except (TypeError, ValueError):
            return series
    return series
