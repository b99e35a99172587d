"""Cleaning stages: keep the columns and rows you want, fix types, reject broken images,
and fix noisy values (units, ranges, missing values, spellings, outliers, dependencies).

One module per stage; importing the package registers them all.
"""

from dsbuild.stages.clean.canonicalize import (
    Canonicalize,
    CanonicalizeOptions,
    CanonicalRule,
)
from dsbuild.stages.clean.cast import DATETIME_FORMATS, Cast, CastOptions, cast_column
from dsbuild.stages.clean.constraints import Constraints, ConstraintsOptions
from dsbuild.stages.clean.images import ValidateImages, ValidateImagesOptions
from dsbuild.stages.clean.impute import (
    MODE_MAX_DISTINCT,
    Impute,
    ImputeOptions,
    ImputeRule,
)
from dsbuild.stages.clean.outliers import OutlierRule, Outliers, OutliersOptions
from dsbuild.stages.clean.ranges import RangeRule, Ranges, RangesOptions
from dsbuild.stages.clean.select import Select, SelectOptions
from dsbuild.stages.clean.units import NormalizeUnits, NormalizeUnitsOptions, UnitRule

__all__ = [
    "DATETIME_FORMATS",
    "MODE_MAX_DISTINCT",
    "CanonicalRule",
    "Canonicalize",
    "CanonicalizeOptions",
    "Cast",
    "CastOptions",
    "Constraints",
    "ConstraintsOptions",
    "Impute",
    "ImputeOptions",
    "ImputeRule",
    "NormalizeUnits",
    "NormalizeUnitsOptions",
    "OutlierRule",
    "Outliers",
    "OutliersOptions",
    "RangeRule",
    "Ranges",
    "RangesOptions",
    "Select",
    "SelectOptions",
    "UnitRule",
    "ValidateImages",
    "ValidateImagesOptions",
    "cast_column",
]
