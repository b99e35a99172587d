"""Run benchmarks and rewrite docs/benchmarks.md from every section on record.

``python -m benchmarks`` runs every ``bench_<name>.py`` (each ``run(quick) -> markdown``,
two sides measured in the same process, figures as ratios); ``--quick`` runs them all at
small sizes as a smoke test and records nothing. A benchmark that fails does not stop the
others: the run reports it at the end and exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ROOT / "docs" / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))


def machine() -> str:
    """Cores, CPU, memory and the versions every section depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(f"{name} {v}" for name, v in _versions().items())
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {versions}"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("dsbuild", "dask", "distributed", "pyarrow", "numpy", "pandas", "scikit-learn", "opencv-python-headless"):
        try:
            out[dist.replace("-python-headless", "")] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def run_one(name: str, quick: bool) -> tuple[str | None, float, str | None]:
    """(markdown, seconds, error) of one benchmark; an exception becomes the error text."""
    t = time.perf_counter()
    try:
        section = importlib.import_module(f"benchmarks.bench_{name}").run(quick=quick)
    except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
        return None, time.perf_counter() - t, traceback.format_exc()
    return section, time.perf_counter() - t, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures not recorded")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(available()))
        return 0
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    SECTIONS.mkdir(parents=True, exist_ok=True)
    stamp = f"_{datetime.date.today().isoformat()} · {machine()}_"
    results = []
    for name in names:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        section, seconds, error = run_one(name, args.quick)
        results.append((name, seconds, error))
        if error:
            print(error, file=sys.stderr, flush=True)
            continue
        print(section, flush=True)
        if not args.quick:
            (SECTIONS / f"{name}.md").write_text(f"{section.rstrip()}\n\n{stamp}\n")
    if not args.quick:
        write_document()
    print("\n== summary", flush=True)
    for name, seconds, error in results:
        status = "FAILED: " + error.strip().splitlines()[-1] if error else "ok"
        print(f"  {name:<12} {seconds:8.1f} s  {status}", flush=True)
    print(f"  {'total':<12} {sum(r[1] for r in results):8.1f} s", flush=True)
    return 1 if any(r[2] for r in results) else 0


def write_document() -> None:
    body = "\n".join(p.read_text() for p in sorted(SECTIONS.glob("*.md")))
    (ROOT / "docs" / "benchmarks.md").write_text(
        "# Benchmarks\n\nEvery figure compares two sides run in the same command "
        "(`python -m benchmarks NAME`; all of them: `python -m benchmarks`), as a ratio. "
        "Each section says when and on what machine it ran.\n\n" + body
    )


if __name__ == "__main__":
    sys.exit(main())
