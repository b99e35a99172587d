"""The label's classes as both stages count, index and name them, and the checks and warnings
about classes too small to judge or emptied by a stage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dsbuild.stages.base import (
    StageError,
)


def _sorted_classes(counts: dict) -> list:
    try:
        return sorted(counts)
    except TypeError:
        return sorted(counts, key=str)


def require_classes(stage: str, label: str, counts: dict) -> None:
    """Both stages compare a row with its class: a label that is a measurement (a price, a
    concentration named as the label by mistake) or an id makes nearly every value a class
    of its own, and they flag noise (label_issues) or remove nothing (5% of one row)
    without a word that the label was not one."""
    fractional = [_plain(c) for c in _sorted_classes(counts) if isinstance(c, (float, np.floating)) and not float(c).is_integer()]
    rows = sum(counts.values())
    if fractional:
        shown = ", ".join(f"{v:g}" for v in fractional[:3]) + (", ..." if len(fractional) > 3 else "")
        raise StageError(f"stage {stage!r}: label {label!r} holds numbers that are not whole ({shown}): {len(counts)} values "
                         f"in {rows} rows, each taken as a class. It looks like a measurement to predict, not classes: "
                         "name a class column in columns.label, or cut this one into classes first")
    if len(counts) > 2 and len(counts) > rows / 2:
        raise StageError(f"stage {stage!r}: label {label!r} has {len(counts)} classes in {rows} labelled rows, most of them "
                         "a row or two: nothing to learn a class from. Is it an id or free text? Name the class column "
                         "in columns.label")


def _class_index(values: pd.Series, classes: list) -> np.ndarray:
    index = pd.Index(classes)
    return np.asarray(index.get_indexer(values.to_numpy(dtype=object)), dtype=np.int64)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def emptied_classes(stage: str, before: dict, entry: dict, weighed: dict | None = None) -> list[str]:
    """A cleaning stage that removes every row of a class has found no noise in it: it
    could not tell that class apart. (``entry['labels']``: the kept rows per label, all
    of them when they add up to the rows kept; a long list is cut. ``weighed``: kept rows
    per label the stage weighed down as likely mislabelled, which count as removed.)"""
    after = entry.get("labels") or {}
    if not after or sum(after.values()) != entry.get("out"):
        return []
    weighed = weighed or {}
    left = {c for c, n in after.items() if n > weighed.get(c, 0)}
    gone = [f"{_plain(c)!s} ({n:,} rows)" for c, n in before.items() if n and str(_plain(c)) not in left]
    verb = "removed or weighed down" if weighed else "removed"
    return [f"stage {stage!r} {verb} every row of class {', '.join(gone)}"] if gone else []
