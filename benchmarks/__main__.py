"""Run benchmarks and rewrite docs/benchmarks.md from every section on record."""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ROOT / "docs" / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))


def machine() -> str:
    import dask
    import numpy
    import pandas
    import pyarrow

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, "
        f"dask {dask.__version__}, pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, "
        f"pandas {pandas.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures not recorded")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    SECTIONS.mkdir(parents=True, exist_ok=True)
    stamp = f"_{datetime.date.today().isoformat()} · {machine()}_"
    for name in names:
        print(f"== {name}", flush=True)
        section = importlib.import_module(f"benchmarks.bench_{name}").run(quick=args.quick)
        print(section, flush=True)
        if not args.quick:
            (SECTIONS / f"{name}.md").write_text(f"{section.rstrip()}\n\n{stamp}\n")
    if not args.quick:
        body = "\n".join(p.read_text() for p in sorted(SECTIONS.glob("*.md")))
        (ROOT / "docs" / "benchmarks.md").write_text(
            "# Benchmarks\n\nEvery figure compares two sides run in the same command "
            "(`python -m benchmarks NAME`), as a ratio. Each section says when and where it ran.\n\n"
            + body
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
