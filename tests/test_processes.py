import os
import subprocess
import sys
import time

from dsbuild.processes import alive


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0]


def test_a_running_process_is_alive_and_an_unreaped_one_is_not():
    """A submitted driver killed from the process that started it stays a zombie until
    reaped; its claim on the output's folder refused the resubmission."""
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(running.pid) and alive(os.getpid())
        running.kill()
        deadline = time.monotonic() + 10
        while _state(running.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(running.pid) == "Z"  # exited, not reaped: os.kill(pid, 0) still succeeds
        assert not alive(running.pid)
    finally:
        running.kill()
        running.wait()
    assert not alive(running.pid) and not alive(None) and not alive("x") and not alive(0)
