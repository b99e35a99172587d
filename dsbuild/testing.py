"""Run one stage on an in-memory frame: for unit tests of stages, ours and users'."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import pandas as pd

from dsbuild.records import ID, REASON, STAGE
from dsbuild.stages.base import ADDED, METRIC, REJECT, Roles, Shapes, Stage, StageContext


def run_stage(
    stage: Stage,
    frame: pd.DataFrame,
    *,
    npartitions: int = 2,
    seed: int = 0,
    roles: Roles | None = None,
    name: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kept and rejected rows (sorted by id) of ``stage`` over ``frame`` split in parts.

    Uses whatever Dask scheduler is current (a test's Client, or threads).
    """
    if ID not in frame.columns:
        raise ValueError("frame needs an 'id' column")
    stage.bind(StageContext(name or stage.name, seed, roles or Roles()))
    with dask.config.set({"dataframe.convert-string": False}):  # keep bytes columns as bytes
        ddf = dd.from_pandas(frame, npartitions=npartitions, sort=False)
    stage.check(ddf._meta)
    out = stage.build(ddf, Shapes()).compute()
    internal = [c for c in out.columns if c.startswith(METRIC)] + [ADDED]
    kept = out[out[REJECT].isna()].drop(columns=[REJECT, *internal])
    rejected = out[out[REJECT].notna()].drop(columns=internal)
    rejected = rejected.rename(columns={REJECT: REASON}).assign(**{STAGE: stage.ctx.name})
    return (
        kept.sort_values(ID, kind="stable").reset_index(drop=True),
        rejected.sort_values(ID, kind="stable").reset_index(drop=True),
    )


def stage_metrics(out: pd.DataFrame) -> dict[str, float]:
    """Sum the ``_m_`` counter columns of a stage's raw output."""
    return {c[len(METRIC):]: float(out[c].sum()) for c in out.columns if c.startswith(METRIC)}
