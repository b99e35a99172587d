"""One LocalCluster with worker processes for the whole test session."""

import pytest

from dsbuild.runtime import avoid_huge_page_stalls

# Tests build large arrays in this process too; the same precaution as on the workers.
avoid_huge_page_stalls()


@pytest.fixture(scope="session")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="4GiB",
        dashboard_address=":0",
        host="127.0.0.1",
    ) as c:
        yield c


@pytest.fixture()
def client(cluster):
    """A Client on the shared cluster, set as the default scheduler for the test."""
    from distributed import Client

    from dsbuild.runtime import DsbuildWorkerSetup

    with Client(cluster) as c:
        c.register_plugin(DsbuildWorkerSetup())
        yield c


@pytest.fixture()
def tmpfs():
    """A small file system of its own at a folder (as root: CI's user and this machine's), so
    that a read-only or full disk is real: ``with tmpfs(path, "ro,size=1m"):``."""
    import contextlib
    import subprocess

    @contextlib.contextmanager
    def mounted(folder, options: str):
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)

    return mounted
