"""PostgreSQL's COPY text format (``COPY t TO 'f'``, its default): a tab between fields, no
header, ``\\N`` for NULL, and a backslash before every tab, newline, carriage return and
backslash in a value, so that no value holds a separator or a newline and nothing is
quoted. The CSV reader splits such a file with quoting off; this module undoes the escapes.
"""

from __future__ import annotations

import re

import pandas as pd

NULL = "\\N"

# PostgreSQL's escapes, as COPY FROM reads them: its output writes \b \f \n \r \t \v and \\;
# a file written by hand may hold octal (\101) or hex (\x41) bytes; any other \c is c.
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_CHARACTERS = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _byte(found: re.Match) -> bytes:
    octal, hexa, char = found.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _CHARACTERS.get(char, char)


def unescape(value: str) -> str:
    """One value as PostgreSQL wrote it, its escapes undone; UnicodeDecodeError if octal or
    hex escapes make bytes that are not UTF-8 text."""
    return _ESCAPE.sub(_byte, value.encode("utf8")).decode("utf8")


def unescaped(column: pd.Series, name: str, reasons: dict[int, str]) -> pd.Series:
    """A text column with its values' escapes undone (only those holding a backslash are
    touched). A value whose escapes are not UTF-8 is missing, and its row's position gets the
    reason ``encoding:<column>`` in ``reasons``."""
    values = column.to_numpy(dtype=object, na_value=None)
    at = [i for i, v in enumerate(values) if v is not None and "\\" in v]
    if not at:
        return column
    values = values.copy()
    for i in at:
        try:
            values[i] = unescape(values[i])
        except UnicodeDecodeError:
            values[i] = None
            reasons.setdefault(i, f"encoding:{name}")
    return pd.Series(values, index=column.index, dtype=column.dtype)


def looks_written_so(lines: list[list[str]]) -> bool:
    """Whether the first lines of a tab-separated file hold a field that is ``\\N`` alone:
    PostgreSQL's NULL in its text format (MySQL's ``SELECT … INTO OUTFILE`` and Hive write
    it so too). Read as CSV, it was the text ``\\N`` and its escapes were kept."""
    return any(field == NULL for row in lines for field in row)


def header_unescaped(names: list[str]) -> list[str]:
    return [unescape(n) if "\\" in n else n for n in names]

