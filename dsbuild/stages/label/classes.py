"""The label set: answers' labels as keys that compare equal across readers, and the
values written out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dsbuild.stages.base import (
    StageError,
)


def label_keys(values: pd.Series) -> pd.Series:
    """Labels as strings that compare equal across readers: 1, 1.0, "1" and "1.0" are one
    class, and so are "cat" and "cat " (a space typed into a form is no new class; one
    alone is no label), and the same text in two Unicode forms."""
    s = values
    if pd.api.types.is_float_dtype(s):
        present = s.dropna()
        if len(present) and bool((present == np.floor(present)).all()):
            s = s.astype("Int64")
    elif pd.api.types.is_object_dtype(s):
        s = s.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v, na_action="ignore")
    s = s.astype("string").str.strip().str.normalize("NFC")  # "café" typed two ways is one label
    s = s.str.replace(_WHOLE_DECIMAL, r"\1", regex=True)  # "1.0" read as text is the class 1, as 1.0 is
    return s.mask(s == "")


_WHOLE_DECIMAL = r"^(-?\d+)\.0+$"


def _sort_keys(keys) -> list[str]:
    keys = list(keys)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


@dataclass(frozen=True)
class Classes:
    """The label set: keys to match annotations, values to write out."""

    keys: tuple[str, ...]
    values: tuple[Any, ...]

    @classmethod
    def declared(cls, labels: list) -> Classes:
        keys = tuple(label_keys(pd.Series(list(labels), dtype=object)).tolist())
        if len(set(keys)) != len(keys):
            raise StageError(f"labels {labels} repeat a class")
        return cls(keys, tuple(labels))

    @classmethod
    def discovered(cls, examples: dict[str, Any], read_as_text: bool = False) -> Classes:
        """The classes the answers hold. Annotation files are read as text, so that a label
        column mixing 1 and "unsure" loses no answer (``read_as_text``); labels read so
        that are all whole numbers, or all true and false (JSON's booleans, a CSV's
        True/False), come out as numbers or booleans again, as a typed reader gives them.
        Whole floats (a Parquet column of classes with a missing answer) come out as integers."""
        keys = tuple(_sort_keys(examples))
        values = [examples[k] for k in keys]
        if values and all(isinstance(v, (float, np.floating)) and float(v).is_integer() for v in values):
            values = [int(v) for v in values]  # classes 0 and 1 that pandas made 0.0 and 1.0 (a NaN, a pivot)
        elif read_as_text and values and all(isinstance(v, str) for v in values):
            if all(re.fullmatch(r"-?[1-9]\d*|0", k) for k in keys):
                values = [int(k) for k in keys]
            elif len({k.casefold() for k in keys}) == len(keys) and {k.casefold() for k in keys} <= {"true", "false"}:
                values = [k.casefold() == "true" for k in keys]
        return cls(keys, tuple(values))

    def codes(self, values: pd.Series) -> np.ndarray:
        """Class code per value; -1 for a missing label or one outside the set."""
        return pd.Index(self.keys).get_indexer(label_keys(values).fillna("\x00<missing>")).astype(np.int64)

    @property
    def dtype(self):
        """A nullable dtype that holds every class, so unlabeled rows stay missing."""
        values = list(self.values)
        if values and all(isinstance(v, (bool, np.bool_)) for v in values):
            return "boolean"
        if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            return "Int64"
        if values and all(isinstance(v, (float, np.floating)) for v in values):
            return "Float64"
        return "string"  # text, or classes of mixed kinds (0, 1 and "unsure") written as text

    def decode(self, codes: np.ndarray) -> pd.Series:
        out = np.empty(len(codes), dtype=object)
        ok = codes >= 0
        values = self.values if self.dtype != "string" else [str(v) for v in self.values]
        out[ok] = np.asarray(values, dtype=object)[codes[ok]]
        out[~ok] = None
        return pd.Series(out, dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.keys)
