"""``canonicalize``: one spelling per value, through a synonym table."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.canonical import SynonymTable, canonicalize, common_spellings, spelled_missing, spelling_counts
from dsbuild.stages.base import MapStage, StageError, StageOptions, register, reject, with_marks
from dsbuild.stages.clean.cells import (
    _as_received,
    _details,
    _leaves_the_id,
    _rejects_as_received,
)


class CanonicalRule(StageOptions):
    """One column's canonical spellings and what to do with a value the table lacks."""

    vocabulary: list[str] = Field(default_factory=list, description="the canonical values")
    synonyms: dict[str, list[str]] = Field(default_factory=dict, description="canonical value -> other spellings")
    case: Literal["keep", "fold", "lower", "upper", "title", "common"] = Field(
        "keep", description="case of values the table lacks; common: the spelling most rows use among those that differ "
        "only in case, width and spacing (private, PRIVATE -> Private), counted over the whole data set")
    trim: bool = Field(True, description="strip both ends and make every run of spaces, tabs and line breaks inside one "
                       "space (false for running text whose lines and paragraphs matter)")
    nfkc: bool = Field(True, description="Unicode NFKC: full-width letters, ligatures (ﬁ) and compatibility forms folded, accents written apart (e + ´) composed")
    unknown: Literal["keep", "null", "reject"] = Field("keep", description="a value outside vocabulary and synonyms")
    missing: list[str] = Field(default_factory=list, description="spellings that mean a missing value (N/A, -, ?, unknown), "
                               "matched as values are (any case and spacing): made missing, for impute, and counted")

    @model_validator(mode="after")
    def _unambiguous(self):
        table = self.table()
        both = [m for m in self.missing if table.find(str(m)) is not None]
        if both:
            raise ValueError(f"missing: {both[0]!r} is also a value of the vocabulary or synonyms ({table.find(str(both[0]))!r})")
        return self

    def table(self) -> SynonymTable:
        return SynonymTable(self.vocabulary, self.synonyms)


class CanonicalizeOptions(StageOptions):
    columns: dict[str, CanonicalRule] = Field(..., description="column -> {vocabulary, synonyms, case, unknown, missing}")


COMMON_MAX_DISTINCT = 1_000_000  # distinct spellings case: common counts; as impute's mode


@register
class Canonicalize(MapStage):
    """Strings trimmed, NFKC-normalised and mapped through a synonym table (M, male → Male).

    Matching ignores case, width and spacing. With ``case: common``, values the table
    lacks take the spelling most rows of the data set give their match key: a fit pass
    counts each column's spellings, so the choice does not depend on the partitioning.
    A blank cell is missing (null), as a CSV reader makes it, and so is a value ``missing``
    lists (``N/A``, ``-``: a Parquet or JSON source keeps them as text). Counters ``canonicalized:<col>`` (cells changed),
    ``missing:<col>`` (cells made missing by ``missing``) and ``unknown:<col>``
    (values outside a given vocabulary/synonyms, which are kept, made missing or rejected
    as ``unknown-value:<col>=<value>``, as they came).
    """

    name = "canonicalize"
    Options = CanonicalizeOptions

    def check(self, meta):
        self.require_columns(meta, self.options.columns)
        _leaves_the_id(self, self.options.columns, "respell")
        for column in self.options.columns:
            dtype = meta[column].dtype
            if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
                # it had turned 1 into "1" and 1.5 into "1.5", a column of numbers into text
                raise StageError(f"stage {self.ctx.name!r}: canonicalize respells text, and {column!r} holds {dtype} "
                                 f"values; check its allowed values with ranges: {{{column}: {{allowed: [...]}}}}, or "
                                 f"cast it to str first if its codes are names")

    def __init__(self, options=None, **settings):
        super().__init__(options, **settings)
        if self._counted():  # case: common counts spellings (a fit) before it respells
            self.shape = "fit_apply"

    def _counted(self) -> list[str]:
        return [column for column, rule in self.options.columns.items() if rule.case == "common"]

    def build(self, frame, shapes):
        if not self._counted():
            return super().build(frame, shapes)
        counts = shapes.fit(frame, self._spelling_counts, self._merge_counts, label=self.ctx.name)
        self._check_distinct(counts)  # also here: one partition is never merged
        self.state_ = {column: common_spellings(counts.get(column, {})) for column in self._counted()}
        return shapes.map(frame, self._respell, shapes.broadcast(self.state_), label=self.ctx.name)

    def _spelling_counts(self, part: pd.DataFrame, state=None) -> dict[str, dict[str, int]]:
        rules = self.options.columns
        return {c: spelling_counts(_present(part[c], rules[c]), rules[c].table(), trim=rules[c].trim, nfkc=rules[c].nfkc)
                for c in self._counted()}

    def _merge_counts(self, a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        return self._check_distinct(_add_counts(a, b))

    def _check_distinct(self, counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """case: common counts every distinct spelling in one task: on free text (comments,
        names) that is the column itself, gathered in one process. Checked as counts merge,
        so memory stays bounded."""
        for column, spellings in counts.items():
            if len(spellings) > COMMON_MAX_DISTINCT:
                raise StageError(f"stage {self.ctx.name!r}: case: common of {column!r} counts more than "
                                 f"{COMMON_MAX_DISTINCT:,} distinct spellings, which would all be held in one process: "
                                 "it is for categories; give free text another case (keep, lower, ...)")
        return counts

    def _respell(self, part: pd.DataFrame, common: dict[str, dict[str, str]]) -> pd.DataFrame:
        return self.process(with_marks(part), common)

    def process(self, part, common: dict[str, dict[str, str]] | None = None):
        received = _as_received(part, self.options.columns)
        for column, rule in self.options.columns.items():
            raw = part[column]
            gone = spelled_missing(raw, rule.missing)
            out, changed, unknown = canonicalize(raw.mask(gone), rule.table(), trim=rule.trim, nfkc=rule.nfkc, case=rule.case,
                                                 common=(common or {}).get(column))
            if rule.unknown == "reject":
                part = reject(part, unknown, _details(f"unknown-value:{column}", raw, unknown))
            elif rule.unknown == "null":
                out = out.mask(unknown)
                changed = changed | unknown
            # a categorical (a Parquet dictionary column) stays one, with the canonical spellings
            part[column] = out.astype("category") if isinstance(raw.dtype, pd.CategoricalDtype) else out
            part[f"_m_canonicalized:{column}"] = changed.astype(np.int64)
            part[f"_m_unknown:{column}"] = unknown.astype(np.int64)
            if rule.missing:
                part[f"_m_missing:{column}"] = gone.astype(np.int64)
        return _rejects_as_received(part, received)


def _present(values: pd.Series, rule: CanonicalRule) -> pd.Series:
    """The values with those ``rule.missing`` lists made missing."""
    return values.mask(spelled_missing(values, rule.missing)) if rule.missing else values


def _add_counts(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out = {column: dict(counts) for column, counts in a.items()}
    for column, counts in b.items():
        merged = out.setdefault(column, {})
        for spelling, n in counts.items():
            merged[spelling] = merged.get(spelling, 0) + n
    return out
