"""``decontaminate``: rows that copy (exactly, nearly, or by containing it) an item of a
reference set such as the test split."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.containment import ShingleIndex
from dsbuild.kernels.dtypes import blank_text
from dsbuild.kernels.hashing import (
    image_content_hashes,
    row_hashes,
)
from dsbuild.kernels.minhash import (
    shingle_hashes,
)
from dsbuild.records import ID, image_blobs
from dsbuild.stages.base import (
    Stage,
    StageError,
    StageOptions,
    _did_you_mean,
    holds_text,
    register,
    reject,
    with_marks,
)
from dsbuild.stages.dedup.images import _check_sampled_reach
from dsbuild.stages.dedup.keep import after_copies
from dsbuild.stages.dedup.signers import ImageSigner, TextSigner, joined_text


class DecontaminateOptions(StageOptions):
    reference: dict = Field(..., description="the source to protect, e.g. {format: parquet, path: test.parquet}")
    match: Literal["exact", "near", "contained"] = Field(
        "near", description="drop exact copies only, near copies too, or (text) rows that contain a reference item")
    kind: Literal["auto", "rows", "image", "text"] = Field("auto", description="compare whole rows, images (columns.image) or text")
    columns: list[str] | None = Field(None, description="for rows: columns compared (default the data columns both sources share); for text: the fields")
    max_distance: int = Field(20, ge=0, le=64, description="images: largest Hamming distance of pHash+dHash codes")
    mirror: bool = Field(False, description="images: also catch mirrored copies")
    threshold: float = Field(0.8, gt=0, le=1, description="text: estimated Jaccard similarity of a leak")
    containment: float = Field(0.5, gt=0, le=1, description="text, contained: share of a reference item's shingles a leaking row holds")
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32)
    unit: Literal["word", "char"] = "word"
    normalize: bool = Field(True, description="text: compare letters and digits only, case- and width-folded, as near_dedup_text")

    @model_validator(mode="after")
    def _has_format(self):
        _check_sampled_reach(self.max_distance, 20, "phash+dhash")  # as images are compared: a distance no band reaches hung
        if "format" not in self.reference:
            raise ValueError("reference needs a format (parquet, csv, jsonl, images, sample)")
        from dsbuild.io.sources import check_source_spec

        check_source_spec(self.reference, "reference")
        return self


class ReferenceIndex:
    """What is known about the reference set: content hashes, band buckets and, for
    ``match: contained``, every shingle."""

    def __init__(self, exact: dict, buckets: dict, payloads: dict, shingles: ShingleIndex | None = None):
        self.exact, self.buckets, self.payloads, self.shingles = exact, buckets, payloads, shingles

    def merge(self, other: ReferenceIndex) -> ReferenceIndex:
        buckets = dict(self.buckets)
        for k, v in other.buckets.items():
            buckets[k] = sorted(set(buckets.get(k, ())) | set(v))
        exact = dict(self.exact)
        for k, v in other.exact.items():
            exact[k] = min(v, exact.get(k, v))
        shingles = self.shingles.merge(other.shingles) if self.shingles is not None else None
        return ReferenceIndex(exact, buckets, {**self.payloads, **other.payloads}, shingles)


@register
class Decontaminate(Stage):
    """Drop rows that copy (exactly or nearly) a row of a reference set, e.g. the test split.

    The reference is read and indexed in a fit (content hashes and LSH buckets, sized by
    the reference, which is usually far smaller than the data), then each data
    partition is checked against the broadcast index. ``near`` compares whole texts, so
    a test item quoted inside a long document is missed; ``contained`` finds it: a row
    leaks an item when it holds ``containment`` of the item's shingles (exactly, from
    every shingle of the reference). An item shorter than one shingle is found only as
    a whole row.
    """

    name = "decontaminate"
    shape = "chain"
    Options = DecontaminateOptions

    def order_warnings(self, earlier, later) -> list[str]:
        return super().order_warnings(earlier, later) + after_copies(self, earlier)

    def _kind(self, meta) -> str:
        o = self.options
        if o.kind != "auto":
            return o.kind
        if self.ctx.roles.image_column in meta.columns and not holds_text(meta[self.ctx.roles.image_column]):
            return "image"
        if self.ctx.roles.text and self.ctx.roles.text in meta.columns:
            return "text"
        return "rows"

    def _columns(self, meta, ref_meta=None) -> list[str]:
        if self.options.columns:
            return list(self.options.columns)
        kind = self._kind(meta)
        if kind == "image":
            return [self.ctx.roles.image_column]
        if kind == "text":
            return [self.ctx.roles.text]
        cols = [c for c in meta.columns if c not in (ID, self.ctx.roles.id) and not str(c).startswith("_")]
        return [c for c in cols if ref_meta is None or c in ref_meta.columns]

    def check(self, meta):
        """The reference exists and has the compared columns: ``validate`` says so before a run."""
        from dsbuild.io.sources import SourceError, read_source

        self.require_columns(meta, self._columns(meta))
        if self.options.match == "contained" and self._kind(meta) != "text":
            raise StageError(f"stage {self.ctx.name!r}: match: contained looks for reference texts inside rows, and this "
                             f"stage compares {self._kind(meta)}s; name the text with columns.text (or kind: text)")
        try:
            reference = read_source(self.options.reference, count_rows=False).frame._meta
        except SourceError as e:
            raise StageError(f"stage {self.ctx.name!r}: reference: {e}") from None
        self._require_in_reference(reference, self._columns(meta, reference))

    def _require_in_reference(self, reference: pd.DataFrame, cols: list[str]) -> None:
        """The columns compared must be in the reference file too (it may name them otherwise)."""
        have = [c for c in reference.columns if not str(c).startswith("_") and c != ID]
        if not cols:  # every row hashed alike, and every row was a leak of the reference's first
            raise StageError(f"stage {self.ctx.name!r}: the data and the reference {self.options.reference.get('path', '')} "
                             f"share no column to compare; the reference's columns are {have}: name the text with "
                             "columns.text or the compared columns with columns")
        missing = [c for c in cols if c not in reference.columns]
        if missing:
            raise StageError(f"stage {self.ctx.name!r}: column {missing[0]!r} is not in the reference "
                             f"{self.options.reference.get('path', '')}; its columns are {have}"
                             f"{_did_you_mean(missing[0], have)}; the data and the reference are compared column by column, by name")

    def signer(self, meta):
        o = self.options
        kind = self._kind(meta)
        if kind == "image" and o.match == "near":
            return ImageSigner(self._columns(meta)[0], "phash+dhash", o.max_distance, o.mirror, "sampled", None, 20, seed=self.ctx.seed)
        if kind == "text" and o.match == "near":
            return TextSigner(self._columns(meta), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1,
                              normalize=o.normalize)
        return None

    def exact_hashes(self, part: pd.DataFrame, cols: list[str], dtypes: dict | None = None) -> np.ndarray:
        if self._kind(part) == "image" or (len(cols) == 1 and cols[0] == self.ctx.roles.image_column and not holds_text(part[cols[0]])):
            return image_content_hashes(image_blobs(part[cols[0]]))
        return row_hashes(part[cols].astype(dtypes) if dtypes else part, cols)

    def build(self, frame, shapes):
        from dsbuild.io.sources import read_source

        reference = read_source(self.options.reference).frame
        cols = self._columns(frame._meta, reference._meta)
        self._require_in_reference(reference._meta, cols)
        signer = self.signer(frame._meta)
        dtypes = _hash_dtypes(frame._meta, reference._meta, cols)
        index = shapes.fit(reference, lambda p, s: self._index(p, cols, signer, dtypes), lambda a, b: a.merge(b), label=f"{self.ctx.name}-reference")
        self.reference_rows_ = len(index.exact)
        return shapes.map(frame, self._check_rows, cols, signer, shapes.broadcast(index), dtypes, label=self.ctx.name)

    def _index(self, part: pd.DataFrame, cols, signer, dtypes: dict) -> ReferenceIndex:
        ids = part[ID].astype(str).to_numpy(dtype=object)
        exact: dict = {}
        blank = _blank_rows(part, cols)
        for h, rid, b in zip(self.exact_hashes(part, cols, dtypes).tolist(), ids, blank):
            if not b:
                exact[h] = min(rid, exact.get(h, rid))
        buckets: dict = {}
        payloads: dict = {}
        shingles = None
        if self.options.match == "contained":
            shingles = ShingleIndex.of(*self._shingles(part, cols), ids)
        if signer is not None and len(part):
            ok, entries = signer.sign(part)
            for variant in range(entries.shape[1]):
                payload = entries[ok, variant]
                for rid, p, keys in zip(ids[ok], payload, signer.keys(payload)):
                    payloads[(rid, variant)] = p
                    for k in keys.tolist():
                        buckets.setdefault(k, []).append((rid, variant))
        return ReferenceIndex(exact, buckets, payloads, shingles)

    def _shingles(self, part: pd.DataFrame, cols) -> tuple[np.ndarray, np.ndarray]:
        o = self.options
        return shingle_hashes(joined_text(part, cols), o.shingle, o.unit, o.normalize)

    def _check_rows(self, part: pd.DataFrame, cols, signer, index: ReferenceIndex, dtypes: dict) -> pd.DataFrame:
        part = with_marks(part)
        n = len(part)
        leak = np.full(n, None, dtype=object)
        near = np.zeros(n, dtype=np.int64)
        if n:
            blank = _blank_rows(part, cols)
            for r, h in enumerate(self.exact_hashes(part, cols, dtypes).tolist()):
                leak[r] = None if blank[r] else index.exact.get(h)
        part["_m_exact_leaks"] = pd.notna(leak).astype(np.int64)
        if signer is not None and n:
            ok, entries = signer.sign(part)
            rows = np.flatnonzero(ok & pd.isna(leak))
            payload = entries[rows, 0]
            for r, p, keys in zip(rows, payload, signer.keys(payload)):
                found = sorted({ref for k in keys.tolist() for ref in index.buckets.get(k, ())})
                close = [rid for rid, v in found if signer.close(np.asarray([p]), np.asarray([index.payloads[(rid, v)]]))[0]]
                if close:
                    leak[r] = min(close)
                    near[r] = 1
        if index.shingles is not None and n:
            rows = np.flatnonzero(pd.isna(leak))
            found = index.shingles.contained(*self._shingles(part.iloc[rows], cols), len(rows), self.options.containment)
            leak[rows] = found
            near[rows] = pd.notna(found)
        part["_m_near_leaks"] = near
        hit = np.array([x is not None for x in leak], dtype=bool)
        return reject(part, hit, np.array([f"contaminated={x}" for x in leak], dtype=object))

    def summary(self) -> dict:
        return {"reference_rows_indexed": getattr(self, "reference_rows_", None)}


def _blank_rows(part: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Rows whose compared columns are all missing or blank text: nothing there can leak.
    A test set with one empty question made every empty row of the data a leak of it."""
    blank = np.ones(len(part), dtype=bool)
    for c in cols:
        blank &= part[c].isna().to_numpy(dtype=bool) | blank_text(part[c])
    return blank


def _hash_dtypes(data: pd.DataFrame, reference: pd.DataFrame, cols: list[str]) -> dict:
    """A dtype for each compared column whose dtype differs between the data and the
    reference, in which equal values of both hash alike. Sets written apart differ in
    type, not value: integers that are floats where the other set had a missing value,
    timestamps in another unit or zone, booleans with and without nulls; hashed as they
    came, no row of one matched the other, and every leak was kept."""
    out = {}
    for c in cols:
        a, b = data[c].dtype, reference[c].dtype
        if a == b:
            continue
        if all(pd.api.types.is_bool_dtype(t) for t in (a, b)):
            out[c] = "boolean"
        elif all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in (a, b)):
            out[c] = np.float64
        elif all(isinstance(t, pd.DatetimeTZDtype) for t in (a, b)):
            out[c] = pd.DatetimeTZDtype("ns", "UTC")
        elif all(pd.api.types.is_datetime64_dtype(t) for t in (a, b)):
            out[c] = np.dtype("datetime64[ns]")
    return out
