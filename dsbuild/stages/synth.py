"""Tabular synthesis: ``oversample`` (SMOTE) and ``synthesize`` (Gaussian copula).

``oversample`` counts classes (a mergeable fit), then shuffles so each class that needs
rows meets in one partition (rows of other classes are spread by id), and runs SMOTE
there on the class's rows sorted by id. Neighbours are exact and the draws come from a
generator seeded by (job seed, stage, class), so the new rows do not depend on the
partitioning. The cost: one minority class must fit in one worker's memory.

``synthesize`` fits a Gaussian copula in three mergeable passes and adds N new rows in
fixed blocks of ids, each block seeded by (job seed, stage, block), spread over the
partitions; rows are the same whichever partition emits them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import Field

from dsbuild.kernels import smote as smote_kernel
from dsbuild.kernels.copula import (
    POOLED,
    ByClass,
    CategoryCounts,
    CategoryPairs,
    ClassCopula,
    GaussianCopula,
    Marginals,
    ScoreMoments,
    category_links,
    linkable_pairs,
)
from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.moments import ColumnMoments
from dsbuild.records import ID, child_id, copy_kind, record_rng
from dsbuild.stages.base import ADDED, KEY, Stage, StageError, StageOptions, _did_you_mean, register, with_marks, written_index
from dsbuild.stages.conditions import Condition, all_hold, rows_holding

# -- oversample -------------------------------------------------------------------------


class OversampleOptions(StageOptions):
    ratio: float = Field(1.0, gt=0, le=1.0, description="grow each minority class to ratio × the largest class")
    k_neighbors: int = Field(5, ge=1, description="neighbours to interpolate towards")
    classes: list[str | int | float | bool] | None = Field(None, description="classes to grow (default: every class smaller than the target)")
    scale: bool = Field(True, description="find neighbours on the features divided by their standard deviation over the "
                        "rows where names, as a StandardScaler before imbalanced-learn's SMOTE (new rows stay in the data's "
                        "units); false: in raw units, where a column in dollars outweighs one in years")
    where: list[Condition] = Field(
        default_factory=list, description="rows to make new rows from, e.g. [{column: split, op: ==, value: train}]; "
        "the others pass through and count towards no class")


@register
class Oversample(Stage):
    """SMOTE: new minority rows between a row and one of its k nearest same-class rows."""

    name = "oversample"
    shape = "group"
    adds_rows = True
    Options = OversampleOptions

    def check(self, meta):
        if not self.ctx.roles.label:
            raise StageError(f"stage {self.ctx.name!r} needs the job's label column (columns.label)")
        self.require_columns(meta, [self.ctx.roles.label], what="label column (columns.label)")
        self.check_where(meta, self.options.where)
        named = self.ctx.roles.feature_columns(meta)
        self.require_columns(meta, named, what="feature column")
        self.features_ = [c for c in named if _interpolable(meta[c])]
        if not self.features_:
            raise StageError(f"stage {self.ctx.name!r}: no numeric feature columns to interpolate")

    def reads_default_features(self) -> bool:
        return True

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """A text feature (columns.features is the job's, and other stages take text) is
        no number to interpolate: it was coerced to missing and quietly left out."""
        text = [c for c in self.ctx.roles.feature_columns(meta) if c in meta.columns and not _interpolable(meta[c])]
        return [f"stage {self.ctx.name!r}: feature column {c!r} is not a number ({meta[c].dtype}): neighbours are found "
                "without it, and each new row copies it from the row it is grown from" for c in text
                ] + self.index_column_warnings(meta)

    def build(self, frame, shapes):
        if not hasattr(self, "features_"):
            self.check(frame._meta)
        counts, moments = shapes.fit(frame, self._count, _add_counts_and_moments, label=self.ctx.name)
        self.require_where_rows(sum(counts.values()))
        self.scale_ = moments.standardizer().std if self.options.scale and moments is not None else None
        classes = None if self.options.classes is None else [_as_counted(c, counts) for c in self.options.classes]
        self._check_classes(counts, classes)
        self.targets_ = smote_kernel.class_targets(counts, self.options.ratio, classes)
        self.counts_ = counts
        goal = round(self.options.ratio * max(counts.values(), default=0))
        self.lone_ = sorted(c for c, n in counts.items() if n < 2 and n < goal and (classes is None or c in classes))
        grown = shapes.group(frame, self._key, self._grow, label=self.ctx.name)
        made, per_partition = sum(self.targets_.values()), sum(counts.values()) / max(frame.npartitions, 1)
        if made <= per_partition:  # a partition's worth at most: where they are made is fine
            return grown
        return shapes.spread_added(grown, min(frame.npartitions, math.ceil(made / per_partition)), label=self.ctx.name)

    def _check_classes(self, counts: dict, classes: list[str] | None) -> None:
        """Each class ``classes`` names is one the data has and is not past the goal: a
        typo, or a ratio below the class's own, would otherwise add no row without a word
        (imbalanced-learn refuses both)."""
        if classes is None or not counts:
            return
        name, label = self.ctx.name, self.ctx.roles.label
        for c in classes:
            if c not in counts:
                raise StageError(f"stage {name!r}: classes: {c!r} is not a class of {label!r}"
                                 f"{' in the rows where names' if self.options.where else ''}; its classes are "
                                 f"{sorted(counts)[:20]}{_did_you_mean(c, counts)}")
        top = max(counts.values())
        goal = round(self.options.ratio * top)
        for c in classes:
            if counts[c] > goal:
                raise StageError(f"stage {name!r}: class {c!r} has {counts[c]:,} rows, more than ratio {self.options.ratio} × "
                                 f"the largest class ({top:,}) = {goal:,}, and oversample only adds rows: "
                                 f"raise ratio to at least {counts[c] / top:.3g} or leave {c!r} out of classes")

    def _labels(self, part):
        """Each row's class; None for a row without one or outside ``where`` (no pool, no count)."""
        col = part[self.ctx.roles.label]
        return np.where(col.isna().to_numpy() | ~all_hold(self.options.where, part), None, col.astype(str).to_numpy(dtype=object))

    def _count(self, part, state=None) -> tuple[dict, ColumnMoments | None]:
        """Each class's rows, and the features' moments over the rows with a class (the
        rows a StandardScaler would be fitted on) for the neighbour search's scale."""
        labels = self._labels(part)
        counts = pd.Series(labels).dropna().value_counts()
        moments = ColumnMoments.of(self._features(part)[pd.notna(labels)]) if self.options.scale else None
        return {str(k): int(v) for k, v in counts.items()}, moments

    def _features(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[self.features_].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def _key(self, part) -> pd.Series:
        labels = self._labels(part)
        grow = np.array([x in self.targets_ for x in labels], dtype=bool)
        keys = np.where(grow, "class=" + pd.Series(labels, dtype=object).fillna("").to_numpy(dtype=object), "row=" + part[ID].astype(str).to_numpy(dtype=object))
        return pd.Series(keys, index=part.index, dtype=object)

    def _grow(self, part: pd.DataFrame) -> pd.DataFrame:
        part = with_marks(part).sort_values([KEY, ID], kind="stable")
        part["_m_synthetic"] = np.zeros(len(part), dtype=np.int64)
        new = [self._grow_class(part[part[KEY] == key], key[len("class="):]) for key in sorted(set(part[KEY])) if key.startswith("class=")]
        new = [n for n in new if len(n)]
        return pd.concat([part, *new], ignore_index=True) if new else part.reset_index(drop=True)

    def _grow_class(self, rows: pd.DataFrame, label: str) -> pd.DataFrame:
        """New rows between a class's rows whose features are all present; a feature no
        row of the class has (an empty export column) is left out, and stays missing in
        the new rows, rather than leaving no row to interpolate between."""
        n_new = self.targets_.get(label, 0)
        x = self._features(rows)
        present = ~np.isnan(x).all(axis=0)
        features = [c for c, ok in zip(self.features_, present) if ok]
        x = x[:, present]
        usable = ~np.isnan(x).any(axis=1)
        if n_new <= 0 or not features or usable.sum() < 2:  # no feature at all: no distance to find neighbours by
            return rows.iloc[:0]
        pool = rows[usable]
        rng = record_rng(self.ctx.seed, self.ctx.name, f"class={label}")
        scale = self.scale_[present] if self.scale_ is not None else None
        values, base = smote_kernel.smote(x[usable], n_new, self.options.k_neighbors, rng, scale)
        new = pool.iloc[base].copy()
        occurrence = pd.Series(base).groupby(base).cumcount().to_numpy()
        kind = copy_kind(self.ctx.name, "smote")
        new[ID] = [child_id(str(pid), kind, int(j)) for pid, j in zip(pool[ID].to_numpy()[base], occurrence)]
        for j, c in enumerate(features):
            col = values[:, j]
            if pd.api.types.is_integer_dtype(rows[c].dtype) or pd.api.types.is_bool_dtype(rows[c].dtype):
                col = np.round(col)  # a whole number (a boolean: the nearer end), as the column holds
            new[c] = pd.Series(col, index=new.index).astype(rows[c].dtype)
        new[ADDED] = True
        new["_m_synthetic"] = 1
        return new

    def summary(self) -> dict:
        scale = getattr(self, "scale_", None)
        return {"counts": getattr(self, "counts_", {}), "new_rows": getattr(self, "targets_", {}), "features": getattr(self, "features_", []),
                "scale": None if scale is None else dict(zip(self.features_, (float(v) for v in scale)))}

    def result_warnings(self, entry: dict) -> list[str]:
        """A class with fewer than two rows whose features are all present cannot be
        interpolated: it grows less than planned, which the counts alone would hide."""
        notes = super().result_warnings(entry)
        lone = getattr(self, "lone_", [])
        if lone:
            many = len(lone) > 1
            notes.append(f"stage {self.ctx.name!r} left class{'es' if many else ''} {', '.join(map(repr, lone[:5]))} as "
                         f"{'they are' if many else 'it is'}: a class of one row has no neighbour to make rows towards "
                         "(imbalanced-learn refuses it)")
        planned, made = sum(getattr(self, "targets_", {}).values()), int(entry.get("metrics", {}).get("synthetic", 0))
        if made < planned:
            notes.append(f"stage {self.ctx.name!r} made {made:,} of the {planned:,} rows it planned: a class needs two rows "
                         "whose features are all present to make rows between them (impute missing values first)")
        return notes + self._plan_warnings()

    def _plan_warnings(self) -> list[str]:
        """A plan of no rows (the classes already at the goal, or a continuous label whose
        every value is a class of one row), and classes too small for ``k_neighbors``, whose
        new rows are then made towards fewer neighbours than asked."""
        counts, targets, k = getattr(self, "counts_", {}), getattr(self, "targets_", {}), self.options.k_neighbors
        notes = []
        if counts and not targets and not getattr(self, "lone_", []):
            top = max(counts.values())
            why = (f"each of its {len(counts):,} classes has one row: oversample is for a class label, not a continuous one"
                   if top < 2 else f"every class it grows already has ratio {self.options.ratio} × the largest class ({top:,}) rows or more")
            notes.append(f"stage {self.ctx.name!r} made no rows: {why}")
        small = sorted(c for c in targets if counts[c] <= k)
        if len(small) == 1:
            notes.append(f"stage {self.ctx.name!r}: class {small[0]!r} has {counts[small[0]]:,} rows, too few for k_neighbors={k}: "
                         "its new rows were made towards the class's other rows alone")
        elif small:
            notes.append(f"stage {self.ctx.name!r}: classes {', '.join(f'{c!r} ({counts[c]:,} rows)' for c in small[:5])} have too few "
                         f"rows for k_neighbors={k}: their new rows were made towards each class's other rows alone")
        return notes


def _as_counted(value, counts: dict) -> str:
    """A class of ``classes`` as ``_labels`` writes it: its text, or the label's text of
    the same number (``1`` for a label of floats, as a pandas label with a missing value
    is, whose classes read ``1.0``)."""
    text = str(value)
    if text in counts or isinstance(value, bool):
        return text
    try:
        number = float(value)
    except (TypeError, ValueError):
        return text
    same = [k for k in counts if _number(k) == number]
    return same[0] if len(same) == 1 else text


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _interpolable(column: pd.Series) -> bool:
    """Numbers, booleans and times: values on a segment between two of them are values too."""
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column)


def _add_counts_and_moments(a: tuple, b: tuple) -> tuple:
    out = dict(a[0])
    for k, v in b[0].items():
        out[k] = out.get(k, 0) + v
    return out, a[1].merge(b[1]) if a[1] is not None else None


# -- synthesize -------------------------------------------------------------------------

BLOCK = 1024
BLOCKS_PER_PARTITION = 100  # new rows one partition adds at most (~100,000, a shard's worth)


class SynthesizeOptions(StageOptions):
    rows: int = Field(..., ge=1, description="how many synthetic rows to add")
    columns: list[str] | None = Field(None, description="columns to model (default: numeric, time, boolean, text and category "
                                      "columns); the others are missing in the new rows")
    max_categories: int = Field(1000, ge=2, description="a text column with more categories is left out (its rows get nulls)")
    marker: str = Field("synthetic", description="boolean column marking the synthetic rows (an earlier synthesize's marks are kept)")
    where: list[Condition] = Field(
        default_factory=list, description="rows to fit the model on, e.g. [{column: split, op: ==, value: train}]; "
        "new rows take the values its == tests name, so they pass it too")


@register
class Synthesize(Stage):
    """Add N rows from a Gaussian copula fitted on mergeable statistics."""

    name = "synthesize"
    shape = "fit_apply"
    adds_rows = True
    Options = SynthesizeOptions

    def check(self, meta):
        o = self.options
        if o.columns is not None:
            self.require_columns(meta, o.columns)
        self.check_where(meta, o.where)
        self._check_marker(meta)
        image = self.ctx.roles.image
        # a synthetic row has no source record, so no id of one; where's == columns are set, not
        # modelled; nor is the marker, which this stage sets
        skip = {ID, self.ctx.roles.id, image, o.marker, *(c.column for c in o.where if c.op == "==")}
        self.index_left_out_ = [] if o.columns else [c for c in meta.columns if c not in skip and written_index(c, meta[c])]
        skip.update(self.index_left_out_)
        candidates = o.columns or [c for c in meta.columns if c not in skip and not str(c).startswith("_")]
        self.times_ = [c for c in candidates if pd.api.types.is_datetime64_any_dtype(meta[c])]
        self.numeric_ = [
            c for c in candidates
            if c in self.times_ or (pd.api.types.is_numeric_dtype(meta[c]) and not pd.api.types.is_bool_dtype(meta[c]))
        ]
        self.categorical_ = [
            c for c in candidates
            if c not in self.numeric_ and (pd.api.types.is_bool_dtype(meta[c]) or pd.api.types.is_string_dtype(meta[c]) or isinstance(meta[c].dtype, pd.CategoricalDtype))
        ]
        if not self.numeric_ and not self.categorical_:
            raise StageError(f"stage {self.ctx.name!r}: no numeric or text columns to model")

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """The index ``to_csv`` wrote is no column to model: a copula would draw row numbers
        for the new rows (correlated with the label of rows sorted by class)."""
        return [f"stage {self.ctx.name!r}: column {c!r} is not modelled: it holds whole numbers under a blank header, as "
                "the index DataFrame.to_csv writes, so the new rows leave it missing; name it in the stage's columns "
                "to model it" for c in getattr(self, "index_left_out_", [])]

    def _check_marker(self, meta):
        """A marker column the data already has is an earlier ``synthesize``'s (or an
        earlier run's): its marks are kept. One that is not boolean is the user's own
        data, which setting the marks would overwrite."""
        marker = self.options.marker
        if marker in meta.columns and not pd.api.types.is_bool_dtype(meta[marker]):
            raise StageError(f"stage {self.ctx.name!r}: the data has a column {marker!r} ({meta[marker].dtype}) that is not "
                             "a marker of synthetic rows; name another column for the marks with the option marker")

    def build(self, frame, shapes):
        if not hasattr(self, "numeric_"):
            self.check(frame._meta)
        numeric, categorical, numbers, label = self.numeric_, self.categorical_, self._numbers, self._by_class()
        stats = shapes.fit(frame, lambda p, s: ByClass.scan(numbers(p), label, lambda f: Marginals.scan(f, numeric, categorical)),
                           lambda a, b: a.merge(b, Marginals.merge), label=self.ctx.name)
        every = stats.pool(Marginals.merge).parts[POOLED] if stats.parts else None
        rows = every.rows if every is not None else 0
        self.require_where_rows(rows)
        if rows == 0:  # every row was rejected before it: nothing to model (numpy failed on it)
            self.copula_, self.left_out_ = None, []
            return shapes.map(frame, self._add_rows, None, frame.npartitions, label=self.ctx.name)
        wide = [c for c, d in every.categorical.items() if len(d.counts) > self.options.max_categories]
        self.categories_left_out_ = {c: len(every.categorical[c].counts) for c in wide}
        self.identifiers_ = [c for c, d in every.categorical.items() if c not in wide and _names_each_row(d)]
        for m in stats.parts.values():
            m.categorical = {c: d for c, d in m.categorical.items() if c not in wide}
        edges = {k: m.needing_histograms() for k, m in stats.parts.items()}
        if any(edges.values()):
            hist = shapes.fit(frame, lambda p, s: {k: Marginals.histograms(rows, edges[k]) for k, rows in stats.split(numbers(p), label).items()},
                              lambda a, b: {k: Marginals.merge_histograms(h, b[k]) for k, h in a.items()}, label=self.ctx.name)
            stats.parts = {k: m.with_histograms(hist[k]) for k, m in stats.parts.items()}
        marginals = stats.parts
        pairs = {k: linkable_pairs(m) for k, m in marginals.items()}
        moments = shapes.fit(frame, lambda p, s: {k: (ScoreMoments.scan(marginals[k].scores(rows)), CategoryPairs.scan(rows, pairs[k]))
                                                  for k, rows in stats.split(numbers(p), label).items()},
                             lambda a, b: {k: (m.merge(b[k][0]), c.merge(b[k][1])) for k, (m, c) in a.items()}, label=self.ctx.name)
        copulas = {k: GaussianCopula(m, moments[k][0].correlation(), category_links(m, moments[k][1])) for k, m in marginals.items()}
        self.copula_ = copulas[POOLED] if stats.pooled else ClassCopula(label, copulas)
        self.left_out_ = wide
        frame = self._room_for_new_rows(frame)
        return shapes.map(frame, self._add_rows, shapes.broadcast(self.copula_), frame.npartitions, label=self.ctx.name)

    def _by_class(self) -> str | None:
        """The label (columns.label) when the stage models it: the copula is then fitted
        per class, since one copula keeps only monotone links to a category."""
        label = self.ctx.roles.label
        return label if label in (*self.numeric_, *self.categorical_) else None

    def _room_for_new_rows(self, frame):
        """The frame in enough partitions that none adds more than BLOCKS_PER_PARTITION
        blocks: a million rows from a table of one partition were made in one task, in
        one worker's memory. Splitting a partition moves no row between workers."""
        needed = -(-self.options.rows // (BLOCK * BLOCKS_PER_PARTITION))
        return frame.repartition(npartitions=needed) if needed > frame.npartitions else frame

    def _numbers(self, part: pd.DataFrame) -> pd.DataFrame:
        """The rows ``where`` names, times as seconds since the epoch (float64: to a fraction
        of a microsecond), so the copula models them as numbers."""
        part = rows_holding(self.options.where, part)
        return part.assign(**{c: _seconds(part[c]) for c in self.times_}) if self.times_ else part

    def _add_rows(self, part: pd.DataFrame, copula: GaussianCopula, npartitions: int, partition_info=None) -> pd.DataFrame:
        part = with_marks(part)
        marker = self.options.marker
        part[marker] = part[marker].fillna(False) if marker in part.columns else False
        number = partition_info["number"] if partition_info and copula is not None else None
        blocks = range(number, -(-self.options.rows // BLOCK), npartitions) if number is not None else range(0)
        new = [self._block(part, copula, b) for b in blocks]
        return _stable_dtypes(pd.concat([part, *new], ignore_index=True) if new else part, part)

    def _block(self, part: pd.DataFrame, copula: GaussianCopula, b: int) -> pd.DataFrame:
        start = b * BLOCK
        n = min(BLOCK, self.options.rows - start)
        sample = copula.sample(n, record_rng(self.ctx.seed, self.ctx.name, f"block={b}"))
        out = pd.DataFrame(index=pd.RangeIndex(n))
        out[ID] = [child_id(self.ctx.name, "syn", start + i) for i in range(n)]
        for c in part.columns:
            if c in sample.columns:
                col = sample[c]
                if pd.api.types.is_integer_dtype(part[c].dtype):
                    col = col.astype(float).round()
                elif c in self.times_:
                    col = _time(col.astype(float), part[c].dtype)
                out[c] = col
            elif c != ID:
                out[c] = None
        for cond in self.options.where:
            if cond.op == "==":
                out[cond.column] = cond.value
        out[ADDED] = True
        out[self.options.marker] = True
        out["_reason"] = None
        return out[list(part.columns)]

    def summary(self) -> dict:
        copula = getattr(self, "copula_", None)
        return {} if copula is None else {**copula.summary(), "left_out": self.left_out_}

    def result_warnings(self, entry: dict) -> list[str]:
        notes = super().result_warnings(entry)
        if hasattr(self, "copula_") and self.copula_ is None:
            notes.append(f"stage {self.ctx.name!r} made none of its {self.options.rows:,} rows: no row reached it to model "
                         "(the source has none, or the stages before it rejected every one)")
        for c, n in getattr(self, "categories_left_out_", {}).items():
            notes.append(f"stage {self.ctx.name!r} left column {c!r} out of the model: its {n:,} distinct values are more than "
                         f"max_categories ({self.options.max_categories:,}), so its new rows are missing. Raise max_categories, "
                         "or cast it to a number if it is one (a decimal column is modelled as categories)")
        for c in getattr(self, "identifiers_", []):
            notes.append(f"stage {self.ctx.name!r}: column {c!r} has a value of its own in every row (a name, an e-mail, "
                         "a key?), so each new row copies one real row's value; leave it out with the option columns")
        return notes


def _names_each_row(counts: CategoryCounts, least: int = 20) -> bool:
    """Every value of a column of some rows is one row's own: the copula's categories are
    the values themselves, so a new row gets a real person's name or key verbatim."""
    n = len(counts.counts)
    return n >= least and int(counts.counts.max()) == 1


_EPOCH = pd.Timestamp(0, tz="UTC")


def _seconds(times: pd.Series) -> pd.Series:
    utc = times.dt.tz_convert("UTC") if times.dt.tz is not None else times.dt.tz_localize("UTC")
    return (utc - _EPOCH) / pd.Timedelta(seconds=1)


_MICROSECONDS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}


def _time(seconds: pd.Series, dtype) -> pd.Series:
    """Seconds since the epoch back to ``dtype``'s times: to the microsecond (as fine as
    a float64 count of seconds holds), or to the dtype's coarser unit."""
    arrow = getattr(dtype, "pyarrow_dtype", None)
    step = _MICROSECONDS[arrow.unit if arrow is not None else getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]]
    micros = (seconds * 1e6 / step).round() * step
    utc = pd.to_datetime(micros.astype("Int64"), unit="us", utc=True)
    zone = arrow.tz if arrow is not None else getattr(dtype, "tz", None)
    times = utc.dt.tz_convert(zone) if zone is not None else utc.dt.tz_localize(None)
    return times.astype(dtype)


def _stable_dtypes(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """The input's dtypes where they can hold the new rows, so every partition agrees."""
    for c in like.columns:
        want = like[c].dtype
        if frame[c].dtype == want:
            continue
        try:
            frame[c] = as_dtype(frame[c], want)
        except (TypeError, ValueError):
            frame[c] = frame[c].astype(object)
    return frame
