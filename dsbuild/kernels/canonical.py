"""Canonical spellings of categorical values: trim, Unicode NFKC, case, synonym tables.

Matching is by a *key* that ignores what people get wrong (surrounding and repeated
spaces, case, full-width or compatibility characters, invisible format characters), so ``' male'``, ``'MALE'`` and
``'ｍａｌｅ'`` all find ``Male``. Work happens on the distinct values of a column only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

CASES = ("keep", "fold", "lower", "upper", "title", "common")
# Invisible format characters (Unicode Cf): soft hyphens, zero-width spaces and joiners,
# bidirectional marks, byte-order marks. Pasted with a value or inside words, they made
# text that reads the same compare unequal.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def without_invisible(text: str) -> str:
    """``text`` without invisible format characters (taken out, not read as a break)."""
    return _INVISIBLE.sub("", text)


_SPACES = re.compile(r"\s+")


def match_key(text: str) -> str:
    """The form two spellings share when they mean the same value. Invisible format
    characters (a zero-width space pasted from a web page, a byte-order mark, direction
    marks) are left out: ``'us\u200b'`` was an unknown value that printed as ``us``."""
    return _SPACES.sub(" ", without_invisible(unicodedata.normalize("NFKC", text))).strip().casefold()


def tidy(text: str, *, trim: bool = True, nfkc: bool = True, case: str = "keep") -> str:
    """One spelling cleaned of layout noise, in the case asked for."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if trim:
        text = _SPACES.sub(" ", text).strip()
    if case == "fold":
        return text.casefold()
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "title":
        return text.title()
    return text  # keep; common is chosen over the data set (common_spellings)


class SynonymTable:
    """Canonical values and the other spellings that mean them.

    ``vocabulary`` lists canonical values (each also matches its own key);
    ``synonyms`` maps a canonical value to other spellings (``Male: [M, man]``). Two
    canonical values that share a key, or a spelling claimed by two canonical values,
    is an error: the table would be ambiguous.
    """

    def __init__(self, vocabulary: Iterable[str] = (), synonyms: Mapping[str, Iterable[str]] | None = None):
        self.canonical: list[str] = []
        self.lookup: dict[str, str] = {}
        for value in [*vocabulary, *(synonyms or {})]:
            if value not in self.canonical:
                self.canonical.append(value)
                self._claim(match_key(value), value)
        for value, spellings in (synonyms or {}).items():
            for spelling in spellings:
                self._claim(match_key(str(spelling)), value)

    def _claim(self, key: str, value: str) -> None:
        taken = self.lookup.get(key)
        if taken is not None and taken != value:
            raise ValueError(f"spelling {key!r} would mean both {taken!r} and {value!r}")
        self.lookup[key] = value

    @property
    def closed(self) -> bool:
        """A table with entries defines the allowed values; anything else is unknown."""
        return bool(self.lookup)

    def find(self, text: str) -> str | None:
        return self.lookup.get(match_key(text))


def spelling_counts(
    values: pd.Series, table: SynonymTable | None = None, *, trim: bool = True, nfkc: bool = True
) -> dict[str, int]:
    """Rows per tidied spelling of the values ``table`` lacks: a partition's share of
    :func:`common_spellings`' counts, which add up across partitions."""
    table = table or SynonymTable()
    counts = values.astype("str").value_counts(dropna=True)
    out: dict[str, int] = {}
    for spelling, n in counts.items():
        if spelling.strip() and table.find(spelling) is None:
            tidied = tidy(spelling, trim=trim, nfkc=nfkc)
            out[tidied] = out.get(tidied, 0) + int(n)
    return out


def spelled_missing(values: pd.Series, spellings: Iterable[str]) -> np.ndarray:
    """Where a value is one of ``spellings`` that mean missing (``N/A``, ``-``, ``?``), matched
    by :func:`match_key` as canonical values are; a distinct value is looked at once."""
    keys = {match_key(str(s)) for s in spellings}
    if not keys:
        return np.zeros(len(values), dtype=bool)
    codes, uniques = pd.factorize(values.astype("str"), use_na_sentinel=True)
    return _spread(np.array([match_key(str(u)) in keys for u in uniques], dtype=bool), codes)


def common_spellings(counts: Mapping[str, int]) -> dict[str, str]:
    """Match key -> the spelling most rows use among those sharing it (``private``,
    ``PRIVATE`` -> ``Private`` where most write that); a tie goes to the first in code
    point order, so the choice depends on the counts alone."""
    best: dict[str, tuple[int, str]] = {}
    for spelling, n in counts.items():
        key = match_key(spelling)
        if key not in best or (-n, spelling) < (-best[key][0], best[key][1]):
            best[key] = (n, spelling)
    return {key: spelling for key, (_, spelling) in best.items()}


def canonicalize(
    values: pd.Series,
    table: SynonymTable | None = None,
    *,
    trim: bool = True,
    nfkc: bool = True,
    case: str = "keep",
    common: Mapping[str, str] | None = None,
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(canonical values as ``str``, changed, unknown) for one column.

    A value the table knows becomes its canonical spelling; any other value is tidied
    (trim, NFKC, case; with ``case="common"``, the spelling of its match key in
    ``common``) and, if the table is closed, marked unknown. Missing stays missing,
    and blank text is missing too, neither changed nor unknown: a CSV reader makes it
    null, Parquet and JSON keep it, and the result must not depend on the format.
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    table = table or SynonymTable()
    text = values if isinstance(values.dtype, pd.StringDtype) else values.astype("str")
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    raw = [str(u) for u in uniques]
    mapped = np.empty(len(raw), dtype=object)
    unknown_u = np.zeros(len(raw), dtype=bool)
    blank_u = np.array([not spelling.strip() for spelling in raw], dtype=bool)
    for i, spelling in enumerate(raw):
        found = table.find(spelling)
        unknown_u[i] = found is None and table.closed and not blank_u[i]
        if found is None:
            found = tidy(spelling, trim=trim, nfkc=nfkc, case=case)
            found = (common or {}).get(match_key(found), found) if case == "common" else found
        mapped[i] = found
    mapped[blank_u] = None
    changed_u = (mapped != np.array(raw, dtype=object)) & ~blank_u
    result = pd.Series(pd.array(mapped, dtype="str").take(codes, allow_fill=True), index=values.index)
    present = codes >= 0
    changed = present & _spread(changed_u, codes)
    unknown = present & _spread(unknown_u, codes)
    return result, changed, unknown


def _spread(per_unique: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A per-distinct-value flag as a per-row flag (False for missing rows, code -1)."""
    return np.r_[per_unique, False][codes]
