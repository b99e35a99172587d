"""Side-by-side benchmarks. ``python -m benchmarks [--quick] [NAME ...]``.

Each ``bench_<name>.py`` has ``run(quick: bool = False) -> str`` returning a Markdown
section whose figures are ratios of two sides run in the same process.
"""
