"""Run benchmarks and rewrite docs/benchmarks.md from every section on record.

``python -m benchmarks`` runs every ``bench_<name>.py`` (each ``run(quick) -> markdown``,
two sides measured in the same process, figures as ratios), each in a fresh process;
``--quick`` runs them all at small sizes as a smoke test and records nothing. A benchmark
that fails does not stop the others: the run reports it at the end and exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
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


def run_one(name: str, quick: bool, timeout: float | None = None) -> tuple[str | None, float, str | None]:
    """(markdown, seconds, error) of one benchmark, run in a fresh Python process.

    A process each, so one benchmark's clusters, memory and import tricks (a stubbed-out
    module in ``sys.modules``) cannot change the next one's figures or break it.
    """
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsbuild-bench-") as tmp:
        result = Path(tmp) / "section.md"
        error = Path(tmp) / "error.txt"
        cmd = [sys.executable, "-m", "benchmarks", name, "--child", tmp] + (["--quick"] if quick else [])
        code = _call(cmd, timeout)
        seconds = time.perf_counter() - t
        if code is None:
            return None, seconds, f"stopped after the {timeout:.0f} s time limit"
        if code == 0 and result.exists():
            return result.read_text(), seconds, None
        why = error.read_text() if error.exists() else f"exited with code {code}"
        return None, seconds, why


def _call(cmd: list[str], timeout: float | None) -> int | None:
    """Exit code, or None if the time limit ended it and every process it started."""
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        return None
    except BaseException:
        _end_group(proc)
        raise


def _end_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _child(name: str, quick: bool, folder: str) -> int:
    """Run one benchmark in this process and leave its section (or error) in ``folder``."""
    try:
        section = importlib.import_module(f"benchmarks.bench_{name}").run(quick=quick)
    except Exception:  # noqa: BLE001 - reported by the parent beside the others' figures
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        Path(folder, "error.txt").write_text(text)
        return 1
    Path(folder, "section.md").write_text(section)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures not recorded")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="end a benchmark (and its workers) that runs longer; default 900 with --quick, none otherwise")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.names[0], args.quick, args.child)
    if args.list:
        print("\n".join(available()))
        return 0
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    timeout = args.timeout if args.timeout is not None else (900.0 if args.quick else None)
    SECTIONS.mkdir(parents=True, exist_ok=True)
    stamp = f"_{datetime.date.today().isoformat()} · {machine()}_"
    results = []
    for name in names:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        section, seconds, error = run_one(name, args.quick, timeout)
        results.append((name, seconds, error))
        if error:
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
