"""UTF-16 and UTF-32 text (Excel's "Unicode Text", PowerShell's Out-File), read as the UTF-8
it holds: cut into blocks at its own newlines (a whole code unit), transcoded a chunk at a
time, so the text readers (CSV, JSON lines) parse and count lines as in any UTF-8 file."""

from __future__ import annotations

import codecs
import io

import numpy as np

from dsbuild.io.sources.common import BYTE_ORDER_MARKS, SourceError, marked_encoding


def is_wide(encoding: str) -> bool:
    """Whether text in ``encoding`` has no newline byte of its own (UTF-16, UTF-32, as
    Excel's "Unicode Text" export writes): files are cut and lines found at the byte
    ``\n``, which splits such text mid-character; encoding: utf-16 was "not utf-16 text"."""
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


ENCODING_ADVICE = "set source.encoding to the file's"


def read_block(fs, path: str, start: int, length: int | None, wide: str, advice: str = ENCODING_ADVICE) -> bytes:
    """The UTF-8 text of the records that begin in ``[start, start + length)`` of a file in
    the ``wide`` encoding (the whole file for ``length`` None), as
    ``fsspec.utils.read_block`` cuts a UTF-8 one, ending with a newline and without the
    byte-order mark. ``advice``: what a message about bytes that are not such text says to do."""
    with fs.open(path, "rb", compression="infer") as f:
        head = f.read(4)
        codec, unit = wide_codec(head, wide)
        if start == 0 and length is None:  # a compressed file, or one whose values span lines: streamed whole
            data = transcoded(f, head, codec, path, advice=advice)
        else:
            first, records = _wide_records(f, head, start, length, unit, codec)
            data = transcoded(io.BytesIO(records), b"", codec, path, first, advice)
    data = data.removeprefix(codecs.BOM_UTF8) if start == 0 else data  # a byte-order mark is no text
    return data if data.endswith(b"\n") or not data else data + b"\n"


def _wide_records(f, head: bytes, start: int, length: int, unit: int, codec: str) -> tuple[int, bytes]:
    """Where they begin, and the bytes of the records that begin in ``[start, start + length)``, as
    ``fsspec.utils.read_block`` finds them at newline bytes: from just past the first
    newline unit at or after ``start`` (the file's start for 0) through the first one at or
    after its end. A file's start is read forward only (compressed streams seek badly)."""
    end = -(-(start + length) // unit) * unit
    if start == 0:
        first, data = 0, head + f.read(max(end - len(head), 0))
    else:
        f.seek(-(-start // unit) * unit)
        first = f.tell() + len(_through_newline(f, unit, codec))
        if end < first:  # the block lies inside a line longer than it
            return first, b""
        f.seek(first)
        data = f.read(end - first)
    return first, data + _through_newline(f, unit, codec)


def _through_newline(f, unit: int, codec: str) -> bytes:
    """The bytes of ``f`` from where it is through its next newline code unit (to its end
    if none): a newline is a whole code unit, never half of a character's."""
    dtype = np.dtype(f"{'>' if codec.endswith('be') else '<'}u{unit}")
    out = []
    while chunk := f.read(_WIDE_CHUNK):
        found = np.flatnonzero(np.frombuffer(chunk[: len(chunk) // unit * unit], dtype=dtype) == 0x0A)
        if len(found):
            out.append(chunk[: (int(found[0]) + 1) * unit])
            break
        out.append(chunk)
    return b"".join(out)


_WIDE_CHUNK = 2**16


def transcoded(f, head: bytes, codec: str, path: str, at: int = 0, advice: str = ENCODING_ADVICE) -> bytes:
    """``head`` and the rest of ``f`` as UTF-8, decoded a chunk at a time: read whole and
    decoded at once, a file held its bytes, its text and the text's UTF-8 together, about
    three times its size. ``at``: where ``f`` starts in the file, for the message."""
    decoder, out, chunk = codecs.getincrementaldecoder(codec)(), [], head or f.read(_TRANSCODE_CHUNK)
    while True:
        last = not chunk
        try:
            out.append(decoder.decode(chunk, final=last).encode("utf8"))
        except UnicodeDecodeError as e:
            raise SourceError(f"{path}: not {codec} text at byte {at + e.start:,} ({chunk[max(e.start - 20, 0):e.end + 20]!r}); "
                              + advice) from None
        if last:
            return b"".join(out)
        at += len(chunk)
        chunk = f.read(_TRANSCODE_CHUNK)


_TRANSCODE_CHUNK = 2**20


def wide_unit(fs, path: str, wide: str) -> str:
    """The numpy dtype of the file's code unit, in the byte order its byte-order mark names:
    where values span lines, its quotes and newlines are counted by unit (a byte 0x22 may
    be half of a character), so the file is cut into blocks as a UTF-8 one is, not read whole."""
    with fs.open(path, "rb") as f:
        return unit_dtype(*wide_codec(f.read(4), wide))


def unit_dtype(codec: str | None, unit: int) -> str:
    """The numpy dtype of a code unit of ``codec`` (``u1``: bytes, for any other text)."""
    return "u1" if codec is None else f"{'>' if codec.endswith('be') else '<'}u{unit}"


def file_encoding(fs, path: str) -> str | None:
    """``utf-16`` or ``utf-32`` where the file starts with its byte-order mark, as Excel's
    "Unicode Text" export and PowerShell's Out-File do: such a CSV file stopped as "UTF-16
    text ...; set source.encoding: utf-16", though the mark leaves no doubt."""
    with fs.open(path, "rb", compression="infer") as f:
        return marked_encoding(f.read(4))


def marked_note(marked: dict[str, str]) -> str:
    """The note for files read by their byte-order mark (path -> encoding), the first named."""
    path, encoding = next(iter(marked.items()))
    others = f" (and {len(marked) - 1:,} more file(s))" if len(marked) > 1 else ""
    return f"source: {path}{others} starts with {encoding.upper()}'s byte-order mark: read as {encoding} text"


def wide_codec(head: bytes, wide: str) -> tuple[str, int]:
    """The codec, in the byte order the file's byte-order mark names (a block past the
    start has none to tell it), and its code unit's bytes."""
    unit = 4 if codecs.lookup(wide).name.startswith("utf-32") else 2
    bom = next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark) and len(mark) == unit), None)
    return bom or wide, unit
