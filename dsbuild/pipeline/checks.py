"""Checks of a job against the columns its stages will see, shared by a run and
``validate``: column roles, the weight column, ``sink.partition_by``, a stage's error
with its place in the job."""

from __future__ import annotations

import pandas as pd

from dsbuild.job import JobSpec
from dsbuild.stages.base import Stage, StageError, _did_you_mean


def _at_stage(i: int, stage: Stage, e: StageError, spec: JobSpec) -> StageError:
    """The stage's error with its place in the job (the file's line too), its name said once."""
    return StageError(f"{spec.place('stages', i)}stages[{i}] {stage.ctx.name}: "
                      f"{str(e).removeprefix(f'stage {stage.ctx.name!r}: ')}")


def _weight_column(spec: JobSpec, meta: pd.DataFrame, stages: list[Stage]) -> list[str]:
    """A source column that is named as ``columns.weight`` (``weight`` unless the job says)
    is each row's sample weight to the fairness stages and to label_issues, which
    multiplies it: a body weight was read as one, its text values as missing weights,
    and reweigh overwrote it."""
    column = spec.columns.weight
    users = [s for s in stages if s.reads_weights or s.writes_weights]
    if not users or column not in meta.columns:
        return []
    use = "counts each row by its weight" if users[0].reads_weights else "multiplies the weights"
    dtype = meta[column].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise StageError(f"columns.weight: {users[0].ctx.name!r} {use} in the column {column!r}, which "
                         f"holds {dtype} values, not numbers; name the weight column another way (columns.weight: "
                         "sample_weight), or cast it")
    if "weight" in spec.columns.model_fields_set:
        return []
    writers = [s.ctx.name for s in users if s.writes_weights]
    if users[0].reads_weights:
        said = f"counts each row by the source's column {column!r} as its sample weight{f' (and {writers[0]} multiplies it)' if writers else ''}"
    else:
        said = f"multiplies the source's column {column!r}, taking it for each row's sample weight"
    return [f"columns.weight: {users[0].ctx.name!r} {said}; if it is a feature, not a weight, set columns.weight to another name"]


def _partition_problem(spec: JobSpec, meta: pd.DataFrame) -> str | None:
    """sink.partition_by naming a column the output will not have."""
    absent = [c for c in spec.sink.partition_by if c not in meta.columns]
    if not absent:
        return None
    columns = [c for c in meta.columns if not str(c).startswith("_")]
    return (f"{spec.place('sink', 'partition_by')}sink.partition_by: {absent[0]!r} is not a column of the output"
            f"{_did_you_mean(absent[0], columns)}; "
            f"columns are {columns}")


def _check_roles(spec: JobSpec, meta: pd.DataFrame, source_notes: list[str] = ()) -> None:
    """Every column a role names is the source's. ``source_notes`` follow the error: the
    reader's note on why the columns are not the ones meant (a first row read as the
    header, PostgreSQL's text format read as CSV) was held back behind it."""
    c = spec.columns
    named = {"label": [c.label] if c.label else [], "sensitive": c.sensitive, "features": c.features,
             "image": [c.image] if c.image else [], "text": [c.text] if c.text else []}
    for role, cols in named.items():
        for col in cols:
            if col not in meta.columns:
                raise StageError(
                    f"{spec.place('columns', role)}columns.{role}: {col!r} is not a column of the source"
                    f"{_did_you_mean(col, meta.columns)}; "
                    f"columns are {[x for x in meta.columns if not str(x).startswith('_')]}"
                    + "".join(f"\n{note}" for note in source_notes)
                )
