"""Labeling stages: many noisy labels per item become one good label.

``aggregate_labels`` reads crowd annotations (item, annotator, label) from a second
source, codes them as small integers, groups them by item once (Dask's shuffle) into
partitions of a few million annotations, keeps them on the workers, and fits the label
model in rounds: each round is an E-step per item and mergeable M-step sums
(``dsbuild.kernels.crowd``), so per round a partition makes one pass over its codes and
only the annotators' confusion sums travel. The per-item result is joined to the data by id.

``labeling_functions`` casts votes from rules declared in the job and combines them with
the same label models; a row's votes live in the row, so no shuffle is needed.
"""


from dsbuild.stages.label.aggregate import (
    AggregateLabels,
    AggregateLabelsOptions,
    FinishLabels,
    VoteCoder,
)
from dsbuild.stages.label.annotations import AnnotationSource, read_annotation_source
from dsbuild.stages.label.classes import Classes, label_keys
from dsbuild.stages.label.model import (
    LabelModel,
    annotator_summary,
    annotator_table,
    fit_rounds,
    tie_draws,
    write_labels,
)
from dsbuild.stages.label.rules import (
    LabelingFunctions,
    LabelingFunctionsOptions,
    RuleVoter,
)

__all__ = [
    "AggregateLabels",
    "AggregateLabelsOptions",
    "AnnotationSource",
    "Classes",
    "FinishLabels",
    "LabelModel",
    "LabelingFunctions",
    "LabelingFunctionsOptions",
    "RuleVoter",
    "VoteCoder",
    "annotator_summary",
    "annotator_table",
    "fit_rounds",
    "label_keys",
    "read_annotation_source",
    "tie_draws",
    "write_labels",
]
