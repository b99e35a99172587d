"""The ceiling for every "2 workers ≥ 1.7× one worker" target: how much work two busy
processes get done on this machine, against one, with no Dask at all.

Two kernels stand for the stages' work: the JPEG decode + encode the augment stage spends
its time in, and the column statistics (sums of products over a float64 block) that the
sanitize and fairness passes compute. Each runs for a fixed number of rounds, first in one
process, then in two processes at once; the ratio is the combined throughput of the two
over the one. On two real cores it is ~2.0×; two hyperthreads of one core, a busy host, or
a shared memory bus bring it down, and no scheduler can beat it.
"""

from __future__ import annotations

import multiprocessing as mp
import time


def _codec(rounds: int) -> None:
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (7, 7), 2)
    for _ in range(rounds):
        cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)


def _moments(rounds: int) -> None:
    import os

    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    import numpy as np

    block = np.random.default_rng(0).standard_normal((200_000, 30))
    for _ in range(rounds):
        block.sum(axis=0)
        block.T @ block


def _timed(kernel, rounds: int, processes: int) -> float:
    """Seconds for ``processes`` spawned processes to each run ``rounds`` rounds, from the
    moment all of them are ready (imports and set-up are not timed)."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(processes + 1)
    procs = [ctx.Process(target=_after_barrier, args=(start, kernel, rounds)) for _ in range(processes)]
    for p in procs:
        p.start()
    start.wait()
    t = time.perf_counter()
    for p in procs:
        p.join()
    return time.perf_counter() - t


def _after_barrier(start, kernel, rounds: int) -> None:
    kernel(1)  # imports and first-call costs before the clock starts
    start.wait()
    kernel(rounds)


def ceilings(quick: bool = False) -> dict[str, float]:
    """Combined throughput of two processes over one, best of three, per kernel."""
    kernels = {"JPEG decode + encode, 512×512": (_codec, 60 if quick else 600),
               "column sums and X'X, 200k × 30 float64": (_moments, 3 if quick else 30)}
    out = {}
    for name, (kernel, rounds) in kernels.items():
        one = min(_timed(kernel, rounds, 1) for _ in range(3))
        two = min(_timed(kernel, rounds, 2) for _ in range(3))
        out[name] = 2 * one / two
    return out


def run(quick: bool = False) -> str:
    import psutil

    rows = "\n".join(f"| {name} | {ratio:.2f}× |" for name, ratio in ceilings(quick).items())
    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    return (
        "## machine\n\n"
        "What two busy processes get done against one, with no Dask in between: the ceiling "
        "for every \"2 workers ≥ 1.7× one worker\" target in this file. Each process runs a fixed "
        "amount of work once all are ready; ratio = 2 × (time for one) / (time for two at once), "
        f"best of 3. Load average when measured: {load}.\n\n"
        "| kernel | 2 processes / 1 |\n|---|---:|\n" + rows + "\n"
    )


if __name__ == "__main__":
    print(run(quick=True))
