"""``split``: train / validation / test by a seeded hash, so nothing leaks between them.

Each row's split is a pure function of the job's seed and its key, as in hash-based
splitting at scale: the same at any partitioning or number of workers, and a row keeps
its split when the data grows. The key is the record the row comes from: an augmented,
resampled or SMOTE copy (``parent#aug0``) goes where its parent goes, so no copy of a
test image trains the model. ``by`` makes the key a group (a patient, a user, a
session), so each group lands whole in one split. Shares are met in expectation: with n
keys, a split's share is off by about sqrt(share × (1 − share) / n).

``stratify`` meets them exactly within each class of the job's label, as scikit-learn's
stratified split does: each class is cut at its rows' ranks by the same hash, found by the
exact per-cell selection resampling uses (two mergeable passes; nothing is sorted whole).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dsbuild.kernels import selection
from dsbuild.records import ID, record_uniform
from dsbuild.stages.base import METRIC, MapStage, StageError, StageOptions, register, with_marks

_COPY_SUFFIX = re.compile(r"(?:#(?:aug|rs|smote)(?:\d+\.)?\d+)+$")  # #rs2.1: a copy by resample#2


class SplitOptions(StageOptions):
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1},
        description="split name -> share of the keys (rows, or groups with by); the shares sum to 1",
    )
    column: str = Field("split", description="column that names each row's split")
    by: list[str] | None = Field(None, description="columns whose values keep rows together: each group lands whole in one split "
                                 "(a row missing one is split by its record)")
    stratify: bool = Field(False, description="exact shares within each class of the job's label (rows, not groups; "
                           "split before augmenting, so each record is one row)")

    @field_validator("fractions")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one split")
        bad = {k: v for k, v in value.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"every share must be in (0, 1], got {bad}")
        if abs(sum(value.values()) - 1) > 1e-9:
            raise ValueError(f"shares must sum to 1, got {sum(value.values()):g} ({value})")
        return value


def _add_histograms(a: dict, b: dict) -> dict:
    return {c: a.get(c, 0) + b.get(c, 0) for c in set(a) | set(b)}


def origin_ids(ids: pd.Series) -> pd.Series:
    """The record each row comes from: ids with the copy suffixes dsbuild adds removed
    (``a.png#aug0#rs1`` → ``a.png``). Synthetic rows (``#syn``) are records of their own."""
    return ids.astype(str).str.replace(_COPY_SUFFIX, "", regex=True)


def assign(keys: pd.Series, fractions: dict[str, float], seed: int, stage: str) -> np.ndarray:
    """The split of each key: a uniform draw from (seed, stage, key) against the shares'
    running sums; each distinct key is hashed once."""
    codes, uniques = pd.factorize(keys, use_na_sentinel=False)
    draws = record_uniform(seed, stage, [str(u) for u in uniques])
    bounds = np.cumsum(list(fractions.values()))[:-1]
    names = np.array(list(fractions), dtype=object)
    return names[np.searchsorted(bounds, draws, side="right")][codes]


# Stages whose ``where`` names the rows they make rows from or change (``select``'s ``where`` filters rows instead)
_GROWS_OR_CHANGES_ROWS = ("augment", "oversample", "synthesize", "reweigh", "resample", "massage")


@register
class Split(MapStage):
    """Train / validation / test by a seeded hash of each row's record, or of its group."""

    name = "split"
    Options = SplitOptions

    def __init__(self, options=None, **settings):
        super().__init__(options, **settings)
        if self.options.stratify:  # class sizes and rank cuts are fitted first
            self.shape = "fit_apply"

    def check(self, meta):
        if "duplicate_group" in (self.options.by or []) and "duplicate_group" not in meta.columns:
            raise StageError(f"stage {self.ctx.name!r}: grouping column 'duplicate_group' is not in the data; a dedup "
                             "stage before it makes it with action: group (its default, drop, keeps one copy and no column)")
        self.require_columns(meta, self.options.by or [], what="grouping column")
        if self.options.column in meta.columns:
            # the source's own split (a benchmark's test set) was reshuffled into training without a word
            raise StageError(f"stage {self.ctx.name!r}: the data already has a column {self.options.column!r} (the source's own "
                             "split?), which the stage would overwrite; name another with column:, or drop it first (select: "
                             f"{{drop: [{self.options.column}]}})")
        if self.options.stratify:
            if self.options.by:
                raise StageError(f"stage {self.ctx.name!r}: stratify cuts each class by rows; it cannot keep groups whole (by)")
            if not self.ctx.roles.label:
                raise StageError(f"stage {self.ctx.name!r}: stratify needs the job's label column (columns.label)")
            self.require_columns(meta, [self.ctx.roles.label], what="label column (columns.label)")

    def build(self, frame, shapes):
        if not self.options.stratify:
            return super().build(frame, shapes)
        hist = shapes.fit(frame, self._class_histogram, _add_histograms, label=self.ctx.name)
        plan = self._plan(hist)
        candidates = shapes.fit(frame, self._boundary_keys, selection.merge_boundary_keys, shapes.broadcast(plan).value,
                                label=self.ctx.name)
        plan["key_limit"], plan["tie_limit"] = selection.thresholds(candidates, plan["inside"])
        return shapes.map(frame, self._stratified, shapes.broadcast(plan), label=self.ctx.name)

    def order_warnings(self, earlier, later) -> list[str]:
        """Rows made from statistics of every row carry the later test rows into training;
        a stage after the split that makes or changes rows without ``where`` changes the
        validation and test rows too (copies, resampled cells, flipped labels)."""
        rest = list(self.options.fractions)[1:]
        others = " and ".join([", ".join(rest[:-1]), rest[-1]] if len(rest) > 1 else rest) or "other splits"
        where = f"where: [{{column: {self.options.column}, op: '==', value: {next(iter(self.options.fractions))}}}]"
        before = [
            f"stage {self.ctx.name!r} runs after {s.ctx.name!r}, whose new rows are fitted on rows the split then "
            f"puts in {others}; split first, and give {s.ctx.name!r} {where}"
            for s in earlier if s.name in ("oversample", "synthesize")
        ]
        after = [
            f"stage {s.ctx.name!r} runs after {self.ctx.name!r} without where, so it fits on the {others} rows too and "
            + (f"adds new rows to them; give it {where}" if s.name in ("augment", "oversample", "synthesize") else f"changes them; give it {where}")
            for s in later if s.name in _GROWS_OR_CHANGES_ROWS and not s.options.where
        ]
        after += [
            f"stage {s.ctx.name!r} runs after {self.ctx.name!r} without fit_on, so it fits on the {others} rows too; "
            f"give it fit_on: [{{column: {self.options.column}, op: '==', value: {next(iter(self.options.fractions))}}}]"
            for s in later if s.name in ("correlation_remover", "disparate_impact_remover") and not s.options.fit_on
        ]
        apart = [
            f"stage {s.ctx.name!r} names clusters of copies in {s.options.group_column!r}, but {self.ctx.name!r} does not "
            f"keep them together, so copies can land in different splits: give {self.ctx.name!r} by: [{s.options.group_column}]"
            for s in earlier if getattr(s.options, "action", None) == "group" and s.options.group_column not in (self.options.by or [])
        ]
        return before + after + apart

    def summary(self) -> dict:
        o = self.options
        return {"fractions": dict(o.fractions), "column": o.column, "key": o.by or "record (copies go with it)"}

    def result_warnings(self, entry: dict) -> list[str]:
        """Few or uneven groups (a handful of hospitals) cannot be cut in the shares asked."""
        o = self.options
        got = {name: int(entry.get("metrics", {}).get(f"{o.column}:{name}", 0)) for name in o.fractions}
        total = sum(got.values())
        if total < 100:
            return []
        off = {name: n / total for name, n in got.items() if abs(n / total - o.fractions[name]) > o.fractions[name] / 2}
        if not off:
            return []
        shares = ", ".join(f"{name} {n / total:.1%}" for name, n in got.items())
        asked = ", ".join(f"{name} {share:.0%}" for name, share in o.fractions.items())
        why = "its groups are few or of very different sizes" if o.by else "there are few rows"
        return [f"stage {self.ctx.name!r}: the splits came out as {shares} (asked: {asked}); {why}"]

    def _keys(self, part: pd.DataFrame) -> pd.Series:
        """A row's record, or its group with ``by``. A row missing a ``by`` value belongs to
        no known group and is keyed by its record: as one group of their own, the rows
        without a patient id (a third of them, say) all landed in one split."""
        by = self.options.by
        records = origin_ids(part[ID])
        if not by:
            return records
        first = part[by[0]].astype(str)
        groups = first.str.cat([part[c].astype(str) for c in by[1:]], sep="\x1f") if len(by) > 1 else first
        missing = part[by].isna().any(axis=1).to_numpy()
        return pd.Series(np.where(missing, "\x00" + records.to_numpy(dtype=object), groups.to_numpy(dtype=object)), index=part.index)

    def process(self, part):
        o = self.options
        split = assign(self._keys(part), o.fractions, self.ctx.seed, self.ctx.name) if len(part) else np.array([], dtype=object)
        return self._write(part, split)

    def _write(self, part: pd.DataFrame, split: np.ndarray) -> pd.DataFrame:
        o = self.options
        part[o.column] = pd.array(split, dtype="string")
        for name in o.fractions:
            part[f"{METRIC}{o.column}:{name}"] = (split == name).astype(np.int64)
        return part

    # -- stratify: each class cut exactly at its rows' hash ranks -----------------------
    def _ranks(self, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(key, tie): the uniform draw that orders a class's rows, and one for exact ties."""
        keys = [str(k) for k in self._keys(part)]
        return record_uniform(self.ctx.seed, self.ctx.name, keys), record_uniform(self.ctx.seed, self.ctx.name + "#tie", keys)

    def _labels(self, part: pd.DataFrame) -> np.ndarray:
        col = part[self.ctx.roles.label]
        return np.where(col.isna().to_numpy(), "\x00<missing>", col.astype(str).to_numpy(dtype=object))

    def _class_histogram(self, part: pd.DataFrame, state=None) -> dict[str, np.ndarray]:
        labels, (keys, _) = self._labels(part), self._ranks(part)
        return {c: np.bincount(selection.bucket_of(keys[labels == c]), minlength=selection.BUCKETS) for c in set(labels)}

    def _plan(self, hist: dict[str, np.ndarray]) -> dict:
        """Per (class, boundary between two splits) cell: how many of the class's rows lie
        before it, the running shares of the class's size rounded (the last is all)."""
        classes = sorted(hist)
        sizes = np.array([int(hist[c].sum()) for c in classes], dtype=np.int64)
        cuts = np.cumsum(list(self.options.fractions.values()))[:-1]
        wanted = np.rint(np.outer(sizes, cuts)).astype(np.int64).reshape(-1)  # cell = class * len(cuts) + j
        histogram = np.repeat(np.stack([hist[c] for c in classes]), len(cuts), axis=0) if classes else np.zeros((0, selection.BUCKETS), np.int64)
        bucket, inside = selection.boundaries(histogram, wanted)
        return {"classes": classes, "sizes": sizes.tolist(), "cuts": len(cuts), "bucket": bucket, "inside": inside}

    def _cells(self, part: pd.DataFrame, plan: dict, j: int) -> np.ndarray:
        index = {c: i for i, c in enumerate(plan["classes"])}
        return np.array([index.get(x, -1) for x in self._labels(part)], dtype=np.int64) * plan["cuts"] + j

    def _boundary_keys(self, part: pd.DataFrame, plan: dict) -> pd.DataFrame:
        keys, ties = self._ranks(part)
        return pd.concat([selection.boundary_keys(self._cells(part, plan, j), keys, ties, plan["bucket"]) for j in range(plan["cuts"])],
                         ignore_index=True)

    def _stratified(self, part: pd.DataFrame, plan: dict) -> pd.DataFrame:
        part = with_marks(part)
        keys, ties = self._ranks(part)
        beyond = np.zeros(len(part), dtype=np.int64)  # how many cuts each row lies past
        for j in range(plan["cuts"]):
            cells = self._cells(part, plan, j)
            beyond += ~selection.chosen(cells, keys, ties, plan["bucket"], plan["key_limit"], plan["tie_limit"])
        return self._write(part, np.array(list(self.options.fractions), dtype=object)[beyond])
