"""Run one stage on an in-memory frame: for unit tests of stages, ours and users'."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from dsbuild.records import ID
from dsbuild.stages.base import METRIC, Roles, Stage, StageContext
from dsbuild.stages.shapes import Shapes


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
    ddf = _partitioned(frame, npartitions)
    stage.check(ddf._meta)
    with dask.config.set({"dataframe.convert-string": False}):  # as dsbuild.run builds: sources read by a stage keep bytes and structs
        out = stage.build(ddf, Shapes()).compute()
    from dsbuild.pipeline import kept_rows, rejected_rows

    kept, rejected = kept_rows(out), rejected_rows(out, stage.ctx.name)  # as a run splits them
    return (
        kept.sort_values(ID, kind="stable").reset_index(drop=True),
        rejected.sort_values(ID, kind="stable").reset_index(drop=True),
    )


def _partitioned(frame: pd.DataFrame, npartitions: int):
    """``frame`` in ``npartitions`` row ranges. Where the current scheduler is a distributed
    client, the parts are scattered to the workers first: embedded in the graph, a frame of
    images is sent with every compute (and Dask warns above 10 MiB). Each call scatters
    under keys of its own: keyed by content, a second run on the same frame reused the
    first one's keys while that run's futures were being released, and its tasks were
    cancelled for lost dependencies."""
    from dask.base import get_scheduler
    from distributed import Client

    client = getattr(get_scheduler(), "__self__", None)
    if not isinstance(client, Client):
        client = None
    with dask.config.set({"dataframe.convert-string": False}):  # keep bytes columns as bytes
        if client is None:
            return dd.from_pandas(frame, npartitions=npartitions, sort=False)
        n = min(npartitions, max(len(frame), 1))
        bounds = np.linspace(0, len(frame), n + 1).round().astype(int)
        parts = client.scatter([frame.iloc[a:b] for a, b in zip(bounds, bounds[1:])], hash=False)
        return dd.from_delayed([dask.delayed(p) for p in parts], meta=frame.iloc[:0], verify_meta=False)


def stage_metrics(out: pd.DataFrame) -> dict[str, float]:
    """Sum the ``_m_`` counter columns of a stage's raw output."""
    return {c[len(METRIC):]: float(out[c].sum()) for c in out.columns if c.startswith(METRIC)}
