"""The job file's JSON Schema, for editors: completion and checking while a job is written.

``dsbuild schema > dsbuild.schema.json`` and a first line ``# yaml-language-server:
$schema=dsbuild.schema.json`` give VS Code's and Neovim's YAML language server every option
of every stage and source, its default and its description. ``dsbuild validate`` stays the
judge: the schema cannot check what needs the data (a column that is not there) or rules
across fields, and it is as loose as the job reader where the reader accepts several forms.
"""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from dsbuild.job import JobSpec
from dsbuild.stages import STAGES

# draft 7: the newest that every YAML language server reads; nothing below needs a later one
DIALECT = "http://json-schema.org/draft-07/schema#"


def job_schema() -> dict:
    """The JSON Schema of a job file, stages written as ``- name: {options}``, ``- name`` or
    ``- {name: …, options: {…}}``, as the job reader takes them."""
    names = sorted(STAGES)
    refs, schema = models_json_schema([(JobSpec, "validation")] + [(STAGES[n].Options, "validation") for n in names],
                                      ref_template="#/$defs/{model}")
    job = schema["$defs"][refs[(JobSpec, "validation")]["$ref"].split("/")[-1]]
    options = {n: refs[(STAGES[n].Options, "validation")] for n in names}
    job["properties"]["stages"] = {
        "type": "array",
        "description": "the stages, run in order",
        "items": {"anyOf": [
            {"enum": names, "description": "a stage with its default options"},
            *({"type": "object", "title": n, "description": _first_line(STAGES[n].__doc__),
               "properties": {n: {"anyOf": [options[n], {"type": "null"}]}},
               "required": [n], "additionalProperties": False} for n in names),
            {"type": "object", "title": "name and options",
             "properties": {"name": {"enum": names}, "options": {"type": "object"}},
             "required": ["name"], "additionalProperties": False},
        ]},
    }
    return {**job, "$schema": DIALECT, "title": "dsbuild job", "$defs": schema["$defs"]}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]
