"""The job: one source, ordered stages, one sink, a seed — from YAML or from Python.

Both routes produce the same validated :class:`JobSpec`. A bad job file fails before
anything runs, with every problem named by file, line and field, the valid choices
listed and a close match suggested. YAML is read with the safe loader only: a job file
is data and cannot import or run code.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from dsbuild.io.sources import SourceSpec
from dsbuild.sizes import Bytes
from dsbuild.stages import STAGES, Roles, Stage, StageContext, stage_class
from dsbuild.stages.fairness import increasing_bins


class JobError(ValueError):
    """A job that cannot run as written; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsSpec(_Spec):
    """Column roles, named once; stages read roles, not column names."""

    id: str | None = Field(None, description="column holding a stable record id; else file:row")
    label: str | None = None
    sensitive: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list, description="default: every numeric column")
    image: str | None = None
    weight: str = "weight"
    text: str | None = None
    bins: dict[str, list[float]] = Field(
        default_factory=dict,
        description="cut points of numeric sensitive columns, for every fairness stage: {age: [25]} gives "
        "the groups <25 and >=25 (a stage's own bins replace a column's)",
    )

    @field_validator("sensitive", "features", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("bins")
    @classmethod
    def _bins_of_sensitive(cls, bins, info):
        sensitive = info.data.get("sensitive") or []
        for c in bins:
            if c not in sensitive:
                hint = difflib.get_close_matches(c, sensitive, n=1)
                raise ValueError(f"bins name {c!r}, which is not a sensitive column {sensitive}"
                                 + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return increasing_bins(bins)

    def roles(self) -> Roles:
        return Roles(
            id=self.id,
            label=self.label,
            sensitive=tuple(self.sensitive),
            features=tuple(self.features),
            image=self.image,
            weight=self.weight,
            text=self.text,
            bins=tuple((c, tuple(edges)) for c, edges in self.bins.items()),
        )


class SinkSpec(_Spec):
    path: str = Field(..., min_length=1, description="the output folder")
    shard_rows: int = Field(100_000, gt=0, description="most rows in one shard")
    shard_bytes: Bytes = Field(256 * 2**20, gt=0, description="most uncompressed bytes in one shard")
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = Field(
        "zstd",
        description="Parquet codec; binary columns of encoded images (PNG, JPEG, WebP, GIF) are stored as they are",
    )
    partition_by: list[str] = Field(
        default_factory=list, description="columns whose values make folders of the data, as Hive and Spark write them "
        "(data/split=train/part-00000.parquet); the column lives in the folder name, not in the files")
    checkpoints: Literal["disk", "memory"] = Field(
        "disk",
        description="where the rows kept before a multi-pass stage wait: disk (the output's temporary "
        "folder; --resume restarts there) or memory (the workers', spilled to their local disk when short; "
        "faster, not resumable)",
    )

    @field_validator("partition_by", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _one_or_many(cls, v):
        """One column as its name, as columns.sensitive takes it: ``partition_by: split``."""
        return [v] if isinstance(v, str) else v

    @field_validator("partition_by")
    @classmethod
    def _folder_names(cls, columns: list[str]) -> list[str]:
        """A column's name begins its folders' names (``_fold=0/``): pyarrow, pandas, Dask and
        Spark skip folders named from '_' or '.', so such an output read as 0 rows, and '/' or
        '=' in the name cut the folder into parts no reader parses back."""
        for c in columns:
            if c.startswith(("_", ".")):
                raise ValueError(f"{c!r} starts with {c[0]!r}: readers skip folders named so ({c}=…/), and the data would "
                                 "read as empty; partition by a column named otherwise")
            if "/" in c or "=" in c:
                raise ValueError(f"{c!r} holds {'/' if '/' in c else '='}, which cuts its folders' names ({c}=…/) into "
                                 "parts readers cannot parse back; partition by a column named otherwise")
        return columns


class StageSpec(_Spec):
    """One entry of ``stages``: a registered stage name and its own options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_and_valid(self):
        cls = stage_class(self.name)  # raises with the registered names
        cls.Options(**self.options)
        return self

    def build(self) -> Stage:
        return stage_class(self.name)(self.options)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, shown(value)


class JobSpec(_Spec):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+$")
    # numpy's generators (LSH bands, MinHash) and scikit-learn's random_state take no other
    seed: int = Field(0, ge=0, lt=2**32, description="0 .. 2**32 - 1, as numpy and scikit-learn take")
    source: SourceSpec
    columns: ColumnsSpec = Field(default_factory=ColumnsSpec)
    stages: list[StageSpec] = Field(default_factory=list)
    sink: SinkSpec
    description: str | None = None
    _where: str = PrivateAttr("")  # the job file, and the line of each of its fields, for messages
    _lines: dict = PrivateAttr(default_factory=dict)

    def __eq__(self, other) -> bool:
        """Jobs that say the same are equal, from whichever file and lines they were read."""
        if not isinstance(other, JobSpec):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def place(self, *path) -> str:
        """``job.yaml:12: `` where the job file says ``path`` (``--set …: `` where a flag
        replaced it); empty for a job built in Python. A stage's error found against the
        source (validate, run) named no line, unlike the job file's own mistakes."""
        line = _line_of(path, self._lines) if self._lines else None
        return f"{_place(self._where, line)}: " if line else ""

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_entries(cls, entries):
        """Accept ``- name: {options}``, ``- name`` and Stage objects built in Python."""
        if not isinstance(entries, list):
            return entries
        out = []
        for entry in entries:
            if isinstance(entry, Stage):
                out.append({"name": entry.name, "options": _options_of(entry.options)})
            elif isinstance(entry, str):
                out.append({"name": entry})
            elif isinstance(entry, dict) and len(entry) == 1 and "name" not in entry:
                (name, options), = entry.items()
                out.append({"name": name, "options": options or {}})
            else:
                out.append(entry)
        return out

    def build_stages(self, source_meta=None) -> list[Stage]:
        """Fresh stage objects bound to this job: names made unique (``impute#2``).

        With the source's schema, a job that names no features gets them fixed here:
        the source's numeric columns with no other role. Columns stages write later
        (scores, weights, confidences) never become features by accident.
        """
        stages, seen = [], {}
        roles = self.columns.roles()
        if source_meta is not None and not roles.features:
            roles = dataclasses.replace(roles, features=tuple(roles.feature_columns(source_meta)),
                                        index_columns=tuple(roles.index_columns_left_out(source_meta)))
        for spec in self.stages:
            seen[spec.name] = seen.get(spec.name, 0) + 1
            name = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            stages.append(spec.build().bind(StageContext(name, self.seed, roles)))
        return stages

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False)

    def stage_inputs(self) -> list[tuple[str, object]]:
        """(where in the job, path) of each file a stage reads besides the source (crowd
        annotations, a reference to decontaminate against), which an overwrite must not delete."""
        found = []
        for i, entry in enumerate(self.resolved()["stages"]):
            ((name, options),) = entry.items()
            found += [(f"stages[{i}].{name}.{where}", path) for where, path in _paths_in(options or {})]
        return found

    def stage_outputs(self) -> list[tuple[str, str]]:
        """(where in the job, path) of each file a stage writes beside the output
        (aggregate_labels' annotators_output)."""
        found = []
        for i, entry in enumerate(self.resolved()["stages"]):
            ((name, options),) = entry.items()
            found += [(f"stages[{i}].{name}.{key}", (options or {})[key]) for key in _FILE_OUTPUTS if (options or {}).get(key)]
        return found

    def resolved(self) -> dict:
        """The job as plain data; a frame a Python job passes to a stage (annotations) is
        named by its shape, a function (a labeling rule) by its name."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, fallback=_described)
        data["stages"] = [{s["name"]: s.get("options", {})} for s in data["stages"]]
        return data


def _options_of(options: BaseModel) -> dict:
    """A built stage's options as the job holds them, with the fields dumps leave out (a
    frame of annotations) put back: the stage is built again from them."""
    out = options.model_dump(by_alias=True, exclude_defaults=True)
    for name, field in type(options).model_fields.items():
        value = getattr(options, name)
        if isinstance(value, BaseModel):
            out[field.alias or name] = _options_of(value)
        elif field.exclude and value is not None:
            out[field.alias or name] = value
    return out


class _Described(str):
    def __repr__(self) -> str:
        return str(self)


def shown(value):
    """``value`` for a repr, each frame in it replaced by its description: the repr of a
    stage, a stage's entry or a frame source (a notebook cell's output) printed every row."""
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shown(v) for v in value)
    if hasattr(value, "shape") and hasattr(value, "columns"):
        return _Described(_described(value))
    return value


def _described(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "columns"):
        size = f"{shape[0]} rows" if isinstance(shape[0], int) else f"{value.npartitions} partitions"
        return f"<{type(value).__module__.split('.')[0]} frame: {size}, columns {list(value.columns)}>"
    if callable(value):
        return f"<function {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}>"
    raise TypeError(f"cannot describe a {type(value).__name__} in a job")


_FILE_OUTPUTS = ("annotators_output",)  # stage options naming a file the stage writes


def _paths_in(options: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in options.items():
        if key == "path" and isinstance(value, (str, list)):
            out.append((prefix + key, value))
        elif isinstance(value, dict):
            out += _paths_in(value, f"{prefix}{key}.")
    return out


def job(**fields) -> JobSpec:
    """Build a job in Python: ``job(name=..., source={...}, stages=[Reweigh()], sink={...})``."""
    return _validate(fields, "<python>", {})


def load_job(source: str | os.PathLike | dict | JobSpec, overrides: dict | None = None) -> JobSpec:
    """A JobSpec from a path, YAML text, a dict or a JobSpec; ``overrides`` patch fields as
    ``--set`` does (``seed``, ``sink.path``, ``stages.sanitize.fraction``), validated.

    A JobSpec's overrides go through its data too: ``model_copy(update=...)`` set a dotted
    key as an attribute of that name, silently, and took a seed of 'abc' unchecked."""
    if isinstance(source, JobSpec):
        if not overrides:
            return source
        data, lines, where = _options_of(source), dict(source._lines), source._where or "<python>"
        data["stages"] = [{stage.name: stage.options} for stage in source.stages]  # as written: messages name them so
    elif isinstance(source, dict):
        data, lines, where = dict(source), {}, "<dict>"
    else:
        text, where = _read_text(source)
        data, lines = _load_yaml(text, where)
    if overrides:
        data = _containers_copied(data)  # the caller's job stays as it was
        for dotted, value in overrides.items():
            path = _set_dotted(data, dotted, value)
            lines = {k: v for k, v in lines.items() if k[:len(path)] != path}  # the file's lines no longer hold it
            lines[path] = f"--set {dotted}"
    return _validate(data, where, lines)


def _containers_copied(data):
    """The job's mappings and lists copied, for overrides to patch, and the values in them
    shared: a deep copy copied every frame a stage was given (annotations), whole."""
    if isinstance(data, dict):
        return {k: _containers_copied(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_containers_copied(v) for v in data]
    return data


def _validate(data: dict, where: str, lines: dict) -> JobSpec:
    """Validate, reporting each stage's option errors under the stage's own name."""
    problems, bad_stages = _stage_problems(data, where, lines)
    try:
        spec = JobSpec(**data)
    except ValidationError as e:
        rest = [p for loc, p in zip((x["loc"] for x in e.errors()), _explain(e, where, lines, data))
                if not (len(loc) >= 2 and loc[0] == "stages" and loc[1] in bad_stages)]
        raise JobError(problems + rest) from None
    if problems:
        raise JobError(problems)
    if lines:
        spec._where, spec._lines = where, lines
    return spec


def _stage_problems(data: dict, where: str, lines: dict) -> tuple[list[str], set[int]]:
    problems, bad = [], set()
    entries = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return problems, bad
    for i, entry in enumerate(entries):
        if isinstance(entry, Stage):
            continue
        if isinstance(entry, dict) and "name" not in entry and len(entry) > 1 and all(k in STAGES for k in entry):
            bad.add(i)
            named = " and ".join(map(repr, entry))
            problems.append(f"{_place(where, _line_of(('stages', i), lines))}: stages[{i}]: {named} are under one '-'; "
                            "give each stage its own list item")
            continue
        if (beside := _options_beside_their_stage(entry)) is not None:
            bad.add(i)
            name, options = beside
            at = _place(where, _line_of(("stages", i, options[0]), lines))
            problems.append(f"{at}: stages[{i}].{name}: {' and '.join(map(repr, options))} {'is' if len(options) == 1 else 'are'} "
                            f"beside {name!r}, not under it: indent the options further than the stage's name")
            continue
        name = entry if isinstance(entry, str) else _stage_name(entry)
        if not isinstance(name, str) or name not in STAGES:
            continue
        if isinstance(entry, dict) and "name" in entry and (extra := [k for k in entry if k not in ("name", "options")]):
            bad.add(i)  # its options were checked as none: "columns: Field required" hid the misspelt key
            hint = difflib.get_close_matches(str(extra[0]), ["options"], n=1)
            problems.append(f"{_place(where, _line_of(('stages', i, extra[0]), lines))}: stages[{i}].{extra[0]}: unknown key "
                            f"{extra[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + "; a stage written with "
                            "its name takes name and options")
            continue
        options = {} if isinstance(entry, str) else (entry.get("options") if "name" in entry else entry[name]) or {}
        if not isinstance(options, dict):
            bad.add(i)
            problems.append(f"{_place(where, _line_of(('stages', i), lines))}: stages[{i}].{name}: options must be a mapping (got {options!r})")
            continue
        try:
            STAGES[name].Options(**options)
        except ValidationError as e:
            bad.add(i)
            for err in _without_rival_branches(e.errors()):
                path = _data_path(("stages", i, "options" if "name" in entry else name, *err["loc"]), data)
                at = _place(where, _line_of(path, lines))
                problems.append(f"{at}: {_dotted(path)}: {_message(err, path, data)}")
    return problems, bad


def _options_beside_their_stage(entry) -> tuple[str, list[str]] | None:
    """(stage, the keys beside it) when a list item holds a stage without options and other
    keys: options written at the stage name's indent (``- ranges:`` then ``columns:`` under
    the ``r``), which YAML reads as keys of the item, were "stages[0].name: Field required"
    and an unknown option 'ranges'."""
    if not isinstance(entry, dict) or "name" in entry or len(entry) < 2:
        return None
    stages = [k for k in entry if k in STAGES]
    if len(stages) != 1 or entry[stages[0]] is not None:
        return None
    return stages[0], [k for k in entry if k != stages[0]]


def _is_union_tag(key) -> bool:
    """pydantic's name for one member of a union in an error's place (``literal['a','b']``,
    ``function-after[check(), Rule]``): no key the user wrote."""
    return isinstance(key, str) and "[" in key and key.endswith("]")


def _without_rival_branches(errors: list[dict]) -> list[dict]:
    """A value that fits no member of a union gets an error from each member; keep those of
    the member the user meant. ``{stratgy: median}`` for a strategy or a rule said both
    "should be 'median', 'mean', ..." and "unknown option 'stratgy'": the member that got
    further into the value is meant; at a tie, a value that is no mapping meant the plain
    member, not the one with options ("should be a valid dictionary")."""
    def branch(e):  # (the place before the union's member, how far past it the error is)
        cut = next((i for i, k in enumerate(e["loc"]) if _is_union_tag(k)), None)
        return None if cut is None else (tuple(e["loc"][:cut]), len(e["loc"]) - cut - 1)

    deepest: dict[tuple, int] = {}
    for e in errors:
        if (at := branch(e)) is not None:
            deepest[at[0]] = max(deepest.get(at[0], 0), at[1])
    kept = [e for e in errors if (at := branch(e)) is None or at[1] == deepest[at[0]]]
    rivals: dict[tuple, int] = {}
    for e in kept:
        if (at := branch(e)) is not None:
            rivals[at[0]] = rivals.get(at[0], 0) + 1
    return [e for e in kept if (at := branch(e)) is None or rivals[at[0]] == 1 or e["type"] not in ("dict_type", "model_type")]


def _read_text(source) -> tuple[str, str]:
    s = str(source)
    if "\n" not in s and (s.endswith((".yaml", ".yml")) or Path(s).exists() or ":" not in s):  # no job is a line without ':'
        path = Path(s)
        if not path.exists():
            raise JobError([f"{s}: no such job file" + (f" (did you mean {near}?)" if (near := _yaml_file_near(path)) else "")])
        if path.is_dir():
            raise JobError([f"{s}: a folder, not a job file; name a YAML file in it"])
        return _utf8(path.read_bytes(), s), s
    return s, "<yaml>"


def _yaml_file_near(path: Path) -> str | None:
    """The job file (or cluster spec) a missing path most likely meant: with its suffix (``jobs/quickstart``),
    the other suffix (``.yml`` for ``.yaml``), or a close name in the same folder
    (``jobs/quickstrat.yaml``); the last two were said with no suggestion."""
    s = str(path)
    stem = s.removesuffix(path.suffix) if path.suffix in (".yaml", ".yml") else s
    for candidate in (f"{stem}.yaml", f"{stem}.yml"):
        if Path(candidate).is_file():
            return candidate
    names = [f.name for f in path.parent.glob("*.y*ml") if f.is_file()] if path.parent.is_dir() else []
    near = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)
    return str(path.parent / near[0]) if near else None


def _utf8(data: bytes, where: str, what: str = "job file") -> str:
    """A job file's (or cluster spec's) text; one that is not UTF-8 (saved as Latin-1, or
    no text at all) is named with the line of its first bad byte, where it was a
    UnicodeDecodeError traceback."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise JobError([f"{where}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save the {what} as UTF-8"]) from None


def _set_dotted(data: dict, dotted: str, value) -> tuple:
    """``sink.path``, and into the stages by position or by name: ``stages.0.cast.schema``,
    ``stages[0].cast.schema``, or ``stages.sanitize.fraction`` when one stage has that name.
    Returns where the value went, as error messages name places in the job."""
    *path, last = dotted.replace("[", ".").replace("]", "").split(".")
    node, at = data, []
    for i, k in enumerate(path):
        if isinstance(node, list):
            node = _stage_by(node, k, dotted)
            index, name = _stage_at(data["stages"], k)
            at += [index] if k.isdigit() else [index, name]
            following = path[i + 1] if i + 1 < len(path) else last
            if k.isdigit() and following != name and (following in STAGES or difflib.get_close_matches(following, [name])):
                raise JobError([f"--set {dotted}: stages[{index}] is {name!r}, not {following!r}"])
            if k.isdigit() and following != name and "name" not in node:
                raise JobError([f"--set {dotted}: stages[{index}] is {name!r}; its options are under its name, "
                                f"e.g. stages[{index}].{name}.{following}"])
            continue
        at.append(k)
        if isinstance(node, dict):
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
        else:
            raise JobError([f"--set {dotted}: {k!r} is inside a value that has no fields"])
    if not isinstance(node, dict):
        raise JobError([f"--set {dotted}: name a field, e.g. stages.0.cast.schema or stages.sanitize.fraction"])
    node[last] = value
    return (*at, last)


def _stage_names(stages: list) -> tuple[list[str], list[str]]:
    """Each entry's stage name, and the name the run gives it (``ranges#2`` for the second
    ``ranges``, as messages call it)."""
    names = [e if isinstance(e, str) else _stage_name(e) for e in stages]
    return names, [n if names[:i].count(n) == 0 else f"{n}#{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def _stage_at(stages: list, key: str) -> tuple[int, str]:
    """(position, name) of the stage ``key`` names (``_stage_by`` has checked it exists)."""
    names, unique = _stage_names(stages)
    index = int(key) if key.isdigit() else unique.index(key)
    return index, names[index]


def _no_stage(key: str, names: list[str]) -> str:
    """A --set naming a stage the job does not have: the job's stages, and a close one."""
    hint = difflib.get_close_matches(key, names, n=1)
    return (f"no stage {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; the job's stages: {', '.join(names) or '(none)'}")


def _stage_by(stages: list, key: str, dotted: str) -> dict:
    """A stage's entry by position (``0``), or its options by its name (``sanitize``, or
    ``ranges#2`` for the second of two)."""
    if key.isdigit():
        if int(key) >= len(stages):
            raise JobError([f"--set {dotted}: the job has {len(stages)} stages"])
        at = int(key)
    else:
        names, unique = _stage_names(stages)
        found = [i for i, n in enumerate(unique if "#" in key else names) if n == key]
        if len(found) != 1:
            raise JobError([f"--set {dotted}: " + (_no_stage(key, unique) if not found else
                            f"{len(found)} stages are {key!r}; name one as the run does "
                            f"({', '.join('stages.' + unique[i] for i in found)}) or by position (stages.{found[0]}.{key})")])
        at = found[0]
    if isinstance(stages[at], str):  # a stage named without options
        stages[at] = {stages[at]: {}}
    entry = stages[at]
    if key.isdigit():
        return entry
    key = _stage_names(stages)[0][at]
    options = "options" if "name" in entry else key
    if entry.get(options) is None:
        entry[options] = {}
    return entry[options]


# -- YAML with line numbers -------------------------------------------------------------


def _load_yaml(text: str, where: str) -> tuple[dict, dict]:
    """Parse safely, keeping the line of every key and list item, refusing duplicate keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"{where}:{mark.line + 1}" if mark else where
        raise JobError([f"{line}: not valid YAML: {_yaml_problem(e)}"]) from None
    if node is None:
        raise JobError([f"{where}: the job file is empty"])
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    data = _construct(node, (), lines, problems, where)
    if problems:
        raise JobError(problems)
    if not isinstance(data, dict):
        raise JobError([f"{where}:1: a job is a mapping (name, seed, source, columns, stages, sink)"])
    return data, lines


def yaml_value(text: str):
    """A value written as the job file writes one (``--set stages.0.select.where=[...]``):
    ``NO`` and ``yes`` are text there too, where ``yaml.safe_load`` made them booleans.
    Raises ``yaml.YAMLError``, or JobError for a tag a job file refuses."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    problems: list[str] = []
    value = _construct(node, (), {}, problems, "--set")
    if problems:
        raise JobError(problems)
    return value


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's words, and for a tab what to do: "found character '\\t' that cannot start
    any token" did not say that YAML indents with spaces only, as editors may not."""
    problem = str(getattr(e, "problem", e))
    if "'\\t'" in problem:
        return f"a tab, where YAML takes spaces only: indent with spaces ({problem})"
    return problem


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")


_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BOOL = "tag:yaml.org,2002:bool"


def _construct(node, path: tuple, lines: dict, problems: list, where: str):
    lines[path] = node.start_mark.line + 1
    if node.tag == _TIMESTAMP:  # min: 2021-03-02 is the text as written, which options read as a time
        return node.value
    if node.tag == _BOOL and node.value.lower() not in ("true", "false"):
        return node.value  # yes, no, on, off: text, as YAML 1.2 and editors read them (value: NO is Norway)
    if node.tag not in _PLAIN_TAGS:
        problems.append(f"{where}:{node.start_mark.line + 1}: {_dotted(path) or 'job'}: YAML tag {node.tag!r} is not allowed in a job file (jobs are plain data)")
        return None
    if isinstance(node, yaml.MappingNode):
        out, merged, merged_lines = {}, {}, {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                _merge(value_node, path, merged, merged_lines, problems, where)
                continue
            key = yaml.SafeLoader(" ").construct_object(key_node) if not isinstance(key_node, yaml.ScalarNode) else _scalar(key_node)
            if key in out:
                problems.append(f"{where}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key")
            out[key] = _construct(value_node, path + (key,), lines, problems, where)
            lines[path + (key,)] = key_node.start_mark.line + 1
        lines.update((at, line) for at, line in merged_lines.items() if at[len(path)] not in out)  # its anchor's
        return {**merged, **out}
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines, problems, where) for i, v in enumerate(node.value)]
    return _scalar(node)


_MERGE = "tag:yaml.org,2002:merge"


def _merge(node, path: tuple, merged: dict, lines: dict, problems: list, where: str) -> None:
    """``<<: *defaults`` (or a list of anchors): the keys of the mappings named, under the
    keys written beside them and the earlier anchors', as YAML's merge key and PyYAML's
    safe_load have it. A job repeating a ``where`` or a stage's options used one, and got a
    ConstructorError traceback."""
    for source in node.value if isinstance(node, yaml.SequenceNode) else [node]:
        if not isinstance(source, yaml.MappingNode):
            problems.append(f"{where}:{source.start_mark.line + 1}: {_dotted(path) or 'job'}: '<<' merges mappings "
                            "(<<: *anchor of a mapping)")
            continue
        own: dict = {}
        for key, value in _construct(source, path, own, problems, where).items():
            if key not in merged:
                merged[key] = value
                lines.update((at, line) for at, line in own.items() if len(at) > len(path) and at[len(path)] == key)


def _scalar(node):
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


# -- errors that point at the line ------------------------------------------------------


def _explain(err: ValidationError, where: str, lines: dict, data: dict) -> list[str]:
    problems = []
    for e in _without_rival_branches(err.errors()):
        path = _data_path(e["loc"], data)
        at = _place(where, _line_of(path, lines))
        problems.append(f"{at}: {_dotted(path) or 'job'}: {_message(e, path, data)}")
    return problems


def _data_path(loc: tuple, data) -> tuple:
    """Map pydantic's error location onto keys that exist in the data (drops union tags,
    and turns ``stages[i].options.x`` into the ``stages[i].<name>.x`` the user wrote)."""
    path: list = []
    node = data
    rest = list(loc)
    while rest:
        key = rest.pop(0)
        if path and path[0] == "stages" and len(path) == 2 and key == "options":
            name = _stage_name(node)
            if name is not None:  # - {name: impute, options: {...}} is named as written
                key = "options" if "name" in node else name
                path.append(key)
                node = node.get(key) or {}
                continue
        if isinstance(node, dict) and key in node:
            path.append(key)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            path.append(key)
            node = node[key]
        elif _is_union_tag(key) or (isinstance(node, dict) and key not in node and rest):
            continue  # a union tag such as 'csv' in source.csv.sep
        else:
            path.append(key)
            node = None
    return tuple(path)


def _stage_name(entry) -> str | None:
    if isinstance(entry, dict) and len(entry) == 1 and "name" not in entry:
        return next(iter(entry))
    if isinstance(entry, dict):
        return entry.get("name")
    return None


def _line_of(path: tuple, lines: dict) -> int | str | None:
    """The file's line that holds ``path``, or the ``--set`` that replaced it."""
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def _place(where: str, line: int | str | None) -> str:
    return line if isinstance(line, str) else f"{where}:{line}" if line else where


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _message(e: dict, path: tuple, data: dict) -> str:
    kind, msg = e["type"], e["msg"]
    ctx = e.get("ctx") or {}
    if kind == "extra_forbidden":
        valid = _valid_keys(path, data)
        hint = difflib.get_close_matches(str(path[-1]), valid, n=1)
        return (
            f"unknown option {path[-1]!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + (f"; valid options: {', '.join(valid)}" if valid else "")
        )
    if kind == "value_error":  # our validators' own words; a long input would bury them
        msg, got = msg.removeprefix("Value error, "), repr(e.get("input"))
        return msg if len(got) > 80 or got in msg or "got " in msg or _named_in(e.get("input"), msg) else f"{msg} (got {got})"
    if kind == "union_tag_invalid":
        return f"unknown format {ctx.get('tag')!r}; formats: {ctx.get('expected_tags')}"
    if kind == "string_pattern_mismatch" and path == ("name",):
        return f"a name of letters, digits, '_', '.' and '-' only: a submitted run's id and folder begin with it (got {e.get('input')!r})"
    if kind == "union_tag_not_found":
        return f"no {ctx.get('discriminator', 'format')} given; formats: {_formats()}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping ({_mapping_of(path, data)}) (got {e.get('input')!r})"
    if kind == "list_type" and path == ("stages",):
        return f"should be a list, each stage an item of its own (- name: {{options}}) (got {e.get('input')!r})"
    if kind == "literal_error" and e.get("input") is None and "'null'" in str(ctx.get("expected")):
        return f"{msg} (got no value: a bare null is YAML's no value; quote the choice, \"null\")"
    if "input" in e and kind not in ("missing",):
        meant = _meant_choice(e["input"], str(ctx.get("expected", ""))) if kind == "literal_error" else None
        return f"{msg} (got {e['input']!r}" + (f"; did you mean {meant!r}?)" if meant else ")")
    return msg


def _meant_choice(got, expected: str) -> str | None:
    """The choice a misspelt value meant: the same characters in another order ('=>' for
    '>='), else a close spelling ('digts' for 'digits'). The choices had been listed alone."""
    if not isinstance(got, str):
        return None
    choices = re.findall(r"'([^']*)'", expected)
    same = [c for c in choices if sorted(c) == sorted(got) and c != got]
    return (same or difflib.get_close_matches(got, choices, n=1, cutoff=0.75) or [None])[0]


def _named_in(value, msg: str) -> bool:
    """Whether the message already names what the input holds: a stage's mapping as read
    ({'name': 'exact_dedupe', 'options': {}}), which a misspelt stage's message names,
    was shown after it as "(got {...})", in a form the job file never had."""
    return isinstance(value, dict) and any(repr(v) in msg for v in value.values() if isinstance(v, str))


def _formats() -> str:
    from dsbuild.io import sources

    return ", ".join(repr(f) for f in sources._FORMATS)


def _mapping_of(path: tuple, data: dict) -> str:
    """What a mapping at ``path`` holds, for a value that is none: pydantic said "a valid
    dictionary or instance of SinkSpec", a class the job file never names."""
    if path == ("source",):
        return f"format: {_formats()}, and that format's options"
    valid = _valid_keys((*path, ""), data)
    return f"options: {', '.join(valid)}" if valid else "key: value"


def _valid_keys(path: tuple, data: dict) -> list[str]:
    """The option names the model at ``path`` accepts, for 'valid options: ...'."""
    from dsbuild.io import sources

    parent = path[:-1]
    if parent == ():
        return list(JobSpec.model_fields)
    if parent[0] == "source" and len(parent) == 1:
        source = data.get("source")
        fmt = str(source.get("format") if isinstance(source, dict) else None).lower()  # as SourceSpec folds it
        model = sources._FORMATS.get(fmt)
        return list(model.model_fields) if model else []
    if parent == ("columns",):
        return list(ColumnsSpec.model_fields)
    if parent == ("sink",):
        return list(SinkSpec.model_fields)
    stage = parent[2] if len(parent) >= 3 and parent[0] == "stages" else None
    if stage == "options":  # the stage written as {name: ..., options: {...}}
        stage = _stage_name(data["stages"][parent[1]])
    if stage in STAGES:
        model = _model_at(STAGES[stage].Options, parent[3:])
        return [f.alias or n for n, f in model.model_fields.items()] if model else []
    return []


def _model_at(model, keys: tuple):
    """The options model that the keys below a stage's options lead to (``columns.age`` of
    impute: an ImputeRule), through mappings, lists and unions; None if they lead to none."""
    import typing

    kinds = [model]
    for key in keys:
        found = []
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                field = kind.model_fields.get(key) or next((f for f in kind.model_fields.values() if f.alias == key), None)
                found += [field.annotation] if field else []
            elif typing.get_origin(kind) in (dict, list) and typing.get_args(kind):
                found.append(typing.get_args(kind)[-1])  # a mapping's value, a list's item
        kinds = []
        for kind in found:  # unions and Optional open into their members
            kinds += [a for a in typing.get_args(kind)] if typing.get_origin(kind) in (typing.Union, types.UnionType) else [kind]
    return next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
