"""The job file's JSON Schema (``dsbuild schema``): it must take every job the job reader
takes, in each form the reader accepts, and flag the mistakes an editor should underline."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from dsbuild.cli import main
from dsbuild.job import load_job
from dsbuild.schema import job_schema

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def validator():
    schema = job_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator, job: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)]


@pytest.mark.parametrize("path", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_job_fits_the_schema(validator, path):
    assert errors(validator, yaml.safe_load(path.read_text())) == []


FORMS = """
name: forms
source: {format: csv, path: a.csv, blocksize: 32MiB}
columns: {label: income, sensitive: sex, features: age}
stages:
  - exact_dedup
  - near_dedup_text:
  - impute: {columns: {age: median, hours: {strategy: constant, value: 3}}}
  - {name: ranges, options: {columns: {age: {min: 0}}}}
  - reweigh: {favorable: ">50K"}
sink: {path: out, shard_bytes: 1GiB}
"""


def test_the_forms_the_reader_takes_fit_the_schema(validator, tmp_path):
    """A size as text, one column for a list of them, a stage with no options, with null
    options, and as {name, options}: the reader takes each, so an editor must not flag it."""
    (tmp_path / "job.yaml").write_text(FORMS)
    load_job(tmp_path / "job.yaml")
    assert errors(validator, yaml.safe_load(FORMS)) == []


@pytest.mark.parametrize("mistake, where", [
    (("reweigh: {favorable", "reweigh: {favourable"), "stages.4"),
    (("- exact_dedup\n", "- exact_dedupe\n"), "stages.0"),
    (("shard_bytes", "shard_byte"), "sink"),
    (("format: csv", "format: xlsx"), "source"),
    (("blocksize: 32MiB", "blocksize: lots"), "source"),
])
def test_mistakes_are_flagged_where_they_are(validator, mistake, where):
    found = errors(validator, yaml.safe_load(FORMS.replace(*mistake)))
    assert found and all(e.startswith(f"{where}:") for e in found), found


def test_dsbuild_schema_prints_it(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["$schema"].endswith("draft-07/schema#") and printed["title"] == "dsbuild job"
    assert {"name", "source", "stages", "sink"} <= set(printed["properties"])
