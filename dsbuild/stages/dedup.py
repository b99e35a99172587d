"""Deduplication: exact copies, near-duplicate images and texts, and test-set leaks.

``exact_dedup`` is one group shape on a content hash. The near-duplicate stages chain
shapes: map every row to a signature and its LSH band keys (one row per band) -> group
by band key so candidates meet -> verify candidates -> connected components as a
mergeable fit (union-find forests from every partition, combined) -> map that drops
every member of a cluster but one. Which member stays is a deterministic rule: the
best ``quality`` value when one is named, then the lowest id. ``decontaminate`` indexes
a reference source (a test split) in a fit and drops rows that match it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels import lsh as lsh_kernels
from dsbuild.kernels.hashing import hamming, image_content_hashes, perceptual_hashes, row_hashes, CHECK_KEY, ROW_KEY
from dsbuild.kernels.minhash import MinHasher, band_keys as minhash_band_keys, jaccard_estimate, optimal_bands
from dsbuild.kernels.unionfind import Forest, size_histogram
from dsbuild.records import ID
from dsbuild.stages.base import (
    KEY,
    REJECT,
    GroupStage,
    Stage,
    StageError,
    StageOptions,
    register,
    reject,
    with_marks,
)

IMAGE_META_SUFFIXES = ("_height", "_width", "_channels", "_format")
SIZE_BINS = ((2, 2), (3, 4), (5, 8), (9, 16), (17, 64), (65, None))


def _bin_label(lo: int, hi: int | None) -> str:
    return str(lo) if lo == hi else (f"{lo}-{hi}" if hi else f"{lo}+")


class KeepRule(StageOptions):
    quality: str | None = Field(None, description="column whose best value decides which copy stays; default: lowest id")
    prefer: Literal["max", "min"] = Field("max", description="best quality is the largest (max) or smallest (min) value")


def _keep_order(frame: pd.DataFrame, group_cols: list[str], rule: KeepRule) -> pd.DataFrame:
    """Rows sorted so the copy to keep comes first in each group."""
    if rule.quality is None:
        return frame.sort_values([*group_cols, ID], kind="stable")
    q = pd.to_numeric(frame[rule.quality], errors="coerce")
    rank = (-q if rule.prefer == "max" else q).fillna(np.inf)
    return frame.assign(_rank=rank.to_numpy()).sort_values([*group_cols, "_rank", ID], kind="stable").drop(columns="_rank")


# -- exact_dedup ----------------------------------------------------------------------


class ExactDedupOptions(KeepRule):
    columns: list[str] | None = Field(None, description="columns that define a duplicate; default all data columns")
    image_hash: Literal["pixels", "bytes"] = Field("pixels", description="hash images by decoded pixels (same picture in another file matches) or raw bytes")


@register
class ExactDedup(GroupStage):
    """Rows equal on the chosen columns meet in one partition; one copy stays.

    The shuffle key is a 64-bit hash; inside a group a second, independently keyed hash
    splits any collision, so two different rows are merged only if 128 bits agree.
    """

    name = "exact_dedup"
    Options = ExactDedupOptions

    def _image(self) -> str:
        return self.ctx.roles.image or "image"

    def columns(self, meta: pd.DataFrame) -> list[str]:
        if self.options.columns is not None:
            return list(self.options.columns)
        image = self._image()
        skip = {ID}
        if image in meta.columns and self.options.image_hash == "pixels":
            skip |= {image + s for s in IMAGE_META_SUFFIXES}
        return [c for c in meta.columns if c not in skip and not str(c).startswith("_")]

    def check(self, meta):
        cols = self.columns(meta)
        self.require_columns(meta, cols)
        if self.options.quality:
            self.require_columns(meta, [self.options.quality], what="quality column")
        if not cols:
            raise StageError(f"stage {self.ctx.name!r}: no data columns to compare")

    def content_hash(self, part: pd.DataFrame, key: str) -> np.ndarray:
        cols = self.columns(part)
        image = self._image()
        plain = [c for c in cols if c != image]
        h = row_hashes(part, plain, key=key) if plain else np.zeros(len(part), dtype=np.uint64)
        if image in cols:
            pixels = image_content_hashes(part[image].to_numpy(), pixels=self.options.image_hash == "pixels", salt=key.encode())
            with np.errstate(over="ignore"):
                h = lsh_kernels.mix64(h * np.uint64(0x100000001B3) + pixels)
        return h

    def key(self, part):
        return pd.Series(self.content_hash(part, ROW_KEY), index=part.index)

    def apply_partition(self, part):
        if part.empty:
            return _with_size_metrics(part, np.zeros(0, dtype=np.int64))
        part = part.assign(_check=self.content_hash(part, CHECK_KEY))
        part = _keep_order(part, [KEY, "_check"], self.options)
        groups = part.groupby([KEY, "_check"], sort=False)
        first = groups[ID].transform("first").to_numpy(dtype=object)
        size = groups[ID].transform("size").to_numpy(dtype=np.int64)
        ids = part[ID].to_numpy(dtype=object)
        dup = first != ids
        part = reject(part.drop(columns="_check"), dup, np.array([f"duplicate-of={k}" for k in first], dtype=object))
        return _with_size_metrics(part, np.where(dup, 0, size))


def _with_size_metrics(part: pd.DataFrame, cluster_size_on_kept: np.ndarray) -> pd.DataFrame:
    """Per-row counters the manifest sums: clusters found and their size histogram."""
    part = part.copy() if part.empty else part
    s = np.asarray(cluster_size_on_kept)
    part["_m_clusters"] = (s >= 2).astype(np.int64)
    for lo, hi in SIZE_BINS:
        part[f"_m_cluster_size:{_bin_label(lo, hi)}"] = ((s >= lo) & (s <= (hi or np.iinfo(np.int64).max))).astype(np.int64)
    return part


# -- signatures for near duplicates ------------------------------------------------------


class ImageSigner:
    """Perceptual hashes + bit-sampled (or pigeonhole) bands; verified by Hamming distance.

    Sampled bands are set so a pair at ``max_distance`` is found with probability 0.9
    by the bands alone; closer pairs, which most copies are, almost surely.
    """

    MISS_AT_MAX = 0.1

    def __init__(self, column: str, kind: str, max_distance: int, mirror: bool, search: str, bands: int | None, band_bits: int, seed: int):
        self.column, self.kind, self.max_distance, self.mirror = column, kind, max_distance, mirror
        self.words = 2 if kind == "phash+dhash" else 1
        if search == "pigeonhole":
            self.masks = lsh_kernels.pigeonhole_masks(bands or max_distance + 1, self.words)
        else:
            n = bands or lsh_kernels.sampled_bands_for(max_distance, band_bits, self.MISS_AT_MAX, bits=64 * self.words)
            self.masks = lsh_kernels.sampled_masks(n, band_bits, seed, self.words)

    def sign(self, part: pd.DataFrame):
        """(ok, entries): entries[:, v] is the code of variant v (0 as is, 1 mirrored)."""
        hashes, ok = perceptual_hashes(part[self.column].to_numpy(), self.kind, mirrored=self.mirror)
        if self.words == 1:
            return ok, hashes.reshape(len(part), -1)
        return ok, hashes if self.mirror else hashes[:, None, :]

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return lsh_kernels.band_keys(payload, self.masks)

    def close(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return hamming(a, b) <= self.max_distance


class TextSigner:
    """MinHash signatures, bands from the threshold's S-curve, verified by estimated Jaccard."""

    def __init__(self, columns: list[str], num_perm: int, shingle: int, unit: str, threshold: float, seed: int):
        self.columns, self.shingle, self.unit, self.threshold = columns, shingle, unit, threshold
        self.hasher = MinHasher(num_perm, seed=seed)
        self.bands, self.rows = optimal_bands(threshold, num_perm)

    def text(self, part: pd.DataFrame) -> list[str]:
        if len(self.columns) == 1:
            return part[self.columns[0]].astype("string").fillna("").tolist()
        return part[self.columns].astype("string").fillna("").agg(" ".join, axis=1).tolist()

    def sign(self, part: pd.DataFrame):
        sig = self.hasher(self.text(part), size=self.shingle, unit=self.unit)
        ok = np.array([bool(t.strip()) for t in self.text(part)], dtype=bool) if len(part) else np.zeros(0, bool)
        return ok, sig[:, None, :]

    def keys(self, payload: np.ndarray) -> np.ndarray:
        return minhash_band_keys(payload.reshape(len(payload), -1), self.bands, self.rows)

    def close(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return jaccard_estimate(a, b) >= self.threshold


def explode_bands(part: pd.DataFrame, signer, quality: str | None) -> pd.DataFrame:
    """One row per (record, orientation, band): the bucket key and what verifying needs."""
    ok, entries = signer.sign(part)
    ids = part[ID].to_numpy(dtype=object)[ok]
    q = pd.to_numeric(part[quality], errors="coerce").to_numpy(dtype=float)[ok] if quality else np.zeros(ok.sum())
    entries = entries[ok]
    frames = []
    for variant in range(entries.shape[1]):
        payload = entries[:, variant]
        keys = signer.keys(payload)
        n, bands = keys.shape
        frames.append(pd.DataFrame({
            "_band_key": keys.reshape(-1),
            "_band": np.tile(np.arange(bands, dtype=np.int64), n),
            "_variant": np.full(n * bands, variant, dtype=np.int64),
            ID: np.repeat(ids, bands),
            "_quality": np.repeat(q, bands),
            "_payload": np.repeat(_as_objects(payload), bands),
        }))
    if not frames:
        return _edge_meta_input()
    return pd.concat(frames, ignore_index=True)


def _as_objects(payload: np.ndarray) -> np.ndarray:
    out = np.empty(len(payload), dtype=object)
    for i, row in enumerate(payload):
        out[i] = row.tobytes() if isinstance(row, np.ndarray) else np.uint64(row).tobytes()
    return out


def _payloads(values, dtype) -> np.ndarray:
    return np.stack([np.frombuffer(v, dtype=dtype) for v in values]) if len(values) else np.zeros((0, 1), dtype=dtype)


def _edge_meta_input() -> pd.DataFrame:
    return pd.DataFrame({
        "_band_key": pd.Series([], dtype=np.uint64), "_band": pd.Series([], dtype=np.int64),
        "_variant": pd.Series([], dtype=np.int64), ID: pd.Series([], dtype=object),
        "_quality": pd.Series([], dtype=float), "_payload": pd.Series([], dtype=object),
    })


EDGE_COLUMNS = {"a": object, "b": object, "qa": float, "qb": float, "candidates": np.int64, "verified": np.int64}


def verify_buckets(part: pd.DataFrame, signer, dtype) -> pd.DataFrame:
    """Verified edges among rows sharing a band key; each pair counted in its first shared band.

    One extra row (a = None) carries this partition's candidate count, so the fit can
    report candidates even where none verified.
    """
    empty = pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()})
    if part.empty:
        return empty
    i, j = lsh_kernels.bucket_pairs(part["_band_key"].to_numpy())
    ids = part[ID].to_numpy(dtype=object)
    variant = part["_variant"].to_numpy()
    valid = (ids[i] != ids[j]) & ((variant[i] == 0) | (variant[j] == 0))
    i, j = i[valid], j[valid]
    payload = _payloads(part["_payload"].to_numpy(), dtype)
    pa, pb = payload[i], payload[j]
    band = part["_band"].to_numpy()[i]
    first_shared = np.argmax(signer.keys(_squeeze(pa)) == signer.keys(_squeeze(pb)), axis=1)
    counted = first_shared == band
    good = counted & signer.close(_squeeze(pa), _squeeze(pb))
    i, j = i[good], j[good]
    a, b = ids[i], ids[j]
    q = part["_quality"].to_numpy()
    edges = pd.DataFrame({"a": a, "b": b, "qa": q[i], "qb": q[j], "candidates": 0, "verified": 1})
    tally = pd.DataFrame({"a": [None], "b": [None], "qa": [np.nan], "qb": [np.nan], "candidates": [int(counted.sum())], "verified": [0]})
    return pd.concat([tally, edges], ignore_index=True).astype(EDGE_COLUMNS)


def _squeeze(payload: np.ndarray) -> np.ndarray:
    return payload[:, 0] if payload.ndim == 2 and payload.shape[1] == 1 and payload.dtype == np.uint64 else payload


class Clusters:
    """Mergeable fit state: the forest of verified edges, node qualities, pair counts."""

    def __init__(self, forest: Forest, quality: dict, candidates: int, verified: int):
        self.forest, self.quality, self.candidates, self.verified = forest, quality, candidates, verified

    @classmethod
    def of(cls, edges: pd.DataFrame, state: Any = None) -> Clusters:
        real = edges[edges["a"].notna()]
        quality = dict(zip(real["a"], real["qa"]))
        quality.update(zip(real["b"], real["qb"]))
        return cls(Forest.from_edges(real["a"].to_numpy(), real["b"].to_numpy()), quality, int(edges["candidates"].sum()), int(edges["verified"].sum()))

    def merge(self, other: Clusters) -> Clusters:
        return Clusters(self.forest.merge(other.forest), {**self.quality, **other.quality}, self.candidates + other.candidates, self.verified + other.verified)

    def drops(self, rule: KeepRule) -> dict[str, str]:
        """id -> kept id for every member that is not its cluster's keeper."""
        out: dict[str, str] = {}
        for members in self.forest.clusters().values():
            if rule.quality is None:
                keeper = min(members)
            else:
                sign = -1.0 if rule.prefer == "max" else 1.0
                keeper = min(members, key=lambda m: (_finite(sign * self.quality.get(m, np.nan)), m))
            out.update({m: keeper for m in members if m != keeper})
        return out


def _finite(x: float) -> float:
    return np.inf if np.isnan(x) else x


class NearDedupOptions(KeepRule):
    pass


class _NearDedup(Stage):
    """Signatures -> band buckets -> verified pairs -> components -> drop all but one."""

    shape = "chain"
    payload_dtype: Any = np.uint64

    def signer(self, meta: pd.DataFrame):
        raise NotImplementedError

    def build(self, frame, shapes):
        signer = self.signer(frame._meta)
        quality = self.options.quality
        exploded = shapes.map(frame, explode_bands, signer, quality, meta=_edge_meta_input(), label=f"{self.ctx.name}-signatures")
        edges = shapes.group(
            exploded,
            lambda p: p["_band_key"],
            lambda p: verify_buckets(p.drop(columns=[KEY]), signer, self.payload_dtype),
            meta=pd.DataFrame({k: pd.Series([], dtype=v) for k, v in EDGE_COLUMNS.items()}),
            label=f"{self.ctx.name}-buckets",
        )
        clusters = shapes.fit(edges, lambda p, s: Clusters.of(p), lambda a, b: a.merge(b), label=f"{self.ctx.name}-components")
        self.clusters_ = clusters
        drops = clusters.drops(self.options)
        return shapes.map(frame, _drop_members, shapes.broadcast(drops), label=self.ctx.name)

    def summary(self) -> dict:
        c = getattr(self, "clusters_", None)
        if c is None:
            return {}
        sizes = c.forest.sizes()
        return {
            "clusters": int(len(sizes)),
            "rows_in_clusters": int(sizes.sum()) if len(sizes) else 0,
            "cluster_sizes": size_histogram(sizes),
            "candidate_pairs": c.candidates,
            "verified_pairs": c.verified,
        }


def _drop_members(part: pd.DataFrame, drops: dict) -> pd.DataFrame:
    part = with_marks(part)
    keeper = part[ID].map(drops)
    hit = keeper.notna().to_numpy()
    return reject(part, hit, np.array([f"duplicate-of={k}" for k in keeper.fillna("")], dtype=object))


# -- near_dedup_images -----------------------------------------------------------------


class NearDedupImagesOptions(KeepRule):
    hash: Literal["phash+dhash", "phash", "dhash"] = Field("phash+dhash", description="perceptual hash: pHash and dHash side by side (128 bits), or one 64-bit hash")
    max_distance: int = Field(20, ge=0, le=64, description="largest Hamming distance between hashes of duplicates (summed over both hashes)")
    mirror: bool = Field(False, description="also hash each image mirrored, so flipped copies are caught")
    search: Literal["sampled", "pigeonhole"] = Field("sampled", description="sampled bit bands (fast at scale) or pigeonhole bands (every pair within max_distance, slow for large distances)")
    bands: int | None = Field(None, ge=1, description="number of LSH bands; default chosen from max_distance")
    band_bits: int = Field(20, ge=4, le=40, description="bits per sampled band")


@register
class NearDedupImages(_NearDedup):
    """Near-duplicate pictures by perceptual hash: re-encoded, resized, lightly edited copies."""

    name = "near_dedup_images"
    Options = NearDedupImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image or "image"

    def check(self, meta):
        self.require_columns(meta, [self._column()], what="image column (columns.image)")
        if self.options.quality:
            self.require_columns(meta, [self.options.quality], what="quality column")

    def signer(self, meta):
        o = self.options
        return ImageSigner(self._column(), o.hash, o.max_distance, o.mirror, o.search, o.bands, o.band_bits, seed=self.ctx.seed)


# -- near_dedup_text -------------------------------------------------------------------


class NearDedupTextOptions(KeepRule):
    fields: list[str] | None = Field(None, description="columns whose text is compared; default columns.text")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity at which two records are duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length")
    shingle: int = Field(5, ge=1, le=32, description="shingle size, in words or characters")
    unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters")


@register
class NearDedupText(_NearDedup):
    """Near-duplicate texts or records by MinHash LSH over word or character shingles."""

    name = "near_dedup_text"
    Options = NearDedupTextOptions
    payload_dtype = np.uint32

    def _fields(self) -> list[str]:
        if self.options.fields:
            return list(self.options.fields)
        if self.ctx.roles.text:
            return [self.ctx.roles.text]
        raise StageError(f"stage {self.ctx.name!r}: name the text with columns.text or the fields option")

    def check(self, meta):
        self.require_columns(meta, self._fields())
        if self.options.quality:
            self.require_columns(meta, [self.options.quality], what="quality column")

    def signer(self, meta):
        o = self.options
        return TextSigner(self._fields(), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1)


# -- decontaminate ---------------------------------------------------------------------


class DecontaminateOptions(StageOptions):
    reference: dict = Field(..., description="the source to protect, e.g. {format: parquet, path: test.parquet}")
    match: Literal["exact", "near"] = Field("near", description="drop exact copies only, or near copies too")
    kind: Literal["auto", "rows", "image", "text"] = Field("auto", description="compare whole rows, images (columns.image) or text")
    columns: list[str] | None = Field(None, description="for rows: columns compared (default the data columns both sources share); for text: the fields")
    max_distance: int = Field(20, ge=0, le=64, description="images: largest Hamming distance of pHash+dHash codes")
    mirror: bool = Field(False, description="images: also catch mirrored copies")
    threshold: float = Field(0.8, gt=0, le=1, description="text: estimated Jaccard similarity of a leak")
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, le=32)
    unit: Literal["word", "char"] = "word"

    @model_validator(mode="after")
    def _has_format(self):
        if "format" not in self.reference:
            raise ValueError("reference needs a format (parquet, csv, jsonl, images, sample)")
        return self


class ReferenceIndex:
    """What is known about the reference set: content hashes and band buckets."""

    def __init__(self, exact: dict, buckets: dict, payloads: dict):
        self.exact, self.buckets, self.payloads = exact, buckets, payloads

    def merge(self, other: ReferenceIndex) -> ReferenceIndex:
        buckets = dict(self.buckets)
        for k, v in other.buckets.items():
            buckets[k] = sorted(set(buckets.get(k, ())) | set(v))
        exact = dict(self.exact)
        for k, v in other.exact.items():
            exact[k] = min(v, exact.get(k, v))
        return ReferenceIndex(exact, buckets, {**self.payloads, **other.payloads})


@register
class Decontaminate(Stage):
    """Drop rows that copy (exactly or nearly) a row of a reference set, e.g. the test split.

    The reference is read and indexed in a fit (content hashes and LSH buckets, sized by
    the reference, which is usually far smaller than the data), then each data
    partition is checked against the broadcast index.
    """

    name = "decontaminate"
    shape = "chain"
    Options = DecontaminateOptions

    def _kind(self, meta) -> str:
        o = self.options
        if o.kind != "auto":
            return o.kind
        if (self.ctx.roles.image or "image") in meta.columns:
            return "image"
        if self.ctx.roles.text and self.ctx.roles.text in meta.columns:
            return "text"
        return "rows"

    def _columns(self, meta, ref_meta=None) -> list[str]:
        if self.options.columns:
            return list(self.options.columns)
        kind = self._kind(meta)
        if kind == "image":
            return [self.ctx.roles.image or "image"]
        if kind == "text":
            return [self.ctx.roles.text]
        cols = [c for c in meta.columns if c != ID and not str(c).startswith("_")]
        return [c for c in cols if ref_meta is None or c in ref_meta.columns]

    def check(self, meta):
        self.require_columns(meta, self._columns(meta))

    def signer(self, meta):
        o = self.options
        kind = self._kind(meta)
        if kind == "image" and o.match == "near":
            return ImageSigner(self._columns(meta)[0], "phash+dhash", o.max_distance, o.mirror, "sampled", None, 20, seed=self.ctx.seed)
        if kind == "text" and o.match == "near":
            return TextSigner(self._columns(meta), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1)
        return None

    def exact_hashes(self, part: pd.DataFrame, cols: list[str]) -> np.ndarray:
        if self._kind(part) == "image" or (len(cols) == 1 and cols[0] == (self.ctx.roles.image or "image")):
            return image_content_hashes(part[cols[0]].to_numpy())
        return row_hashes(part, cols)

    def build(self, frame, shapes):
        from dsbuild.io.sources import read_source

        reference = read_source(self.options.reference).frame
        cols = self._columns(frame._meta, reference._meta)
        self.require_columns(reference._meta, cols, what="reference column")
        signer = self.signer(frame._meta)
        index = shapes.fit(reference, lambda p, s: self._index(p, cols, signer), lambda a, b: a.merge(b), label=f"{self.ctx.name}-reference")
        self.reference_rows_ = len(index.exact)
        return shapes.map(frame, self._check_rows, cols, signer, shapes.broadcast(index), label=self.ctx.name)

    def _index(self, part: pd.DataFrame, cols, signer) -> ReferenceIndex:
        ids = part[ID].astype(str).to_numpy(dtype=object)
        exact: dict = {}
        for h, rid in zip(self.exact_hashes(part, cols).tolist(), ids):
            exact[h] = min(rid, exact.get(h, rid))
        buckets: dict = {}
        payloads: dict = {}
        if signer is not None and len(part):
            ok, entries = signer.sign(part)
            for variant in range(entries.shape[1]):
                payload = entries[ok, variant]
                for rid, p, keys in zip(ids[ok], payload, signer.keys(payload)):
                    payloads[(rid, variant)] = p
                    for k in keys.tolist():
                        buckets.setdefault(k, []).append((rid, variant))
        return ReferenceIndex(exact, buckets, payloads)

    def _check_rows(self, part: pd.DataFrame, cols, signer, index: ReferenceIndex) -> pd.DataFrame:
        part = with_marks(part)
        n = len(part)
        leak = np.full(n, None, dtype=object)
        near = np.zeros(n, dtype=np.int64)
        if n:
            for r, h in enumerate(self.exact_hashes(part, cols).tolist()):
                leak[r] = index.exact.get(h)
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
        part["_m_near_leaks"] = near
        hit = np.array([x is not None for x in leak], dtype=bool)
        return reject(part, hit, np.array([f"contaminated={x}" for x in leak], dtype=object))

    def summary(self) -> dict:
        return {"reference_rows_indexed": getattr(self, "reference_rows_", None)}
