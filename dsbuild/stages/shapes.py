"""The three Dask patterns a stage's ``build`` uses (map, fit → apply, group), and the Dask
plumbing under them: fusing what Dask would compute unfused, a fit's first partials taken
where its input is written. The only module that builds a graph for a stage: the stages
hold policy, :mod:`dsbuild.stages.base` their shapes, this the mechanism."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import pandas as pd

from dsbuild.records import ID
from dsbuild.stages.base import ADDED, KEY


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
