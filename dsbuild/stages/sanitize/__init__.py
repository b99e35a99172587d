"""Sanitization: remove poisoned rows (``sanitize``) and mislabeled rows (``label_issues``).

Both stages are chains of fit -> apply passes whose statistics are sums, counts, exact
per-class top-k lists or hash-keyed samples, so what they remove does not depend on how
the data is partitioned or on the number of workers.
"""

from dsbuild.stages.sanitize.classes import emptied_classes, require_classes
from dsbuild.stages.sanitize.features import DERIVED_COLUMNS, FeatureOptions
from dsbuild.stages.sanitize.label_issues import (
    MODELS,
    LabelIssues,
    LabelIssuesOptions,
    make_model,
)
from dsbuild.stages.sanitize.poison import Sanitize, SanitizeOptions

__all__ = [
    "DERIVED_COLUMNS",
    "FeatureOptions",
    "LabelIssues",
    "LabelIssuesOptions",
    "MODELS",
    "Sanitize",
    "SanitizeOptions",
    "emptied_classes",
    "make_model",
    "require_classes",
]
