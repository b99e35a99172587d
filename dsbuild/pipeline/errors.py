"""The pipeline's errors and its warning category."""

from __future__ import annotations


class LedgerError(RuntimeError):
    """Rows were lost or invented: rows in ≠ kept + rejected − added."""


class ResumeRefused(RuntimeError):
    """An interrupted run cannot be resumed as asked; its checkpoints are kept."""


class DsbuildWarning(UserWarning):
    pass
