from pathlib import Path

import pytest

from dsbuild import JobError, job, load_job
from dsbuild.stages.clean import Select

GOOD = """\
name: adult-clean
seed: 7
source: {format: sample, name: adult}
columns:
  label: income
  sensitive: sex
stages:
  - select: {where: [{column: age, op: ">=", value: 18}]}
  - cast: {schema: {age: float}}
sink: {path: out/adult-clean, shard_rows: 5000}
"""


def test_yaml_and_python_build_the_same_job():
    from_yaml = load_job(GOOD)
    from_python = job(
        name="adult-clean",
        seed=7,
        source={"format": "sample", "name": "adult"},
        columns={"label": "income", "sensitive": ["sex"]},
        stages=[Select(where=[{"column": "age", "op": ">=", "value": 18}]), {"cast": {"schema": {"age": "float"}}}],
        sink={"path": "out/adult-clean", "shard_rows": 5000},
    )
    assert from_yaml == from_python
    assert from_yaml.columns.roles().sensitive == ("sex",)
    assert load_job(from_yaml.to_yaml()) == from_yaml


def test_a_stage_built_in_python_names_an_unknown_option_and_the_valid_ones():
    """A typo in a constructor said only "Extra inputs are not permitted" under
    ``SelectOptions``; a job file's says the option meant and the valid ones."""
    from pydantic import ValidationError

    from dsbuild.stages.clean import Impute, Ranges

    with pytest.raises(ValidationError, match=r"for Select\n.*\n.*unknown option 'wher' \(did you mean 'where'\?\); "
                       r"valid options: columns, drop, where"):
        Select(wher=[{"column": "age", "op": ">=", "value": 18}])
    with pytest.raises(ValidationError, match=r"columns\.age\.stratgy\n.*did you mean 'strategy'"):
        Impute(columns={"age": {"stratgy": "mean"}})
    with pytest.raises(ValidationError, match="min 90.0 is above max 17.0"):  # other errors as pydantic says them
        Ranges(columns={"age": {"min": 90, "max": 17}})


def test_a_stages_signature_lists_its_options():
    """help(Impute), ``Impute?`` and completion in a notebook read the signature, which was
    ``(options=None, **settings)``: no option was named anywhere a notebook looks."""
    import inspect

    from dsbuild.stages.clean import Cast, Impute

    params = inspect.signature(Impute).parameters
    assert list(params) == ["options", "columns", "by", "max_distinct", "alpha"]
    assert params["columns"].default is inspect.Parameter.empty and params["by"].default == []
    assert params["alpha"].kind is inspect.Parameter.KEYWORD_ONLY and params["alpha"].default == 0.005
    assert "schema" in inspect.signature(Cast).parameters  # an option's name as written, not the field's


def test_a_stages_repr_is_the_call_that_builds_it():
    """``Cast(schema_=...)`` named the field, which the constructor refuses, and a frame of
    annotations showed as ``annotations={}``."""
    import pandas as pd

    from dsbuild.stages.clean import Cast
    from dsbuild.stages.label import AggregateLabels

    assert repr(Cast(schema={"age": "int"})) == "Cast(schema={'age': 'int'})"
    assert repr(eval(repr(Cast(schema={"age": "int"})))) == "Cast(schema={'age': 'int'})"
    annotations = pd.DataFrame({"item": ["a"], "annotator": ["w1"], "label": [1]})
    assert repr(AggregateLabels(annotations=annotations)) == (
        "AggregateLabels(annotations={'frame': <pandas frame: 1 rows, columns ['item', 'annotator', 'label']>})")


def test_a_stage_given_options_by_position_says_they_go_by_name():
    """``Impute("median")`` failed with "'str' object is not a mapping"."""
    from dsbuild.stages.clean import Impute

    with pytest.raises(TypeError, match=r"Impute\(\) takes its options by name, e.g. Impute\(columns=...\)"):
        Impute("median")


def test_repeated_stages_get_unique_names():
    spec = load_job(GOOD.replace("  - cast: {schema: {age: float}}", "  - cast: {schema: {age: float}}\n  - cast: {schema: {age: int}}"))
    assert [s.ctx.name for s in spec.build_stages()] == ["select", "cast", "cast#2"]


def errors_of(text: str, tmp_path) -> list[str]:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(JobError) as e:
        load_job(path)
    return e.value.problems


def test_an_empty_output_path_is_refused_at_its_line(tmp_path):
    """``path: ""`` validated and made the current folder the output."""
    (problem,) = errors_of(GOOD.replace("path: out/adult-clean", 'path: ""'), tmp_path)
    assert ":10: sink.path: String should have at least 1 character (got '')" in problem


def test_one_partition_column_may_be_named_alone():
    """``partition_by: split`` was "Input should be a valid list", where columns.sensitive
    takes one column so."""
    assert load_job(GOOD.replace("shard_rows: 5000}", "partition_by: split}")).sink.partition_by == ["split"]


def test_sizes_are_bytes_or_text_as_in_cluster_specs(tmp_path):
    """shard_bytes: 1GiB was "Input should be a valid integer", while memory_limit: 4GiB worked."""
    text = GOOD.replace("shard_rows: 5000}", "shard_bytes: 1GiB}").replace(
        "{format: sample, name: adult}", "{format: csv, path: x.csv, blocksize: 32MiB, infer_bytes: 1000}")
    path = tmp_path / "job.yaml"
    path.write_text(text)
    job = load_job(path)
    assert job.sink.shard_bytes == 2**30 and job.source.blocksize == 32 * 2**20 and job.source.infer_bytes == 1000
    (problem,) = errors_of(GOOD.replace("shard_rows: 5000}", "shard_bytes: lots}"), tmp_path)
    assert ":10: sink.shard_bytes: " in problem and "'lots' is no size; write it like 64MiB" in problem


def test_typo_in_an_option_names_file_line_field_and_suggests(tmp_path):
    (problem,) = errors_of(GOOD.replace("shard_rows", "shard_row"), tmp_path)
    assert problem.startswith(f"{tmp_path / 'job.yaml'}:10: sink.shard_row: unknown option 'shard_row'")
    assert "did you mean 'shard_rows'" in problem and "valid options: path, shard_rows" in problem


def test_unknown_stage_lists_registered_ones(tmp_path):
    (problem,) = errors_of(GOOD.replace("- cast:", "- kast:"), tmp_path)
    assert ":9: stages[1]: unknown stage 'kast'" in problem
    assert "did you mean 'cast'" in problem and "select" in problem and "validate_images" in problem
    assert "(got" not in problem  # the stage as read, {'name': 'kast', 'options': {...}}, was shown after it


def test_bad_stage_option_value_lists_choices(tmp_path):
    (problem,) = errors_of(GOOD.replace('op: ">="', 'op: "=>"'), tmp_path)
    assert ":8: stages[0].select.where[0].op:" in problem and "'>='" in problem and "(got '=>'; did you mean '>='?)" in problem


def test_a_misspelt_choice_gets_the_one_meant(tmp_path):
    """A value outside a set of choices listed them all, where a field's misspelt name got
    "did you mean": '=>' for '>=', 'digts' for 'digits'. A value near none gets no guess."""
    (problem,) = errors_of(GOOD.replace("name: adult", "name: adlt"), tmp_path)
    assert "(got 'adlt'; did you mean 'adult'?)" in problem, problem
    (problem,) = errors_of(GOOD.replace('op: ">="', 'op: "between"'), tmp_path)
    assert "(got 'between')" in problem, problem


def test_nested_options_are_named_as_written_with_a_suggestion(tmp_path):
    """Inside a rule, a typo got no suggestion, and a value that fits neither form of a
    union got one error per form, in pydantic's names (``literal['median',...]``)."""
    stage = "  - impute: {columns: {age: {stratgy: median}, fnlwgt: medianx}}\n"
    problems = errors_of(GOOD.replace("  - cast: {schema: {age: float}}\n", stage), tmp_path)
    assert len(problems) == 2 and not any("literal[" in p or "function-after" in p for p in problems)
    assert any(":9: stages[1].impute.columns.age.stratgy: unknown option 'stratgy' (did you mean 'strategy'?)" in p for p in problems)
    assert any("stages[1].impute.columns.fnlwgt: Input should be 'median'" in p and "(got 'medianx'; did you mean 'median'?)" in p for p in problems)


def test_a_stage_written_with_name_and_options_is_named_as_written(tmp_path):
    """In the ``{name: ..., options: {...}}`` form a misspelt option was placed at the
    stage's line as "stages[1].impute: ..." (its path lost), and 'option' for 'options'
    was "columns: Field required"."""
    stage = "  - name: impute\n    options:\n      columns: {age: medain}\n"
    (problem,) = errors_of(GOOD.replace("  - cast: {schema: {age: float}}\n", stage), tmp_path)
    assert ":11: stages[1].options.columns.age: Input should be 'median'" in problem
    (problem,) = errors_of(GOOD.replace("  - cast: {schema: {age: float}}\n", stage.replace("options:", "option:")), tmp_path)
    assert ":10: stages[1].option: unknown key 'option' (did you mean 'options'?)" in problem


def test_two_stages_under_one_dash_are_named(tmp_path):
    (problem,) = errors_of(GOOD.replace("  - cast:", "    cast:"), tmp_path)
    assert ":8: stages[0]: 'select' and 'cast' are under one '-'; give each stage its own list item" in problem


def test_options_at_the_stage_names_indent_are_said_to_belong_under_it(tmp_path):
    """YAML reads options written at the indent of their stage's name as keys of the list
    item beside it: this said "stages[1].name: Field required" and that 'cast' and 'schema'
    were unknown options."""
    (problem,) = errors_of(GOOD.replace("  - cast: {schema: {age: float}}", "  - cast:\n    schema: {age: float}"), tmp_path)
    assert problem.endswith(":10: stages[1].cast: 'schema' is beside 'cast', not under it: indent the options "
                            "further than the stage's name")


def test_a_bare_null_where_the_choice_null_is_meant_says_to_quote_it(tmp_path):
    """docs/stages.md warns that ``action: null`` is YAML's no value, not the choice
    'null'; the message said "Input should be 'reject', 'clip' or 'null' (got None)"."""
    stage = "  - ranges: {columns: {age: {min: 0, action: null}}}"
    (problem,) = errors_of(GOOD.replace("  - cast: {schema: {age: float}}", stage), tmp_path)
    assert ":9: stages[1].ranges.columns.age.action: Input should be 'reject', 'clip' or 'null'" in problem
    assert problem.endswith('(got no value: a bare null is YAML\'s no value; quote the choice, "null")')


def test_stages_written_as_a_mapping_say_each_is_a_list_item(tmp_path):
    (problem,) = errors_of(GOOD.replace("  - select:", "  select:").replace("  - cast:", "  cast:"), tmp_path)
    assert ":7: stages: should be a list, each stage an item of its own (- name: {options}) (got {'select'" in problem


def test_several_problems_are_reported_together(tmp_path):
    text = GOOD.replace("format: sample", "format: sampel").replace("seed: 7", "seed: seven")
    problems = errors_of(text, tmp_path)
    assert len(problems) == 2
    assert any(":2: seed:" in p for p in problems)
    assert any(":3: source:" in p and "unknown format 'sampel'" in p for p in problems)


@pytest.mark.parametrize("seed", [-3, 2**32])
def test_a_seed_numpy_and_scikit_learn_cannot_take_is_refused_at_its_line(tmp_path, seed):
    """Seeds go to numpy's generators (LSH bands, MinHash) and to scikit-learn's
    random_state, which take 0 .. 2**32 - 1: a negative seed validated, then crashed
    near_dedup_text's run with numpy's 'expected non-negative integer'."""
    (problem,) = errors_of(GOOD.replace("seed: 7", f"seed: {seed}"), tmp_path)
    assert ":2: seed: Input should be" in problem


def test_duplicate_keys_and_broken_yaml(tmp_path):
    (problem,) = errors_of(GOOD.replace("seed: 7", "seed: 7\nseed: 8"), tmp_path)
    assert ":3: seed: duplicate key" in problem
    (problem,) = errors_of(GOOD.replace("columns:", "columns: [", 1), tmp_path)
    assert "not valid YAML" in problem


def test_a_tab_says_yaml_indents_with_spaces(tmp_path):
    (problem,) = errors_of(GOOD.replace("  label: income", "\tlabel: income"), tmp_path)
    assert ":5: not valid YAML: a tab, where YAML takes spaces only: indent with spaces" in problem


@pytest.mark.parametrize("mistake, said", [
    (("sink: {path: out/adult-clean, shard_rows: 5000}", "sink: out/adult-clean"),
     ":10: sink: should be a mapping (options: path, shard_rows, shard_bytes"),
    (("  label: income\n  sensitive: sex\n", "  - income\n"), ":4: columns: should be a mapping (options: id, label, sensitive"),
    (("source: {format: sample, name: adult}", "source: adult"), ":3: source: should be a mapping (format: 'parquet', 'csv'"),
    (("format: sample, ", ""), ":3: source: no 'format' given; formats: 'parquet', 'csv', 'jsonl'"),
    (("{schema: {age: float}}", "{schema: [age, float]}"), ":9: stages[1].cast.schema: should be a mapping (key: value)"),
])
def test_a_value_that_should_be_a_mapping_says_what_the_mapping_holds(tmp_path, mistake, said):
    """pydantic said "a valid dictionary or instance of SinkSpec", a class no job file
    names, and "Unable to extract tag using discriminator 'format'" for a source without one."""
    (problem,) = errors_of(GOOD.replace(*mistake), tmp_path)
    assert said in problem and "SinkSpec" not in problem and "ColumnsSpec" not in problem


def test_a_name_or_a_codec_out_of_the_choices_says_the_choices(tmp_path):
    (problem,) = errors_of(GOOD.replace("name: adult-clean", "name: adult clean"), tmp_path)
    assert ":1: name: a name of letters, digits, '_', '.' and '-' only" in problem and "^[" not in problem
    (problem,) = errors_of(GOOD.replace("shard_rows: 5000", "compression: zstandard"), tmp_path)
    assert ":10: sink.compression: Input should be 'zstd', 'snappy', 'gzip', 'lz4', 'brotli' or 'none'" in problem


def test_anchors_and_merge_keys_read_as_yaml_reads_them(tmp_path):
    """``<<: *anchor`` was a ConstructorError traceback; keys written beside it win, and a
    mistake in a merged option is named at the anchor's line."""
    import yaml

    text = GOOD.replace("  - select: {where: [{column: age, op: \">=\", value: 18}]}\n", (
        "  - select: &adults {where: [{column: age, op: \">=\", value: 18}]}\n"
        "  - select:\n      <<: *adults\n      where: []\n"
        "  - select: {<<: [*adults, {where: [{column: age, op: \"<\", value: 99}]}]}\n"))
    spec = load_job(text)
    loaded = yaml.safe_load(text)["stages"]
    # stages[2]'s list merge is left out: PyYAML 6.0.3 gives it the first mapping's where and
    # 6.0.4 the last's; the merge-key spec says the first wins, as asserted below
    assert [s for i, s in enumerate(spec.resolved()["stages"]) if i != 2] == [s for i, s in enumerate(loaded) if i != 2]
    assert [s.options["where"] for s in spec.stages[:3]] == [[{"column": "age", "op": ">=", "value": 18}], [],
                                                             [{"column": "age", "op": ">=", "value": 18}]]
    first, third = errors_of(text.replace('op: ">="', 'op: "=>"'), tmp_path)
    assert first.startswith(f"{tmp_path / 'job.yaml'}:8: stages[0].select.where[0].op:")
    assert third.startswith(f"{tmp_path / 'job.yaml'}:8: stages[2].select.where[0].op:")
    (problem,) = errors_of(GOOD.replace("shard_rows: 5000}", "<<: [1]}"), tmp_path)
    assert ":10: sink: '<<' merges mappings" in problem


def test_yes_no_on_off_are_text_as_yaml_1_2_reads_them():
    """PyYAML reads YAML 1.1, where NO is false: a select of the rows whose country is not
    NO kept every row, silently, and a job named 'no' was "Input should be a valid string"."""
    text = GOOD.replace("name: adult-clean", "name: no").replace("value: 18", "value: NO")
    spec = load_job(text.replace("  - cast: {schema: {age: float}}", "  - split: {stratify: yes}"))
    assert spec.name == "no" and spec.stages[0].options["where"][0]["value"] == "NO"
    assert spec.build_stages()[1].options.stratify is True
    from dsbuild.cli import _overrides  # --set reads its values as the job file does

    overrides = _overrides(["stages.0.select.where=[{column: age, op: '!=', value: NO}]", "name=no"])
    again = load_job(text, overrides)
    assert again.name == "no" and again.stages[0].options["where"][0]["value"] == "NO"


def test_yaml_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"
    text = GOOD.replace("seed: 7", f"seed: !!python/object/apply:os.system ['touch {marker}']")
    (problem,) = errors_of(text, tmp_path)
    assert ":2: seed: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in problem
    assert not marker.exists()


def test_overrides_patch_dotted_fields():
    spec = load_job(GOOD, {"seed": 3, "sink.path": "elsewhere"})
    assert spec.seed == 3 and spec.sink.path == "elsewhere" and spec.sink.shard_rows == 5000


def test_overrides_of_a_job_built_in_python_are_applied_and_checked():
    """``dsbuild.run(job, overrides=...)`` with a JobSpec copied the overrides onto it as
    attributes: ``sink.path`` and ``stages.select.where`` changed nothing, without a word,
    and a seed of 'abc' passed."""
    built = job(name="adult-clean", source={"format": "sample", "name": "adult"},
                stages=[Select(where=[{"column": "age", "op": ">=", "value": 18}])], sink={"path": "out/a"})
    patched = load_job(built, {"seed": 3, "sink.path": "out/b", "stages.select.where": []})
    assert (patched.seed, patched.sink.path, patched.stages[0].options) == (3, "out/b", {"where": []})
    assert built.sink.path == "out/a" and built.stages[0].options["where"]  # the job itself is as it was
    with pytest.raises(JobError, match="--set seed: seed: Input should be a valid integer"):
        load_job(built, {"seed": "abc"})
    with pytest.raises(JobError, match="--set stages.sanitize.fraction: no stage 'sanitize'"):
        load_job(built, {"stages.sanitize.fraction": 0.1})
    with pytest.raises(JobError, match=r"^--set stages.select.where: stages\[0\].select.where\[0\].op: Input should be"):
        load_job(load_job(GOOD), {"stages.select.where": [{"column": "age", "op": "=>", "value": 1}]})


def test_overrides_do_not_copy_the_frames_a_job_holds():
    """A deep copy of the job, for the overrides to patch, copied a stage's frame of
    annotations whole (and such a job then raised "The truth value of a DataFrame is
    ambiguous" when compared with its own copy)."""
    import pandas as pd

    from dsbuild.stages.label import AggregateLabels

    annotations = pd.DataFrame({"item": ["a"], "annotator": ["w1"], "label": [1]})
    data = pd.DataFrame({"id": ["a"], "x": [1.0]})
    for built in ({"name": "f", "source": {"format": "frame", "frame": data}, "sink": {"path": "out"},
                   "stages": [{"aggregate_labels": {"annotations": annotations}}]},
                  job(name="f", source={"format": "frame", "frame": data}, sink={"path": "out"},
                      stages=[AggregateLabels(annotations=annotations)])):
        patched = load_job(built, {"seed": 0})
        given = patched.stages[0].options["annotations"]
        assert (given["frame"] if isinstance(given, dict) else given) is annotations
        assert patched.source.frame is data and patched == load_job(built)


def test_overrides_reach_a_stage_by_position_or_by_name():
    """``--set stages.cast.schema.age=int`` tweaks one stage from the command line."""
    spec = load_job(GOOD, {"stages.cast.schema": {"age": "int"}, "stages[0].select.where": []})
    assert spec.stages[1].options == {"schema": {"age": "int"}} and spec.stages[0].options == {"where": []}
    assert load_job(GOOD, {"stages.1.cast.on_error": "null"}).stages[1].options["on_error"] == "null"
    for dotted, problem in (("stages.5.cast.x", "the job has 2 stages"), ("stages.sanitize.fraction", "no stage 'sanitize'"),
                            ("stages.0", "name a field")):
        with pytest.raises(JobError, match=problem):
            load_job(GOOD, {dotted: 1})
    with pytest.raises(JobError, match="unknown option 'on_eror'.*did you mean 'on_error'"):
        load_job(GOOD, {"stages.cast.on_eror": "null"})


def test_overrides_reach_a_repeated_stage_by_the_name_the_run_gives_it():
    """Messages call the second ``cast`` ``cast#2``, which ``--set`` did not know."""
    two = GOOD.replace("stages:\n", "stages:\n  - cast: {schema: {fnlwgt: float}}\n")
    assert load_job(two, {"stages.cast#2.schema": {"age": "int"}}).stages[2].options == {"schema": {"age": "int"}}
    with pytest.raises(JobError, match=r"2 stages are 'cast'; name one as the run does \(stages.cast, stages.cast#2\)"):
        load_job(two, {"stages.cast.schema": {}})
    with pytest.raises(JobError, match="no stage 'cast#3'"):
        load_job(two, {"stages.cast#3.schema": {}})


def test_an_override_that_is_wrong_is_blamed_on_the_flag_not_the_file(tmp_path):
    """A bad --set value named the job file's line that the flag had replaced; a stage
    named after the wrong position made three unrelated errors."""
    path = tmp_path / "job.yaml"
    path.write_text(GOOD.replace("seed: 7", "seed: x"))
    with pytest.raises(JobError) as e:
        load_job(path, {"sink.shard_rows": -5, "stages.cast.schema": "age"})
    problems = sorted(e.value.problems)
    assert problems[0].startswith("--set sink.shard_rows: sink.shard_rows: ")
    assert problems[1].startswith("--set stages.cast.schema: stages[1].cast.schema: ")
    assert problems[2].startswith(f"{path}:2: seed: ")  # the file's own lines still count
    with pytest.raises(JobError, match=r"--set stages\[0\].cast.schema: stages\[0\] is 'select', not 'cast'"):
        load_job(GOOD, {"stages[0].cast.schema": {"age": "int"}})
    with pytest.raises(JobError, match=r"^--set stages\[0\].selct.where: stages\[0\] is 'select', not 'selct'$"):
        load_job(GOOD, {"stages[0].selct.where": []})  # not "its options are under its name, e.g. ...select.selct"


def test_an_override_by_position_without_the_stage_name_says_where_options_go():
    """``stages[0].where`` (the stage's name left out) said "stages[0].name: Field
    required" and "stages[0].select: unknown option 'select'": nothing the user wrote."""
    with pytest.raises(JobError) as e:
        load_job(GOOD, {"stages[0].where": []})
    assert e.value.problems == ["--set stages[0].where: stages[0] is 'select'; its options are under its name, "
                                "e.g. stages[0].select.where"]


def test_an_override_of_a_misspelt_stage_lists_the_jobs_stages_and_suggests():
    with pytest.raises(JobError, match=r"^--set stages.kast.schema: no stage 'kast' \(did you mean 'cast'\?\); "
                       r"the job's stages: select, cast$"):
        load_job(GOOD, {"stages.kast.schema": {}})


def test_command_line_values_that_are_no_yaml_are_text():
    from dsbuild.cli import _value

    assert [_value(v) for v in (",", "|", ";", "3", "[a, b]", "null", "x: 1")] == [",", "|", ";", 3, ["a", "b"], None, {"x": 1}]


def test_missing_job_file_is_named():
    with pytest.raises(JobError, match="no_such.yaml: no such job file"):
        load_job("no_such.yaml")


def test_a_job_named_without_its_yaml_suffix_is_a_missing_file_with_a_suggestion(tmp_path):
    """``dsbuild validate jobs/quickstart`` read the path as YAML text: "<yaml>:1: a job is a mapping"."""
    (tmp_path / "quickstart.yaml").write_text(GOOD)
    with pytest.raises(JobError, match=r"quickstart: no such job file \(did you mean .*quickstart.yaml\?\)$"):
        load_job(str(tmp_path / "quickstart"))


def test_a_job_named_with_the_other_suffix_or_a_typo_is_said_with_the_file_meant(tmp_path):
    """``jobs/quickstart.yml`` and ``jobs/quickstrat.yaml`` were "no such job file" with no
    suggestion, though the file meant was beside them."""
    (tmp_path / "quickstart.yaml").write_text(GOOD)
    for name in ("quickstart.yml", "quickstrat.yaml"):
        with pytest.raises(JobError, match=rf"{name}: no such job file \(did you mean .*/quickstart.yaml\?\)$"):
            load_job(str(tmp_path / name))
    with pytest.raises(JobError, match=r"nothing.yaml: no such job file$"):
        load_job(str(tmp_path / "nothing.yaml"))


def test_a_set_without_a_value_is_said_as_a_jobs_mistake(capsys):
    """``--set seed`` printed a bare line and exited 1, unlike every other mistake (``error:``, exit 2)."""
    from dsbuild.cli import main

    assert main(["validate", str(Path(__file__).resolve().parents[1] / "jobs" / "quickstart.yaml"), "--set", "seed"]) == 2
    assert capsys.readouterr().err.startswith("error: --set 'seed': expected KEY=VALUE, e.g. --set seed=3")


def test_a_job_file_that_is_no_utf8_text_or_a_folder_is_named(tmp_path):
    """Each was a traceback (UnicodeDecodeError, IsADirectoryError) from dsbuild validate."""
    (tmp_path / "job.yaml").write_bytes(GOOD.replace("adult-clean", "café").encode("latin-1"))
    with pytest.raises(JobError, match=r"job.yaml:1: not UTF-8 text \(byte 0xe9\); save the job file as UTF-8$"):
        load_job(tmp_path / "job.yaml")
    (tmp_path / "jobs.yaml").mkdir()
    with pytest.raises(JobError, match=r"jobs.yaml: a folder, not a job file"):
        load_job(tmp_path / "jobs.yaml")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())  # as Windows' Notepad saves UTF-8
    assert load_job(tmp_path / "bom.yaml").name == "adult-clean"


def test_a_misspelt_column_lists_the_datas_columns_not_the_stages_marks():
    """After a stage whose own check failed (split's misspelt group), validate listed the
    marks stages pass on among the columns a later stage could name."""
    from dsbuild.pipeline import validate_against_source
    from dsbuild.stages import StageError

    stages = "  - split: {by: [relationshp]}\n  - reweigh: {where: [{column: splt, op: ==, value: train}]}\n"
    with pytest.raises(StageError) as e:
        validate_against_source(load_job(GOOD.replace("  - cast: {schema: {age: float}}\n", stages)))
    (split, reweigh) = str(e.value).splitlines()
    assert "where column 'splt' is not in the data" in reweigh and "'income', 'split'] (did you mean 'split'?)" in reweigh
    assert "_reason" not in reweigh and "_m_split" not in reweigh


def test_bins_must_name_a_sensitive_column_and_increase(tmp_path):
    text = GOOD.replace("  sensitive: sex", "  sensitive: sex\n  bins: {age: [25]}")
    (problem,) = errors_of(text, tmp_path)
    assert ":7: columns.bins: bins name 'age'" in problem and "not a sensitive column" in problem
    text = GOOD.replace("  sensitive: sex", "  sensitive: [age]\n  bins: {age: [40, 25]}")
    (problem,) = errors_of(text, tmp_path)
    assert "increasing" in problem


@pytest.mark.parametrize("reference, named", [
    ("{format: jsonl, path: test.jsonl, pth: x}", "reference: unknown option 'pth' (did you mean 'path'?)"),
    ("{format: csv, path: test.csv, blocksize: -1}", "reference.blocksize: Input should be greater than 0"),
    ("{format: jsnl, path: test.jsonl}", "reference.format:"),
])
def test_a_mistake_in_decontaminates_reference_is_named_like_the_sources(tmp_path, reference, named):
    """The reference was checked only when it was read: validate and run ended in
    pydantic's traceback (a ValidationError for tagged-union[ParquetSource, ...])."""
    text = GOOD.replace("  - cast: {schema: {age: float}}", f"  - decontaminate: {{reference: {reference}}}")
    (problem,) = errors_of(text, tmp_path)
    assert ":9: stages[1].decontaminate: " + named in problem


def test_a_mistake_in_the_annotations_source_is_named_like_the_sources(tmp_path):
    """As decontaminate's reference: a misspelt option was a traceback when it was read."""
    text = GOOD.replace("  - cast: {schema: {age: float}}", "  - aggregate_labels: {annotations: {format: csv, path: a.csv, pth: x}}")
    (problem,) = errors_of(text, tmp_path)
    assert ":9: stages[1].aggregate_labels.annotations: unknown option 'pth' (did you mean 'path'?)" in problem
    text = GOOD.replace("  - cast: {schema: {age: float}}", "  - aggregate_labels: {annotations: {format: label_studio, path: a.json}}")
    (tmp_path / "job.yaml").write_text(text)
    load_job(tmp_path / "job.yaml")  # an export's own format is read by its own reader


def test_partition_by_a_column_readers_would_skip_is_refused(tmp_path):
    """partition_by: [_fold] wrote data/_fold=0/…, folders pyarrow, pandas and Dask skip:
    the output read as 0 rows, its manifest saying 100."""
    (problem,) = errors_of(GOOD.replace("shard_rows: 5000", "shard_rows: 5000, partition_by: [_fold]"), tmp_path)
    assert ":10: sink.partition_by: " in problem and "'_fold' starts with '_': readers skip folders named so" in problem
    (problem,) = errors_of(GOOD.replace("shard_rows: 5000", "shard_rows: 5000, partition_by: [a/b]"), tmp_path)
    assert "'a/b' holds /, which cuts its folders' names" in problem
    (tmp_path / "job.yaml").write_text(GOOD.replace("shard_rows: 5000", "shard_rows: 5000, partition_by: [fold_]"))
    assert load_job(tmp_path / "job.yaml").sink.partition_by == ["fold_"]


def test_a_job_shows_the_frames_it_holds_by_their_shape():
    """A notebook cell ending in ``job`` printed every row of the frames the job reads."""
    import dask.dataframe as dd
    import pandas as pd

    from dsbuild.stages.label import AggregateLabels

    frame = pd.DataFrame({"id": [f"r{i}" for i in range(500)], "y": ["a"] * 500})
    annotations = pd.DataFrame({"item": ["r1"] * 30, "annotator": ["w1"] * 30, "label": ["a"] * 30})
    built = job(name="f", source={"format": "frame", "frame": frame}, sink={"path": "out/f"},
                stages=[AggregateLabels(annotations=annotations)])
    assert "frame=<pandas frame: 500 rows, columns ['id', 'y']>" in repr(built)
    assert "'frame': <pandas frame: 30 rows, columns ['item', 'annotator', 'label']>" in repr(built)
    assert "r499" not in repr(built) and "w1" not in repr(built)
    lazy = job(name="f", source={"format": "frame", "frame": dd.from_pandas(frame, npartitions=3)}, sink={"path": "out/f"})
    assert "frame=<dask frame: 3 partitions, columns ['id', 'y']>" in repr(lazy)
