"""Where an output may go, and who holds its temporary folder: the checks before a run
writes, the claim one run holds, and the folders a task may make while its run lasts."""

from __future__ import annotations

import posixpath
import re
import threading

from fsspec.utils import glob_translate


class OutputExists(FileExistsError):
    pass


class OutputNotWritable(PermissionError):
    """The output cannot be written where the job says: a read-only file system, a folder
    without write permission."""


def check_writable(path: str) -> None:
    """Refuse a local output whose nearest existing folder (the output's parent, where its
    temporary folder goes) cannot be written, before any work: a read-only mount ended the
    run in a 25-line traceback from ``makedirs`` once the cluster had started."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if os.access(folder, os.W_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable by this user"
    raise OutputNotWritable(f"{path}: cannot write the output there: {folder} {why} (the output and its temporary "
                            "folder go there); write it elsewhere (--output DIR, or sink.path)")


class OutputAppeared(OutputExists):
    """The output's place was taken while the run ran; its finished output is kept."""


_OWNER = "_owner.json"
_CLAIMING = threading.Lock()  # a claim's look and write, against another thread's claim between them
_CLAIMED: set[str] = set()  # the runs of this process that hold their temporary folder


class RunStopped(FileNotFoundError):
    """A task found its run's temporary folder removed: the run was stopped meanwhile."""


def _task_folder(fs, folder: str, root: str | None) -> None:
    """Make ``folder`` for a task's file, unless the run's temporary folder ``root`` is gone.

    A run that stops (cancelled, failed) removes its temporary folder while the tasks it
    started still run on the workers (Dask does not stop a running task, and a scheduler
    of one's own keeps them going): making their folder made the temporary folder again,
    and a staged file or a merge's record was left beside the output after ``dsbuild
    status --cancel``. Below ``root`` each folder is made alone, never its parents: a
    stop that removes the folder just after the look at it would have it made again."""
    if root is not None and not fs.exists(root):
        raise RunStopped(f"{root} is gone: the run this task belongs to was stopped")
    if root is None or not _is_local(fs) or not _within(folder, root):  # an object store has no folders to remove
        fs.makedirs(folder, exist_ok=True)
        return
    path = root.rstrip("/")
    for name in filter(None, folder[len(path):].split("/")):
        path = posixpath.join(path, name)
        try:
            fs.mkdir(path, create_parents=False)
        except FileExistsError:
            pass
        except FileNotFoundError:  # a folder above it is gone since the look
            raise RunStopped(f"{root} is gone: the run this task belongs to was stopped") from None


def _glob_reaches(pattern: str, out: str) -> bool:
    """Whether a glob matches a shard the output at ``out`` writes, as fsspec reads it
    (``*`` within a folder, ``**`` across them): ``data/bc*.parquet`` does not reach
    ``data/out/``, though the folder it starts from holds the output."""
    shards = [f"{out}/{kind}/part-00000.parquet" for kind in ("data", "rejects")] + [f"{out}/data/k=v/part-00000.parquet"]
    matches = re.compile(glob_translate(pattern)).match
    return any(matches(shard) for shard in shards)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
