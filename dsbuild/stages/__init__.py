"""Stages by family. Importing a family module registers its stages by name."""

from dsbuild.stages.base import STAGES, FitApplyStage, GroupStage, MapStage, Roles, Stage, StageContext, StageError, StageOptions, register, reject, stage_class
from dsbuild.stages.shapes import Shapes
from dsbuild.stages import clean  # noqa: F401  (registers its stages)
from dsbuild.stages import dedup  # noqa: F401  (registers its stages)
from dsbuild.stages import fairness  # noqa: F401  (registers its stages)
from dsbuild.stages import label  # noqa: F401  (registers its stages)
from dsbuild.stages import sanitize  # noqa: F401  (registers its stages)
from dsbuild.stages import augment, split, synth  # noqa: F401  (registers their stages)

__all__ = [
    "STAGES",
    "FitApplyStage",
    "GroupStage",
    "MapStage",
    "Roles",
    "Shapes",
    "Stage",
    "StageContext",
    "StageError",
    "StageOptions",
    "register",
    "reject",
    "stage_class",
]
