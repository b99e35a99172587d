"""PostgreSQL's COPY text format (``COPY t TO 'f'``, its default): a tab between fields, no
header, ``\\N`` for NULL, and a backslash before every tab, newline, carriage return and
backslash in a value, so that no value holds a separator or a newline and nothing is
quoted. The CSV reader splits such a file with quoting off; this module undoes the escapes.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
    """A text column with its values' escapes undone. The escapes PostgreSQL writes are
    replaced column-wide in Arrow, an escaped backslash first held as NUL (which its text
    never holds) so that ``\\\\n`` stays a backslash and an n; a value with any other escape
    (octal, hex: files written by hand) is undone by :func:`unescape` alone. A value
    whose escapes are not UTF-8 is missing, and its row's position gets the reason
    ``encoding:<column>`` in ``reasons``. Value by value in Python, 1 M values with two
    escapes each took 1.9-2.8 s (column-wide: 0.7-1.6 s), and 1 M without one 0.14-0.19 s
    (0.03-0.05 s), at load 9."""
    values = pa.array(column.array) if isinstance(column.dtype, pd.StringDtype) else pa.array(column, pa.string(), from_pandas=True)
    escaped = pc.fill_null(pc.match_substring(values, "\\"), False)
    if not pc.any(escaped).as_py():
        return column
    if pc.any(pc.match_substring(values, "\0")).as_py():  # NUL is no PostgreSQL text: value by value
        out, others = column.copy(), np.flatnonzero(escaped.to_numpy(zero_copy_only=False))
    else:
        backslashes = pc.any(pc.match_substring(values, "\\\\")).as_py()
        done = pc.replace_substring(values, "\\\\", "\0") if backslashes else values
        for escape, char in _WRITTEN.items():  # each a pass over the column: those it holds only
            if pc.any(pc.match_substring(done, escape)).as_py():
                done = pc.replace_substring(done, escape, char)
        out = pd.Series(pd.array(pc.replace_substring(done, "\0", "\\") if backslashes else done, dtype=column.dtype),
                        index=column.index)
        others = np.flatnonzero(pc.fill_null(pc.match_substring(done, "\\"), False).to_numpy(zero_copy_only=False))
    for i in others:
        try:
            out.iat[i] = unescape(values[i].as_py())
        except UnicodeDecodeError:
            out.iat[i] = None
            reasons.setdefault(int(i), f"encoding:{name}")
    return out


# the escapes PostgreSQL's COPY TO writes, besides \\ (a backslash)
_WRITTEN = {"\\b": "\b", "\\f": "\f", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\v": "\v"}


def looks_written_so(lines: list[list[str]]) -> bool:
    """Whether the first lines of a tab-separated file hold a field that is ``\\N`` alone:
    PostgreSQL's NULL in its text format (MySQL's ``SELECT … INTO OUTFILE`` and Hive write
    it so too). Read as CSV, it was the text ``\\N`` and its escapes were kept."""
    return any(field == NULL for row in lines for field in row)


def header_unescaped(names: list[str]) -> list[str]:
    return [unescape(n) if "\\" in n else n for n in names]

