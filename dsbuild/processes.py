"""Whether a process on this machine is still running, for the claims runs leave behind."""

from __future__ import annotations

import os


def alive(pid) -> bool:
    """Whether ``pid`` runs. A zombie does not: a driver that ``dsbuild.submit`` started and
    then killed (``handle.cancel()``, or a kill from the same notebook) stays one until its
    parent reaps it, and its claim on the output's folder refused the resubmission with
    "another run of this job is writing". No pid (a run not started yet, 0) is no process:
    ``os.kill(0, 0)`` asks about this process's group."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): os.kill's answer
        return True
