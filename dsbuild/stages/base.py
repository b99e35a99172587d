"""The three stage shapes, and the registry that maps job-file names to stages.

A stage is settings plus wiring. Its output frame is its input with rows it rejects
marked in ``_reason`` (None keeps a row) and rows it creates marked in ``_added``; the
pipeline splits kept from rejected, counts both and checks the ledger, so no stage can
lose a row quietly. A stage may also emit per-row counters in ``_m_<name>`` columns,
which the pipeline sums into the stage's metrics in the manifest.

Policy lives in the subclasses (``process``, ``partial``/``combine``/``apply``,
``key``/``apply_group``); the mechanism lives in :class:`Shapes`, the only place that
knows Dask, and imports it where it builds a graph: the registry is read by commands
that run nothing (``dsbuild stages``, ``validate``), which need not wait for it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from dsbuild.records import ID, REJECT

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


class Shapes:
    """The three Dask patterns. The only code a stage uses to touch the graph.

    One ``Shapes`` serves the stages of one build (the pipeline makes one per run), and
    remembers the named statistics it fitted (:meth:`fit`), so that two stages needing
    the same statistic over the same rows pass over them once.
    """

    def __init__(self, split_every: int = 8):
        self.split_every = split_every
        self._fitted: dict[tuple[str, Hashable], Any] = {}  # (rows, statistic) -> stats
        self._same_rows: dict[str, str] = {}  # a pass-through's output -> the rows it passed
        self._given: dict[str, tuple[Callable, Any, list]] = {}  # rows -> (partial, state, its partials), see given

    def map(self, frame, fn: Callable, *args, meta=None, label: str = "map"):
        """``fn(partition, *args)`` on every partition; Broadcast args are sent once, and
        a frame made by :meth:`route` gives each call its own partition.

        Not fused here: the pipeline also accounts for every stage's output, and a chain
        fused for the next stage alone would run this stage again for its account."""
        if meta is None:
            meta = fn(frame._meta.copy(), *[_example(a) for a in args])
        graph_args = [a.delayed if isinstance(a, Broadcast) else a for a in args]
        return frame.map_partitions(fn, *graph_args, meta=meta, token=_token(label, "map"))

    def pass_through(self, frame, fn: Callable, *args, label: str = "pass"):
        """:meth:`map` of an ``fn`` that leaves every row as it is (it may add the reject
        and added marks, none set): statistics of the result are those of ``frame``."""
        out = self.map(frame, fn, *args, label=label)
        self._same_rows[out._name] = self._rows(frame)
        return out

    def _rows(self, frame) -> str:
        return self._same_rows.get(frame._name, frame._name)

    def fit(self, frame, partial: Callable, combine: Callable, state: Any = None, label: str = "fit",
            statistic: Hashable | None = None):
        """Tree-reduce ``partial`` over partitions with ``combine``; compute the stats now.

        Only the stats come back to the driver. Upstream partitions are recomputed later
        for the apply pass rather than held in memory, so memory stays bounded. Each
        partition's ``partial`` runs in the same task as the steps that make the partition
        (one task per partition, not two), and the tree of ``combine`` runs on the workers.

        ``statistic`` names what ``partial``/``combine`` compute from the rows alone (a fit
        given a ``state`` is never shared): a later fit of the same statistic over the same
        rows — ``frame`` itself, or what :meth:`pass_through` made of it — returns these
        stats without a pass.
        """
        key = (self._rows(frame), statistic) if statistic is not None and state is None else None
        if key in self._fitted:
            return self._fitted[key]
        given = self._given.pop(self._rows(frame), None)
        if given is not None and _same_call(given[0], partial) and _alike(given[1], state):
            stats = _folded(combine, given[2], self.split_every)
        else:
            stats = self._reduce(frame, partial, combine, state, label)
        if key is not None:
            self._fitted[key] = stats
        return stats

    def first_pass(self, build: Callable, frame) -> tuple[Callable, Any] | None:
        """The ``(partial, state)`` of the first pass ``build(frame, shapes)`` makes over
        ``frame``'s rows, found by building on a ``Shapes`` that stops there; None where the
        build computes something else first (a persist), fits other rows first, or fails
        (the real build says why). The pipeline takes these partials in the tasks that
        write ``frame`` to a checkpoint (:meth:`given`), so the fit does not read the
        checkpoint a second time."""
        import warnings

        probe = _FirstPass(self)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real build warns
            try:
                build(frame, probe)
            except _Found as found:
                return (found.partial, found.state) if found.rows == self._rows(frame) else None
            except Exception:
                return None
        return None

    def given(self, frame, partial: Callable, state: Any, partials: list) -> None:
        """``partial(p, state)`` of each of ``frame``'s partitions, in order, computed where
        the partitions were made: the next :meth:`fit` of that call over ``frame`` combines
        them, in the tree :meth:`_reduce` would, without a pass."""
        self._given[self._rows(frame)] = (partial, state, partials)

    def _reduce(self, frame, partial: Callable, combine: Callable, state: Any, label: str):
        import dask

        state_arg = dask.delayed(state, pure=True) if state is not None else None
        partials = frame.map_partitions(
            partial, state_arg, meta=_ANY_META, enforce_metadata=False, token=_token(label, "fit")
        )
        parts = partials.to_delayed()
        while len(parts) > 1:
            parts = [
                _combine_many(combine, parts[i : i + self.split_every])
                for i in range(0, len(parts), self.split_every)
            ]
        (stats,) = dask.compute(parts[0])
        return stats

    def group(self, frame, key: Callable | str, fn: Callable, meta=None, label: str = "group", npartitions: int | None = None):
        """``fn`` on each of ``npartitions`` (default: as many as ``frame`` has) partitions,
        every one holding all rows of the keys it holds. ``key`` is a function of a
        partition (its values travel in a ``_key`` column) or the name of a column."""
        if isinstance(key, str):
            keyed, on = frame, key
        else:
            keyed, on = frame.map_partitions(
                _with_key, key, meta=_with_key(frame._meta.copy(), key), token=_token(label, "key")
            ), KEY
        out_parts = npartitions or frame.npartitions
        shuffled = keyed.shuffle(on=on, npartitions=out_parts, shuffle_method=shuffle_method(frame.npartitions, out_parts))
        if meta is None:
            meta = fn(keyed._meta.copy())
        out = shuffled.map_partitions(fn, meta=meta, token=_token(label, "group"))
        return out.drop(columns=[KEY]) if KEY in out.columns else out

    def spread_added(self, frame, npartitions: int, label: str = "spread"):
        """The rows a stage added (``ADDED``) moved into ``npartitions`` partitions of their own
        by a hash of their id, the other rows left where they are. A group that grows its
        keys' rows made them all beside their key: oversample put every new row of a class
        in the class's one partition (1.7 M of 2 M rows in one task through every later
        stage)."""
        import dask.dataframe as dd

        made = frame.map_partitions(_added_rows, True, meta=frame._meta, token=_token(label, "made"))
        rest = frame.map_partitions(_added_rows, False, meta=frame._meta, token=_token(label, "rest"))
        made = made.shuffle(on=ID, npartitions=npartitions, shuffle_method=shuffle_method(frame.npartitions, npartitions))
        return dd.concat([rest, made])

    def route(self, rows, column: str, like):
        """The rows of ``rows`` in the partition of ``like`` that ``column`` numbers, through
        Dask's shuffle: partition i of the result goes with partition i of ``like`` in
        :meth:`map`. What one partition must learn from a shuffle travels to it alone,
        rather than through the driver to every partition."""
        n = like.npartitions
        method = shuffle_method(rows.npartitions, n)
        return rows.set_index(column, divisions=[*range(n), n - 1], sorted=False, shuffle_method=method).clear_divisions()

    def concat(self, frames: list):
        """The rows of ``frames`` one after another, each frame's partitions as they are."""
        import dask.dataframe as dd

        return dd.concat(frames)

    def whole(self, frame, fn: Callable, meta=None, label: str = "whole"):
        """``fn`` on all of ``frame`` in one task, for a frame a statistic showed to be
        small: where moving it to one worker costs less than the shuffles it would take."""
        return self.map(frame.repartition(npartitions=1), fn, meta=meta, label=label)

    def persist(self, frame):
        """Keep ``frame`` on the workers, for a result that both a statistic and a later
        pass read (a shuffle's output is not worth computing twice)."""
        return frame.persist()

    def broadcast(self, value: Any, graph: Any = None) -> Broadcast:
        """One copy of a value in the graph, shared by every partition's task; ``graph``,
        where given, is what the tasks get instead (the value with :meth:`share` handles)."""
        return Broadcast(value, graph)

    def share(self, value: Any):
        """``value`` kept on the workers once, for a state that many passes send (label_issues'
        fitted models: 95-184 MiB in every pass's graph at 200,000 rows of 30 features,
        through the scheduler each time). Put in a state, the handle makes the value a
        dependency of each task that reads it, not a copy in each graph. It is the result
        of a task that unpickles the bytes, so a worker that dies loses nothing (scattered
        data would have no lineage). Without a distributed client, the value itself."""
        import pickle
        import warnings

        import dask

        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            return value
        if dask.base.get_scheduler() != client.get:  # computed elsewhere (scheduler="sync"): the value itself
            return value
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with warnings.catch_warnings():  # sent once, on purpose: the warning is for graphs sent again and again
            warnings.filterwarnings("ignore", message="Sending large graph")
            return client.persist(dask.delayed(pickle.loads, pure=True)(blob))


def compute(*collections) -> tuple:
    """``dask.compute`` of ``collections`` with their chains of per-partition tasks fused
    (:func:`fused`). Dask computes a DataFrame, Series or Index unfused (``dask.compute``
    and ``.compute()`` optimize with ``fuse=False``): the check of a job's own ids ran
    read, ids, places and the groupby's chunk as four tasks per partition."""
    import dask

    return dask.compute(*fused(list(collections)))


def fused(collections: list, names: dict[str, str] | None = None) -> list:
    """The collections with their chains of per-partition tasks fused, as Dask fuses a
    single collection it persists: Dask does not fuse what it computes
    (``dask.compute``, ``Client.persist``), nor collections computed together, so each
    stage's map, the rows it kept and its accounting were a task each per partition,
    every result sized, stored and often sent to the other worker (``clean_adult.yaml``
    at 80 partitions: 1,727 tasks, 1,007 fused). A fused task's key names none of its
    members; ``names``, where given, gets for each the keys of the tasks it holds, which
    the stage timings read. What is no DataFrame collection (a ``Delayed``) is left as
    it is.

    Dask's fusion substitutes each fused group into the whole expression, and its
    substitution rebuilds a changed node once for every path that reaches it: with each
    stage's output shared by its accounting and the next stage, its time doubled with
    every pending stage (8 collections 22.8 s, 10 took 154 s), so only 3 were fused. The
    list is fused as one expression whose substitution rebuilds each node once
    (:func:`_substituted_once`): the same groups, 10 collections in 0.6 s."""
    try:  # private Dask API; pyproject allows 2024.12, whose dask-expr was a package of its own
        from dask.base import collections_to_expr
        from dask.dataframe.dask_expr import FrameBase, new_collection
        from dask.dataframe.dask_expr._expr import Fused, optimize_blockwise_fusion

        sequence = _substituted_once()
    except ImportError:
        return collections
    if not collections or not all(isinstance(c, FrameBase) for c in collections):
        return collections

    together = collections_to_expr(collections).optimize(fuse=False)
    together = optimize_blockwise_fusion(sequence(*together.operands))
    if names is not None:
        for group in together.find_operations(Fused):
            names[group._name] = " ".join(e._name for e in group.exprs)
    return [new_collection(expr) for expr in together.operands]


@functools.cache
def _substituted_once() -> type:
    """Dask's sequence of expressions (what ``collections_to_expr`` makes of a list) whose
    ``substitute``, the step of Dask's blockwise fusion that puts a fused group in place,
    rebuilds each node of the expression once. Dask's own (``Expr._substitute``) remembers
    only the nodes it left unchanged, so a changed node shared by two dependents was rebuilt
    for each path through them: twice as many with every stage."""
    from dask._expr import Expr, _ExprSequence

    class SubstitutedOnce(_ExprSequence):
        def substitute(self, old, new):
            done: dict[str, Any] = {}

            def swap(expr):
                if expr._name in done:
                    return done[expr._name]
                if expr._name == old._name:
                    done[expr._name] = new
                    return new
                operands, changed = [], False
                for operand in expr.operands:
                    if isinstance(operand, Expr):
                        value = swap(operand)
                        changed |= value._name != operand._name
                    elif "Fused" in type(expr).__name__ and isinstance(operand, list) and all(isinstance(e, Expr) for e in operand):
                        value = [swap(e) for e in operand]  # a Fused group's members, as Dask's substitution dives into them
                        changed |= [e._name for e in value] != [e._name for e in operand]
                    else:
                        value = operand
                    operands.append(value)
                done[expr._name] = type(expr)(*operands) if changed else expr
                return done[expr._name]

            return swap(self)

    return SubstitutedOnce


# Shuffles with at most this many partitions on either side go through Dask's task
# shuffle: its fixed costs are far lower than p2p's (exact_dedup at 10 M rows, 16 -> 4 -> 16
# partitions: 19 instead of 25-26 CPU s), and its pieces are ordinary task results, spilled
# like any other. Larger ones use p2p, whose shards go through disk and whose tasks grow
# with the partitions, not with their product.
SMALL_SHUFFLE = 32


def shuffle_method(partitions_in: int, partitions_out: int) -> str | None:
    """Dask's task shuffle for a small shuffle; None (the configured p2p) otherwise."""
    return "tasks" if max(partitions_in, partitions_out) <= SMALL_SHUFFLE else None


class Broadcast:
    def __init__(self, value: Any, graph: Any = None):
        import dask

        self.value = value
        self.delayed = dask.delayed(value if graph is None else graph, pure=True)


def _example(arg):
    """What ``fn`` receives for ``arg`` when its output's schema is worked out."""
    if isinstance(arg, Broadcast):
        return arg.value
    return getattr(arg, "_meta", arg)


_ANY_META = pd.Series([], dtype=object)  # what a partial returns: any object


def _combine_many(combine: Callable, items: list):
    import dask

    def fold(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = combine(acc, x)
        return acc

    return dask.delayed(fold, pure=True)(*items)


def _folded(combine: Callable, parts: list, split_every: int):
    """``parts`` combined on the driver in the tree :meth:`Shapes._reduce` builds (groups of
    ``split_every``, each folded left), so the statistics are the same to the last bit."""
    while len(parts) > 1:
        groups = [parts[i : i + split_every] for i in range(0, len(parts), split_every)]
        parts = []
        for group in groups:
            acc = group[0]
            for x in group[1:]:
                acc = combine(acc, x)
            parts.append(acc)
    return parts[0]


class _Found(BaseException):  # not an Exception: a stage's ``except Exception`` lets it through
    def __init__(self, rows: str | None, partial: Callable | None = None, state: Any = None):
        self.rows, self.partial, self.state = rows, partial, state


class _FirstPass(Shapes):
    """A ``Shapes`` that stops a build at its first pass over rows (:meth:`Shapes.first_pass`);
    statistics the real one already holds are given as they are."""

    def __init__(self, shapes: Shapes):
        super().__init__(shapes.split_every)
        self._fitted, self._same_rows = shapes._fitted, dict(shapes._same_rows)

    def _reduce(self, frame, partial, combine, state, label):
        raise _Found(self._rows(frame), partial, state)

    def persist(self, frame):
        raise _Found(None)

    def share(self, value):
        raise _Found(None)


def _same_call(a: Callable, b: Callable) -> bool:
    """Whether two callables that two builds of one stage made compute the same: the same
    function of the same or like objects (a helper the build made, holding equal values), a
    ``functools.partial`` of such with equal arguments, or a function of the same code
    over like closed-over values."""
    import functools

    if a is b:
        return True
    if inspect.ismethod(a) and inspect.ismethod(b):
        return a.__func__ is b.__func__ and _alike(a.__self__, b.__self__)
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return _same_call(a.func, b.func) and _alike(a.args, b.args) and _alike(a.keywords, b.keywords)
    if inspect.isfunction(a) and inspect.isfunction(b):
        try:
            cells = [(x.cell_contents, y.cell_contents) for x, y in zip(a.__closure__ or (), b.__closure__ or ())]
        except ValueError:  # a cell not yet filled
            return False
        return a.__code__ is b.__code__ and _alike(a.__defaults__, b.__defaults__) and all(_alike(x, y) for x, y in cells)
    return False


def _alike(a, b, depth: int = 3) -> bool:
    """``a == b`` where that is one truth value; else, for two objects of one class, their
    attributes alike, a few levels down. False where it cannot tell (arrays, frames)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if callable(a) and (inspect.ismethod(a) or inspect.isfunction(a) or hasattr(a, "func")):
        return _same_call(a, b)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_alike(x, y, depth) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_alike(a[k], b[k], depth) for k in a)
    try:
        if type(a).__eq__ is not object.__eq__:
            return bool(a == b)
    except Exception:
        return False
    if depth > 0 and hasattr(a, "__dict__"):
        return _alike(vars(a), vars(b), depth - 1)
    return False


def _added_rows(part: pd.DataFrame, added: bool) -> pd.DataFrame:
    mask = part[ADDED].fillna(False).to_numpy(dtype=bool) if ADDED in part.columns else np.zeros(len(part), dtype=bool)
    return part[mask if added else ~mask]


def _with_key(part: pd.DataFrame, key: Callable) -> pd.DataFrame:
    part = part.copy(deep=False)
    part[KEY] = key(part) if len(part) else pd.Series([], dtype=object, index=part.index)
    return part


def _token(label: str, what: str) -> str:
    safe = "".join(ch if ch.isalnum() else "-" for ch in label)
    return f"dsbuild-{safe}-{what}"


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
