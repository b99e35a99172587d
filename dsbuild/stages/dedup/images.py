"""``near_dedup_images``: perceptual hashes, sampled or pigeonhole bands, doubtful pairs
checked on the pictures where they live."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels import lsh as lsh_kernels
from dsbuild.kernels.decode import is_lossless
from dsbuild.kernels.hashing import (
    CROP_WINDOWS,
    VERIFY_SIDE,
    aligned_similarity,
    verification_thumbnails,
)
from dsbuild.records import ID, image_blobs, image_size
from dsbuild.stages.base import (
    register,
)
from dsbuild.stages.dedup.candidates import _EDGE_META, EDGE_COLUMNS, add_counts
from dsbuild.stages.dedup.components import _add
from dsbuild.stages.dedup.keep import KeepRule
from dsbuild.stages.dedup.near import _NearDedup
from dsbuild.stages.dedup.signers import A_WINDOW, B_WINDOW, ImageSigner


class NearDedupImagesOptions(KeepRule):
    hash: Literal["phash+dhash", "phash", "dhash"] = Field("phash+dhash", description="perceptual hash: pHash and dHash side by side (128 bits), or one 64-bit hash")
    max_distance: int | None = Field(None, ge=0, le=64, description="largest Hamming distance between hashes of duplicates "
                                     "(summed over both hashes); default 20 of phash+dhash's 128 bits, 10 of one hash's 64")
    mirror: bool = Field(False, description="also hash each image mirrored, so flipped copies are caught")
    turns: bool = Field(False, description="also hash each image turned by 90, 180 and 270 degrees (with mirror, each "
                        "mirrored too), so copies turned by a quarter are caught; each image then makes 4 times the band "
                        "rows (8 with mirror)")
    crops: bool = Field(False, description="also hash 18 windows of each image (3 % and 7 % of each side cut off, at 9 places), "
                        "so copies cropped by up to ~7 % are caught; a window must be within 7/10 of max_distance of the other "
                        "image (14 bits of 20), and where a picture is smaller than check_below, its thumbnail must correlate "
                        "with the window's at 0.993. Each image then makes 19 times the band rows")
    search: Literal["sampled", "pigeonhole"] = Field("sampled", description="sampled bit bands (fast at scale; the bits drawn from the "
                                                     "job's seed, so under another seed a pair near max_distance may be found or "
                                                     "missed; a pair's distance is exact) or pigeonhole bands (every pair within "
                                                     "max_distance, whatever the seed, slow for large distances)")
    bands: int | None = Field(None, ge=1, description="number of LSH bands; default chosen from max_distance")
    band_bits: int = Field(20, ge=4, le=40, description="bits per sampled band")
    min_similarity: float | None = Field(
        0.99, ge=-1, le=1,
        description="pairs whose hashes differ by more than trust_distance must also correlate this well once aligned "
        "(8x8 means after registering one thumbnail on the other); null trusts the hashes alone",
    )
    trust_distance: int = Field(4, ge=0, le=128, description="hash distance up to which a pair is a duplicate without looking at the pictures")
    keep: Literal["largest", "lossless"] | None = Field(
        None, description="which copy stays, judged on the files: largest (the most pixels; among as many, a lossless "
        "file, then the lowest id) or lossless (a PNG, TIFF, BMP, GIF, netpbm or lossless WebP over a JPEG, lossy WebP, "
        "JPEG 2000 or EXR; among those the most pixels, then the lowest id); default: quality's column, else the lowest id")
    check_below: int = Field(
        80, ge=0,
        description="a pair is checked when one picture is smaller than this many pixels on its shorter side (hashes of "
        "small pictures come from few real pixels and collide); pairs of larger pictures are trusted on their hashes",
    )

    @property
    def distance(self) -> int:
        """max_distance, or the default for the hash's length: 20 of 128 bits is 10 of 64
        (20 of one 64-bit hash took a page of text for a photo of coins, and made 25,652
        sampled bands where the pair of hashes needs 93)."""
        if self.max_distance is not None:
            return self.max_distance
        return 20 if self.hash == "phash+dhash" else 10

    @property
    def ranked(self) -> bool:
        return self.quality is not None or self.keep is not None

    @model_validator(mode="after")
    def _one_keep_rule(self):
        """keep ranks the copies itself: with a quality column (or prefer) one of the two
        rules would be dropped without a word."""
        if self.keep is not None and (self.quality is not None or "prefer" in self.model_fields_set):
            raise ValueError(f"keep: {self.keep} chooses the copy that stays by its file; quality and prefer choose it by a "
                             "column: give one of the two")
        return self

    @model_validator(mode="after")
    def _bands_reach(self):
        """The search can reach max_distance with a bounded number of bands: past it a
        run failed with a traceback (no 20-bit band misses 50 of 64 bits) or hung making
        millions of bands."""
        bits = 128 if self.hash == "phash+dhash" else 64
        if self.search == "pigeonhole":
            if self.bands is None and self.distance + 1 > bits:
                raise ValueError(f"search: pigeonhole needs max_distance + 1 bands of {self.hash}'s {bits} bits; "
                                 f"max_distance {self.distance} is every pair")
            return self
        if self.bands is None:
            _check_sampled_reach(self.distance, self.band_bits, self.hash)
        return self


_MAX_SAMPLED_BANDS = 100_000


def _check_sampled_reach(distance: int, band_bits: int, hash: str) -> None:
    """That sampled bands of ``band_bits`` can reach ``distance`` with a bounded number of
    bands: past it a run failed with a traceback (no 20-bit band misses 50 of 64 bits) or
    hung making millions of bands."""
    bits = 128 if hash == "phash+dhash" else 64
    hit = lsh_kernels.band_hit_probability(distance, band_bits, bits)
    bands = lsh_kernels.sampled_bands_for(distance, band_bits, ImageSigner.MISS_AT_MAX, bits) if hit > 0 else None
    if bands is None or bands > _MAX_SAMPLED_BANDS:
        raise ValueError(
            f"max_distance {distance} of {hash}'s {bits} bits needs "
            f"{'more bands than there are' if bands is None else f'{bands:,} sampled bands'} of band_bits {band_bits} "
            f"(each image gets one key per band; at most {_MAX_SAMPLED_BANDS:,}): lower max_distance or band_bits, or set bands")


@register
class NearDedupImages(_NearDedup):
    """Near-duplicate pictures by perceptual hash: re-encoded, resized, lightly edited copies."""

    name = "near_dedup_images"
    Options = NearDedupImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image_column

    def check(self, meta):
        self.require_image_column(meta)
        self.check_keep_rule(meta)

    def keep_quality(self):
        return _PictureRank(self._column(), self.options.keep) if self.options.keep else self.options.quality

    def signer(self, meta):
        o = self.options
        return ImageSigner(self._column(), o.hash, o.distance, o.mirror, o.search, o.bands, o.band_bits, seed=self.ctx.seed,
                           crops=o.crops, turns=o.turns)

    def checked(self, frame, shapes, edges):
        """The hash pairs that stand once the doubtful ones are checked on the pictures.

        Small simple pictures (digits, icons, aligned faces) have hashes as close as
        edited copies'. Pairs with a picture smaller than ``check_below`` whose hashes
        differ by more than ``trust_distance`` are checked by ``aligned_similarity`` on
        thumbnails. Each doubtful pair goes (a shuffle) to the partition where its first
        picture lives, which adds that picture's thumbnail (and keeps a pair found in
        several partitions' bands once), then to its second picture's partition, which
        adds the other thumbnail and scores the pair: pictures are decoded where they
        live, and only counts reach the driver (the pairs once came there, and a
        dict of their pictures' ids went to every partition). Larger pictures are not
        checked: their hashes separate distinct pictures, while textured ones (grass,
        gravel) correlate poorly after JPEG and cropping. The pairs that pass rejoin the
        trusted edges partition by partition. Where no pair is doubtful (every hash
        distance within trust_distance), a count over the edges says so and nothing moves.
        """
        o = self.options
        self.image_checked_ = 0
        if o.min_similarity is None or not shapes.fit(edges, lambda p, s: int(_is_doubtful(p, o.trust_distance).sum()), _add,
                                                      label=f"{self.ctx.name}-doubtful"):
            return edges
        doubtful = shapes.map(edges, _doubtful, o.trust_distance, meta=_ROUTED_PAIR_META, label=f"{self.ctx.name}-pairs")
        first = shapes.map(frame, with_first_thumbnails, shapes.route(doubtful, "_partition", like=frame), self._column(),
                           meta=_ROUTED_PAIR_META, label=f"{self.ctx.name}-thumbnails")
        scored = shapes.persist(shapes.map(frame, scored_pairs, shapes.route(first, "_partition", like=frame), self._column(),
                                           o.check_below, meta=_SCORED_META, label=f"{self.ctx.name}-check"))
        self.image_checked_, self.image_rejected_ = shapes.fit(scored, lambda p, s: _check_counts(p, o.min_similarity), add_counts,
                                                               label=f"{self.ctx.name}-checked")
        return shapes.concat([
            shapes.map(edges, _trusted, o.trust_distance, meta=_EDGE_META, label=f"{self.ctx.name}-trusted"),
            shapes.map(scored, _passed, o.min_similarity, meta=_EDGE_META, label=f"{self.ctx.name}-passed"),
        ])

    unsigned = "no picture that decodes (missing, empty, damaged or not an image: validate_images rejects such rows with the reason)"

    def summary(self) -> dict:
        out = super().summary()
        if out:
            out["pairs_checked_on_images"] = getattr(self, "image_checked_", 0)
            out["pairs_rejected_on_images"] = getattr(self, "image_rejected_", 0)
        return out


class _PictureRank:
    """Each row's rank for ``keep`` (higher stays), from its file's header: pixels and
    whether it is lossless, the one first and the other breaking its ties (exact in a
    float: 2^50 is above any picture's pixels)."""

    def __init__(self, column: str, keep: str):
        self.column, self.keep = column, keep

    def __call__(self, part: pd.DataFrame) -> np.ndarray:
        images = image_blobs(part[self.column])
        pixels = np.array([float(np.prod(image_size(d) or (0, 0))) for d in images])
        lossless = np.array([is_lossless(d) for d in images], dtype=float)
        return pixels * 2 + lossless if self.keep == "largest" else lossless * 2.0**50 + pixels


_PAIR = ["a", "b", "turn", "distance"]  # one hash pair: an edge found in several bands, or partitions, repeats it
_ROUTED_PAIR_META = _EDGE_META.assign(_partition=pd.Series([], dtype=np.int64), thumb_a=pd.Series([], dtype=object),
                                      side_a=pd.Series([], dtype=np.int64))
_SCORED_META = _EDGE_META.assign(similarity=pd.Series([], dtype=float))


def _doubtful(edges: pd.DataFrame, trust_distance: int) -> pd.DataFrame:
    """The hash pairs too far apart to trust without looking at the pictures, bound for
    the partition of their first picture."""
    pairs = edges[_is_doubtful(edges, trust_distance)]
    return pairs.assign(_partition=pairs["at_a"].to_numpy(dtype=np.int64) >> np.int64(32),
                        thumb_a=pd.Series(None, index=pairs.index, dtype=object), side_a=np.zeros(len(pairs), dtype=np.int64))


def _is_doubtful(edges: pd.DataFrame, trust_distance: int) -> np.ndarray:
    return (edges["a"].notna() & (edges["distance"] > trust_distance)).to_numpy(dtype=bool)


def _thumbnails_at(part: pd.DataFrame, column: str, ids: pd.Series, at: np.ndarray,
                   windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(thumbnail bytes or None, shorter side) of this partition's rows at ``at`` (where
    ``signatures`` said they live), of their window ``windows`` where it is not -1, each
    (picture, window) made once however many pairs name it."""
    keys, slot = np.unique(np.stack([at & np.int64(0xFFFFFFFF), windows]), axis=1, return_inverse=True)
    rows, cut = keys[0], keys[1]
    slot = slot.reshape(-1)
    if len(rows) and (rows.max() >= len(part) or not np.array_equal(
            part[ID].to_numpy(dtype=object)[rows[slot]], ids.to_numpy(dtype=object))):
        raise RuntimeError("near_dedup_images: the input's partitions changed between its passes")
    images = image_blobs(part[column].iloc[rows])
    thumbs, ok = verification_thumbnails(images, cut)
    blobs = np.array([t.tobytes() if good else None for t, good in zip(thumbs, ok)], dtype=object)
    sides = np.array([min(image_size(d) or (0, 0)) for d in images], dtype=np.int64)
    return blobs[slot], sides[slot]


def _window(turn: pd.Series, first: int, last: int) -> np.ndarray:
    """The window index a pair's ``turn`` code names in [first, last), else -1."""
    code = turn.to_numpy(dtype=np.int64)
    return np.where((code >= first) & (code < last), code - first, -1)


def with_first_thumbnails(part: pd.DataFrame, pairs: pd.DataFrame, column: str) -> pd.DataFrame:
    """The doubtful pairs whose first picture lives in this partition, each once (the
    same pair comes from the bands of several partitions), with that picture's thumbnail,
    bound for the partition of their second picture."""
    if pairs.empty:
        return _ROUTED_PAIR_META.copy()
    pairs = pairs.reset_index(drop=True).sort_values(_PAIR, kind="stable").drop_duplicates(_PAIR, ignore_index=True)
    thumbs, sides = _thumbnails_at(part, column, pairs["a"], pairs["at_a"].to_numpy(dtype=np.int64),
                                   _window(pairs["turn"], A_WINDOW, A_WINDOW + CROP_WINDOWS))
    out = pairs.assign(_partition=pairs["at_b"].to_numpy(dtype=np.int64) >> np.int64(32), thumb_a=thumbs, side_a=sides)
    return out[list(_ROUTED_PAIR_META.columns)]


def scored_pairs(part: pd.DataFrame, pairs: pd.DataFrame, column: str, check_below: int) -> pd.DataFrame:
    """The doubtful pairs whose second picture lives in this partition, as edges with the
    aligned similarity of their thumbnails: -1 where a picture gave none, +inf where both
    pictures are at least ``check_below`` pixels on their shorter side (trusted on their
    hashes; an unknown size counts as small)."""
    if pairs.empty:
        return _SCORED_META.copy()
    pairs = pairs.reset_index(drop=True)
    thumbs_b, sides_b = _thumbnails_at(part, column, pairs["b"], pairs["at_b"].to_numpy(dtype=np.int64),
                                       _window(pairs["turn"], B_WINDOW, A_WINDOW))

    def score(a, b, side_a, side_b, turn):
        if a is None or b is None:
            return -1.0
        if min(side_a, side_b) >= check_below:
            return np.inf
        return aligned_similarity(_thumbnail(a), _thumbnail(b), turn=turn if turn < B_WINDOW else 0)

    scores = [score(*args) for args in zip(pairs["thumb_a"], thumbs_b, pairs["side_a"], sides_b, pairs["turn"])]
    return pairs[list(EDGE_COLUMNS)].astype(EDGE_COLUMNS).assign(similarity=np.asarray(scores, dtype=float))


def _thumbnail(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(VERIFY_SIDE, VERIFY_SIDE)


def _check_counts(scored: pd.DataFrame, min_similarity: float) -> tuple[int, int]:
    """(pairs checked on the pictures, pairs that failed)."""
    return len(scored), int((~_passes(scored, min_similarity)).sum())


# How well a picture must correlate with the window of another it matched, where one of
# the two is under check_below. Distinct digits matched each other's windows at up to
# 0.992 (at min_similarity's 0.99, 5 more distinct pairs among 707 pictures were taken);
# 90 % crops of 32- and 64-px photos matched their originals' windows at 0.978-0.9998.
WINDOW_SIMILARITY = 0.993


def _passes(scored: pd.DataFrame, min_similarity: float) -> np.ndarray:
    """Which scored pairs pass: ``min_similarity``, or for a pair through a window
    (``turn`` from ``B_WINDOW`` up) at least :data:`WINDOW_SIMILARITY`."""
    window = scored["turn"].to_numpy(dtype=np.int64) >= B_WINDOW
    return (scored["similarity"].to_numpy() >= np.where(window, max(min_similarity, WINDOW_SIMILARITY), min_similarity))


def _trusted(edges: pd.DataFrame, trust_distance: int) -> pd.DataFrame:
    """This partition's edges but the doubtful ones (and its tally row)."""
    return edges[~_is_doubtful(edges, trust_distance)].astype(EDGE_COLUMNS)


def _passed(scored: pd.DataFrame, min_similarity: float) -> pd.DataFrame:
    """The doubtful pairs scored here that passed the check (once each: repeats of an edge
    make no other component). They join the trusted edges as partitions of their own: the
    edges and the scored pairs are partitioned apart (by band key, by picture), and a
    map over both broadcast a one-partition frame of edges to every partition of pairs,
    counting its comparisons as many times."""
    return scored[_passes(scored, min_similarity)].drop(columns="similarity").astype(EDGE_COLUMNS)
