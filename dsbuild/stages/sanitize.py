"""Sanitization: remove poisoned rows (``sanitize``) and mislabeled rows (``label_issues``).

Both stages are chains of fit -> apply passes whose statistics are sums, counts, exact
per-class top-k lists or hash-keyed samples, so what they remove does not depend on how
the data is partitioned or on the number of workers.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels import confident as cl
from dsbuild.kernels.dtypes import as_dtype
from dsbuild.kernels.fairness import usable_weights, weight_values
from dsbuild.kernels.features import MAX_DISTINCT, CategoryCounts, feature_length, image_features
from dsbuild.kernels.moments import ClassMoments, ColumnMoments
from dsbuild.kernels.sanitize import (
    LabelMoments,
    knn_index,
    knn_scores,
    l2_scores,
    lda_fit,
    log_loss_scores,
    principal_subspace,
    quantize,
    slab_directions,
    slab_scores,
    subspace_residual_scores,
)
from dsbuild.kernels.topk import CutSearch, HashSample, LargestPerKey, within_cut
from dsbuild.records import ID, image_blobs, record_seeds, record_uniform
from dsbuild.stages.base import (
    METRIC,
    FitApplyStage,
    StageError,
    StageOptions,
    register,
    reject,
)

ImageFeature = Literal["pixels", "hog", "color_hist"]
DERIVED_COLUMNS = {"sanitize_score", "original_label"}


class FeatureOptions(StageOptions):
    features: Literal["auto", "columns", "image"] = Field(
        "auto", description="columns: the job's feature columns; image: a vector from the image column; auto: image if the job names one"
    )
    image_features: ImageFeature = Field("hog", description="image vector: pixels (downscaled grey), hog, color_hist")
    image_size: int | None = Field(None, gt=0, description="side of the downscaled image (pixels 16, hog 32) or bins per channel (8)")
    max_categories: int = Field(
        20, ge=2, description="categorical (text, category, boolean) feature columns are one-hot encoded: a column per value, "
        "or per most frequent value and one for the rest past this many (scikit-learn's OneHotEncoder max_categories)"
    )

    @model_validator(mode="after")
    def _image_vector_fits(self):
        """A vector per image of at most MAX_IMAGE_FEATURES numbers: color_hist with 300
        bins is 27 M numbers (216 MB) an image, and the workers were killed one after
        another until the run failed with KilledWorker."""
        if self.image_size is not None:
            n = feature_length(self.image_features, self.image_size)
            if n > MAX_IMAGE_FEATURES:
                raise ValueError(f"image_size {self.image_size} makes {self.image_features} vectors of {n:,} numbers an image; "
                                 f"at most {MAX_IMAGE_FEATURES:,} (pixels: a side up to 128, hog: up to 176, color_hist: up to 25 "
                                 "bins a channel)")
        return self


MAX_IMAGE_FEATURES = 16_384


class _Features:
    """Turns a partition into (raw feature matrix, label values) the same way every pass."""

    options: FeatureOptions

    def _use_image(self) -> bool:
        mode = self.options.features
        return mode == "image" or (mode == "auto" and self.ctx.roles.image is not None)

    def _label(self) -> str:
        if not self.ctx.roles.label:
            raise StageError(f"stage {self.ctx.name!r} needs the job's label column (columns.label)")
        return self.ctx.roles.label

    def check(self, meta: pd.DataFrame) -> None:
        self.require_columns(meta, [self._label()], what="label column (columns.label)")
        if self._use_image():
            self.require_image_column(meta)
            return
        columns = self._feature_columns(meta)
        self.require_columns(meta, columns, what="feature column")
        if not columns:
            raise StageError(f"stage {self.ctx.name!r}: no numeric feature columns; name them in columns.features")
        categorical = [c for c in columns if _is_categorical(meta[c])]
        bad = [c for c in columns if c not in categorical and not pd.api.types.is_numeric_dtype(meta[c])]
        if bad:
            raise StageError(f"stage {self.ctx.name!r}: feature column {bad[0]!r} is neither a number nor a category "
                             f"({meta[bad[0]].dtype}); leave it out of columns.features or cast it")
        self.feature_columns_ = columns
        self.categorical_columns_ = categorical

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        return [] if self._use_image() else self.index_column_warnings(meta)

    def check_output_column(self, meta: pd.DataFrame, option: str, column: str) -> None:
        """A column the stage writes (the score, the old label) may not be one the job
        reads: the label, a feature, the image, the id or a sensitive column would be
        overwritten without a word."""
        roles = self.ctx.roles
        named = {c: "sensitive" for c in roles.sensitive}
        if self._use_image():
            named[roles.image_column] = "image"
        else:
            named.update({c: "feature" for c in self._feature_columns(meta)})
        named.update({self._label(): "label", ID: "id", **({roles.id: "id"} if roles.id else {})})
        if column in named:
            raise StageError(f"stage {self.ctx.name!r}: {option} {column!r} is the job's {named[column]} column, "
                             "which the stage would overwrite; name another")

    def _feature_columns(self, meta: pd.DataFrame) -> list[str]:
        """The job's features; when it names none, numeric columns minus the scores and
        old labels these stages write themselves."""
        columns = self.ctx.roles.feature_columns(meta)
        if self.ctx.roles.features:
            return columns
        return [c for c in columns if c not in DERIVED_COLUMNS]

    def features_used(self) -> list[str] | str:
        """For the summary: what the rows were scored on, so a reader of the manifest can
        tell a feature that should not have been one (an id, a leaked target)."""
        if self._use_image():
            return f"{self.options.image_features} of {self.ctx.roles.image_column}"
        return list(getattr(self, "feature_columns_", None) or [])

    def raw_features(self, part: pd.DataFrame) -> np.ndarray:
        if self._use_image():
            o = self.options
            return image_features(image_blobs(part[self.ctx.roles.image_column]), o.image_features, o.image_size)
        columns = getattr(self, "feature_columns_", None) or self._feature_columns(part)
        numeric = [c for c in columns if c not in getattr(self, "categorical_columns_", ())]
        X = part[numeric].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        encoder = getattr(self, "encoder_", None)
        return X if encoder is None else np.hstack([X, encoder.transform(part)])

    def fit_categories(self, frame, shapes) -> None:
        """Where features are categorical, a pass first: each column's value counts, merged
        across partitions, from which its one-hot columns are chosen (``encoder_``)."""
        self.encoder_ = None
        columns = [] if self._use_image() else getattr(self, "categorical_columns_", [])
        if not columns:
            return
        counts = shapes.fit(frame, self._partial_categories, CategoryCounts.merge, label=f"{self.ctx.name}-categories")
        if counts.too_many():
            raise StageError(f"stage {self.ctx.name!r}: feature column {counts.too_many()[0]!r} has more than "
                             f"{MAX_DISTINCT:,} distinct values (or cells that are no category, such as lists): an id or "
                             "free text, not a category; leave it out of columns.features")
        self.encoder_ = counts.encoder(self.options.max_categories)

    def _partial_categories(self, part: pd.DataFrame, state: Any) -> CategoryCounts:
        for c in self.categorical_columns_:
            kind = pd.api.types.infer_dtype(part[c], skipna=True)
            if kind in _TIMES:  # pandas holds Parquet's dates as objects: they had become categories
                raise StageError(f"stage {self.ctx.name!r}: feature column {c!r} is neither a number nor a category "
                                 f"({kind}); leave it out of columns.features or cast it")
        return CategoryCounts.of(part, self.categorical_columns_)

    def ids(self, part: pd.DataFrame) -> np.ndarray:
        return part[ID].astype(str).to_numpy(dtype=object)

    @staticmethod
    def id_column(part: pd.DataFrame):
        """The ids as stored, for kernels that convert only the few rows they keep."""
        return part[ID].array


_TIMES = ("date", "datetime", "datetime64", "time", "timedelta", "timedelta64", "period")


def _is_categorical(column: pd.Series) -> bool:
    """Text, a pandas category or a boolean: one-hot encoded as a feature."""
    dtype = column.dtype
    return (pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype))


def _count_labels(values: pd.Series) -> dict:
    return {k: int(v) for k, v in values.dropna().value_counts(sort=False).items()}


def _add_counts(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _sorted_classes(counts: dict) -> list:
    try:
        return sorted(counts)
    except TypeError:
        return sorted(counts, key=str)


def require_classes(stage: str, label: str, counts: dict) -> None:
    """Both stages compare a row with its class: a label that is a measurement (a price, a
    concentration named as the label by mistake) or an id makes nearly every value a class
    of its own, and they flag noise (label_issues) or remove nothing (5% of one row)
    without a word that the label was not one."""
    fractional = [_plain(c) for c in _sorted_classes(counts) if isinstance(c, (float, np.floating)) and not float(c).is_integer()]
    rows = sum(counts.values())
    if fractional:
        shown = ", ".join(f"{v:g}" for v in fractional[:3]) + (", ..." if len(fractional) > 3 else "")
        raise StageError(f"stage {stage!r}: label {label!r} holds numbers that are not whole ({shown}): {len(counts)} values "
                         f"in {rows} rows, each taken as a class. It looks like a measurement to predict, not classes: "
                         "name a class column in columns.label, or cut this one into classes first")
    if len(counts) > 2 and len(counts) > rows / 2:
        raise StageError(f"stage {stage!r}: label {label!r} has {len(counts)} classes in {rows} labelled rows, most of them "
                         "a row or two: nothing to learn a class from. Is it an id or free text? Name the class column "
                         "in columns.label")


def _class_index(values: pd.Series, classes: list) -> np.ndarray:
    index = pd.Index(classes)
    return np.asarray(index.get_indexer(values.to_numpy(dtype=object)), dtype=np.int64)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# -- sanitize ---------------------------------------------------------------------------


class SanitizeOptions(FeatureOptions):
    method: Literal["l2", "slab", "svd", "knn", "loss"] = Field("l2", description="how a row is scored; larger is more suspicious")
    fraction: float | None = Field(None, ge=0, lt=1, description="remove exactly floor(fraction * n) rows per class, the highest scores (default 0.05)")
    threshold: float | None = Field(None, description="remove rows scoring above this instead of a fraction")
    keep_score: bool = Field(False, description="write each row's score in score_column")
    score_column: str = Field("sanitize_score", description="column for the score when keep_score is set")
    variance: float = Field(0.95, gt=0, le=1, description="svd: share of within-class variance the subspace keeps")
    k: int = Field(5, ge=1, description="knn: neighbours per row")
    reference_size: int = Field(20_000, ge=1, description="knn: neighbours are searched among this many rows (all if fewer), a hash-chosen sample")
    folds: int = Field(5, ge=2, description="loss: out-of-fold splits, assigned by a hash of the record id")
    shrinkage: float = Field(0.1, ge=0, le=1, description="loss: covariance shrinkage of the linear discriminant")

    @model_validator(mode="after")
    def _one_rule(self):
        if self.fraction is not None and self.threshold is not None:
            raise ValueError("give fraction or threshold, not both")
        if self.threshold is not None and np.isnan(self.threshold):  # no score is above NaN: nothing would be removed
            raise ValueError("threshold must be a number, not NaN")
        if self.fraction is None and self.threshold is None:
            object.__setattr__(self, "fraction", 0.05)
        return self


@register
class Sanitize(_Features, FitApplyStage):
    """Remove rows far from their class: the data-poisoning defences of Steinhardt et al.

    ``l2``: distance to the class centroid. ``slab``: distance along the line between
    the class centroid and the other classes' mean. ``svd``: distance from the principal
    subspace of the class-centred data. ``knn``: mean distance to the k nearest rows of
    the same class. ``loss``: out-of-fold cross-entropy of the row's label under a linear
    discriminant. Features are standardized first. Passes: (1) per-label moments of the
    raw features, which give the standardizer, the centroids and the within-class scatter
    [and the knn reference sample]; (2) only for ``loss`` (and ``svd`` when a feature is
    missing): moments of the standardized rows per fold; (3) with ``fraction``, the exact
    per-class top-k of scores (narrowed by score histograms first when the budget is
    large); then apply.
    """

    name = "sanitize"
    Options = SanitizeOptions
    COLLECT_LIMIT = 200_000

    def check(self, meta: pd.DataFrame) -> None:
        super().check(meta)
        if self.options.keep_score:
            self.check_output_column(meta, "score_column", self.options.score_column)

    # pass 1 ----------------------------------------------------------------------------
    def _partial_columns(self, part: pd.DataFrame, state: Any):
        X = self.raw_features(part)
        labels = part[self._label()].to_numpy(dtype=object)
        sample = None
        if self.options.method == "knn":
            ids = self.ids(part)
            draws = record_uniform(self.ctx.seed, self.ctx.name, ids)
            keep = ~pd.isna(labels)
            sample = HashSample.of(draws[keep], ids[keep], labels[keep], X[keep], self.options.reference_size)
        return LabelMoments.of(X, labels, with_scatter=self.options.method == "svd"), sample

    @staticmethod
    def _combine_columns(a, b):
        sample = b[1] if a[1] is None else a[1] if b[1] is None else a[1].merge(b[1])
        return a[0].merge(b[0]), sample

    # pass 2, only for loss (and svd when features have missing values) -------------------
    def _groups(self, part: pd.DataFrame) -> np.ndarray | None:
        if self.options.method != "loss":
            return None
        return (record_seeds(self.ctx.seed, self.ctx.name + ":fold", self.ids(part)) % np.uint64(self.options.folds)).astype(np.int64)

    def _prepare(self, part: pd.DataFrame, base: dict) -> tuple[np.ndarray, np.ndarray]:
        Z = base["standardizer"].standardize(self.raw_features(part))
        return Z, _class_index(part[self._label()], base["classes"])

    def _partial_moments(self, part: pd.DataFrame, base: dict) -> ClassMoments:
        Z, classes = self._prepare(part, base)
        n_groups = self.options.folds if self.options.method == "loss" else 1
        return ClassMoments.of(Z, classes, len(base["classes"]), self._groups(part), n_groups)

    @staticmethod
    def _combine_moments(a: ClassMoments, b: ClassMoments) -> ClassMoments:
        return a.merge(b)

    def _model(self, frame, shapes, moments: LabelMoments, sample: HashSample | None) -> dict:
        """Everything the scores need, from pass 1 (and pass 2 where it is needed)."""
        method, o = self.options.method, self.options
        classes = _sorted_classes(moments.label_counts())
        standardizer = moments.total().standardizer()
        model: dict[str, Any] = {"classes": classes, "standardizer": standardizer}
        if method == "knn":
            model["reference"] = knn_index(
                standardizer.standardize(sample.X),
                _class_index(pd.Series(sample.labels, dtype=object), classes),
                sample.ids,
                o.k,
            )
            return model
        if method == "loss" or (method == "svd" and moments.scatter is None):
            by_fold = shapes.fit(frame, self._partial_moments, self._combine_moments, model, label=f"{self.ctx.name}-moments")
            self.moment_passes_ = 2
        if method == "loss":
            model["folds"] = [lda_fit(by_fold.without(g), o.shrinkage) for g in range(o.folds)]
            return model
        model["centroids"] = moments.centroids(classes, standardizer)
        if method == "slab":
            counts = np.array([moments.rows[c] for c in classes], dtype=np.float64)
            model["directions"] = slab_directions(counts, model["centroids"])
        elif method == "svd":
            scatter = moments.within_scatter(standardizer) if moments.scatter is not None else by_fold.total().within_scatter()
            basis, ratios = principal_subspace(scatter, o.variance)
            model["basis"] = basis
            model["explained"] = float(ratios[: basis.shape[1]].sum())
        return model

    # scores ------------------------------------------------------------------------------
    def _scores(self, part: pd.DataFrame, model: dict) -> tuple[np.ndarray, np.ndarray]:
        """(class index, quantized score) of every row; rows without a label score NaN, a
        labelled row with an infinite feature +inf (the surest sign of a broken row; its
        value counts as missing in every statistic)."""
        raw = self.raw_features(part)
        Z, classes = model["standardizer"].standardize(raw), _class_index(part[self._label()], model["classes"])
        method = self.options.method
        if method == "l2":
            s = l2_scores(Z, classes, model["centroids"])
        elif method == "slab":
            s = slab_scores(Z, classes, model["centroids"], model["directions"])
        elif method == "svd":
            s = subspace_residual_scores(Z, classes, model["centroids"], model["basis"])
        elif method == "knn":
            s = knn_scores(Z, classes, self.ids(part), model["reference"], self.options.k)
        else:
            s = np.full(len(Z), np.nan)
            groups = self._groups(part)
            for g, (coef, intercept) in enumerate(model["folds"]):
                rows = groups == g
                s[rows] = log_loss_scores(Z[rows], classes[rows], coef, intercept)
        s = quantize(s)
        s[np.isinf(raw).any(axis=1) & ~np.isnan(s)] = np.inf
        return classes, s

    # pass 3 ------------------------------------------------------------------------------
    def _partial_top(self, part: pd.DataFrame, model: dict) -> LargestPerKey:
        classes, scores = self._scores(part, model)
        return LargestPerKey.of(classes, scores, self.id_column(part), model["budget"])

    @staticmethod
    def _combine_top(a: LargestPerKey, b: LargestPerKey) -> LargestPerKey:
        return a.merge(b)

    def _partial_histogram(self, part: pd.DataFrame, state: tuple) -> np.ndarray:
        model, search = state
        classes, scores = self._scores(part, model)
        return search.histogram(classes, scores)

    @staticmethod
    def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def _partial_candidates(self, part: pd.DataFrame, state: tuple) -> LargestPerKey:
        model, search = state
        classes, scores = self._scores(part, model)
        return search.candidates(classes, scores, self.id_column(part))

    def _find_cut(self, frame, shapes, model: dict, counts: np.ndarray) -> dict:
        """The exact (score, id) of each class's last removed row.

        Small budgets are collected in one pass. Larger ones are narrowed first by
        histograms of the scores' bit patterns (a pass each, usually one or two) until the
        range holding the cut has at most ``COLLECT_LIMIT`` rows, then collected.
        """
        label = self.ctx.name
        if model["budget"].sum() <= self.COLLECT_LIMIT:
            self.cut_passes_ = 1
            return shapes.fit(frame, self._partial_top, self._combine_top, model, label=f"{label}-top").cut()
        search = CutSearch.start(model["budget"], counts)
        self.cut_passes_ = 1
        while not search.resolved(self.COLLECT_LIMIT):
            hist = shapes.fit(frame, self._partial_histogram, self._add, (model, search), label=f"{label}-histogram")
            search = search.narrow(hist)
            self.cut_passes_ += 1
        top = shapes.fit(frame, self._partial_candidates, self._combine_top, (model, search), label=f"{label}-top")
        return top.cut()

    # wiring ------------------------------------------------------------------------------
    def build(self, frame, shapes):
        o = self.options
        label = self.ctx.name
        self.fit_categories(frame, shapes)
        moments, sample = shapes.fit(frame, self._partial_columns, self._combine_columns, label=f"{label}-columns")
        counts = moments.label_counts()
        if not counts or not moments.columns:
            raise StageError(f"stage {label!r}: no labelled rows to fit on")
        require_classes(label, self._label(), counts)
        self._require_spread(moments.total(), frame.columns)
        if o.method in ("slab", "loss") and len(counts) < 2:  # no other class to measure against: slab's line was rounding noise, every loss 0
            raise StageError(f"stage {label!r}: method {o.method} needs labelled rows of at least two classes; "
                             f"the label has one ({_plain(next(iter(counts)))!r}): use l2, svd or knn")
        self.moment_passes_ = 1
        model = self._model(frame, shapes, moments, sample)
        classes = model["classes"]
        n = np.array([counts[c] for c in classes], dtype=np.int64)
        model["budget"] = np.floor(n * (o.fraction or 0.0) + 1e-9).astype(np.int64)
        model["cut"] = None
        self.cut_passes_ = 0
        if o.fraction is not None:
            model["cut"] = self._find_cut(frame, shapes, model, n)
        self.state_ = model
        self.counts_ = dict(zip(classes, n.tolist()))
        self.reference_rows_ = len(sample.ids) if sample is not None else None
        return shapes.map(frame, self._apply, shapes.broadcast(model), label=label)

    def _require_spread(self, total, columns) -> None:
        """Features none of which varies score every row alike, and the rows removed would
        be chosen by id alone (an images source's image_height and image_width, picked as
        the numeric columns when the job names no image column)."""
        spread = np.sqrt(np.divide(total.m2, total.count, out=np.zeros_like(total.m2), where=total.count > 0))
        if (spread > 1e-12 * np.maximum(np.abs(total.mean), 1.0)).any():
            return
        hint = ""
        image = self.ctx.roles.image_column
        if not self._use_image() and image in columns:
            hint = f"; the data has an image column {image!r}: name it in columns.image to score the images"
        raise StageError(f"stage {self.ctx.name!r}: none of its features {self.features_used()} varies, so every row would "
                         f"score the same and the rows removed would be arbitrary{hint}")

    def apply(self, part: pd.DataFrame, model: dict) -> pd.DataFrame:
        classes, scores = self._scores(part, model)
        if model["cut"] is not None:
            remove = within_cut(classes, scores, self.id_column(part), model["cut"])
        else:
            remove = scores > self.options.threshold
        part = reject(part, remove, f"poison:{self.options.method}")
        if self.options.keep_score:
            part[self.options.score_column] = scores
        part["_m_unscored"] = np.isnan(scores).astype(np.int64)
        return part

    def result_warnings(self, entry: dict) -> list[str]:
        return emptied_classes(self.ctx.name, getattr(self, "counts_", {}), entry)

    def summary(self) -> dict:
        model = getattr(self, "state_", None)
        if model is None:
            return {}
        out: dict[str, Any] = {
            "method": self.options.method,
            "features": self.features_used(),
            "rule": f"fraction={self.options.fraction}" if self.options.fraction is not None else f"threshold={self.options.threshold}",
            "rows_per_class": {str(_plain(c)): n for c, n in self.counts_.items()},
        }
        if model["cut"] is not None:
            out["removed_per_class"] = {str(_plain(c)): int(b) for c, b in zip(model["classes"], model["budget"])}
            out["score_cut_per_class"] = {str(_plain(model["classes"][k])): s for k, (s, _) in model["cut"].items()}
            out["passes_to_find_cut"] = self.cut_passes_
        out["passes_for_statistics"] = self.moment_passes_
        if "basis" in model:
            out["subspace_dim"] = int(model["basis"].shape[1])
            out["explained_variance"] = model["explained"]
        if self.reference_rows_ is not None:
            total = sum(self.counts_.values())
            out["knn_reference_rows"] = self.reference_rows_
            out["knn_exact"] = self.reference_rows_ >= total
        return out


MODEL_GRID = 2.0**-10  # standardized features on this grid: dot products exact below 1,024 features within 1,024 sd


def _model_inputs(Z: np.ndarray) -> np.ndarray:
    """Standardized features rounded to ``MODEL_GRID``, so the squared distances k-NN
    computes as sums of products are exact whatever rows a partition batches together.
    Unrounded, equal distances (one-hot and whole-number features make many) came out a
    bit apart depending on the batch, and which neighbours won the tie, so the flags, with
    the partitioning: 988 rows at 1 partition, 989 at 4."""
    return np.round(Z / MODEL_GRID) * MODEL_GRID


def _without_classes(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``probs`` with the columns of ``classes`` below any probability, so no row's
    prediction or suggestion is one of them."""
    if not len(classes):
        return probs
    probs = probs.copy()
    probs[:, classes] = -1.0
    return probs


def _with_models(state: dict, shared: list) -> dict:
    """``state`` as the tasks get it: each round's models by their handle on the workers."""
    return {**state, "rounds": [{**rnd, "models": handle} for rnd, handle in zip(state["rounds"], shared)]}


def emptied_classes(stage: str, before: dict, entry: dict, weighed: dict | None = None) -> list[str]:
    """A cleaning stage that removes every row of a class has found no noise in it: it
    could not tell that class apart. (``entry['labels']``: the kept rows per label, all
    of them when they add up to the rows kept; a long list is cut. ``weighed``: kept rows
    per label the stage weighed down as likely mislabelled, which count as removed.)"""
    after = entry.get("labels") or {}
    if not after or sum(after.values()) != entry.get("out"):
        return []
    weighed = weighed or {}
    left = {c for c, n in after.items() if n > weighed.get(c, 0)}
    gone = [f"{_plain(c)!s} ({n:,} rows)" for c, n in before.items() if n and str(_plain(c)) not in left]
    verb = "removed or weighed down" if weighed else "removed"
    return [f"stage {stage!r} {verb} every row of class {', '.join(gone)}"] if gone else []


# -- label_issues ----------------------------------------------------------------------

MODELS = ("logistic_regression", "knn", "random_forest", "hist_gradient_boosting", "lda")
WEIGHED = "label_issues_weighted:"  # metric: kept rows weighed down, per class
MIN_SKILL = 0.2  # (balanced accuracy - chance) / (1 - chance) below which label_issues warns
Scalar = int | float | str | bool | None


def make_model(name: str, params: dict, seed: int):
    """A scikit-learn classifier from the allow-list; the job never names code to import."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    if name == "logistic_regression":
        return LogisticRegression(**{"max_iter": 1000, **params})
    if name == "knn":  # 15 neighbours: probabilities in steps of 1/15, fine enough for per-class thresholds
        return KNeighborsClassifier(**{"n_neighbors": 15, **params})
    if name == "random_forest":
        return RandomForestClassifier(**{"n_estimators": 100, "random_state": seed, "n_jobs": 1, **params})
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(**{"random_state": seed, **params})
    if name == "lda":
        return LinearDiscriminantAnalysis(**{"solver": "lsqr", "shrinkage": "auto", **params})
    raise StageError(f"unknown model {name!r}; choose from {MODELS}")


ModelName = Literal["logistic_regression", "knn", "random_forest", "hist_gradient_boosting", "lda"]
FilterName = Literal["prune_by_noise_rate", "noise_rate", "predicted_neq_given"]


class LabelIssuesOptions(FeatureOptions):
    model: ModelName | list[ModelName] = Field(
        ["logistic_regression", "knn"],
        description="scikit-learn classifier for the out-of-fold probabilities; a list averages their probabilities",
    )
    model_params: dict[str, Scalar | dict[str, Scalar]] = Field(
        default_factory=dict, description="constructor settings of that classifier; for a list, per model: {knn: {n_neighbors: 10}}"
    )
    filter: FilterName | list[FilterName] = Field(
        ["noise_rate", "predicted_neq_given"],
        description=(
            "which rows are issues: prune_by_noise_rate (cleanlab's: within the confident joint's count per (given, true) "
            "class, largest margin first, and predicted as another class), noise_rate (the count alone, even where the "
            "prediction agrees: flips toward one class bias the model toward it), predicted_neq_given (every row predicted "
            "as another class); a list runs rounds, each re-fitting the models on the rows earlier rounds kept"
        ),
    )
    folds: int = Field(5, ge=2, description="cross-validation folds, assigned by a hash of the record id")
    max_train_rows: int = Field(100_000, ge=10, description="models train on a hash-chosen sample of this many rows (all if fewer)")
    action: Literal["drop", "relabel"] = Field("drop", description="drop flagged rows, or replace their label with the suggested one")
    last_round: Literal["weight", "drop"] = Field(
        "weight",
        description=(
            "action drop, two or more rounds: what becomes of the rows only the last round flags. Its models, re-fitted "
            "without the earlier rounds' flips, still predict another class for the flips those missed but also for clean "
            "rows near the class boundary, which a model needs: weight keeps them, their weight (columns.weight) "
            "multiplied by the models' probability of their given label; drop drops them"
        ),
    )
    original_column: str = Field("original_label", description="relabel: where the label before this stage is kept")

    @model_validator(mode="after")
    def _params_match_models(self):
        nested = {k for k, v in self.model_params.items() if isinstance(v, dict)}
        if isinstance(self.model, str) and nested:
            raise ValueError(f"model_params: settings per model ({sorted(nested)}) need a list of models")
        if isinstance(self.model, list) and set(self.model_params) - (nested & set(self.model)):
            raise ValueError(f"model_params: with a list of models, give settings per model, keyed by one of {self.model}")
        if isinstance(self.model, list) and not self.model:
            raise ValueError("model: name at least one model")
        if isinstance(self.filter, list) and not self.filter:
            raise ValueError("filter: name at least one filter")
        return self

    def filters(self) -> list[str]:
        return [self.filter] if isinstance(self.filter, str) else list(self.filter)


@register
class LabelIssues(_Features, FitApplyStage):
    """Find mislabeled rows with confident learning (Northcutt et al. 2021).

    Out-of-fold probabilities come from K models trained on a hash-chosen sample (all
    rows when the data fits ``max_train_rows``); a row is scored by the model that did
    not see its fold. Naming several models averages their probabilities: a linear
    model and k-NN err on different rows, so together they flag flips more reliably.

    Each entry of ``filter`` is a round. A round re-trains the fold models on the sample
    rows no earlier round flagged and scores the rows no earlier round flagged. The
    default first drops the confident joint's estimate of the flips per (given, true)
    class, which corrects for a model biased toward the class the flips went to, then,
    re-fitted on what is left and so no longer biased, every row still predicted as
    another class. Those last-round rows are the flips the first round missed but also
    clean rows near the class boundary, which a model needs: by default (``last_round:
    weight``) they stay, weighted by the models' probability of their given label.
    Passes: (1) column moments, label counts, the training sample; then per round with a
    noise-rate budget (2) per-class thresholds, (3) the confident joint, (4) the exact
    top-margin rows per (given, true) cell; then apply: drop as ``label-issue=<suggested>``
    (or weigh, above) or relabel.
    """

    name = "label_issues"
    Options = LabelIssuesOptions

    def _folds(self, ids: np.ndarray) -> np.ndarray:
        return (record_seeds(self.ctx.seed, self.ctx.name + ":fold", ids) % np.uint64(self.options.folds)).astype(np.int64)

    def check(self, meta: pd.DataFrame) -> None:
        super().check(meta)
        if self.options.action == "relabel":
            self.check_output_column(meta, "original_column", self.options.original_column)
        for name, params in self._model_specs():  # a misspelt or out-of-range setting, before the run
            self._model(name, params)

    def _model(self, name: str, params: dict):
        """The classifier ``make_model`` builds, its settings checked by scikit-learn; a
        mistake in ``model_params`` is the stage's error, naming the model and the setting."""
        where = f"stage {self.ctx.name!r}: model_params for {name}"
        try:
            model = make_model(name, params, self.ctx.seed)
        except TypeError as e:
            known = sorted(make_model(name, {}, self.ctx.seed).get_params())
            raise StageError(f"{where}: {e}; its settings are {known}") from None
        validate = getattr(model, "_validate_params", None)
        if validate is not None:
            try:
                validate()
            except ValueError as e:  # scikit-learn's InvalidParameterError is a ValueError
                raise StageError(f"{where}: {e}") from None
        return model

    def _partial_sample(self, part: pd.DataFrame, state: Any):
        X = self.raw_features(part)
        labels = part[self._label()]
        keep = labels.notna().to_numpy()
        ids = self.ids(part)
        draws = record_uniform(self.ctx.seed, self.ctx.name + ":sample", ids)
        sample = HashSample.of(draws[keep], ids[keep], labels.to_numpy(dtype=object)[keep], X[keep], self.options.max_train_rows)
        return ColumnMoments.of(X) if len(X) else None, _count_labels(labels), sample

    @staticmethod
    def _combine_sample(a, b):
        moments = b[0] if a[0] is None else a[0] if b[0] is None else a[0].merge(b[0])
        return moments, _add_counts(a[1], b[1]), a[2].merge(b[2])

    def _train(self, Z: np.ndarray, y: np.ndarray, folds: np.ndarray) -> list:
        models = []
        for f in range(self.options.folds):
            rows = folds != f
            if len(np.unique(y[rows])) < 2:
                raise StageError(f"stage {self.ctx.name!r}: fold {f} leaves fewer than two classes to train on")
            fold_models = []
            for name, params in self._model_specs():
                model = self._model(name, params)
                neighbours = getattr(model, "n_neighbors", None)
                if neighbours is not None and neighbours > rows.sum():
                    raise StageError(
                        f"stage {self.ctx.name!r}: {name} looks at {neighbours} neighbours, but fold {f}'s model trains on "
                        f"{int(rows.sum())} rows; set model_params n_neighbors lower (for a list of models: "
                        f"{{{name}: {{n_neighbors: ...}}}}) or use another model")
                fold_models.append(model.fit(Z[rows], y[rows]))
            models.append(fold_models)
        return models

    def _model_specs(self) -> list[tuple[str, dict]]:
        o = self.options
        if isinstance(o.model, str):
            return [(o.model, o.model_params)]
        return [(name, o.model_params.get(name, {})) for name in o.model]

    @staticmethod
    def _oof(Z: np.ndarray, folds: np.ndarray, models: list, n_classes: int) -> np.ndarray:
        """Out-of-fold probabilities over all classes: each row from the models of its fold."""
        probs = np.zeros((len(Z), n_classes))
        for f, fold_models in enumerate(models):
            rows = folds == f
            if rows.any():
                for model in fold_models:
                    probs[np.ix_(rows, model.classes_)] += model.predict_proba(Z[rows]) / len(fold_models)
        return quantize(probs)

    def _rows(self, part: pd.DataFrame, state: dict) -> tuple:
        """(standardized features, class index, ids, folds) of a partition."""
        ids = self.ids(part)
        Z = _model_inputs(state["standardizer"].standardize(self.raw_features(part)))
        return Z, _class_index(part[self._label()], state["classes"]), ids, self._folds(ids)

    @staticmethod
    def _in_budget(probs, labels, ids, rnd: dict) -> np.ndarray:
        rows, keys, margins = cl.margin_candidates(probs, labels, rnd["prune"])
        inside = np.zeros(len(labels), dtype=bool)
        inside[rows[within_cut(keys, quantize(margins), ids[rows], rnd["cut"])]] = True
        return inside

    def _scan(self, Z, labels, ids, folds, state: dict, upto: int):
        """Run rounds ``0 .. upto-1`` over these rows: (rows still in, the round that
        flagged each row or -1, suggested class index, the flagging round's probability
        of the given label), and, when round ``upto`` exists, its probabilities for the
        rows still in."""
        n_classes = len(state["classes"])
        active = np.flatnonzero(labels >= 0)
        flagged_in = np.full(len(labels), -1, dtype=np.int64)
        suggested = np.full(len(labels), -1, dtype=np.int64)
        given = np.ones(len(labels))
        for r, rnd in enumerate(state["rounds"][: upto + 1]):
            probs = self._oof(Z[active], folds[active], rnd["models"], n_classes)
            if r == upto:
                return active, flagged_in, suggested, given, probs
            y = labels[active]
            inside = self._in_budget(probs, y, ids[active], rnd) if cl.needs_budget(rnd["filter"]) else None
            learned = _without_classes(probs, rnd["unjudged"])  # a row predicted as an unlearned class is not said to be one
            hit = cl.issues(rnd["filter"], inside, learned, y) & ~np.isin(y, rnd["unjudged"])
            flagged_in[active[hit]] = r
            suggested[active[hit]] = cl.suggested_labels(learned[hit], y[hit])
            given[active[hit]] = probs[np.flatnonzero(hit), y[hit]]
            active = active[~hit]
        return active, flagged_in, suggested, given, None

    def _round_inputs(self, part, state):
        Z, labels, ids, folds = self._rows(part, state)
        active, _, _, _, probs = self._scan(Z, labels, ids, folds, state, len(state["rounds"]) - 1)
        return labels[active], probs, ids[active]

    def _partial_sums(self, part, state):
        labels, probs, _ = self._round_inputs(part, state)
        return cl.ConfidentSums.of(probs, labels, len(state["classes"]))

    def _partial_joint(self, part, state):
        labels, probs, _ = self._round_inputs(part, state)
        return cl.confident_joint(probs, labels, state["rounds"][-1]["thresholds"])

    def _partial_top(self, part, state):
        labels, probs, ids = self._round_inputs(part, state)
        prune = state["rounds"][-1]["prune"]
        rows, keys, margins = cl.margin_candidates(probs, labels, prune)
        return LargestPerKey.of(keys, quantize(margins), ids[rows], prune.ravel())

    @staticmethod
    def _merge(a, b):
        return a + b if isinstance(a, np.ndarray) else a.merge(b)

    def build(self, frame, shapes):
        label = self.ctx.name
        self.fit_categories(frame, shapes)
        moments, counts, sample = shapes.fit(frame, self._partial_sample, self._combine_sample, label=f"{label}-sample")
        classes = _sorted_classes(counts)
        if moments is None or len(classes) < 2:
            raise StageError(f"stage {label!r}: needs labelled rows of at least two classes")
        require_classes(label, self._label(), counts)
        state: dict[str, Any] = {"classes": classes, "standardizer": moments.standardizer(), "rounds": []}
        Zs = _model_inputs(state["standardizer"].standardize(sample.X))
        ys = _class_index(pd.Series(sample.labels, dtype=object), classes)
        folds = self._folds(sample.ids)
        self.rounds_ = []
        shared = self.shared_models_ = []  # each round's models on the workers, held while the run lives: tasks name them
        for r, name in enumerate(self.options.filters()):
            # the sample rows that earlier rounds kept, found by the same code as any partition's
            kept = self._scan(Zs, ys, sample.ids, folds, state, r)[0] if r else np.arange(len(ys))
            rnd: dict[str, Any] = {"filter": name, "models": self._train(Zs[kept], ys[kept], folds[kept])}
            if r:
                rnd["unjudged"] = state["rounds"][-1].get("unjudged", ())
            state["rounds"].append(rnd)
            shared.append(shapes.share(rnd["models"]))
            info: dict[str, Any] = {"filter": name, "train_rows": len(kept)}
            if cl.needs_budget(name) or not r:  # the first round says what the models learned, for itself and the rounds after
                sums = shapes.fit(frame, self._partial_sums, self._merge, _with_models(state, shared), label=f"{label}-thresholds-{r}")
                if not r:
                    rnd["unjudged"] = cl.unlearned_classes(sums, self.options.folds)
                    info["unjudged"] = {k: self._why_unlearned(sums, k) for k in rnd["unjudged"]}
                info.update(rows=sums.counts.astype(int).tolist(), balanced_accuracy=round(sums.balanced_accuracy(), 6))
            if cl.needs_budget(name):
                rnd["thresholds"] = sums.thresholds()
                joint = shapes.fit(frame, self._partial_joint, self._merge, _with_models(state, shared), label=f"{label}-joint-{r}")
                rnd["prune"] = cl.prune_counts(joint, sums.counts)
                rnd["prune"][rnd["unjudged"]] = 0
                rnd["prune"][:, rnd["unjudged"]] = 0
                rnd["cut"] = {}
                if rnd["prune"].any():
                    rnd["cut"] = shapes.fit(frame, self._partial_top, self._merge, _with_models(state, shared),
                                            label=f"{label}-top-{r}").cut()
                info.update(thresholds=rnd["thresholds"], joint=joint, prune=rnd["prune"])
            self.rounds_.append(info)
        # kept for the summary, without the models: the stage itself travels with its apply's tasks
        self.state_ = _with_models(state, [None] * len(shared))
        self.counts_ = {c: int(counts[c]) for c in classes}
        self.train_rows_ = len(sample.ids)
        return shapes.map(frame, self._apply, shapes.broadcast(state, graph=_with_models(state, shared)), label=label)

    def _why_unlearned(self, sums: cl.ConfidentSums, k: int) -> str:
        """Which sign of ``confident.unlearned_classes`` a class showed, for the summary."""
        rows = int(sums.counts[k])
        if rows < self.options.folds:
            return f"{rows} rows, fewer than the {self.options.folds} folds"
        mean_in = sums.grid_sums[k, k] / rows
        mean_out = (sums.grid_sums[:, k].sum() - sums.grid_sums[k, k]) / (sums.counts.sum() - rows)
        return (f"its {rows} rows get a probability of it of {mean_in:.3g} on average, the others {mean_out:.3g}: "
                f"t = {sums.separation()[k]:.2g}, below {cl.MIN_SEPARATION:g}")

    def _weighs(self) -> bool:
        """Whether the last round's flags are kept with a weight instead of dropped."""
        o = self.options
        return o.action == "drop" and o.last_round == "weight" and len(o.filters()) > 1

    @property
    def writes_weights(self) -> bool:
        """So a run checks the source's weight column before this multiplies it."""
        return self._weighs()

    def _weigh(self, part: pd.DataFrame, weighed: np.ndarray, given: np.ndarray, labels: np.ndarray, classes: list) -> pd.DataFrame:
        """Multiply the weight of the ``weighed`` rows (1 where there is none yet) by the
        models' probability of their given label: the chance, as the models see it, that
        the row is clean. A flip deep in another class gets ~0, a clean boundary row ~0.4,
        and no row is lost to a trainer that reads the weight. Counted per class, so a
        class whose every row was flagged is still said (``result_warnings``). A row whose
        weight no trainer takes (missing, infinite or negative, before and so after) is
        rejected with the value, as reweigh rejects it."""
        weight = self.ctx.roles.weight
        old = 1.0
        if weight in part.columns:
            old = weight_values(part[weight])
            part = reject(part, ~usable_weights(old), np.array([f"weight:{weight}={v}" for v in old], dtype=object))
        part[weight] = old * np.where(weighed, given, 1.0)
        part["_m_label_issues_weighted"] = weighed.astype(np.int64)
        per_class = {f"{METRIC}{WEIGHED}{_plain(name)!s}": (weighed & (labels == c)).astype(np.int64) for c, name in enumerate(classes)}
        return pd.concat([part, pd.DataFrame(per_class, index=part.index)], axis=1)  # one block: a column each fragmented the frame

    def apply(self, part: pd.DataFrame, state: dict) -> pd.DataFrame:
        Z, labels, ids, folds = self._rows(part, state)
        _, flagged_in, suggested_index, given, _ = self._scan(Z, labels, ids, folds, state, len(state["rounds"]))
        flagged = flagged_in >= 0
        suggested = np.asarray(state["classes"], dtype=object)[np.where(flagged, suggested_index, 0)]
        column = self._label()
        if self.options.action == "drop":
            dropped = flagged
            if self._weighs():
                weighed = flagged_in == len(state["rounds"]) - 1
                part = self._weigh(part, weighed, given, labels, state["classes"])
                dropped = flagged & ~weighed
            reasons = np.array([f"label-issue={s}" for s in suggested], dtype=object)
            part = reject(part, dropped, reasons)
        else:
            part[self.options.original_column] = part[column]
            new = part[column].astype(object).to_numpy(copy=True)
            new[flagged] = suggested[flagged]
            part[column] = as_dtype(pd.Series(new, index=part.index), part[column].dtype)
            part["_m_relabelled"] = flagged.astype(np.int64)
        part["_m_label_issues"] = flagged.astype(np.int64)
        part["_m_unscored"] = (labels < 0).astype(np.int64)  # no label to judge: kept, and said, as sanitize says it
        part["_m_unjudged"] = np.isin(labels, state["rounds"][0]["unjudged"]).astype(np.int64)  # a class the models did not learn
        for r in range(len(state["rounds"])):
            part[f"_m_label_issues_round_{r}"] = (flagged_in == r).astype(np.int64)
        return part

    def summary(self) -> dict:
        state = getattr(self, "state_", None)
        if state is None:
            return {}
        names = [str(_plain(c)) for c in state["classes"]]
        total = sum(self.counts_.values())
        out: dict[str, Any] = {
            "model": self.options.model,
            "features": self.features_used(),
            "filter": self.options.filter,
            "folds": self.options.folds,
            **({"last_round": "weight", "weight_column": self.ctx.roles.weight} if self._weighs() else {}),
            "train_rows": self.train_rows_,
            "trained_on_sample": self.train_rows_ < total,
        }
        rounds = []
        for info in self.rounds_:
            entry = {"filter": info["filter"], "train_rows": info["train_rows"]}
            if "balanced_accuracy" in info:
                entry["balanced_accuracy"] = info["balanced_accuracy"]
            if "unjudged" in info:
                entry["unjudged_classes"] = {names[k]: why for k, why in info["unjudged"].items()}
            if "joint" in info:
                entry["thresholds"] = dict(zip(names, info["thresholds"].round(6).tolist()))
                entry["confident_joint"] = {"given x true": names, "counts": info["joint"].tolist()}
                entry["flag_budget"] = {"given x true": names, "counts": info["prune"].tolist()}
            rounds.append(entry)
        first = next((e for e in rounds if "confident_joint" in e), None)
        if first is not None:  # the first noise-rate round's matrices, where the report looks for them
            out.update(thresholds=first["thresholds"], confident_joint=first["confident_joint"], flag_budget=first["flag_budget"])
        out["rounds"] = rounds
        out["chance_balanced_accuracy"] = round(1 / len(names), 6)
        return out

    def result_warnings(self, entry: dict) -> list[str]:
        """Confident learning trusts its models: one that cannot tell the classes apart
        calls the minority classes noise (Adult's race from age and hours: 73 % of one
        class flagged, cleanlab's filter alike). Say so, with the evidence; and when they
        learned no class at all, that nothing was flagged."""
        metrics = entry.get("metrics", {})
        weighed = {k[len(WEIGHED):]: v for k, v in metrics.items() if k.startswith(WEIGHED)}
        notes = emptied_classes(self.ctx.name, self.counts_, entry, weighed)
        summary = entry.get("summary", {})
        rounds = summary.get("rounds", [])
        chance = summary.get("chance_balanced_accuracy")
        if not rounds or "balanced_accuracy" not in rounds[0] or chance is None:
            return notes
        ba, unjudged = rounds[0]["balanced_accuracy"], rounds[0].get("unjudged_classes", {})
        if len(unjudged) >= len(self.counts_) - 1:
            return notes + [
                f"stage {self.ctx.name!r}: its models learned {'no class' if len(unjudged) == len(self.counts_) else 'at most one class'} "
                f"of the label from the features (out-of-fold balanced accuracy {ba:.3f}; chance {chance:.3f}; per class: "
                f"{'; '.join(f'{name}: {why}' for name, why in unjudged.items())}), so it flagged nothing: a row can only be "
                "judged against classes the models tell apart. Give it features that predict the label."]
        if (ba - chance) / (1 - chance) < MIN_SKILL:
            notes.append(
                f"stage {self.ctx.name!r}: its models tell the classes apart little better than chance "
                f"(out-of-fold balanced accuracy {ba:.3f}; chance {chance:.3f}), so the rows it flags are "
                "mostly rows they cannot classify, not mislabelled ones. Give it features that predict the "
                "label, or check the flags (action: relabel keeps the rows) before dropping them.")
        return notes + [
            f"stage {self.ctx.name!r}: class {name} ({why}) is one its models did not learn, so its rows were kept unjudged "
            f"and no row was flagged as really being {name}. Give it more rows or features that predict it, or merge or "
            "drop it."
            for name, why in unjudged.items()
        ]
