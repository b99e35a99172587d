"""``near_dedup_text``: MinHash LSH over word or character shingles."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels.minhash import exact_jaccard
from dsbuild.records import ID
from dsbuild.stages.base import (
    StageError,
    register,
)
from dsbuild.stages.dedup.candidates import _EDGE_META, EDGE_COLUMNS, add_counts
from dsbuild.stages.dedup.keep import KeepRule
from dsbuild.stages.dedup.near import _NearDedup
from dsbuild.stages.dedup.signers import TextSigner


class NearDedupTextOptions(KeepRule):
    fields: list[str] | None = Field(None, min_length=1, description="columns whose text is compared; default columns.text")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of their shingles at which two records "
                             "are duplicates (exact, see verify; the pairs compared are found by MinHash bands drawn from "
                             "the job's seed: the same seed gives the same output on any workers and partitioning; under "
                             "another, a pair near the threshold may be found or missed)")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length: more permutations estimate "
                          "similarity closer to the true Jaccard, so the seed decides fewer pairs")
    shingle: int = Field(5, ge=1, le=32, description="shingle size, in words or characters; a text shorter than one "
                         "shingle is one shingle (it matches only its copies); with verify: estimate, two texts of up "
                         "to num_perm / 4 shingles each (36 words at the defaults) are still compared on their "
                         "shingles' exact Jaccard similarity, longer ones on the MinHash estimate")
    unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters (char for text "
                                          "without spaces between words, such as Chinese or Japanese: as words, "
                                          "only exact copies match)")
    normalize: bool = Field(True, description="compare letters and digits only, case- and width-folded (NFKC): "
                            "'Dog!' and 'dog' are one word; false compares the text as it is, words split on spaces")
    verify: Literal["exact", "estimate"] = Field(
        "exact", description="exact: a pair the bands bring together whose estimate is within 3 standard deviations "
        "of the threshold (or above it) is judged on its shingles' exact Jaccard similarity, read again where its "
        "texts live; estimate: on the MinHash estimate (faster; a copy just above the threshold is missed, one just "
        "below taken, about as often as the estimate errs)")


@register
class NearDedupText(_NearDedup):
    """Near-duplicate texts or records by MinHash LSH over word or character shingles."""

    name = "near_dedup_text"
    Options = NearDedupTextOptions
    payload_dtype = np.uint32

    unsigned = "no words to compare (missing or empty text, or no letter or digit)"

    def _fields(self) -> list[str]:
        if self.options.fields:
            return list(self.options.fields)
        if self.ctx.roles.text:
            return [self.ctx.roles.text]
        raise StageError(f"stage {self.ctx.name!r}: name the text with columns.text or the fields option")

    def check(self, meta):
        self.require_columns(meta, self._fields())
        self.check_keep_rule(meta)

    def signer(self, meta):
        o = self.options
        self.signer_ = TextSigner(self._fields(), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1,
                                  normalize=o.normalize, margin=estimate_margin(o.threshold, o.num_perm) if o.verify == "exact" else 0.0)
        return self.signer_

    def checked(self, frame, shapes, edges):
        """With ``verify: exact``, every close pair judged on its exact Jaccard similarity.

        MinHash estimates a pair's similarity with a standard deviation of
        sqrt(J (1 - J) / num_perm), 0.035 at 0.8 with 128 permutations: judged on the
        estimate, a copy at 0.82 was missed one time in four. The bands find such pairs
        (they are cut for recall), and the close ones (estimated at or above the threshold
        less :func:`estimate_margin`) go, as near_dedup_images' doubtful pairs do, to the
        partition of their first text, which adds its shingles, then to their second's,
        which shingles it and keeps the pair if its exact similarity reaches the
        threshold. Texts are shingled where they live; only counts reach the driver."""
        if self.options.verify != "exact":
            return edges
        signer, name = self.signer_, self.ctx.name
        pairs = shapes.map(edges, _pairs_to_check, meta=_ROUTED_META, label=f"{name}-pairs")
        first = shapes.map(frame, with_first_shingles, shapes.route(pairs, "_partition", like=frame), signer,
                           meta=_ROUTED_META, label=f"{name}-shingles")
        judged = shapes.persist(shapes.map(frame, judged_pairs, shapes.route(first, "_partition", like=frame), signer,
                                           meta=_JUDGED_META, label=f"{name}-exact"))
        self.exact_checked_, self.exact_rejected_ = shapes.fit(
            judged, lambda p, s: (len(p), int((p["similarity"] < self.options.threshold).sum())), add_counts, label=f"{name}-checked")
        threshold = self.options.threshold
        return shapes.concat([
            shapes.map(edges, lambda p: p[p["a"].isna().to_numpy()].astype(EDGE_COLUMNS), meta=_EDGE_META, label=f"{name}-tally"),
            shapes.map(judged, lambda p: _within(p, threshold), meta=_EDGE_META, label=f"{name}-passed"),
        ])

    def summary(self) -> dict:
        out = super().summary()
        if out and self.options.verify == "exact":
            out["pairs_checked_exactly"] = getattr(self, "exact_checked_", 0)
            out["pairs_rejected_exactly"] = getattr(self, "exact_rejected_", 0)
        return out


def estimate_margin(threshold: float, num_perm: int) -> float:
    """Three standard deviations of the MinHash estimate at ``threshold``: a pair truly
    at the threshold is estimated below it less than once in 700."""
    return 3 * float(np.sqrt(threshold * (1 - threshold) / num_perm))


_PAIR = ["a", "b"]
_ROUTED_META = _EDGE_META.assign(_partition=pd.Series([], dtype=np.int64), shingles_a=pd.Series([], dtype=object))
_JUDGED_META = _EDGE_META.assign(similarity=pd.Series([], dtype=float))


def _pairs_to_check(edges: pd.DataFrame) -> pd.DataFrame:
    """The close pairs, bound for the partition of their first text."""
    pairs = edges[edges["a"].notna().to_numpy()]
    return pairs.assign(_partition=pairs["at_a"].to_numpy(dtype=np.int64) >> np.int64(32),
                        shingles_a=pd.Series(None, index=pairs.index, dtype=object))


def _shingles_at(part: pd.DataFrame, signer: TextSigner, ids: pd.Series, at: np.ndarray) -> np.ndarray:
    """The shingle sets (bytes of sorted uint64) of this partition's rows at ``at``, each
    text shingled once however many pairs name it."""
    rows, slot = np.unique(at & np.int64(0xFFFFFFFF), return_inverse=True)
    if len(rows) and (rows.max() >= len(part) or not np.array_equal(
            part[ID].to_numpy(dtype=object)[rows[slot]], ids.to_numpy(dtype=object))):
        raise RuntimeError("near_dedup_text: the input's partitions changed between its passes")
    sets = np.array([s.tobytes() for s in signer.shingle_sets(part, rows)] if len(rows) else [], dtype=object)
    return sets[slot] if len(rows) else np.array([], dtype=object)


def with_first_shingles(part: pd.DataFrame, pairs: pd.DataFrame, signer: TextSigner) -> pd.DataFrame:
    """The pairs whose first text lives here, each once (a pair comes from the bands of
    several partitions), with that text's shingles, bound for their second text's partition."""
    if pairs.empty:
        return _ROUTED_META.copy()
    pairs = pairs.reset_index(drop=True).sort_values(_PAIR, kind="stable").drop_duplicates(_PAIR, ignore_index=True)
    shingles = _shingles_at(part, signer, pairs["a"], pairs["at_a"].to_numpy(dtype=np.int64))
    out = pairs.assign(_partition=pairs["at_b"].to_numpy(dtype=np.int64) >> np.int64(32), shingles_a=shingles)
    return out[list(_ROUTED_META.columns)]


def judged_pairs(part: pd.DataFrame, pairs: pd.DataFrame, signer: TextSigner) -> pd.DataFrame:
    """The pairs whose second text lives here, with their shingles' exact Jaccard similarity."""
    if pairs.empty:
        return _JUDGED_META.copy()
    pairs = pairs.reset_index(drop=True)
    shingles_b = _shingles_at(part, signer, pairs["b"], pairs["at_b"].to_numpy(dtype=np.int64))
    similarity = np.array([exact_jaccard(np.frombuffer(a, dtype=np.uint64), np.frombuffer(b, dtype=np.uint64))
                           for a, b in zip(pairs["shingles_a"], shingles_b)], dtype=float)
    return pairs[list(EDGE_COLUMNS)].astype(EDGE_COLUMNS).assign(similarity=similarity, distance=1.0 - similarity)


def _within(judged: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return judged[(judged["similarity"] >= threshold).to_numpy(dtype=bool)].drop(columns="similarity").astype(EDGE_COLUMNS)
