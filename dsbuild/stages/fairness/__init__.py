"""Fairness stages: audit a data set for unfairness and mitigate it, exactly and at scale.

Every statistic is mergeable — group × label counts, moments, per-group value counts or
histograms — so results do not depend on partitioning and no data is collected. Groups
come from the job's ``sensitive`` columns; a numeric one is cut into bins by the job's
``columns.bins`` or the stage's ``bins`` option (``bins: {age: [25]}`` gives the groups
``<25`` and ``>=25``, German credit's age split). Several sensitive columns also give
their intersection.

- ``fairness_audit``: counts, base rates, SPD and DI per group and intersection; with a
  ``model``, demographic parity and equalized odds of its out-of-fold predictions.
- ``reweigh``: Kamiran & Calders weights W(s, y) = P(s)·P(y) / P(s, y), multiplied into
  the weight column.
- ``resample``: uniform or preferential sampling to the cell sizes that make group and
  label independent; copies get ids ``parent#rs<k>``, removed rows go to rejects.
- ``massage``: flip the labels of the rows nearest the decision boundary.

The three mitigations take ``strength`` λ: each group's favourable rate moves λ of the
way to the overall rate (0: no change, 1: Kamiran & Calders, above 1: past parity, for
a model that learns part of the bias back from correlated features).
- ``correlation_remover``: fairlearn's CorrelationRemover from merged moments.
- ``disparate_impact_remover``: Feldman et al.'s rank-preserving repair per group.
"""

from dsbuild.stages.fairness.audit import AuditOptions, FairnessAudit
from dsbuild.stages.fairness.base import (
    FairnessOptions,
    FairnessStage,
    GroupOptions,
    MitigationOptions,
    RankerOptions,
    increasing_bins,
    order_warnings_for_job,
)
from dsbuild.stages.fairness.correlation import (
    CorrelationOptions,
    CorrelationRemoverStage,
)
from dsbuild.stages.fairness.disparate_impact import (
    DisparateImpactRemover,
    RepairOptions,
)
from dsbuild.stages.fairness.massage import Massage
from dsbuild.stages.fairness.repairs import FeatureRepairOptions
from dsbuild.stages.fairness.resample import Resample, ResampleOptions
from dsbuild.stages.fairness.reweigh import Reweigh

__all__ = [
    "AuditOptions",
    "CorrelationOptions",
    "CorrelationRemoverStage",
    "DisparateImpactRemover",
    "FairnessAudit",
    "FairnessOptions",
    "FairnessStage",
    "FeatureRepairOptions",
    "GroupOptions",
    "Massage",
    "MitigationOptions",
    "RankerOptions",
    "RepairOptions",
    "Resample",
    "ResampleOptions",
    "Reweigh",
    "increasing_bins",
    "order_warnings_for_job",
]
