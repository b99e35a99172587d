"""``near_dedup_text``: MinHash LSH over word or character shingles."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dsbuild.stages.base import (
    StageError,
    register,
)
from dsbuild.stages.dedup.keep import KeepRule
from dsbuild.stages.dedup.near import _NearDedup
from dsbuild.stages.dedup.signers import TextSigner


class NearDedupTextOptions(KeepRule):
    fields: list[str] | None = Field(None, min_length=1, description="columns whose text is compared; default columns.text")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity (estimated; exact for short texts, see "
                             "shingle) at which two records are duplicates "
                             "(estimated from MinHash permutations drawn from the job's seed: the same seed gives the same "
                             "output on any workers and partitioning; under another, a pair near the threshold may fall on "
                             "the other side)")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length: more permutations estimate "
                          "similarity closer to the true Jaccard, so the seed decides fewer pairs")
    shingle: int = Field(5, ge=1, le=32, description="shingle size, in words or characters; a text shorter than one "
                         "shingle is one shingle (it matches only its copies), and two texts of up to num_perm / 4 "
                         "shingles each (36 words at the defaults) are compared on their shingles' exact Jaccard "
                         "similarity, longer ones on the MinHash estimate")
    unit: Literal["word", "char"] = Field("word", description="shingles of words or of characters (char for text "
                                          "without spaces between words, such as Chinese or Japanese: as words, "
                                          "only exact copies match)")
    normalize: bool = Field(True, description="compare letters and digits only, case- and width-folded (NFKC): "
                            "'Dog!' and 'dog' are one word; false compares the text as it is, words split on spaces")


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
        return TextSigner(self._fields(), o.num_perm, o.shingle, o.unit, o.threshold, seed=self.ctx.seed + 1,
                          normalize=o.normalize)
