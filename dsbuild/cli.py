"""``dsbuild run | validate | inspect | report | stages | sources | submit | status``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import logging
import os
import re
import signal
import sys
import threading
import warnings
from glob import escape as glob_escape
from pathlib import Path

import yaml

from dsbuild.watch import DASK_LOGGERS, quiet_dask_logs


def main(argv: list[str] | None = None) -> int:
    """The ``dsbuild`` command. Run as the program (``argv`` None: the console script,
    ``python -m dsbuild``), it freezes the garbage collector once the command is done: the
    process is about to exit, and Python's last collection over everything a run loads
    (pandas, Dask, matplotlib, scikit-learn) took 1.5 s after ``inspect`` and 5-7 s after
    the quick start on a loaded machine, with nothing left to do. The objects are left to
    the operating system; ``atexit`` still runs. A caller in this process (a test, a
    notebook passing ``argv``) keeps its collector, and its Dask loggers' levels, which a
    failed or interrupted run sets to CRITICAL while its cluster closes (left so, a
    notebook heard nothing of Dask again)."""
    levels = {name: logging.getLogger(name).level for name in DASK_LOGGERS}
    try:
        return _command(argv)
    finally:
        if argv is None:
            gc.freeze()
        else:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _command(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="dsbuild", description="Build ML training sets you can trust, on Dask.")
    parser.add_argument("--version", action="store_true", help="print dsbuild's version and exit")
    parser.add_argument("--verbose", action="store_true",
                        help="with --version: also Python's, the platform's and every library dsbuild uses (for a bug report)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="run a job and write its output")
    p.add_argument("job", help="job file (YAML)")
    p.add_argument("--cluster", default="local", help="local (default), tcp://host:port, a scheduler's file (.json, from dask scheduler --scheduler-file), or a spec file from cluster/")
    p.add_argument("--workers", type=_positive, help="worker processes (local default: one per core)")
    p.add_argument("--output", help="output folder (default: the job's sink.path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of this job from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job field, e.g. --set seed=3")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("validate", help="check a job file and its source without running it")
    p.add_argument("job")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job field, as run does")

    p = sub.add_parser("inspect", help="summarise an output folder's manifest")
    p.add_argument("output")
    p.add_argument("--json", action="store_true", help="print the manifest itself")

    p = sub.add_parser("report", help="write report.html for an output folder again")
    p.add_argument("output")

    p = sub.add_parser("stages", help="list the registered stages and their options")
    p.add_argument("names", nargs="*", help="only these stages (default: all)")

    sub.add_parser("sources", help="list the source formats and their options")

    sub.add_parser("schema", help="print the job file's JSON Schema, for an editor's completion and checking")

    p = sub.add_parser("submit", help="start a job in the background and return once it is accepted")
    p.add_argument("job", help="job file (YAML)")
    p.add_argument("--cluster", default="local", help="local (default), tcp://host:port, a scheduler's file (.json, from dask scheduler --scheduler-file), or a spec file from cluster/")
    p.add_argument("--workers", type=_positive, help="worker processes")
    p.add_argument("--output", help="output folder (default: the job's sink.path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of this job from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a job field")

    p = sub.add_parser("status", help="follow submitted jobs: all of them, or one by id")
    p.add_argument("run", nargs="?", help="run id printed by submit (default: list recent runs)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 0 only if it finished")
    p.add_argument("--cancel", action="store_true", help="stop the run: its output is not written")
    p.add_argument("--json", action="store_true", help="print the status record")

    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_arguments(sub.choices.get(args.command, parser), unknown)
    if args.verbose and not args.version:
        parser.error("--verbose goes with --version: dsbuild --version --verbose")
    if args.command is None and not args.version:
        parser.error(f"name a command: {', '.join(sub.choices)} (or --version)")
    try:
        if args.version:  # in here: `dsbuild --version --verbose | head -3` is a reader that has what it wanted
            print(_version_text(args.verbose))
            return 0
        return {"run": _run, "validate": _validate, "inspect": _inspect, "report": _report, "stages": _stages,
                "sources": _sources, "schema": _schema, "submit": _submit, "status": _status}[args.command](args)
    except KeyboardInterrupt:
        from dsbuild.progress import end_line

        end_line()  # a progress bar cut short holds the line
        # Ctrl-C while the local cluster started left it half made, and distributed's exit
        # hook, closing it, printed "Exception ignored in atexit callback" and 28 lines
        # ending in "AssertionError: Status.init" under the line below.
        sys.unraisablehook = lambda unraisable: None
        quiet_dask_logs()
        print(f"interrupted: {_interrupted(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dsbuild stages | head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI's job is to say what went wrong, briefly
        said = f"error: {e}" if isinstance(e, _brief_errors()) else _unwritable(e)
        if said:
            from dsbuild.progress import end_line

            end_line()
            print(said, file=sys.stderr)
            return 2
        raise


def _interrupted(args) -> str:
    """What a Ctrl-C stopped, by command: "no output was written" had been said of every
    command, also of `status --wait`, which stops following a run that goes on."""
    if args.command == "run":
        return getattr(args, "interrupted_note", None) or "no output was written"
    if args.command == "status" and args.run and not args.cancel:
        return f"stopped following {args.run}; the run goes on in the background: 'dsbuild status {args.run} --cancel' stops it"
    if args.command == "submit":
        return "nothing was submitted (a driver that had started was stopped)"
    return f"{args.command} stopped"


# Flags other tools have, and what dsbuild calls them (ADDRESS: the value given with them).
_FLAGS_ELSEWHERE = {
    "--scheduler": "--cluster ADDRESS", "--address": "--cluster ADDRESS", "--scheduler-address": "--cluster ADDRESS",
    "--scheduler-file": "--cluster ADDRESS",
    "--nworkers": "--workers", "--n-workers": "--workers", "--force": "--overwrite",
    "--seed": "--set seed=N", "--dry-run": "dsbuild validate JOB", "--follow": "--wait", "--kill": "--cancel",
}


def _unknown_arguments(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit as argparse does, but with the command's own usage (the top level's had been
    shown, which lists the commands, not the flags) and the flag the user meant."""
    import difflib

    at = next((i for i, u in enumerate(unknown) if u.startswith("--")), None)
    flags = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    hint = ""
    if at is not None:
        flag, _, value = unknown[at].partition("=")
        value = value or (unknown[at + 1] if at + 1 < len(unknown) and not unknown[at + 1].startswith("-") else "")
        meant = _FLAGS_ELSEWHERE.get(flag) or next(iter(difflib.get_close_matches(flag, flags, n=1, cutoff=0.7)), "")
        meant = meant.replace("ADDRESS", value or "tcp://HOST:8786")
        hint = (f" (did you mean {meant}?)" if meant.startswith("--") or meant.startswith("dsbuild ") else "") + (
            f"; {parser.prog}'s options: {', '.join(flags)}")
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")


# First in ``--version --verbose``, as a bug report wants them; then the rest of what
# dsbuild's package metadata requires, and the extras that drive batch clusters.
_FIRST_LIBRARIES = ("dask", "distributed", "pyarrow", "pandas", "numpy")
_CLUSTER_LIBRARIES = ("dask-jobqueue", "dask-kubernetes")


def _version_text(verbose: bool) -> str:
    """``dsbuild 0.1.0``; verbose, also where it is imported from, Python and the platform,
    and each library's installed version, read from the packages' metadata (no library is
    imported, so it answers at once)."""
    import platform
    from importlib import metadata

    import dsbuild

    line = f"dsbuild {dsbuild.__version__}"
    if not verbose:
        return line
    try:
        required = [re.match(r"[A-Za-z0-9._-]+", r).group() for r in metadata.requires("dsbuild") or [] if "extra ==" not in r]
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        required = []
    lines = [f"{line} ({Path(dsbuild.__file__).parent})",
             f"python {platform.python_version()} ({sys.executable})", f"platform {platform.platform()}"]
    for name in dict.fromkeys([*_FIRST_LIBRARIES, *required, *_CLUSTER_LIBRARIES]):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in _CLUSTER_LIBRARIES:
                continue  # optional: only Slurm/PBS and Kubernetes clusters need them
            version = "not installed"
        lines.append(f"{name} {version}")
    return "\n".join(lines)


# The errors said in one line, by the module that defines them (or its package's).
_BRIEF_ERRORS = {
    "dsbuild.job": ("JobError",),
    "dsbuild.stages": ("StageError",),
    "dsbuild.io.sources": ("SourceError",),
    "dsbuild.io.sink": ("OutputExists", "OutputNotWritable"),
    "dsbuild.pipeline": ("LedgerError", "ResumeRefused"),
    "dsbuild.watch": ("WorkersLost", "WorkerKilled"),
    "dsbuild.clusters": ("ClusterSpecError", "MissingPackage"),
    "dsbuild.submit": ("SubmissionError",),
}


def _brief_errors() -> tuple[type, ...]:
    """The error types said in one line, of the modules this process imported: a module
    not imported raised none. Importing them all to compare made every error wait for
    Dask, distributed and every stage (``inspect`` of a wrong folder: 3 s to say it has no
    manifest; ``validate``'s mistakes ~1 s more, for distributed, than its success)."""
    loaded = (getattr(sys.modules.get(module), name, None) for module, names in _BRIEF_ERRORS.items() for name in names)
    return (FileNotFoundError, DamagedOutput, DiskError, *(kind for kind in loaded if kind is not None))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of workers, 1 or more")
    return value


def _overrides(pairs: list[str]) -> dict:
    from dsbuild.job import JobError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:  # said as the job's other mistakes are (it was a bare line, with exit status 1)
            raise JobError([f"--set {pair!r}: expected KEY=VALUE, e.g. --set seed=3 or --set 'stages[0].select.where=[]'"])
        out[key] = _value(value)
    return out


def _value(text: str):
    """A --set value as YAML (numbers, lists, mappings), else as the text it is: a lone
    ',' or '|' (a separator) is no YAML value, and '|' would read as an empty block."""
    from dsbuild.job import JobError, yaml_value

    try:
        value = yaml_value(text)
    except (yaml.YAMLError, JobError):
        return text
    if value in (None, "") and text.strip() not in ("", "null", "~", "''", '""'):
        return text
    return value


def _run(args) -> int:
    from dsbuild.clusters import check_startable, spec_from_target
    from dsbuild.pipeline import INTERRUPTED, DsbuildWarning, checked_output, run, validate_against_source
    from dsbuild.runtime import connect

    warnings.simplefilter("always", DsbuildWarning)
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"
    # Said on the dashboard's line instead: three lines of distributed's above it had named
    # a port the line below did not ("Perhaps you already have a cluster running?").
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)

    spec, sink = checked_output(args.job, output=args.output, overwrite=args.overwrite, overrides=_overrides(args.set))
    out = spec.sink.path
    print(f"dsbuild: {spec.name} → {out}", file=sys.stderr)
    cluster = spec_from_target(args.cluster)  # a mistake there said before the source is read (seconds, or minutes)
    check_startable(cluster)
    validate_against_source(spec)  # a stage's mistake said before a cluster starts (on Slurm, before the queue)
    try:
        with connect(cluster, args.workers) as client, _ctrl_c_noted(INTERRUPTED):
            print(f"dashboard: {_dashboard_line(client, cluster)}", file=sys.stderr)
            try:
                manifest = run(spec, output=out, overwrite=args.overwrite, client=client, progress=not args.quiet, resume=args.resume)
            except Exception:
                quiet_dask_logs()  # the cluster closing under a failed run logged its cut streams after the error
                raise
    except KeyboardInterrupt:
        args.interrupted_note = _checkpoint_note(sink)
        raise
    except OSError as e:
        said = disk_full(e, out)
        if said is None:
            raise
        raise DiskError(f"{said}; {_checkpoint_note(sink)}") from None
    print(summary_table(manifest))
    return 0


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskError(OSError):
    """The disk filled while the run wrote: a worker's error came back as a page of
    tracebacks (the worker's, the driver's, the closing cluster's) ending in
    "OSError: [Errno 28] No space left on device", with no path."""


def _unwritable(e: BaseException) -> str | None:
    """A file a command could not write or read (`dsbuild report` of an output on a
    read-only mount, a full disk, no permission) said as the file and the system's reason,
    in one line: it was a 20-line traceback from fsspec's open."""
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, *_DISK_FULL):
        return f"error: {e.filename or 'a file'}: {e.strerror}"
    return None


def disk_full(e: BaseException, output: str) -> str | None:
    """A full disk or quota said with the output it stopped and what to do (the error
    itself names no path); None for any other error."""
    if not isinstance(e, OSError) or e.errno not in _DISK_FULL:
        return None
    return (f"{e.strerror} (errno {e.errno}) while the run wrote {output}: its temporary folder and checkpoints are "
            "written beside it, and the workers spill to their local_directory; free some space, or write the output "
            "elsewhere (--output DIR)")


def _dashboard_line(client, cluster) -> str:
    """The dashboard's link; where a local cluster's asked-for port was taken (another
    run's, a notebook's cluster), the port it has instead says so."""
    link = client.dashboard_link
    asked = getattr(cluster, "dashboard", None) or ""
    port = asked.rpartition(":")[2]
    if getattr(cluster, "kind", None) == "local" and port.isdigit() and port != "0" and f":{port}/" not in link:
        return f"{link} (port {port} is taken: another Dask cluster runs here)"
    return link


def _checkpoint_note(sink, lead: str = "no output was written") -> str:
    """What an interrupted run left: the checkpoint ``--resume`` continues from, where it
    is, or that there is none. It had said "if the run had reached a checkpoint ..." alike
    after a Ctrl-C in the first seconds and one in the last stage."""
    try:
        found = sink.last_checkpoint()
    except Exception:  # noqa: BLE001 - the note must not hide the interrupt
        found = None
    if found is None:
        return f"{lead}, and no checkpoint was reached: a next run starts from the beginning"
    index, state = found
    before = (state.get("runs") or [{}])[-1].get("name")
    return (f"{lead}; the run's checkpoint{f' after {before!r}' if before else ''} is kept in "
            f"{sink.tmp}: the same command with --resume continues from it (remove that folder to free the disk)")


@contextlib.contextmanager
def _ctrl_c_noted(flag):
    """Ctrl-C raises KeyboardInterrupt as usual and also sets ``flag``, which stays set
    when Python swallows the exception (raised inside a garbage-collector callback).
    From then on the cluster's shutdown is quiet: tasks, connections and callbacks cut
    short printed tracebacks (a gather's closed stream, cancelled futures, a garbage
    collector callback) around the one line that says what happened."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        flag.set()
        quiet_dask_logs()
        sys.unraisablehook = lambda unraisable: None  # a callback this cuts short (Dask's GC timer) is printed as "ignored"
        raise KeyboardInterrupt

    flag.clear()
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _validate(args) -> int:
    from dsbuild.job import load_job
    from dsbuild.pipeline import validate_against_source

    spec = load_job(args.job, _overrides(args.set))
    notes = validate_against_source(spec)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"{args.job}: ok — {len(spec.stages)} stage{'' if len(spec.stages) == 1 else 's'}: {', '.join(s.name for s in spec.stages) or '(none)'}")
    return 0


def _output_folder(output: str):
    """(filesystem, path) of an output folder, local or not (``s3://bucket/out``), as the
    sink writes it: inspect and report read what ``run`` can write."""
    import fsspec

    return fsspec.core.url_to_fs(output)


def _read_manifest(output: str) -> dict:
    fs, root = _output_folder(output)
    shown = f"{output.rstrip('/')}/manifest.json"
    if not fs.isfile(f"{root}/manifest.json"):
        raise FileNotFoundError(f"{output}: no manifest.json (not a dsbuild output, or the run did not finish)"
                                + "".join(f"; {note}" for note in _unfinished_runs(fs, root)))
    try:
        manifest = json.loads(fs.cat_file(f"{root}/manifest.json"))
    except (ValueError, OSError) as e:  # cut short by a copy, or not a file: a traceback said no more
        raise DamagedOutput(f"{shown}: cannot be read as a manifest ({e})") from None
    if not isinstance(manifest, dict) or "stages" not in manifest:
        raise DamagedOutput(f"{shown}: not a manifest dsbuild wrote (it has no stages)")
    return manifest


def _hidden_from_readers(name: str) -> bool:
    """A file that pyarrow, pandas and Dask skip in a folder: one under a name starting
    with '.' or '_' (.ipynb_checkpoints, _temporary)."""
    return any(part.startswith((".", "_")) for part in name.split("/")[1:])


class DamagedOutput(Exception):
    """An output folder whose manifest cannot be read."""


def _unfinished_runs(fs, root: str) -> list[str]:
    """What the temporary folders beside a local output say of the runs writing it: one
    still running, or one that died (whose checkpoints ``--resume`` continues from). Without
    this, inspect said the same of an output being written as of a folder of other work."""
    import socket

    from dsbuild.io.sink import _OWNER, _is_local
    from dsbuild.processes import alive

    if not _is_local(fs):  # a run's process is known on this machine only
        return []
    output = Path(root)
    notes = []
    for tmp in sorted(output.parent.glob(f"{glob_escape(output.name)}.tmp-*")):
        try:
            owner = json.loads((tmp / _OWNER).read_text())
        except (OSError, ValueError):
            owner = {}
        here = owner.get("host") == socket.gethostname()
        if owner and (not here or alive(owner.get("pid"))):
            notes.append(f"a run (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}) is writing it in {tmp}")
        elif (tmp / "_checkpoints").is_dir():
            notes.append(f"a run that did not finish left {tmp}: the same 'dsbuild run' with --resume continues it")
        else:
            notes.append(f"a run that did not finish left {tmp}")
    return notes


def _inspect(args) -> int:
    manifest = _read_manifest(args.output)
    print(json.dumps(manifest, indent=2) if args.json else summary_table(manifest))
    problems = output_problems(args.output, manifest)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def output_problems(output: str, manifest: dict) -> list[str]:
    """Where the folder no longer holds what its manifest lists: a shard missing or of
    another size (deleted, cut short by a copy), a Parquet file it does not list (written
    into it afterwards: every reader of ``data/`` reads it too), no ``_SUCCESS``. The
    manifest's ledger says only what the run wrote, and inspect said "balanced" of all these."""
    fs, root = _output_folder(str(output))
    shown = str(output).rstrip("/")
    problems = [] if fs.exists(f"{root}/_SUCCESS") else [f"{shown}: no _SUCCESS (the output was not committed, or was copied in part)"]
    for kind in ("data", "rejects"):
        listed = {s["file"]: s for s in manifest.get("outputs", {}).get(kind, [])}
        found = {path[len(root) + 1:]: info for path, info in fs.find(f"{root}/{kind}", detail=True).items()}
        for name, shard in listed.items():
            info = found.get(name)
            if info is None or info.get("type") != "file":
                problems.append(f"{shown}/{name}: missing (the manifest lists it, with {shard.get('rows')} rows)")
            elif shard.get("bytes") is not None and info["size"] != shard["bytes"]:
                problems.append(f"{shown}/{name}: {info['size']} bytes, but the manifest says {shard['bytes']} (changed since the run)")
        extra = sorted(name for name in found
                       if name.endswith(".parquet") and name not in listed and not _hidden_from_readers(name))
        if extra:
            more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
            problems.append(f"{shown}/{extra[0]}{more}: not in the manifest (written since the run); readers of {kind}/ read it too")
    return problems


def _report(args) -> int:
    from dsbuild.report import render_report

    manifest = _read_manifest(args.output)
    fs, root = _output_folder(args.output)
    target = f"{root}/report.html"
    with fs.open(target, "w", encoding="utf-8") as f:
        f.write(render_report(manifest, args.output))
    print(f"{args.output.rstrip('/')}/report.html")
    return 0


def _stages(args) -> int:
    from dsbuild.stages import STAGES
    from dsbuild.stages.base import _did_you_mean

    unknown = [n for n in args.names if n not in STAGES]
    if unknown:
        print(f"error: no stage {unknown[0]!r}{_did_you_mean(unknown[0], STAGES)}; "
              f"stages are {', '.join(sorted(STAGES))}", file=sys.stderr)
        return 2
    for name in sorted(args.names or STAGES):
        cls = STAGES[name]
        print(f"{name}  [{cls.shape}]  {_first_sentence(cls.__doc__)}")
        _print_fields(cls.Options, "    ")
        if name == "augment":
            _print_transforms("    ")
    return 0


def _print_transforms(indent: str) -> None:
    """The transforms ``augment`` knows and their options: a name or an option a job
    got wrong was otherwise found only in the error it caused, one at a time."""
    import inspect

    from dsbuild.kernels.images import TRANSFORMS, _options_of

    print(f"{indent}transforms, each with its options and their defaults:")
    for name, cls in sorted(TRANSFORMS.items()):
        defaults: dict = {}
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                for q in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                    if q.default is not q.empty:
                        defaults.setdefault(q.name, q.default)
        options = ", ".join(f"{o} {json.dumps(defaults[o], default=str) if o in defaults else '(required)'}" for o in _options_of(cls))
        print(f"{indent}    {name}: {options}")
    print(f"{indent}    one_of: [transforms], p 1.0 — one of them, weighted by their p; "
          "some_of: [transforms], n 1, p 1.0 — n of them, in their order")


def _first_sentence(doc: str | None) -> str:
    """A docstring's first sentence on one line: its first line alone cut four stages'
    summaries mid-sentence ("... moves to its quantile of the median of")."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph, maxsplit=1)[0]


def _sources(args) -> int:
    """Each source format's options, as ``stages`` lists the stages'."""
    from typing import get_args

    from dsbuild.io.sources import SourceSpec

    for model in get_args(get_args(SourceSpec)[0]):
        fmt = get_args(model.model_fields["format"].annotation)[0]
        doc = model.__dict__.get("__doc__") or ""
        print(f"{fmt}  {doc.strip().splitlines()[0] if doc.strip() else ''}".rstrip())
        _print_fields(model, "    ", skip=("format",))
    return 0


def _print_fields(model, indent: str, skip=(), depth: int = 0) -> None:
    """A model's options, one a line, and the options of the rules inside them (a column's
    impute rule, a where condition) indented below: they were not listed anywhere."""
    for field_name, f in model.model_fields.items():
        if field_name in skip:
            continue
        size = _is_size(f.annotation) or any(_is_size_rule(m) for m in f.metadata)
        value = f.get_default(call_default_factory=True)
        shown = _size_text(value) if size and value else json.dumps(value, default=str)
        long = len(shown) > _INLINE_DEFAULT
        default = "required" if f.is_required() else "default below" if long else f"default {shown}"
        desc = f" — {f.description}" if f.description else ""
        print(f"{indent}{f.alias or field_name}: {'size' if size and f.annotation is int else _type_name(f.annotation)} ({default}){desc}")
        if long and not f.is_required():
            print(f"{indent}    default: {shown}")
        if depth < 2:
            for inner in _models_in(f.annotation):
                _print_fields(inner, indent + "    ", depth=depth + 1)


def _models_in(annotation) -> list:
    """The option models a field holds, through mappings, lists and unions."""
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return list(dict.fromkeys(m for a in get_args(annotation) for m in _models_in(a)))


# A default longer than this is printed whole on a line of its own under its option: cut
# at 40 characters, augment's transforms and split's fractions ended in '{"te...'.
_INLINE_DEFAULT = 40


def _is_size_rule(metadata) -> bool:
    from dsbuild.sizes import byte_count

    return getattr(metadata, "func", None) is byte_count


def _is_size(annotation) -> bool:
    """A :data:`dsbuild.sizes.Bytes` field, alone or in a union: it takes ``64MiB``, and its
    type had been printed as the validator's repr."""
    from typing import Annotated, get_args, get_origin

    if get_origin(annotation) is Annotated:
        return any(_is_size_rule(m) for m in annotation.__metadata__)
    return any(_is_size(a) for a in get_args(annotation))


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _type_name(annotation) -> str:
    """``Optional[Literal['a', 'b']]`` → ``a | b | None``; a size → ``size``; module paths dropped."""
    import types
    from typing import Annotated, Literal, Union, get_args, get_origin

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return "size" if _is_size(annotation) else _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(annotation).replace("typing.", ""))


def _schema(args) -> int:
    from dsbuild.schema import job_schema

    print(json.dumps(job_schema(), indent=1))
    return 0


def _submit(args) -> int:
    from dsbuild.submit import submit

    handle = submit(args.job, cluster=args.cluster, output=args.output, overwrite=args.overwrite,
                    workers=args.workers, overrides=_overrides(args.set), resume=args.resume)
    info = handle.info()
    print(handle.id)  # alone on stdout, for RUN=$(dsbuild submit job.yaml)
    print(f"{info['state']}: {info['job']} → {info['output']}\nfollow: dsbuild status {handle.id} --wait    "
          f"log: {handle.log_path}", file=sys.stderr)
    return 0


def _status(args) -> int:
    import time

    from dsbuild.submit import ACTIVE, Submission, list_runs

    if not args.run:
        runs = list_runs()
        for h in runs[:20]:
            print(_status_line(h))
        if not runs:
            print("no submitted runs", file=sys.stderr)
        return 0
    handle = Submission(args.run)
    if args.cancel:
        print(f"{handle.id}  {handle.cancel()}")
        _say_checkpoints_kept(handle)
        return 0
    if args.wait:
        last = None
        while handle.status() in ACTIVE:
            line = _status_line(handle)
            if line != last:
                print(line, file=sys.stderr, flush=True)
                last = line
            time.sleep(1)
    info = handle.info()
    print(json.dumps(info, indent=2) if args.json else _status_line(handle))
    if info["state"] in ("failed", "lost") and info.get("error"):
        print(f"error: {info['error']}", file=sys.stderr)
        _say_checkpoints_kept(handle)  # said on --cancel alone, where a killed or failed driver's are as useful
    if args.wait:
        return 0 if info["state"] == "finished" else 1
    return 0


def _say_checkpoints_kept(handle) -> None:
    for folder in _checkpoints_kept(handle):
        print(f"its checkpoints are kept in {folder}: 'dsbuild submit' (or 'run') of the same job with --resume "
              "continues from them; remove that folder to free the disk", file=sys.stderr)


def _checkpoints_kept(handle) -> list[Path]:
    """The temporary folders beside a cancelled run's output that hold checkpoints (the
    output as the driver saw it, from the folder it was submitted in)."""
    info = handle.info()
    try:
        cwd = json.loads((handle.folder / "request.json").read_text()).get("cwd", ".")
    except (OSError, ValueError):
        cwd = "."
    output = Path(cwd, info.get("output") or "")
    return [tmp for tmp in sorted(output.parent.glob(f"{glob_escape(output.name)}.tmp-*")) if (tmp / "_checkpoints").is_dir()]


def _status_line(handle) -> str:
    p = handle.progress()
    info = handle.info()
    done = ""
    if p["state"] == "running":  # before its first graph a run is reading its source and planning
        done = (f"pass {p['pass']}: {p['fraction']:4.0%} ({p.get('pass_done', 0)}/{p.get('pass_total', 0)} tasks)"
                if p["pass"] else "planning")
        if p.get("stages"):  # the passes' count is known only as they come; the stages' is not
            at = "writing the output" if p["stage_name"] == "writing the output" else f"stage {p['stage']}/{p['stages']} {p['stage_name']}"
            done = f"{at}, {done}"
    return f"{handle.id}  {p['state']:<9} {done}  → {info.get('output', '')}".rstrip()


def summary_table(m: dict) -> str:
    """The manifest as a person reads it in a terminal."""
    rows = [("stage", "shape", "in", "kept", "rejected", "added", "seconds")]
    for s in m["stages"]:
        secs = s.get("seconds", {})
        rows.append((s["name"], s["shape"], s["in"], s["out"], s["rejected"], s["added"], f"{secs.get('fit', 0) + secs.get('tasks', 0):.2f}"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{m['job']['name']}  ({m.get('created', '')})"]
    for i, r in enumerate(rows):
        lines.append("  ".join(str(v).rjust(w) if j >= 2 else str(v).ljust(w) for j, (v, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    t = m["totals"]
    lines.append("")
    resumed = m.get("resumed_from_stage")
    if resumed is not None and resumed + 1 < len(m["stages"]):
        lines.append(f"resumed: from the checkpoint before {m['stages'][resumed + 1]['name']!r}; the stages before it "
                     "ran in the interrupted run")
    lines.append(f"rows: {t['in']} in → {t['kept']} kept, {t['rejected']} rejected, {t['added']} added")
    reasons: dict[str, int] = {}
    for s in m["stages"]:
        for reason, n in s["rejected_by_reason"].items():
            reasons[f"{s['name']}: {reason}"] = n
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  {n:>8}  {reason}")
    if len(reasons) > 10:
        lines.append(f"  {'':>8}  … {len(reasons) - 10} more reasons (report.html has them all)")
    from dsbuild.report import highlights

    for note in highlights(m):
        lines.append(f"• {note}")
    from dsbuild.io.sources.common import skipped_note

    skipped = skipped_note(m.get("input", {}).get("skipped") or [])
    if skipped:
        lines.append(skipped)
    out = m["outputs"]
    lines.append(f"shards: {len(out['data'])} data, {len(out['rejects'])} rejects")
    ledger = m.get("ledger", {})
    lines.append("ledger: balanced" if ledger.get("balanced") else f"ledger: NOT balanced: {ledger.get('problems')}")
    for w in m.get("warnings", []):
        lines.append(f"warning: {w}")
    if not t["in"]:  # said as "rows: 0 in → 0 kept" and "ledger: balanced" alone, an empty export looked like a success
        source = m["job"].get("source", {})
        where = source.get("path") or source.get("name") or ""
        lines.append(f"warning: the source ({source.get('format', '')} {where}".rstrip() + ") gave no rows, so the "
                     "output holds none: is source.path the data you meant (a file with a header alone, an empty folder)?")
    if "timings" in m:
        lines.append(f"time: {m['timings']['total']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
