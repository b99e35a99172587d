"""dsbuild: build ML training sets you can trust, at any scale, on Dask.

    import dsbuild
    manifest = dsbuild.run("jobs/quickstart.yaml", output="out/quickstart")
"""

__version__ = "0.1.0"

from dsbuild.job import JobError, JobSpec, job, load_job  # noqa: E402
from dsbuild.pipeline import LedgerError, run  # noqa: E402
from dsbuild.submit import Submission, submit  # noqa: E402
from dsbuild import stages  # noqa: E402

__all__ = ["JobError", "JobSpec", "LedgerError", "job", "load_job", "run", "stages", "submit", "Submission", "__version__"]
