"""The command line: what a person types, what they read back."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dsbuild.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_validate_ok_and_errors(tmp_path, capsys):
    assert main(["validate", str(ROOT / "jobs" / "quickstart.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "jobs" / "quickstart.yaml").read_text().replace("validate_images", "validate_image"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "unknown stage 'validate_image'" in err and "did you mean 'validate_images'" in err


def test_the_command_leaves_its_objects_to_the_os_as_it_exits(monkeypatch, capsys):
    """Python's last garbage collection after a command took 1.5 s after inspect and
    5-7 s after the quick start: run as the program, the command freezes the collector
    as it returns; called with its arguments in a process that goes on, it does not."""
    import gc

    monkeypatch.setattr(sys, "argv", ["dsbuild", "stages", "select"])
    assert gc.get_freeze_count() == 0
    try:
        assert main() == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert main(["stages", "select"]) == 0
    assert gc.get_freeze_count() == 0


def test_a_reader_that_stops_early_ends_no_command_in_a_traceback():
    """`dsbuild --version --verbose | head -3` ended in a BrokenPipeError traceback: the
    version was printed outside the handler that `dsbuild stages | head` had."""
    for args in (["--version", "--verbose"], ["stages"]):
        proc = subprocess.Popen([sys.executable, "-m", "dsbuild.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone before the first line
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, (args, err)


def test_version_is_the_packages_and_verbose_names_the_libraries(capsys):
    """There was no ``dsbuild --version``: a bug report had to find the version in a
    manifest. Verbose, it adds what a report needs (Python, Dask, distributed, pyarrow),
    read from the packages' metadata."""
    import tomllib
    from importlib import metadata

    import dsbuild

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"dsbuild {version}\n"
    assert main(["--version", "--verbose"]) == 0
    said = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert said["dsbuild"] == f"{version} ({Path(dsbuild.__file__).parent})" and said["python"].startswith(f"{sys.version_info[0]}.")
    assert list(said)[3:6] == ["dask", "distributed", "pyarrow"]
    assert {name: said[name] for name in ("dask", "distributed", "pyarrow", "opencv-python-headless")} == {
        name: metadata.version(name) for name in ("dask", "distributed", "pyarrow", "opencv-python-headless")}


def _refused(argv: list[str], capsys) -> str:
    """What the command line says of arguments it refuses as argparse does (exit 2)."""
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError(f"{argv} ran")
    return capsys.readouterr().err


def test_a_command_or_version_is_asked_for(capsys):
    for argv, says in (([], "name a command: run, validate"), (["--verbose", "stages"], "--verbose goes with --version")):
        assert says in _refused(argv, capsys)


def test_a_mistyped_flag_is_said_with_the_commands_usage_and_the_flag_meant(capsys):
    """``--clustr`` (or Dask's ``--scheduler``) was "unrecognized arguments" under the top
    level's usage, which lists the commands: the flag meant was left to find in --help."""
    for argv, said in ((["run", "j.yaml", "--clustr", "tcp://h:1"], "(did you mean --cluster?)"),
                       (["run", "j.yaml", "--scheduler", "tcp://h:8786"], "(did you mean --cluster tcp://h:8786?)"),
                       (["submit", "j.yaml", "--scheduler-file=s.json"], "(did you mean --cluster s.json?)"),
                       (["status", "r1", "--follow"], "(did you mean --wait?)"),
                       (["inspect", "out", "--jsn"], "(did you mean --json?)")):
        err = _refused(argv, capsys)
        assert err.startswith(f"usage: dsbuild {argv[0]} ") and f"dsbuild {argv[0]}: error: unrecognized arguments: " in err, err
        assert said in err and f"dsbuild {argv[0]}'s options: --help, " in err, err


def test_the_command_line_loads_no_data_library_before_a_command_needs_one():
    """The package imported its whole API up front, so `dsbuild --help`, `inspect` and
    `status` waited (3 s at load) for Dask's dataframe, distributed and every stage. The
    API is still there, and dsbuild.job and dsbuild.submit stay the functions after their
    modules are imported."""
    probe = (
        "import sys, dsbuild.cli\n"
        "print(sorted(m for m in ('dask.dataframe', 'distributed', 'pandas', 'pyarrow', 'matplotlib', 'sklearn', 'cv2', "
        "'fairlearn') if m in sys.modules))\n"
        "import dsbuild, dsbuild.job, dsbuild.submit, dsbuild.pipeline\n"
        "print(callable(dsbuild.job), callable(dsbuild.submit), dsbuild.run is dsbuild.pipeline.run, dsbuild.stages.STAGES != {})\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.splitlines() == ["[]", "True True True True"]


def test_stages_and_sources_list_without_loading_dask():
    """``dsbuild stages`` and ``dsbuild sources`` run nothing, yet they loaded Dask (the
    stages' base imported it for the shapes, every reader for its frame), and ``sources``
    every stage family too (the readers took the reject column's name from the stages'
    base): 3.9 s for ``sources`` at load, 1.9 s without."""
    probe = (
        "import sys, io, contextlib\n"
        "from dsbuild.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    said = main([sys.argv[1]])\n"
        "print(said, sorted(m for m in ('dask', 'dask.dataframe', 'distributed', 'dsbuild.stages', 'scipy', 'cv2') "
        "if m in sys.modules))\n"
    )
    loaded = {}
    for command in ("stages", "sources"):
        done = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        loaded[command] = done.stdout.strip()
    assert loaded == {"stages": "0 ['cv2', 'dsbuild.stages', 'scipy']", "sources": "0 []"}


def test_validate_answers_without_loading_distributed(tmp_path):
    """validate starts no cluster, yet it loaded distributed (1 s at load): the pipeline
    imported the runtime for its memory figures, and every error message imported each
    module whose errors the command says in one line, dsbuild.submit's too."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "jobs" / "quickstart.yaml").read_text().replace("label: label", "label: lable"))
    probe = (
        "import sys\n"
        "from dsbuild.cli import main\n"
        "print(main(['validate', sys.argv[1]]), main(['validate', sys.argv[2]]), 'distributed' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(ROOT / "jobs" / "quickstart.yaml"), str(bad)],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.splitlines()[-1] == "0 2 False"
    assert "columns.label: 'lable' is not a column of the source" in done.stderr


def test_a_missing_column_is_said_with_the_sources_note(tmp_path, capsys):
    """PostgreSQL's COPY text export given as CSV: validate stopped at "columns.label:
    'income' is not a column of the source; columns are ['39', 'State-gov', ...]" and the
    reader's note naming dialect: postgres_text, which says why, was never shown."""
    (tmp_path / "adult.txt").write_text("39\tState-gov\t<=50K\n50\t\\N\t<=50K\n38\tPrivate\t>50K\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: csv, path: {tmp_path / 'adult.txt'}}}\ncolumns: {{label: income}}\n"
                   "stages: []\nsink: {path: out}\n")
    assert main(["validate", str(job)]) == 2
    said = capsys.readouterr().err
    assert "columns.label: 'income' is not a column of the source" in said and "set source.dialect: postgres_text" in said


def test_validate_checks_columns_against_the_source(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\nsource: {format: sample, name: adult}\ncolumns: {label: incom}\nstages: []\nsink: {path: out}\n"
    )
    assert main(["validate", str(job)]) == 2
    assert f"{job}:3: columns.label: 'incom' is not a column of the source (did you mean 'income'?)" in capsys.readouterr().err
    job.write_text(
        "name: t\nsource: {format: sample, name: adult}\nstages: [split: {}]\nsink: {path: out, partition_by: [splits]}\n"
    )
    assert main(["validate", str(job)]) == 2
    assert f"{job}:4: sink.partition_by: 'splits' is not a column of the output (did you mean 'split'?)" in capsys.readouterr().err
    job.write_text("name: t\nsource: {format: sample, name: adult}\nstages:\n  - split: {by: [famly]}\n"
                   "  - select: {where: [{column: split, op: '==', value: train}]}\n  - impute: {columns: {agee: median}}\n"
                   "sink: {path: out}\n")
    assert main(["validate", str(job)]) == 2  # every stage's problem at once; split's column still known after it
    err = capsys.readouterr().err
    assert "stages[0] split: grouping column 'famly'" in err and "stages[2] impute: column 'agee'" in err and "stages[1]" not in err
    assert f"{job}:4: stages[0] split" in err and f"{job}:6: stages[2] impute" in err  # the file's line, as for its own mistakes
    assert main(["validate", str(job), "--set", "stages[2].impute.columns={age: medain}"]) == 2
    assert "stages[2].impute.columns" in capsys.readouterr().err


def test_a_source_that_cannot_be_read_is_said_at_its_line(tmp_path, capsys):
    """A stage's annotations source named its line; the job's own source did not."""
    job = tmp_path / "job.yaml"
    job.write_text("name: t\nsource:\n  format: csv\n  path: data/adult.csv\nsink: {path: out}\n")
    assert main(["validate", str(job)]) == 2
    assert f"{job}:4: source path 'data/adult.csv' does not exist" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_refused_before_a_cluster_starts(tmp_path, capsys):
    """The run refused an existing output, or one inside its Parquet source, only after
    starting a cluster; validate did not look."""
    import pandas as pd

    (tmp_path / "src").mkdir()
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "src" / "a.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: parquet, path: {tmp_path / 'src'}}}\nstages: []\nsink: {{path: {tmp_path / 'src' / 'out'}}}\n")
    assert main(["validate", str(job)]) == 2
    assert "is inside source.path" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("x")
    assert main(["run", str(job), "--output", str(tmp_path / "out"), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "dashboard:" not in err


def test_a_read_only_output_is_refused_before_a_cluster_starts(tmp_path, capsys, tmpfs):
    """A read-only mount ended the run in a 25-line traceback from makedirs (the output's
    temporary folder), once the cluster had started; the Python API raised the bare OSError."""
    import dsbuild
    from dsbuild.io.sink import OutputNotWritable

    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: sample, name: breast_cancer}}\nstages: []\nsink: {{path: {tmp_path / 'ro' / 'out'}}}\n")
    with tmpfs(tmp_path / "ro", "ro,size=1m"):
        assert main(["run", str(job), "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'ro'} is on a read-only file system" in err and "--output DIR" in err, err
        assert "dashboard:" not in err and "Traceback" not in err
        with pytest.raises(OutputNotWritable, match="read-only file system"):
            dsbuild.run(str(job))


def test_report_into_a_read_only_output_is_one_line(client, tmp_path, capsys, tmpfs):
    """`dsbuild report` of an output on a read-only mount ended in a 20-line traceback from
    fsspec's open of report.html."""
    import dsbuild

    job = {"name": "bc", "seed": 0, "source": {"format": "sample", "name": "breast_cancer"}, "stages": [],
           "sink": {"path": str(tmp_path / "ro" / "out")}}
    with tmpfs(tmp_path / "ro", "size=20m"):
        dsbuild.run(job, client=client)
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")], check=True)
        assert main(["report", str(tmp_path / "ro" / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'ro' / 'out' / 'report.html'}: Read-only file system\n", err


def test_a_full_disk_is_one_line(tmp_path, capsys, tmpfs):
    """A disk that filled while the workers wrote said so in 111 lines: each worker's
    "Compute Failed", the driver's traceback and the closing cluster's, ending in
    "OSError: [Errno 28] No space left on device" with no path."""
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "quickstart.yaml").read_text().replace("out/quickstart", str(tmp_path / "full" / "qs")))
    with tmpfs(tmp_path / "full", "size=300k"):
        assert main(["run", str(job), "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert line.startswith(f"error: No space left on device (errno 28) while the run wrote {tmp_path / 'full' / 'qs'}"), err
    assert "free some space" in line and "Traceback" not in err, err


def test_a_failed_run_leaves_the_callers_dask_logs_as_they_were(tmp_path, capsys, tmpfs):
    """A failed run quiets Dask's loggers while its cluster closes; called in-process, it had
    left them at CRITICAL, and the test suite's later tests of distributed's warnings heard
    nothing."""
    import logging

    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "quickstart.yaml").read_text().replace("out/quickstart", str(tmp_path / "full" / "qs")))
    distributed = logging.getLogger("distributed")
    before = distributed.level
    with tmpfs(tmp_path / "full", "size=300k"):
        assert main(["run", str(job), "--workers", "1", "--quiet"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert distributed.level == before != logging.CRITICAL


def test_a_taken_dashboard_port_is_said_on_the_dashboard_line(tmp_path, capsys):
    """A second run beside another's cluster printed distributed's three lines ("Port 8787 is
    already in use. Perhaps you already have a cluster running? Hosting the HTTP server on
    port 33151 instead") above a dashboard line that named another port."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    (tmp_path / "local.yaml").write_text(f"kind: local\nworkers: 1\ndashboard: 127.0.0.1:{port}\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: sample, name: breast_cancer}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    try:
        assert main(["run", str(job), "--cluster", str(tmp_path / "local.yaml"), "--quiet"]) == 0
    finally:
        taken.close()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("dashboard: "))
    assert line.endswith(f"(port {port} is taken: another Dask cluster runs here)") and f":{port}/" not in line, err
    assert "already in use" not in err, err


def test_a_stage_that_cannot_run_on_the_source_is_said_before_a_cluster_starts(tmp_path, capsys):
    """sanitize without a label was said after the workers were up (on Slurm, after the queue)."""
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: sample, name: adult}}\nstages: [sanitize: {{}}]\nsink: {{path: {tmp_path / 'out'}}}\n")
    assert main(["run", str(job), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "stages[0] sanitize: " in err and "columns.label" in err and "dashboard:" not in err


def test_a_file_a_stage_writes_inside_the_output_is_refused(tmp_path, capsys):
    """aggregate_labels' annotators_output inside sink.path was written, then replaced with
    the rest of the folder when the run moved its output into place: lost without a word."""
    (tmp_path / "crowd.csv").write_text("item,annotator,label\nbreast_cancer:0,w1,a\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: t\nsource: {{format: sample, name: breast_cancer}}\nstages:\n"
                   f"  - aggregate_labels: {{annotations: {{format: csv, path: {tmp_path / 'crowd.csv'}}}, "
                   f"annotators_output: {tmp_path / 'out' / 'annotators.parquet'}}}\nsink: {{path: {tmp_path / 'out'}}}\n")
    for command in (["validate", str(job)], ["run", str(job), "--workers", "1"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "stages[0].aggregate_labels.annotators_output" in err and "which the run replaces when it finishes" in err
        assert "dashboard:" not in err


def test_validate_reads_the_files_a_stage_names(tmp_path, capsys):
    """aggregate_labels' annotations and decontaminate's reference: a missing file or column
    is found by validate, not by a run after its cluster has started."""
    (tmp_path / "crowd.csv").write_text("item_id,worker,answer\ndigits:0,w1,0\n")
    job = tmp_path / "job.yaml"
    crowd = "{{format: csv, path: {path}, item: {item}, annotator: worker, label: answer}}"
    for path, item, problem in (
        (tmp_path / "nope.csv", "item_id", f"annotations: source path '{tmp_path / 'nope.csv'}' does not exist"),
        (tmp_path / "crowd.csv", "item", "annotation column 'item' is not in the annotations; columns are ['item_id', 'worker', 'answer']"),
    ):
        job.write_text("name: t\nsource: {format: sample, name: digits}\nstages:\n"
                       f"  - aggregate_labels: {{annotations: {crowd.format(path=path, item=item)}}}\nsink: {{path: out}}\n")
        assert main(["validate", str(job)]) == 2
        assert problem in capsys.readouterr().err
    job.write_text("name: t\nsource: {format: sample, name: adult}\nstages:\n"
                   f"  - decontaminate: {{reference: {{format: parquet, path: {tmp_path / 'test.parquet'}}}}}\nsink: {{path: out}}\n")
    assert main(["validate", str(job)]) == 2
    assert f"reference: source path '{tmp_path / 'test.parquet'}' does not exist" in capsys.readouterr().err


def test_stages_lists_every_stage_with_options(capsys):
    from dsbuild.stages import STAGES

    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert f"\n{name}  [" in f"\n{out}"
    assert "where: list[Condition] (default [])" in out
    assert main(["stages", "reweigh"]) == 0
    assert capsys.readouterr().out.startswith("reweigh  [fit_apply]")
    assert main(["stages", "reweight"]) == 2
    assert "no stage 'reweight' (did you mean 'reweigh'?)" in capsys.readouterr().err
    # the options of the rules inside a stage's options, which no command listed
    assert main(["stages", "normalize_units"]) == 0
    assert "\n        decimal: . | , (default \".\")" in capsys.readouterr().out


def test_stages_and_sources_show_every_default_whole(capsys):
    """Defaults were cut at 40 characters: augment's transforms, split's fractions
    (``{"train": 0.8, "validation": 0.1, "te...``) and the CSV reader's null_values could
    not be read off the listing. A long one has a line of its own, as JSON a job can take."""
    from typing import get_args

    from dsbuild.io.sources import SourceSpec
    from dsbuild.stages import STAGES

    assert main(["stages"]) == 0 and main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "...)" not in out  # the cut's mark
    models = [cls.Options for cls in STAGES.values()] + list(get_args(get_args(SourceSpec)[0]))
    defaults = [f.get_default(call_default_factory=True) for m in models for f in m.model_fields.values() if not f.is_required()]
    shown = [json.loads(line.split("default: ", 1)[1]) for line in out.splitlines() if line.lstrip().startswith("default: ")]
    assert {"train": 0.8, "validation": 0.1, "test": 0.1} in shown and all(d in defaults for d in shown)
    assert "    fractions: dict[str, float] (default below) — split name" in out


def test_stages_summary_is_a_whole_sentence(capsys):
    """A summary that wraps onto a second docstring line is printed whole, not cut at the
    line's end ("... moves to its quantile of the median of")."""
    assert main(["stages", "disparate_impact_remover", "massage", "labeling_functions"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if "  [" in line and not line.startswith(" ")]
    assert len(heads) == 3
    for head in heads:
        assert head.endswith(".") and "\n" not in head, head
    assert "quantile of the median of the groups' distributions" in heads[0]


def test_stages_augment_lists_its_transforms(capsys):
    """Every transform augment knows is listed with its options, which were otherwise
    found only in the error a wrong one caused."""
    from dsbuild.kernels.images import TRANSFORMS

    assert main(["stages", "augment"]) == 0
    out = capsys.readouterr().out
    for name in TRANSFORMS:
        assert f"\n        {name}: " in out
    assert "        rotate: limit [-30, 30]," in out and "one_of: [transforms]" in out


def test_sources_lists_every_format_with_options(capsys):
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    for fmt in ("parquet", "csv", "jsonl", "images", "sample", "frame"):
        assert f"\n{fmt}" in f"\n{out}"
    assert "    text_columns: list[str] (default [])" in out and "    labels: auto | folders | none" in out


def test_option_types_read_as_a_job_writes_them(capsys):
    """A size option printed as its validator's repr (``Optional[Annotated[int,
    BeforeValidator(func=<function byte_count at 0x…>…``) and its default as 67108864; unions
    as ``Optional[…]`` and ``Union[…]``."""
    assert main(["sources"]) == 0
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    assert "    blocksize: size (default 64MiB)" in out and "    bytes_per_partition: size | None (default null)" in out
    assert "balance_to: int | max | None (default null)" in out
    for leak in ("Annotated", "BeforeValidator", "Optional[", "Union["):
        assert leak not in out


def test_python_dash_m_dsbuild_is_the_command():
    done = subprocess.run([sys.executable, "-m", "dsbuild", "stages", "aggregate_labels"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "aggregate_labels" in done.stdout


def test_inspect_reads_a_finished_output(client, tmp_path, capsys):
    import dsbuild

    dsbuild.run(ROOT / "jobs" / "quickstart.yaml", output=str(tmp_path / "out"), client=client)
    assert main(["inspect", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "validate_images" in out and "ledger: balanced" in out and "1797 in" in out
    assert main(["inspect", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["in"] == 1797
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_inspect_finds_an_output_changed_since_its_run(client, tmp_path, capsys):
    """inspect read only the manifest: an output with a shard deleted, another cut short by a
    copy and a file written into data/ afterwards was "ledger: balanced", exit 0."""
    import shutil

    import dsbuild

    out = tmp_path / "out"
    job = {"name": "bc", "seed": 0, "source": {"format": "sample", "name": "breast_cancer", "partitions": 3},
           "stages": [], "sink": {"path": str(out), "shard_rows": 200}}
    manifest = dsbuild.run(job, client=client)
    assert main(["inspect", str(out)]) == 0
    capsys.readouterr()
    first, second = (out / s["file"] for s in manifest["outputs"]["data"][:2])
    shutil.copy(first, out / "data" / "part-00099.parquet")
    (out / "data" / ".ipynb_checkpoints").mkdir()  # readers skip it: no difference
    shutil.copy(first, out / "data" / ".ipynb_checkpoints" / "part-00000.parquet")
    first.unlink()
    second.write_bytes(second.read_bytes()[:100])
    (out / "_SUCCESS").unlink()
    assert main(["inspect", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out}: no _SUCCESS" in err and f"{first}: missing" in err and f"{second}: 100 bytes, but the manifest says" in err
    assert f"{out / 'data' / 'part-00099.parquet'}: not in the manifest" in err and "ipynb" not in err


def test_inspect_and_report_read_an_output_that_is_not_local(client, tmp_path, capsys):
    """run writes through fsspec (s3://, gs://), but inspect and report read local folders
    only: an output on object storage had to be downloaded to be looked at. fsspec's
    in-memory filesystem stands in for the bucket here."""
    import fsspec

    import dsbuild

    job = {"name": "bc", "seed": 0, "source": {"format": "sample", "name": "breast_cancer", "partitions": 2},
           "stages": [], "sink": {"path": str(tmp_path / "out"), "shard_rows": 300}}
    manifest = dsbuild.run(job, client=client)
    memory = fsspec.filesystem("memory")
    memory.put(str(tmp_path / "out"), "/bucket/out", recursive=True)
    try:
        assert main(["inspect", "memory://bucket/out"]) == 0
        assert "ledger: balanced" in capsys.readouterr().out
        assert main(["report", "memory://bucket/out"]) == 0
        assert capsys.readouterr().out.strip() == "memory://bucket/out/report.html"
        assert "<html" in memory.cat_file("/bucket/out/report.html").decode()
        memory.rm(f"/bucket/out/{manifest['outputs']['data'][0]['file']}")
        assert main(["inspect", "memory://bucket/out"]) == 1
        assert f"memory://bucket/out/{manifest['outputs']['data'][0]['file']}: missing" in capsys.readouterr().err
    finally:
        memory.rm("/bucket", recursive=True)


def test_ctrl_c_stops_the_run_and_its_workers(tmp_path):
    job = tmp_path / "job.yaml"
    stages = "\n".join("  - cast: {schema: {age: float}}" for _ in range(60))
    job.write_text(f"name: t\nsource: {{format: sample, name: adult}}\nstages:\n{stages}\nsink: {{path: {tmp_path / 'out'}}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsbuild.cli", "run", str(job), "--workers", "1", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("out.tmp-*")):  # the run has its cluster and has begun
        time.sleep(0.1)
    time.sleep(1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run started no worker processes"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err  # each worker printed one
    assert "distributed." not in err, err  # the workers' cancelled tasks and failed heartbeats, logged as they closed
    assert "no checkpoint was reached" in err, err  # map stages only: none to resume from
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"worker processes outlived the run: {alive}"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_inspect_of_an_output_still_being_written_says_so(tmp_path, capsys):
    """inspect said "not a dsbuild output, or the run did not finish" alike of a folder of
    other work, an output a live run was writing, and one a killed run left to --resume."""
    import socket

    out = tmp_path / "out"
    (tmp_path / "out.tmp-a" / "_checkpoints").mkdir(parents=True)  # a killed run's, its owner released
    assert main(["inspect", str(out)]) == 2
    assert f"a run that did not finish left {tmp_path / 'out.tmp-a'}: the same 'dsbuild run' with --resume" in capsys.readouterr().err
    (tmp_path / "out.tmp-a" / "_owner.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    assert main(["inspect", str(out)]) == 2
    assert f"is writing it in {tmp_path / 'out.tmp-a'}" in capsys.readouterr().err


def test_inspect_of_a_damaged_manifest_says_so(tmp_path, capsys):
    """A manifest cut short by a copy, or a JSON file that is no manifest, ended inspect and
    report in a traceback (JSONDecodeError, "list indices must be integers")."""
    (tmp_path / "out").mkdir()
    for text, says in (('{"dsbuild": "0.1.0", "stages": [{"na', "cannot be read as a manifest (Unterminated string"),
                       ("[]", "not a manifest dsbuild wrote")):
        (tmp_path / "out" / "manifest.json").write_text(text)
        for command in ("inspect", "report"):
            assert main([command, str(tmp_path / "out")]) == 2
            assert f"error: {tmp_path / 'out' / 'manifest.json'}: {says}" in capsys.readouterr().err


def test_files_a_folder_source_leaves_out_are_said_by_validate_and_the_summary(client, tmp_path, capsys):
    """Spark's _SUCCESS and .crc checksums were left out without a word; validate said
    nothing of what it would not read, and the summary named the first file alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import dsbuild

    spark = tmp_path / "spark"
    spark.mkdir()
    for k in range(3):
        pq.write_table(pa.table({"v": [k, k + 10]}), spark / f"part-{k:05d}-c000.snappy.parquet")
        (spark / f".part-{k:05d}-c000.snappy.parquet.crc").write_bytes(b"crc\x00\x00\x00\x02\x00")
    (spark / "_SUCCESS").write_bytes(b"")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: s\nseed: 0\nsource: {{format: parquet, path: {spark}}}\nstages: []\nsink: {{path: {tmp_path / 'out'}}}\n")
    said = "4 files not read, each listed in manifest.json (input.skipped): 3 hidden (.part-00000-c000.snappy.parquet.crc, …); " \
           "1 a writer's own (_SUCCESS)"
    assert main(["validate", str(job)]) == 0
    assert f"source: {said}" in capsys.readouterr().err
    dsbuild.run(str(job), client=client)
    assert main(["inspect", str(tmp_path / "out")]) == 0
    assert said in capsys.readouterr().out.splitlines()


def test_a_source_with_no_rows_is_said_by_the_summary(client, tmp_path, capsys):
    """A CSV export holding its header alone ran to "rows: 0 in → 0 kept", "ledger:
    balanced" and exit 0, with not a word that the training set is empty."""
    import dsbuild

    (tmp_path / "export.csv").write_text("age,label\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"name: e\nseed: 0\nsource: {{format: csv, path: {tmp_path / 'export.csv'}}}\nstages: [exact_dedup: {{}}]\n"
                   f"sink: {{path: {tmp_path / 'out'}}}\n")
    dsbuild.run(str(job), client=client)
    assert main(["inspect", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"warning: the source (csv {tmp_path / 'export.csv'}) gave no rows, so the output holds none" in out, out
    dsbuild.run(str(ROOT / "jobs" / "augment_digits.yaml"), client=client, output=str(tmp_path / "full"))
    assert main(["inspect", str(tmp_path / "full")]) == 0
    assert "gave no rows" not in capsys.readouterr().out
