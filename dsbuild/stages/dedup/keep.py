"""Which copy of a duplicate stays: the keep rule, and id keys whose byte order is that rule's order."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dsbuild.stages.base import (
    Stage,
    StageError,
    StageOptions,
    holds_text,
)


class KeepRule(StageOptions):
    quality: str | None = Field(None, description="column whose best value decides which copy stays; default (and among "
                                "equals): the lowest id, a number at its end compared as a number (f.csv:9 stays rather "
                                "than f.csv:10, id 9 rather than 10), whatever the partitioning")
    prefer: Literal["max", "min"] = Field("max", description="best quality is the largest (max) or smallest (min) value")
    action: Literal["drop", "group"] = Field(
        "drop", description="drop: reject every copy but the one that stays (reason duplicate-of=<its id>); "
        "group: keep every row and name its cluster in group_column, so that split by: [duplicate_group] "
        "keeps copies out of different splits")
    group_column: str = Field("duplicate_group", description="with action group: each row's cluster, the id of the "
                              "copy that would stay (a row in no cluster: its own id)")

    @property
    def ranked(self) -> bool:
        """Whether copies are ranked by a value before their ids (a quality column)."""
        return self.quality is not None


def after_copies(stage: Stage, earlier: list[Stage]) -> list[str]:
    """A deduplicating stage after ``augment`` compares the copies too: a duplicate it
    rejects keeps its copies (transformed apart, they match no kept row), and copies alike
    their parent (or sharing its text, for near_dedup_text) go as its duplicates. A folder
    of photos deduplicated after augmenting kept the copies of the photos it removed."""
    also = "" if stage.name == "decontaminate" else ", and copies alike their parent are rejected as its duplicates"
    return [f"stage {stage.ctx.name!r} runs after {s.ctx.name!r}, so it compares the copies {s.ctx.name!r} made too: the copies "
            f"of a row it rejects stay, transformed past matching{also}; put {stage.ctx.name!r} before {s.ctx.name!r}"
            for s in earlier if s.name == "augment"]


class Deduplicator(Stage):
    """What every deduplicating stage shares: with ``action: group`` it adds a column;
    after augment it warns (:func:`after_copies`)."""

    def order_warnings(self, earlier: list[Stage], later: list[Stage]) -> list[str]:
        return super().order_warnings(earlier, later) + after_copies(self, earlier)

    def columns_after(self, meta: pd.DataFrame) -> pd.DataFrame:
        if self.options.action != "group":
            return meta
        return meta.assign(**{self.options.group_column: pd.arrays.ArrowStringArray(pa.array([], pa.large_string()))})

    def check_keep_rule(self, meta: pd.DataFrame) -> None:
        if self.options.quality:
            self.require_columns(meta, [self.options.quality], what="quality column")
            if holds_text(meta[self.options.quality]):
                # read as numbers, every value was missing, and the lowest id stayed without a word
                raise StageError(f"stage {self.ctx.name!r}: quality column {self.options.quality!r} holds text; quality "
                                 f"needs numbers (or times): the copy with the {self.options.prefer} value stays")
        col = self.options.group_column
        if self.options.action == "group" and col in meta.columns:
            raise StageError(f"stage {self.ctx.name!r}: group_column {col!r} is already a column of the data; name another")


def arrow_ids(ids) -> pa.Array:
    """Record ids as one Arrow text array (zero-copy when they already are Arrow text)."""
    arr = pa.array(ids, from_pandas=True)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr if arr.type == pa.large_string() else pc.cast(arr, pa.large_string())


_NUMBER_WIDTH = 20  # digits of the largest int64


def keeper_order(ids: pa.Array) -> pa.Array:
    """A key per id whose byte order is the order in which a duplicate's copy stays: the
    id as text, but a number at its end compared as a number, so ``f.csv:9`` (read first)
    stays rather than ``f.csv:10``, and id 9 rather than id 10, as a user of
    ``drop_duplicates`` expects; as text, 10 came first. The trailing digits are padded
    with zeros to 20 and a byte of their count follows, so ``x7`` and ``x07`` still
    differ (a total order: the same keeper at any partitioning). Built from the ids'
    bytes with numpy, no Python string per row."""
    ids = arrow_ids(ids)
    data, offsets = _bytes_of(ids)
    length = np.diff(offsets)
    if not len(ids) or ((length == length[0]).all() and _digits_end_alike(data.reshape(len(ids), -1))):
        return ids  # padded alike, the keys would sort as the ids do (copies named in one form: most data)
    return padded_order(ids)


def padded_order(ids: pa.Array) -> pa.LargeBinaryArray:
    """:func:`keeper_order`'s keys, always padded: keys made for different sets of ids
    (each partition's) compare as the ids' keeper order, which the ids themselves, where
    ``keeper_order`` may return them, do only within one set. :func:`ids_of_keys` reads
    the ids back."""
    ids = arrow_ids(ids)
    data, offsets = _bytes_of(ids)
    starts, ends = offsets[:-1], offsets[1:]
    length = ends - starts
    run = np.zeros(len(ids), dtype=np.int64)  # trailing digits, read from the end: one step per digit
    alive = np.flatnonzero(length > 0)
    while len(alive) and run[alive[0]] < 255:  # a count that fits its byte
        last = data[ends[alive] - run[alive] - 1]
        alive = alive[_is_digit(last)]
        run[alive] += 1
        alive = alive[length[alive] > run[alive]]
    position = np.arange(len(data))
    pad = np.where(run > 0, np.maximum(_NUMBER_WIDTH - run, 0), 0)
    out_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(length + pad + 1, out=out_offsets[1:])
    out = np.full(out_offsets[-1], ord("0"), dtype=np.uint8)
    row = np.repeat(np.arange(len(ids)), length)
    within = position - starts[row]
    out[out_offsets[row] + within + np.where(within >= (length - run)[row], pad[row], 0)] = data
    out[out_offsets[1:] - 1] = run
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(ids), [None, pa.py_buffer(out_offsets), pa.py_buffer(out)])


def ids_of_keys(keys: pa.Array, skip: int = 0) -> pa.LargeStringArray:
    """The ids of :func:`padded_order` keys that follow ``skip`` bytes of something else:
    the last byte counts the trailing digits, which stand after their padding zeros."""
    data, offsets = _bytes_of(keys)
    starts, ends = offsets[:-1] + skip, offsets[1:] - 1
    run = data[ends] if len(keys) else np.zeros(0, dtype=np.uint8)
    run = run.astype(np.int64)
    pad = np.where(run > 0, np.maximum(_NUMBER_WIDTH - run, 0), 0)
    prefix = ends - starts - run - pad
    length = ends - starts - pad
    out_offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(length, out=out_offsets[1:])
    row = np.repeat(np.arange(len(keys)), length)
    within = np.arange(out_offsets[-1]) - out_offsets[row]
    out = data[starts[row] + within + np.where(within >= prefix[row], pad[row], 0)]
    return pa.LargeStringArray.from_buffers(len(keys), pa.py_buffer(out_offsets), pa.py_buffer(out.tobytes()))


def node_keys(ids, quality: np.ndarray, rule: KeepRule) -> pa.LargeBinaryArray:
    """A key per id whose byte order is the order in which a cluster's copy stays: the
    quality's rank (when the rule names one: eight bytes, in float order, a missing
    quality last) then the id's :func:`padded_order`. The smallest key of a cluster is
    its keeper, whichever partition saw which member."""
    keys = padded_order(ids)
    if not rule.ranked:
        return keys
    rank = np.asarray(quality, dtype=float) * (-1.0 if rule.prefer == "max" else 1.0)
    bits = (np.where(np.isnan(rank), np.inf, rank) + 0.0).view(np.uint64)  # + 0.0: -0.0 ties 0.0, as numbers do
    ordered = np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63)).astype(">u8").view(np.uint8)
    data, offsets = _bytes_of(keys)
    out_offsets = offsets + 8 * np.arange(len(offsets), dtype=np.int64)
    out = np.empty(out_offsets[-1], dtype=np.uint8)
    out[(out_offsets[:-1, None] + np.arange(8)).reshape(-1)] = ordered
    row = np.repeat(np.arange(len(keys)), np.diff(offsets))
    out[np.arange(len(data)) - offsets[row] + out_offsets[row] + 8] = data
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(keys), [None, pa.py_buffer(out_offsets), pa.py_buffer(out)])


def _bytes_of(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets from 0) of a large string or binary array without nulls."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _is_digit(b: np.ndarray) -> np.ndarray:
    return (b >= 48) & (b <= 57)


def _digits_end_alike(rows: np.ndarray) -> bool:
    """Whether ids of one length (a row of bytes each) all end in as many digits as the first."""
    width = rows.shape[1]
    run = 0
    while run < min(width, 255) and _is_digit(rows[0, width - run - 1]):
        run += 1
    if run >= 255:
        return False
    return bool(_is_digit(rows[:, width - run :]).all() and (run == width or not _is_digit(rows[:, width - run - 1]).any()))
