"""What the README and docs/ tell a user to write is what dsbuild takes: the jobs they
quote load, the stages and options they name exist, the flags they show are the commands'."""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from dsbuild import load_job
from dsbuild.cli import _overrides, main
from dsbuild.io.sources import _FORMATS
from dsbuild.job import ColumnsSpec
from dsbuild.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md") if not p.name.startswith("benchmarks"))
COMMANDS = ("run", "validate", "inspect", "report", "stages", "sources", "schema", "submit", "status")


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


QUOTED_JOBS = [pytest.param(block, id=f"{page.name}#{i}") for page in PAGES
               for i, block in enumerate(_blocks(page, "yaml")) if re.search(r"^sink:", block, flags=re.M)]


def test_the_docs_quote_jobs():
    assert {p.id.split("#")[0] for p in QUOTED_JOBS} >= {"README.md", "design.md"}


@pytest.mark.parametrize("text", QUOTED_JOBS)
def test_every_job_the_docs_quote_loads(text):
    load_job(text)


def test_the_readmes_python_job_is_its_yaml_job():
    """The README says "the same job in Python": built (not run), it is."""
    (python,) = _blocks(ROOT / "README.md", "python")
    (yaml_job,) = [block for block in _blocks(ROOT / "README.md", "yaml") if "sink:" in block]
    scope = {"__name__": "readme"}  # its run waits behind `if __name__ == "__main__"`
    exec(python, scope)
    assert scope["job"] == load_job(yaml_job)


def test_no_paragraph_begins_mid_sentence():
    """Cutting the README into pages left docs/sources.md's Types section beginning
    "categoricals, each file with its own categories), ...", its first line lost."""
    cut = [(page.name, para[:60]) for page in PAGES
           for para in re.split(r"\n\s*\n", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S))
           if re.match(r"[a-z]", para) and not para.startswith("dsbuild ")]
    assert cut == []


def test_the_readmes_overrides_apply_to_the_readmes_job():
    """The README's --set example named a 'sanitize' stage its own job has not."""
    (yaml_job,) = [block for block in _blocks(ROOT / "README.md", "yaml") if "sink:" in block]
    (command,) = re.findall(r"`(dsbuild run job\.yaml --set [^`]*)`", (ROOT / "README.md").read_text())
    words = shlex.split(command)
    overrides = dict(_overrides([words[i + 1] for i, w in enumerate(words) if w == "--set"]))
    assert len(overrides) == 3 and load_job(yaml_job, overrides).seed == 3


def _named_in_backticks(text: str) -> list[str]:
    return re.findall(r"`([a-z_]+)(?::[^`]*)?`", text)


def _words_of(stage: str) -> set[str]:
    """Every name a stage's options hold, nested ones and choices too."""
    return set(re.findall(r'"([A-Za-z_]+)"', json.dumps(STAGES[stage].Options.model_json_schema())))


# Values the docs name that are no option nor choice: a type `cast` makes, formats
# `validate_images` reads beside the ones it lists, an example spelling, a word between terms.
VALUES = {"category", "jpg", "tif", "private", "and"}


def _dsbuild_words() -> set[str]:
    """Names dsbuild's code quotes (manifest keys, unit spellings, choices) and its sources'
    options: the docs may name them beside a stage's options. A renamed option is quoted
    nowhere, so the test still finds it."""
    code = "\n".join(p.read_text() for p in (ROOT / "dsbuild").rglob("*.py"))
    sources = {name for spec in _FORMATS.values() for name in spec.model_fields}
    return set(re.findall(r"""["']([a-z_]+)["']""", code)) | sources


def _own_stages() -> list[str]:
    """The stages dsbuild registers; tests register their own (die_on_row), which no docs name."""
    return [name for name, cls in STAGES.items() if cls.__module__.startswith("dsbuild.")]


def test_every_stage_and_option_stages_md_names_exists():
    """A bullet of docs/stages.md begins with a stage; each name in backticks in it is one
    of its options or their choices, another stage, or a column role."""
    text = (ROOT / "docs" / "stages.md").read_text()
    known = set(STAGES) | set(ColumnsSpec.model_fields) | VALUES | _dsbuild_words()
    section_stage, wrong = None, []
    for line in re.split(r"\n(?=- |#)|\n\n", text):
        if heading := re.match(r"#+ `([a-z_]+)`", line):
            section_stage = heading.group(1)
        if not line.startswith("- `"):
            continue
        names = _named_in_backticks(line)
        stages = [n for n in names if n in STAGES] or [section_stage]
        if names[0] not in STAGES and section_stage is None:
            wrong.append(f"{names[0]!r} begins a bullet but is no stage")
            continue
        words = set().union(*(_words_of(s) for s in stages if s in STAGES))
        wrong += [f"{stages[0]}: {n!r}" for n in names if n not in known | words]
    assert not wrong


def test_every_stage_is_in_stages_md():
    text = (ROOT / "docs" / "stages.md").read_text()
    assert [s for s in _own_stages() if f"`{s}`" not in text] == []


@pytest.mark.parametrize("name", ["digits", "adult"])
def test_the_ids_the_docs_give_a_sample_are_its_ids(name):
    """The docs said every sample's ids are name:row; adult's are adult.csv.gz:0."""
    from dsbuild.io.sources import read_source

    first = read_source({"format": "sample", "name": name}, count_rows=False).frame.partitions[0].head(1)["id"].iloc[0]
    for page in ("README.md", "docs/sources.md"):
        (row,) = re.findall(r"^\| `sample` \|.*$", (ROOT / page).read_text(), flags=re.M)
        assert f"`{first}`" in row, (page, first)


def test_every_source_format_read_from_files_has_its_section_in_sources_md():
    """docs/sources.md had a section for each format but images, whose options (labels,
    extensions, files per partition) and columns no page gave."""
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "sources.md").read_text(), flags=re.M)
    assert {"Parquet", "CSV", "JSON lines", "Images", "Frames"} <= set(headings)


def test_every_example_job_the_docs_name_exists():
    named = {m for page in PAGES for m in re.findall(r"jobs/[\w.]+\.yaml", page.read_text())}
    assert named and [j for j in sorted(named) if not (ROOT / j).exists()] == []


def _flags(command: str) -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"])
    return set(re.findall(r"--[a-z][a-z-]*", out.getvalue()))


def test_every_flag_the_docs_show_is_the_commands():
    shown = [(page.name, command, flag) for page in PAGES
             for command, rest in re.findall(rf"dsbuild ({'|'.join(COMMANDS)})\b([^`\n]*)", page.read_text())
             for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest)]
    assert shown and [s for s in shown if s[2] not in _flags(s[1])] == []
