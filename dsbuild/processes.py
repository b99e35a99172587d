"""Whether a process on this machine is still running, for the claims runs leave behind."""

from __future__ import annotations


def alive(pid) -> bool:
    """Whether ``pid`` runs. A zombie does not: a driver that ``dsbuild.submit`` started and
    then killed (``handle.cancel()``, or a kill from the same notebook) stays one until its
    parent reaps it, and its claim on the output's folder refused the resubmission with
    "another run of this job is writing"."""
    import os

    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): os.kill's answer
        return True
