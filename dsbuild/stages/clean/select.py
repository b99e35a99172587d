"""``select``: keep the columns and rows you want; the others go to rejects."""

from __future__ import annotations

from pydantic import Field

from dsbuild.records import ID
from dsbuild.stages.base import (
    GONE,
    MapStage,
    StageError,
    StageOptions,
    register,
    reject,
)
from dsbuild.stages.conditions import OPS_HELP, Condition


class SelectOptions(StageOptions):
    columns: list[str] | None = Field(None, description="columns to keep (id is always kept)")
    drop: list[str] = Field(default_factory=list, description="columns to drop")
    where: list[Condition] = Field(default_factory=list, description=f"row tests, {OPS_HELP}; a row failing one is rejected")


@register
class Select(MapStage):
    """Keep chosen columns and the rows that pass every condition; others go to rejects."""

    name = "select"
    Options = SelectOptions

    def check(self, meta):
        o = self.options
        self.require_columns(meta, [*(o.columns or []), *o.drop, *(c.column for c in o.where)])
        for cond in o.where:  # a comparison the column's type cannot make is named with the stage's place
            cond.holds(meta[cond.column])
        if ID in o.drop:
            raise StageError(f"stage {self.ctx.name!r}: {ID!r} names the rows (rejects, the manifest and later stages "
                             "key rows by it) and is always kept; it cannot be dropped")

    def process(self, part):
        for cond in self.options.where:
            part = reject(part, ~cond.holds(part[cond.column]), f"filter:{cond}")
        gone = list(self.options.drop)
        if self.options.columns is not None:
            keep = {ID, *self.options.columns}
            gone += [c for c in part.columns if c not in keep and not c.startswith("_") and c not in gone]
            order = [ID, *dict.fromkeys(c for c in self.options.columns if c != ID)]  # a name listed twice is one column
            part = part[order + [c for c in part.columns if c not in order]]
        return part.rename(columns={c: f"{GONE}{c}" for c in gone})  # the rows rejected here keep them
