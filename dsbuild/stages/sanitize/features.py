"""What both stages score a row on: the job's feature columns (numbers, and categories one-hot
encoded), or a vector from the image column, made the same way in every pass.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dsbuild.kernels.features import (
    MAX_DISTINCT,
    CategoryCounts,
    feature_length,
    image_features,
)
from dsbuild.records import ID, image_blobs
from dsbuild.stages.base import (
    StageError,
    StageOptions,
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

    def reads_default_features(self) -> bool:
        return not self._use_image()

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
