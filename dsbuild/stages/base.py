"""The three stage shapes, and the registry that maps job-file names to stages.

A stage is settings plus wiring. Its output frame is its input with rows it rejects
marked in ``_reason`` (None keeps a row) and rows it creates marked in ``_added``; the
pipeline splits kept from rejected, counts both and checks the ledger, so no stage can
lose a row quietly. A stage may also emit per-row counters in ``_m_<name>`` columns,
which the pipeline sums into the stage's metrics in the manifest.

Policy lives in the subclasses (``process``, ``partial``/``combine``/``apply``,
``key``/``apply_group``); the mechanism lives in :class:`~dsbuild.stages.shapes.Shapes`, the
only place that knows Dask, and imports it where it builds a graph: the registry is read by commands
that run nothing (``dsbuild stages``, ``validate``), which need not wait for it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from dsbuild.records import ID, REJECT

if TYPE_CHECKING:
    from dsbuild.stages.shapes import Shapes

ADDED = "_added"
METRIC = "_m_"
GONE = "_gone:"  # a column a stage removed: its kept rows lose it, its rejected rows keep it whole
WHERE_METRIC = f"{METRIC}where"  # rows a stage's ``where`` named, for the warning when it named none
_AS_WRITTEN = "values are compared as they are written (case and spaces included)"
KEY = "_key"


class StageOptions(BaseModel):
    """Base for a stage's settings: unknown keys are errors, so a typo never passes."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class StageError(ValueError):
    """A stage's settings do not fit the data (unknown column, impossible rule)."""


@dataclass(frozen=True)
class Roles:
    """What the job says its columns are; stages read roles, never hard-coded names."""

    id: str | None = None
    label: str | None = None
    sensitive: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    image: str | None = None
    weight: str = "weight"
    text: str | None = None
    bins: tuple[tuple[str, tuple[float, ...]], ...] = ()  # cut points of numeric sensitive columns
    index_columns: tuple[str, ...] = ()  # written indexes the job's default features left out (JobSpec.build_stages)

    @property
    def image_column(self) -> str:
        """The job's image column; ``image`` (what the image sources write) by default."""
        return self.image or "image"

    def feature_columns(self, meta: pd.DataFrame) -> list[str]:
        """The named features, or every numeric column that has no other role (a numeric
        ``columns.id`` is a name, not a measurement) and is no index ``to_csv`` wrote."""
        if self.features:
            return list(self.features)
        return [c for c in self._unclaimed_numbers(meta) if not written_index(c, meta[c])]

    def index_columns_left_out(self, meta: pd.DataFrame) -> list[str]:
        """The columns :meth:`feature_columns` left out as a written index: the job's, once
        it fixed its features from the source's columns, else ``meta``'s."""
        if self.features:
            return list(self.index_columns)
        return [c for c in self._unclaimed_numbers(meta) if written_index(c, meta[c])]

    def _unclaimed_numbers(self, meta: pd.DataFrame) -> list[str]:
        taken = {ID, self.id, self.label, self.weight, *self.sensitive}
        return [
            c
            for c in meta.columns
            if c not in taken
            and not str(c).startswith("_")
            and pd.api.types.is_numeric_dtype(meta[c])
            and not pd.api.types.is_bool_dtype(meta[c])
        ]


def written_index(name, column: pd.Series) -> bool:
    """Whether a column is the index ``DataFrame.to_csv`` writes: whole numbers under a
    blank header, which the CSV source names as pandas does, ``Unnamed: 0``. As a feature
    it is a row number, and on rows sorted by class (iris as scikit-learn ships it) it
    gives the label away."""
    name = str(name)
    blank = not name.strip() or (name.startswith("Unnamed: ") and name[len("Unnamed: "):].isdigit())
    return blank and pd.api.types.is_integer_dtype(column.dtype)


@dataclass(frozen=True)
class StageContext:
    """Where a stage runs: its name in this job (``impute`` or ``impute#2``), the seed."""

    name: str
    seed: int = 0
    roles: Roles = field(default_factory=Roles)


class Stage:
    """One step of a build. Subclass one of the three shapes, not this."""

    name: ClassVar[str] = ""
    shape: ClassVar[str] = ""
    adds_rows: ClassVar[bool] = False
    reads_weights: ClassVar[bool] = False  # counts each row by the job's weight column (columns.weight)
    writes_weights: ClassVar[bool] = False  # multiplies the job's weight column
    Options: ClassVar[type[StageOptions]] = StageOptions

    def __init__(self, options: StageOptions | dict | None = None, **settings: Any):
        if isinstance(options, StageOptions):
            self.options = options.model_copy(update=settings) if settings else options
        elif options is not None and not isinstance(options, dict):
            raise TypeError(f"{type(self).__name__}() takes its options by name, e.g. "
                            f"{type(self).__name__}({next(iter(self.Options.model_fields), 'option')}=...), "
                            f"or as one dict (got {type(options).__name__} {options!r:.60})")
        else:
            try:
                self.options = self.Options(**{**(options or {}), **settings})
            except ValidationError as e:
                raise _named_options_error(type(self), e) from None
        self.ctx = StageContext(self.name)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _signature_of(cls.Options)

    def bind(self, ctx: StageContext) -> Stage:
        self.ctx = ctx
        return self

    def check(self, meta: pd.DataFrame) -> None:
        """Raise StageError if the settings name columns the data does not have."""

    @property
    def multi_pass(self) -> bool:
        """Whether :meth:`build` passes over its input more than once (a fit computes
        statistics first), so the pipeline checkpoints the rows before it; map and group
        stages pass once."""
        return self.shape not in ("map", "group")

    @property
    def passes_rows_through(self) -> bool:
        """Whether every row leaves this stage as it came (none rejected, added or changed:
        the stage only learns something about them, like an audit). The pipeline then
        hands this stage's input on to the next stage, which needs no checkpoint of its
        own when that input is one, and whose statistics over the same rows this stage's
        pass may already have computed (see :meth:`Shapes.fit`)."""
        return False

    def order_warnings(self, earlier: list[Stage], later: list[Stage]) -> list[str]:
        """Warnings about where this stage stands in the job (see fairness); the first stage
        that reads the job's default features says which written index they left out."""
        return self._index_columns_note(earlier, later)

    def reads_default_features(self) -> bool:
        """Whether the stage reads the job's features (``columns.features``, else the
        numeric columns with no other role), so a written index they leave out concerns it."""
        return False

    def _index_columns_note(self, earlier: list[Stage], later: list[Stage]) -> list[str]:
        """The written index the job left out of its default features, said once for the
        job, naming every stage that reads them: each such stage said it, the same
        sentence two or three times in a run."""
        left_out = self.ctx.roles.index_columns
        if not left_out or not self.reads_default_features() or any(s.reads_default_features() for s in earlier):
            return []
        readers = ", ".join(repr(s.ctx.name) for s in [self, *later] if s.reads_default_features())
        return [f"columns.features: column {c!r} is not one of the job's default features (read by {readers}): it holds "
                "whole numbers under a blank header, as the index DataFrame.to_csv writes, and a row number gives away the "
                "label of rows sorted by class; it stays in the output. Name it in columns.features to use it"
                for c in left_out]

    def result_warnings(self, entry: dict) -> list[str]:
        """Warnings the run's own counts show (``entry``: this stage's manifest entry, with
        its metrics and summary), e.g. a join that matched nothing."""
        if entry.get("metrics", {}).get(WHERE_METRIC[len(METRIC):]) == 0 and entry.get("in", 0) > 0:
            return [f"stage {self.ctx.name!r}: where ({self._where_text()}) matched none of its {entry['in']:,} rows, "
                    f"so it changed nothing; {_AS_WRITTEN}"]
        return []

    def require_where_rows(self, rows: int, option: str = "where") -> None:
        """A fit on the rows ``where`` (or ``fit_on``) names needs some: none means a value
        that matches nothing (``training`` for ``train``), and a stage that fitted nothing
        would pass its rows on unchanged without a word."""
        if rows == 0 and getattr(self.options, option, None):
            raise StageError(f"stage {self.ctx.name!r}: {option} ({self._where_text(option)}) matched none of the rows, "
                             f"so there is nothing to fit on; {_AS_WRITTEN}")

    def _where_text(self, option: str = "where") -> str:
        return " and ".join(c.describe() for c in getattr(self.options, option))

    def check_where(self, meta: pd.DataFrame, conditions) -> None:
        """``where``'s columns exist and each test can be made on them as written: a
        number against a text column would only ever be unequal, so it is refused here,
        before the run."""
        self.require_columns(meta, [c.column for c in conditions], what="where column")
        for i, c in enumerate(conditions):
            try:
                c.holds(meta[c.column])
            except StageError as e:
                raise StageError(f"stage {self.ctx.name!r}: where[{i}]: {e}") from None

    def column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """Warnings about settings that run but likely not as meant, from the columns
        this stage will see (after :meth:`check` passed)."""
        return []

    def index_column_warnings(self, meta: pd.DataFrame) -> list[str]:
        """For a stage that reads the job's default features: the written index they left
        out, so a user who meant it as a feature (or wonders where it went) is told. Where
        the job fixed its features and the stage says it reads them, the job's one line
        (:meth:`order_warnings`) says it instead."""
        if self.ctx.roles.index_columns and self.reads_default_features():
            return []
        return [f"stage {self.ctx.name!r}: column {c!r} is not one of its features: it holds whole numbers under a blank "
                "header, as the index DataFrame.to_csv writes, and a row number gives away the label of rows sorted by "
                "class; it stays in the output. Name it in columns.features to use it"
                for c in self.ctx.roles.index_columns_left_out(meta)]

    def summary(self) -> dict:
        """What the stage learned, for the manifest (fitted stats, clusters, ...)."""
        return {}

    def retyped_columns(self) -> list[str]:
        """Columns this stage gives a type the job asked for: the sink writes them as they
        are, not back in the source's type (a decimal cast to float stays float)."""
        return []

    def columns_after(self, meta: pd.DataFrame) -> pd.DataFrame:
        """The (empty) frame this stage's output will be, as far as is known without
        running it, for ``dsbuild validate``: a map stage runs on it, also one its options
        make fit first (split's stratify, cast's day/month order); others leave it."""
        return self._process(meta.copy()) if isinstance(self, MapStage) else meta

    def build(self, frame, shapes: Shapes):
        raise NotImplementedError

    # helpers for subclasses ------------------------------------------------------------
    def require_image_column(self, meta: pd.DataFrame) -> None:
        """The job's image column is in the data and is not text: a column of file names
        or paths (a CSV manifest's ``image,label``) has no picture to read, and every row
        was 'empty-image' in validate_images, one and the same picture in exact_dedup."""
        column = self.ctx.roles.image_column
        self.require_columns(meta, [column], what="image column (columns.image)")
        if holds_text(meta[column]):
            raise StageError(
                f"stage {self.ctx.name!r}: image column {column!r} holds text (file names or paths?), not images: image "
                "stages read encoded image bytes (a binary column) or Hugging Face {bytes, path} structs; read image "
                "files with source format: images, or name the column of bytes in columns.image")

    def require_columns(self, meta: pd.DataFrame, columns, what: str = "column") -> None:
        missing = [c for c in columns if c not in meta.columns]
        if missing:
            raise StageError(
                f"stage {self.ctx.name!r}: {what} {missing[0]!r} is not in the data; "
                f"columns are {_data_columns(meta)}{_did_you_mean(missing[0], _data_columns(meta))}"
            )

    def __repr__(self) -> str:
        """The call that builds this stage, its options as the job holds them: by the names
        a job writes (``Cast(schema=...)``, not the field's ``schema_``), and a frame it was
        given named by its shape (it showed as ``annotations={}``)."""
        from dsbuild.job import _options_of, shown

        opts = ", ".join(f"{k}={shown(v)!r}" for k, v in _options_of(self.options).items())
        return f"{type(self).__name__}({opts})"


def _signature_of(options: type[StageOptions]) -> inspect.Signature:
    """A stage's call signature, its options as keywords: ``help(Impute)``, ``Impute?`` and a
    notebook's completion showed ``(options=None, **settings)``, which names none of them."""
    params = [inspect.Parameter("options", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    for name, f in options.model_fields.items():
        default = inspect.Parameter.empty if f.is_required() else f.get_default(call_default_factory=True)
        params.append(inspect.Parameter(f.alias or name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.annotation))
    return inspect.Signature(params)


def _named_options_error(cls: type[Stage], error: ValidationError) -> ValidationError:
    """The error of a stage built in Python, titled by the stage, an unknown option said
    as a job file says it: pydantic's "Extra inputs are not permitted" under
    ``SelectOptions`` named neither the option meant nor the valid ones."""
    from dsbuild.job import _is_union_tag, _model_at, _without_rival_branches

    details = []
    for err in _without_rival_branches(error.errors(include_url=False)):
        loc = tuple(k for k in err["loc"] if not _is_union_tag(k))
        if err["type"] == "extra_forbidden":
            model = _model_at(cls.Options, loc[:-1])
            valid = [f.alias or n for n, f in model.model_fields.items()] if model else []
            said = f"unknown option {loc[-1]!r}{_did_you_mean(loc[-1], valid)}"
            said += f"; valid options: {', '.join(valid)}" if valid else ""
            details.append({"type": PydanticCustomError("unknown_option", said), "loc": loc, "input": err["input"]})
        else:
            details.append({**{k: err[k] for k in ("type", "input", "ctx") if k in err}, "loc": loc})
    return ValidationError.from_exception_data(cls.__name__, details)


def holds_text(column: pd.Series) -> bool:
    """A text column (pandas or Arrow strings): no image column holds one."""
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype):
        return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    return isinstance(dtype, pd.StringDtype)


def _data_columns(meta: pd.DataFrame) -> list:
    """The columns a job can name: not the marks stages pass on (``_reason``, ``_added``,
    ``_m_split:train``), which a stage after split listed as if they were data."""
    return [c for c in meta.columns if c not in (REJECT, ADDED) and not str(c).startswith(METRIC)]


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def with_marks(part: pd.DataFrame) -> pd.DataFrame:
    """The partition with the reject and added marks present (a stage's starting point)."""
    part = part.copy(deep=False) if REJECT in part.columns else part.assign(**{REJECT: None})
    if ADDED not in part.columns:
        part[ADDED] = False
    part[REJECT] = part[REJECT].astype(object)
    return part


def reject(part: pd.DataFrame, mask, reason) -> pd.DataFrame:
    """Mark rows for rejection. The first rule to reject a row names the reason.

    ``reason`` is one string, or a per-row array of strings. A reason is a rule
    (``range:age``, ``decode-error``) optionally followed by ``=`` and a per-row detail
    (``duplicate-of=<kept id>``, ``cast:age:int=abc``); the manifest counts by rule.
    """
    mask = np.asarray(mask, dtype=bool) & part[REJECT].isna().to_numpy()
    if mask.any():
        values = part[REJECT].to_numpy(copy=True)
        values[mask] = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[mask]
        part[REJECT] = values
    return part


class MapStage(Stage):
    """``partition -> partition``: rules, decoding, augmentation, hashing."""

    shape = "map"

    def process(self, part: pd.DataFrame) -> pd.DataFrame:
        """Return the partition with rejected rows marked (see :func:`reject`)."""
        raise NotImplementedError

    def build(self, frame, shapes: Shapes):
        return shapes.map(frame, self._process, label=self.ctx.name)

    def _process(self, part: pd.DataFrame) -> pd.DataFrame:
        return self.process(with_marks(part))


class FitApplyStage(Stage):
    """Mergeable statistics per partition, combined by a tree, then applied per partition.

    ``partial`` and ``combine`` must give the same result for any partitioning (sums,
    counts, sketches). Iterative methods set ``max_iter`` and ``converged``: each round
    is one pass of ``partial`` with the previous round's state.
    """

    shape = "fit_apply"
    max_iter: ClassVar[int] = 1

    def partial(self, part: pd.DataFrame, state: Any) -> Any:
        raise NotImplementedError

    def combine(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def finalize(self, stats: Any, state: Any) -> Any:
        """Turn combined stats into the state ``apply`` uses (sums into means, ...)."""
        return stats

    def converged(self, old: Any, new: Any) -> bool:
        return True

    def statistic(self) -> Hashable | None:
        """A name for what ``partial``/``combine`` compute in the first round (no state yet),
        when that depends on the rows and on nothing else but what the name holds (the
        columns and settings it reads). Stages built with the same :class:`Shapes` that name the same
        statistic over the same rows share one pass; None (the default) shares nothing."""
        return None

    def apply(self, part: pd.DataFrame, state: Any) -> pd.DataFrame:
        raise NotImplementedError

    def iterations(self) -> int:
        return self.max_iter

    def build(self, frame, shapes: Shapes):
        state = None
        self.rounds_ = 0
        for _ in range(self.iterations()):
            stats = shapes.fit(frame, self.partial, self.combine, state, label=self.ctx.name, statistic=self.statistic())
            new = self.finalize(stats, state)
            self.rounds_ += 1
            done = state is not None and self.converged(state, new)
            state = new
            if done:
                break
        self.state_ = state
        return shapes.map(frame, self._apply, shapes.broadcast(state), label=self.ctx.name)

    def _apply(self, part: pd.DataFrame, state: Any) -> pd.DataFrame:
        return self.apply(with_marks(part), state)


class GroupStage(Stage):
    """Rows with equal keys meet in one partition (Dask's shuffle), then ``apply_group``.

    Within a group rows come sorted by id, so tie-breaks do not depend on arrival order.
    """

    shape = "group"

    def key(self, part: pd.DataFrame) -> pd.Series:
        raise NotImplementedError

    def apply_group(self, group: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def apply_partition(self, part: pd.DataFrame) -> pd.DataFrame:
        """All groups of one shuffled partition; override to vectorise."""
        if part.empty:
            return part
        groups = [self.apply_group(g) for _, g in part.groupby(KEY, sort=True)]
        return pd.concat(groups) if groups else part.iloc[:0]

    def build(self, frame, shapes: Shapes):
        return shapes.group(frame, self._key, self._apply, label=self.ctx.name)

    def _key(self, part: pd.DataFrame) -> pd.Series:
        return self.key(part)

    def _apply(self, part: pd.DataFrame) -> pd.DataFrame:
        part = with_marks(part).sort_values([KEY, ID], kind="stable")
        return self.apply_partition(part)


# -- registry ---------------------------------------------------------------------------

STAGES: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage usable by name in job files."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in STAGES and STAGES[cls.name] is not cls:
        raise TypeError(f"stage name {cls.name!r} is taken by {STAGES[cls.name].__name__}")
    STAGES[cls.name] = cls
    return cls


def stage_class(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(
            f"unknown stage {name!r}{_did_you_mean(name, STAGES)}; "
            f"registered stages: {', '.join(sorted(STAGES))}"
        ) from None
