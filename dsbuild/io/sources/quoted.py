"""Cutting CSV text into blocks of whole records when quoted values span lines.

A newline ends a record only outside quotes, and whether a byte is inside quotes depends
on every quote before it in the file (RFC 4180: a doubled quote inside a value keeps the
count even). So a file is cut in two passes: each byte range counts its quotes, and its
newlines as they would fall for either state at its start, in parallel; the running sum
of the quote counts then gives each range's state at its start, and a block runs from the
first newline outside quotes in its range to the first one in the next range.

Text in UTF-16 or UTF-32 is counted by its code units (``unit``, a numpy dtype such as
``<u2``): a quote or a newline is a whole unit there, and a byte 0x22 or 0x0A may be half of
another character (U+2200, U+010A). Offsets are in bytes whatever the unit; ranges begin
and end at whole units.
"""

from __future__ import annotations

import numpy as np

QUOTE, NEWLINE = ord('"'), ord("\n")
_READ_AHEAD = 1 << 16


def _units(data: bytes, unit: str) -> np.ndarray:
    dtype = np.dtype(unit)
    return np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)


def _outside(data: bytes, inside: int, unit: str = "u1") -> np.ndarray:
    """Offsets of the newlines in ``data`` that fall outside quotes when ``data`` starts
    inside quotes (``inside`` = 1) or outside (0)."""
    arr = _units(data, unit)
    newlines = np.flatnonzero(arr == NEWLINE)
    if inside == 0 and unit == "u1" and QUOTE not in data:
        return newlines
    quotes = np.flatnonzero(arr == QUOTE)
    before = np.searchsorted(quotes, newlines) + inside
    return newlines[before % 2 == 0] * arr.itemsize


def range_counts(data: bytes, unit: str = "u1") -> tuple[int, int, int]:
    """(quotes mod 2, newlines outside quotes if the range starts outside, if it starts
    inside) of one byte range: all a range needs to say before its state is known."""
    arr = _units(data, unit)
    newlines = np.flatnonzero(arr == NEWLINE)
    quotes = np.flatnonzero(arr == QUOTE)
    odd = int((np.searchsorted(quotes, newlines) % 2).sum())
    return len(quotes) % 2, len(newlines) - odd, odd


def record_start(data: bytes, inside: int, unit: str = "u1") -> int | None:
    """Offset just past the first newline outside quotes, or None if there is none."""
    ends = _outside(data, inside, unit)
    return int(ends[0]) + np.dtype(unit).itemsize if len(ends) else None


def records_end(data: bytes) -> int:
    """Offset just past the last newline outside quotes (0 if none): where the whole
    records at the start of a sample end."""
    ends = _outside(data, 0)
    return int(ends[-1]) + 1 if len(ends) else 0


def read_records(f, start: int, length: int, inside: int, inside_after: int, unit: str = "u1") -> bytes:
    """The records that begin in ``[start, start + length)`` of the open file ``f``: from
    the first newline outside quotes in the range (the file's start for range 0) to the
    first one at or after ``start + length``. ``inside`` and ``inside_after`` are the quote
    states at the two ends, from :func:`range_counts` of the ranges before them."""
    f.seek(start)
    data = f.read(length)
    first = 0 if start == 0 else record_start(data, inside, unit)
    if first is None:  # one record spans the whole range: the block where it begins reads it
        return b""
    if len(data) == length:
        state, tail = inside_after, []
        while chunk := f.read(_READ_AHEAD):
            end = record_start(chunk, state, unit)
            if end is not None:
                tail.append(chunk[:end])
                break
            tail.append(chunk)
            state ^= int(np.count_nonzero(_units(chunk, unit) == QUOTE)) & 1
        data += b"".join(tail)
    return data[first:]


def lines(data: bytes) -> list[bytes]:
    """``data`` (which starts outside quotes) split at its newlines outside quotes: one
    item per record or empty line, as ``bytes.split`` gives physical lines."""
    if QUOTE not in data:
        return data.split(b"\n")
    cuts = _outside(data, 0)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(data)]])
    return [data[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
