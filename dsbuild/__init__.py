"""dsbuild: build ML training sets you can trust, at any scale, on Dask.

    import dsbuild
    manifest = dsbuild.run("jobs/quickstart.yaml", output="out/quickstart")
"""

__version__ = "0.1.0"

import importlib
import sys
import types

__all__ = ["JobError", "JobSpec", "LedgerError", "job", "load_job", "run", "stages", "submit", "Submission", "__version__"]

# The public names and the modules that define them, imported on first use: importing
# them here made every ``import dsbuild.<anything>`` load Dask's dataframe, distributed
# and every stage (3 s at load), so ``dsbuild --help`` and ``dsbuild inspect`` waited
# for libraries they never use, and so did each local worker before its first task.
_DEFINED_IN = {"JobError": "dsbuild.job", "JobSpec": "dsbuild.job", "job": "dsbuild.job", "load_job": "dsbuild.job",
               "LedgerError": "dsbuild.pipeline", "run": "dsbuild.pipeline",
               "Submission": "dsbuild.submit", "submit": "dsbuild.submit"}


def __getattr__(name: str):
    if name not in _DEFINED_IN:  # a module of the package (stages, pipeline), as an attribute
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_DEFINED_IN[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``dsbuild.job`` and ``dsbuild.submit`` are functions named as the modules that
    define them. Importing such a module binds its name in the package to the module,
    after the module ran; the package keeps the function there instead, as it did when
    it imported both functions up front."""

    def __setattr__(self, name: str, value) -> None:
        if name in ("job", "submit") and value is sys.modules.get(f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
