"""``sanitize``: remove the rows farthest from their class (l2, slab, svd, knn, loss), exactly
``fraction`` of each class or those above a ``threshold``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.moments import ClassMoments
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
from dsbuild.records import record_seeds, record_uniform
from dsbuild.stages.base import (
    FitApplyStage,
    StageError,
    register,
    reject,
)
from dsbuild.stages.sanitize.classes import (
    _class_index,
    _plain,
    _sorted_classes,
    emptied_classes,
    require_classes,
)
from dsbuild.stages.sanitize.features import FeatureOptions, _Features


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
