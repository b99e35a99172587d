"""Record-level conventions every stage shares: ids, per-record randomness, images.

Randomness is never drawn from a global generator: a record's random numbers come from
(job seed, stage name, record id), so the output does not depend on partitioning,
worker count, retries or the order tasks finish.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

ID = "id"
REJECT = "_reason"  # why a row leaves, while the stages run: the rejects' REASON once written
REASON = "reason"
STAGE = "stage"
WEIGHT = "weight"


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same in every process and release."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "little")


def record_seed(seed: int, stage: str, record_id: str) -> int:
    return stable_hash64(seed, stage, record_id)


def record_rng(seed: int, stage: str, record_id: str) -> np.random.Generator:
    """The generator for one record in one stage."""
    return np.random.default_rng(record_seed(seed, stage, record_id))


def record_seeds(seed: int, stage: str, ids: Iterable[str]) -> np.ndarray:
    """Seeds for many records at once, as uint64 (vectorised callers index into it)."""
    prefix = hashlib.blake2b(digest_size=8)
    prefix.update(f"{seed}\x1f{stage}\x1f".encode())
    out = []
    for rid in ids:
        h = prefix.copy()
        h.update(str(rid).encode())
        h.update(b"\x1f")
        out.append(int.from_bytes(h.digest(), "little"))
    return np.array(out, dtype=np.uint64)


def record_uniform(seed: int, stage: str, ids: Iterable[str]) -> np.ndarray:
    """One uniform draw in [0, 1) per record, a pure function of its id."""
    return (record_seeds(seed, stage, ids) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def child_id(parent_id: str, kind: str, k: int) -> str:
    """Id of a row made from another: `parent#aug3`, `parent#rs1`, `parent#syn0`."""
    return f"{parent_id}#{kind}{k}"


def copy_kind(stage: str, kind: str) -> str:
    """The marker of the copies ``stage`` makes: ``kind`` for the first stage of its name,
    ``rs2.`` for ``resample#2`` (ids ``parent#rs2.1``). Two stages that copy one row
    named both copies ``parent#rs1``, and stages key rows by id."""
    _, sep, number = stage.rpartition("#")
    return f"{kind}{number}." if sep and number.isdigit() else kind


# -- images -----------------------------------------------------------------------------

IMAGE_DTYPE = pd.ArrowDtype(pa.binary())
"""Encoded image bytes. An Arrow binary column: Dask leaves it alone (it would turn a
plain object column into strings) and Parquet stores it as BYTE_ARRAY."""


def image_series(blobs, index=None) -> pd.Series:
    return pd.Series(list(blobs), dtype=IMAGE_DTYPE, index=index)


def image_cell_like(parent, data: bytes):
    """A cell holding ``data`` in the form of ``parent``'s cell: bytes for a binary
    column, a struct for Hugging Face ``datasets``' ``Image()`` (``{"bytes", "path"}``),
    with every field but ``bytes`` null.

    A null path is what ``datasets`` loads: it decodes from ``bytes`` whenever they are
    set, while a path would name a file that does not exist (an augmented copy lives only
    as bytes, possibly in another format than its parent's file).
    """
    return {**dict.fromkeys(parent), "bytes": data} if isinstance(parent, dict) else data


def image_bytes(cell) -> bytes | None:
    """The encoded bytes of one image cell, or None when it has none.

    Stages accept both forms of image column: plain bytes (dsbuild's own sources) and
    the struct Hugging Face ``datasets`` writes for ``Image()`` (a dict with ``bytes``,
    which may be null when only ``path`` is set). Missing cells (None, NaN, NA) have none.
    """
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if isinstance(cell, bytes):
        return cell
    return bytes(cell) if isinstance(cell, (bytearray, memoryview)) else None


def image_blobs(column) -> np.ndarray:
    """Object array of each cell's encoded bytes (None where there are none): what the
    image kernels take, whichever form the column has."""
    values = column.to_numpy(dtype=object) if isinstance(column, pd.Series) else column
    out = np.empty(len(values), dtype=object)
    out[:] = [image_bytes(cell) for cell in values]
    return out


def missing_image_reason(cell) -> str:
    """The reject reason of a cell without bytes: ``empty-image``, or
    ``empty-image:path-only=<path>`` for a struct that names a file but does not hold it
    (the bytes were not embedded when the data set was written)."""
    path = cell.get("path") if isinstance(cell, dict) else None
    return f"empty-image:path-only={path}" if path else "empty-image"


IMAGE_FORMATS = ("png", "jpeg", "webp", "bmp", "gif", "tiff", "pnm", "jp2", "exr", "pfm", "hdr")

_PNM_MAGIC = re.compile(rb"P[1-7]\s")
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ: a bare JPEG 2000 codestream (.j2k, .j2c)
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_PFM_MAGIC = re.compile(rb"P[Ff]\s")
_HDR_SIZE = re.compile(rb"\n\n?([-+][XY]) (\d+) ([-+][XY]) (\d+)\n")


def sniff_image_format(data: bytes | None) -> str:
    """The container format from the magic bytes, or "unknown"."""
    if not data:
        return "unknown"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if _PNM_MAGIC.match(data[:3]):  # netpbm: PBM, PGM, PPM (P1-P6), PAM (P7)
        return "pnm"
    if data[:12] == _JP2_SIGNATURE or data[:4] == _J2K_CODESTREAM:
        return "jp2"
    if data[:4] == _EXR_MAGIC:
        return "exr"
    if _PFM_MAGIC.match(data[:3]):  # portable float map: PF colour, Pf grey
        return "pfm"
    if data.startswith((b"#?RADIANCE", b"#?RGBE")):  # Radiance HDR
        return "hdr"
    return "unknown"


def image_size(data: bytes | None) -> tuple[int, int] | None:
    """(height, width) of the image as shown (upright, as ``decode_image`` gives
    it), read from the header alone, without decoding pixels.

    Returns None when the header cannot be read; the caller decides whether that is an
    error (validate_images decodes fully and says why).
    """
    fmt = sniff_image_format(data)
    try:
        if fmt == "png" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return (w, h) if exif_orientation(data) >= 5 else (h, w)
        if fmt in ("jpeg", "webp"):
            size = _jpeg_size(data) if fmt == "jpeg" else _webp_size(data)
            return size[::-1] if size is not None and exif_orientation(data) >= 5 else size
        if fmt == "bmp":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(h), w
        if fmt == "gif":
            w, h = struct.unpack("<HH", data[6:10])
            return h, w
        if fmt == "tiff":
            return _tiff_size(data)
        if fmt == "pnm":
            header = pnm_header(data)
            return (header["HEIGHT"], header["WIDTH"]) if header else None
        if fmt == "jp2":
            return _jp2_size(data)
        if fmt == "exr":
            return _exr_size(data)
        if fmt == "pfm":
            w, h = data[3:64].split()[:2]
            return int(h), int(w)
        if fmt == "hdr":
            found = _HDR_SIZE.search(data, 0, 4096)  # the resolution line after the header's blank line
            if found is None:
                return None
            first, second = int(found.group(2)), int(found.group(4))
            return (first, second) if found.group(1).endswith(b"Y") else (second, first)
    except (struct.error, IndexError, KeyError, ValueError):
        return None
    return None


_PNM_FIELDS = {b"1": ("WIDTH", "HEIGHT"), b"4": ("WIDTH", "HEIGHT")}  # bitmaps have no MAXVAL


def pnm_header(data: bytes) -> dict[str, int] | None:
    """WIDTH, HEIGHT and MAXVAL (1 for a bitmap) of a netpbm file's header, or None
    where it is cut or malformed: P1-P6 give them as numbers after the magic (``#``
    comments between), P7 (PAM) as named lines up to ``ENDHDR``."""
    kind = data[1:2]
    if kind == b"7":
        fields = dict(re.findall(rb"^(WIDTH|HEIGHT|DEPTH|MAXVAL)[ \t]+(\d+)", data[:1024].split(b"ENDHDR")[0], re.MULTILINE))
        out = {k.decode(): int(v) for k, v in fields.items()}
        return out if {"WIDTH", "HEIGHT", "MAXVAL"} <= out.keys() else None
    names = _PNM_FIELDS.get(kind, ("WIDTH", "HEIGHT", "MAXVAL"))
    tokens = re.sub(rb"#[^\n\r]*", b" ", data[2:256]).split()[: len(names)]
    if len(tokens) < len(names) or not all(t.isdigit() for t in tokens):
        return None
    return {"MAXVAL": 1} | {name: int(t) for name, t in zip(names, tokens)}


def _jp2_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG 2000 image: the JP2 file's image header box (ihdr, in
    jp2h), or a bare codestream's SIZ segment (its grid less its offset)."""
    if data[:4] == _J2K_CODESTREAM:
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
        return ysiz - yo, xsiz - xo
    at = data.find(b"ihdr", 0, 4096)
    if at < 4:
        return None
    return struct.unpack(">II", data[at + 4 : at + 12])


def _exr_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an OpenEXR image from its header's dataWindow (a box2i:
    xMin, yMin, xMax, yMax, inclusive); attributes are name, type, size, value."""
    pos = 8
    while pos < min(len(data), 1 << 16):
        name_end = data.index(b"\0", pos)
        if name_end == pos:  # the header's closing null
            return None
        type_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack("<i", data[type_end + 1 : type_end + 5])
        if data[pos:name_end] == b"dataWindow" and size == 16:
            x0, y0, x1, y1 = struct.unpack("<iiii", data[type_end + 5 : type_end + 21])
            return y1 - y0 + 1, x1 - x0 + 1
        pos = type_end + 5 + size
    return None


def _jpeg_segments(data: bytes):
    """(marker, offset, length) of each JPEG header segment, up to the scan; fill bytes
    and markers that carry no length are stepped over."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        yield marker, i, length
        if marker == 0xDA:
            return
        i += 2 + length


def _is_frame(marker: int) -> bool:
    """A start-of-frame marker (the one that holds the image's size)."""
    return 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, i, _ in _jpeg_segments(data):
        if _is_frame(marker):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return h, w
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8; 1 when there is none) of a JPEG, a PNG (its eXIf chunk)
    or a WebP (its EXIF chunk), which OpenCV's ``IMREAD_UNCHANGED`` leaves out and viewers,
    PIL's ``exif_transpose`` and OpenCV's other modes apply. A TIFF's own orientation tag
    OpenCV applies in every mode (1 here)."""
    fmt = sniff_image_format(data)
    if fmt == "jpeg":
        return jpeg_orientation(data)
    if fmt == "png":
        return _tiff_orientation(_without_exif_header(_png_chunk(data, b"eXIf")))
    if fmt == "webp":
        return _tiff_orientation(_without_exif_header(_webp_chunk(data, b"EXIF")))
    return 1


def _png_chunk(data: bytes, kind: bytes) -> bytes:
    """The data of a PNG's first ``kind`` chunk before its image data (b"" if none)."""
    pos = 8
    while pos + 8 <= len(data):
        length, found = struct.unpack_from(">I4s", data, pos)
        if found == kind:
            return data[pos + 8 : pos + 8 + length]
        if found in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return b""


def _webp_chunk(data: bytes, kind: bytes) -> bytes:
    """The data of a WebP (RIFF) file's first ``kind`` chunk (b"" if none)."""
    pos = 12
    while pos + 8 <= len(data):
        found, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if found == kind:
            return data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return b""


def _without_exif_header(exif: bytes) -> bytes:
    """The TIFF block of an EXIF chunk; some writers keep JPEG's ``Exif\\0\\0`` before it."""
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1-8; 1, upright, when it has none): how a viewer
    turns the stored pixels to show them. A phone stores a portrait photo as landscape
    pixels with orientation 6; 5-8 turn the image a quarter, so height and width swap."""
    for marker, i, length in _jpeg_segments(data):
        if _is_frame(marker):
            return 1  # the metadata segments come before the frame
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[i + 10 : i + 2 + length])
    return 1


def _tiff_size(tiff: bytes) -> tuple[int, int] | None:
    """(height, width) of a TIFF file's first image, upright as OpenCV decodes it (it
    applies the orientation tag): tags ImageWidth, ImageLength and Orientation of the first
    directory. Without it, a TIFF's size was known only once decoded, so a small file of
    huge pixels was decoded whole before max_pixels refused it."""
    order = {b"II": "<", b"MM": ">"}[tiff[:2]]
    (first,) = struct.unpack(order + "I", tiff[4:8])
    (entries,) = struct.unpack(order + "H", tiff[first : first + 2])
    tags = {}
    for at in range(first + 2, first + 2 + 12 * entries, 12):
        tag, kind = struct.unpack(order + "HH", tiff[at : at + 4])
        if tag in (256, 257, 274) and kind in (3, 4):  # SHORT or LONG
            (tags[tag],) = struct.unpack(order + ("H" if kind == 3 else "I"), tiff[at + 8 : at + (10 if kind == 3 else 12)])
    if 256 not in tags or 257 not in tags:
        return None
    h, w = tags[257], tags[256]
    return (w, h) if 5 <= tags.get(274, 1) <= 8 else (h, w)


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of the first directory of an EXIF (TIFF) block."""
    value = tiff_short(tiff, 0x0112, 1)
    return value if 1 <= value <= 8 else 1


def tiff_short(tiff: bytes, wanted: int, default: int) -> int:
    """The SHORT value of tag ``wanted`` in the first directory of a TIFF (or EXIF) block;
    ``default`` where it has none, or no byte order, or is cut short."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    try:
        (first,) = struct.unpack(order + "I", tiff[4:8])
        (entries,) = struct.unpack(order + "H", tiff[first : first + 2])
        for at in range(first + 2, first + 2 + 12 * entries, 12):
            tag, kind = struct.unpack(order + "HH", tiff[at : at + 4])
            if tag == wanted and kind == 3:
                return struct.unpack(order + "H", tiff[at + 8 : at + 10])[0]
    except (TypeError, struct.error):
        return default
    return default


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return h, w
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return h, w
    return None
