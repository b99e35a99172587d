"""JobSpec → Dask graph → written output, with the ledger that accounts for every row.

The graph is built stage by stage: each stage returns its input with rejected rows
marked, the pipeline splits kept from rejected and hands the kept rows on. Kept rows,
rejects and every stage's counts are then computed together — one compute, so shared
upstream work runs once and nothing is collected in the driver but counts. Fit→apply
stages compute their (small) statistics while the graph is built.

The modules: ``driver`` (a run from its checks to its commit, and ``validate``),
``execution`` (the passes and checkpoints), ``ids`` (the source's rows marked),
``checks`` (a job against its columns), ``accounting`` (kept and rejected rows written
and counted), ``manifest`` (the manifest and the ledger), ``errors``.
"""

from dsbuild.pipeline.accounting import INTERNAL, _account, _label_counts, kept_rows, rejected_rows  # noqa: F401 - _names: tests import them here
from dsbuild.pipeline.driver import INTERRUPTED, checked_output, run, validate_against_source
from dsbuild.pipeline.errors import DsbuildWarning, LedgerError, ResumeRefused
from dsbuild.pipeline.execution import Execution, StageRun, _CheckpointPart  # noqa: F401
from dsbuild.pipeline.ids import _ids_alone  # noqa: F401
from dsbuild.pipeline.manifest import check_ledger, job_key

__all__ = [
    "INTERNAL", "INTERRUPTED", "DsbuildWarning", "Execution", "LedgerError", "ResumeRefused", "StageRun", "checked_output",
    "check_ledger", "job_key", "kept_rows", "rejected_rows", "run", "validate_against_source",
]
