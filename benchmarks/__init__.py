"""Side-by-side benchmarks. ``python -m benchmarks [--quick] [NAME ...]``.

Each ``bench_<name>.py`` has ``run(quick: bool = False) -> str`` returning a Markdown
section whose figures are ratios of two sides run in the same process.
"""


def cpu_seconds() -> float:
    """User+system seconds of this process and every live process it started (a cluster's
    scheduler, nannies and workers): unlike wall time, not inflated by a shared machine."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total
