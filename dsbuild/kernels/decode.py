"""Image bytes <-> pixels with OpenCV, and the checks that decide an image is usable."""

from __future__ import annotations

import functools
import os
import re
import struct
import sys
import tempfile
import threading
import zlib

import cv2
import numpy as np

from dsbuild.records import exif_orientation, image_size, pnm_header, sniff_image_format, tiff_short

_ENCODE_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff", "pnm": ".pnm", "jp2": ".jp2"}


def decode_image(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """Pixels (H×W or H×W×C, BGR order as OpenCV keeps them), or None if undecodable.

    Upright, as viewers show them: the EXIF orientation of a JPEG, PNG or WebP is applied,
    as OpenCV's other read modes, PIL's ``exif_transpose`` and Hugging Face ``datasets``
    apply it, and as labelling tools draw boxes on it. ``IMREAD_UNCHANGED`` (kept for
    16-bit and alpha) is the one mode that leaves it out, so it is applied here (a TIFF's
    OpenCV applies in every mode).
    """
    if not data:
        return None
    if data[:1] == b"P" and (maxval := _pnm_levels(data)) is not None:
        return _pnm_to_16_bits(data, maxval, flags)
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is not None and flags == cv2.IMREAD_UNCHANGED:
        if _tiff_samples(data) == 2:
            pixels = _grey_alpha_tiff(data, pixels)
        turn = _UPRIGHT.get(exif_orientation(data))
        if turn is not None:
            pixels = turn(pixels)
    return pixels


def _pnm_levels(data: bytes) -> int | None:
    """A netpbm file's MAXVAL where it is neither 8 nor 16 bits' (a 10- or 12-bit camera's
    1023, 4095), else None. OpenCV scales a MAXVAL under 255 to 8 bits, but gives one
    above it as stored: 0-1023 in 16 bits, which showed nearly black and became 0-4 in 8
    bits."""
    if sniff_image_format(data) != "pnm":
        return None
    header = pnm_header(data)
    maxval = header["MAXVAL"] if header else 0
    return maxval if 255 < maxval < 65535 else None


def _pnm_to_16_bits(data: bytes, maxval: int, flags: int) -> np.ndarray | None:
    """A netpbm image of MAXVAL between 8 and 16 bits' on 16 bits' scale (value × 65535 /
    MAXVAL, rounded, as netpbm's ``pamdepth`` makes it), then read as ``flags`` asks."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16:
        return pixels
    pixels = ((np.minimum(pixels, maxval).astype(np.uint32) * 65535 + maxval // 2) // maxval).astype(np.uint16)
    if flags == cv2.IMREAD_UNCHANGED:
        return pixels
    if flags == cv2.IMREAD_GRAYSCALE and pixels.ndim == 3:  # the one other mode dsbuild reads a netpbm file in (hashes)
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return to_uint8(pixels)


def _tiff_samples(data: bytes) -> int:
    """SamplesPerPixel (tag 277) of a TIFF's first directory; 0 for another format."""
    return tiff_short(data, 277, 1) if data[:4] in (b"II*\x00", b"MM\x00*") else 0


def _grey_alpha_tiff(data: bytes, decoded: np.ndarray) -> np.ndarray:
    """A grey+alpha TIFF as BGRA (as OpenCV decodes a grey+alpha PNG), read with tifffile
    (scikit-image's reader): OpenCV decodes it to 8-bit grey, its alpha and a 16-bit
    depth lost without a word. Upright by its orientation tag, as OpenCV turns a TIFF;
    what tifffile cannot read is left as OpenCV decoded it."""
    import io

    import tifffile

    try:
        pixels = tifffile.imread(io.BytesIO(data), key=0)
    except Exception:  # noqa: BLE001 - a compression tifffile lacks a codec for: OpenCV's reading stands
        return decoded
    if pixels.ndim != 3 or pixels.shape[2] != 2 or pixels.dtype not in (np.uint8, np.uint16):
        return decoded
    turn = _UPRIGHT.get(tiff_short(data, 274, 1))  # Orientation
    pixels = turn(pixels) if turn is not None else pixels
    return cv2.merge([np.ascontiguousarray(pixels[..., 0])] * 3 + [np.ascontiguousarray(pixels[..., 1])])


_UPRIGHT = {  # EXIF orientation -> what makes the stored pixels upright (PIL's exif_transpose)
    2: lambda p: cv2.flip(p, 1),
    3: lambda p: cv2.rotate(p, cv2.ROTATE_180),
    4: lambda p: cv2.flip(p, 0),
    5: cv2.transpose,
    6: lambda p: cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE),
    7: lambda p: cv2.flip(cv2.transpose(p), -1),
    8: lambda p: cv2.rotate(p, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def stored_grey_alpha(data: bytes | None) -> bool:
    """True for a PNG whose header says grey with alpha (colour type 4) or a TIFF of 2
    samples a pixel, which :func:`decode_image` gives as BGRA with equal colour channels."""
    if not data:
        return False
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data[12:16] == b"IHDR" and len(data) > 25 and data[25] == 4
    return _tiff_samples(data) == 2


def as_stored(pixels: np.ndarray | None, data: bytes | None) -> np.ndarray | None:
    """The pixels in the channels the file holds: a grey+alpha PNG as 2 channels (grey,
    alpha), not the BGRA OpenCV makes of it. Transformed and written as BGRA, a grey
    image with alpha came out colour: 3 channels in a JPEG, colour speckle from noise."""
    if pixels is not None and pixels.ndim == 3 and pixels.shape[2] == 4 and stored_grey_alpha(data):
        return np.ascontiguousarray(pixels[..., ::3])
    return pixels


def encode_image(pixels: np.ndarray, fmt: str = "png", quality: int | None = None) -> bytes:
    if fmt == "png" and pixels.ndim == 3 and pixels.shape[2] == 2:
        return _grey_alpha_png(pixels)
    params: list[int] = []
    if fmt == "jp2":  # lossless (1000: ratio 1), as the PNG and TIFF copies are; OpenCV's default is lossy
        params = [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 1000]
    elif fmt == "jpeg" and quality is not None:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == "webp" and quality is not None:
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(_ENCODE_EXT[fmt], pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {fmt}")
    return buf.tobytes()


def _grey_alpha_png(pixels: np.ndarray) -> bytes:
    """A PNG of grey with alpha (colour type 4), 8 or 16 bits, which OpenCV does not write
    (it writes 1, 3 or 4 channels). Rows are filtered Up and deflated at level 1, as fast
    as OpenCV's BGRA PNG of the same image and less than half its size."""
    h, w = pixels.shape[:2]
    deep = pixels.dtype == np.uint16
    rows = np.ascontiguousarray(pixels.astype(">u2") if deep else pixels).reshape(h, -1).view(np.uint8)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # Up: each byte less the one above, modulo 256
    scanlines = np.hstack([np.full((h, 1), 2, dtype=np.uint8), filtered]).tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", w, h, 16 if deep else 8, 4, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 1)) + chunk(b"IEND", b"")


def for_format(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """The pixels as ``fmt`` can hold them, converted on purpose rather than by the codec.

    OpenCV's encoders saturate a depth they cannot write (a 16-bit image became all 255
    in a JPEG), and drop or add channels on their own, so a copy's depth and channels
    would not be what its columns say. Depth goes to 8 bits by the dtype's range (16-bit:
    ``value * 255 / 65535``, rounded; floats as 0-1); JPEG has no alpha (dropped; grey,
    with alpha or not, stays grey); WebP has no grey (made 3 channels) and keeps alpha,
    unless it is fully opaque, which WebP does not store. Grey with alpha (2 channels,
    :func:`as_stored`) stays so in a PNG; TIFF, BMP and JPEG 2000 get BGRA (OpenCV writes
    no 2 channels, and reads a grey+alpha TIFF as grey). The same array comes back when
    nothing changes.
    """
    if pixels.dtype not in _DEPTHS.get(fmt, (pixels.dtype,)):
        pixels = to_uint8(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 2 and fmt == "jpeg":
        return np.ascontiguousarray(pixels[..., 0])
    if channels == 2 and fmt != "png":
        pixels, channels = cv2.merge([pixels[..., 0]] * 3 + [pixels[..., 1]]), 4
    if fmt == "jpeg" and channels == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    if fmt == "webp" and channels == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if fmt == "webp" and channels == 4 and (pixels[..., 3] == 255).all():
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return pixels


_DEPTHS = {  # the dtypes OpenCV writes in each format (TIFF: any it reads)
    "png": (np.uint8, np.uint16), "jpeg": (np.uint8,), "webp": (np.uint8,), "bmp": (np.uint8,),
    "pnm": (np.uint8, np.uint16), "jp2": (np.uint8, np.uint16),
}


def levels_problem(pixels: np.ndarray, fmt: str) -> str | None:
    """Why a float or 32-bit integer image cannot become ``fmt``'s 8-bit levels, or None.

    :func:`to_uint8` reads float levels as 0-1 (OpenCV's, scikit-image's and
    albumentations' convention); a float image holding anything else (0-255 levels, a
    depth map in metres) came out nearly all white, clipped, without a word. Guessing a
    range instead would darken or brighten another data set just as silently, so such an
    image is refused, its range named. A 32-bit integer image (counts, depth in mm) has
    no such convention: scaled by its dtype's range, it came out flat grey.
    """
    if pixels.dtype in _DEPTHS.get(fmt, (pixels.dtype,)):
        return None
    if np.issubdtype(pixels.dtype, np.integer) and pixels.dtype.itemsize >= 4:
        low, high = int(pixels.min(initial=0)), int(pixels.max(initial=0))
        article = "an" if pixels.dtype.name.startswith("int") else "a"
        return (f"{article} {pixels.dtype} image with values from {low} to {high} cannot be written as {fmt}: its levels have "
                "no 8-bit scale; convert it (a 16-bit PNG keeps 65,536 levels), or keep it a TIFF (format: same)")
    if not np.issubdtype(pixels.dtype, np.floating):
        return None
    finite = np.isfinite(pixels)
    if not finite.all():
        return f"a {pixels.dtype} image with NaN or infinite pixels cannot be written as {fmt}"
    low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
    if low >= 0 and high <= 1:
        return None
    return (f"a {pixels.dtype} image with values from {low:.4g} to {high:.4g} cannot be written as {fmt}: its 8-bit "
            "levels are made from float levels 0-1; scale the image to 0-1, or keep it a float TIFF (format: same)")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels scaled from the dtype's range (floats: 0-1, clipped), rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:  # 255 / 65535 is 1 / 257: exact in integers
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        scaled = (pixels.astype(np.float64) - info.min) * (255 / (int(info.max) - int(info.min)))
    else:
        scaled = np.clip(np.nan_to_num(pixels.astype(np.float64)), 0, 1) * 255
    return np.rint(scaled).astype(np.uint8)


def is_lossless(data: bytes | None) -> bool:
    """Whether an image file holds its pixels exactly: PNG, BMP, GIF, netpbm, a TIFF not
    compressed as JPEG, a WebP of VP8L data; not a JPEG, a lossy WebP, a JPEG 2000 (its
    header does not say: OpenCV writes the reversible wavelet at a lossy rate by
    default), nor an EXR (some of its codecs are lossy)."""
    fmt = sniff_image_format(data)
    if fmt in ("png", "bmp", "gif", "pnm"):
        return True
    if fmt == "tiff":
        return tiff_short(data, 259, 1) not in (6, 7)  # Compression: old-style and new-style JPEG
    if fmt == "webp":
        return data[12:16] == b"VP8L" or (data[12:16] == b"VP8X" and b"VP8L" in data[30:4096] and b"VP8 " not in data[30:4096])
    return False


def is_truncated(data: bytes, fmt: str) -> bool:
    """True when a PNG or JPEG stream ends before its image data does (a cut-off
    download or copy).

    OpenCV often decodes such files partially, filling the rest with grey, so decoding
    alone does not catch them. The file's structure is walked to its end marker, not
    the marker looked for near the file's end: bytes after it (a phone's trailer after
    a JPEG's EOI, padding after a PNG's IEND) are not a cut.
    """
    if fmt == "png":
        return _png_truncated(data)
    if fmt == "jpeg":
        return _jpeg_truncated(data)
    return False


def _png_truncated(data: bytes) -> bool:
    """Chunk by chunk (length, type, data, CRC) after the 8-byte signature: cut unless
    IEND's chunk is whole."""
    pos, size = 8, len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if pos > size:
            return True
        if kind == b"IEND":
            return False
    return True


def _jpeg_truncated(data: bytes) -> bool:
    """Segment by segment from SOI: a segment's 2-byte length steps over its payload (so
    an EXIF thumbnail's own FFD8..FFD9 inside APP1 is not taken for the end), and a
    scan's entropy-coded data is stepped over to the next marker. Cut unless EOI follows
    the last scan (every scan of a progressive JPEG is walked)."""
    markers, size, pos = _jpeg_markers(data), len(data), 2
    while True:
        i = int(np.searchsorted(markers, pos))
        if i == len(markers):
            return True  # the data (a scan, a segment's padding) runs to the end
        pos = int(markers[i])
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return False
        if marker in (0x01, 0xD8):  # TEM, SOI: no length
            pos += 2
            continue
        if pos + 4 > size:
            return True
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos > size:
            return True


def _jpeg_markers(data: bytes) -> np.ndarray:
    """Offsets of the bytes FF that start a marker: not FF00 (a stuffed FF in scan data),
    RST0-7 (restart markers inside a scan) or FFFF (fill before a marker). Found with
    numpy in one pass: a scan is most of a JPEG, too long to step through byte by byte."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ff = np.flatnonzero(raw[:-1] == 0xFF)
    after = raw[ff + 1]
    return ff[(after != 0x00) & (after != 0xFF) & ((after < 0xD0) | (after > 0xD7))]


def image_problem(data: bytes | None, max_pixels: int, min_side: int = 1) -> tuple[str | None, np.ndarray | None]:
    """(reason, pixels): reason is None for a good image, else why it must be rejected.

    The size is read from the header first, so a decompression bomb is refused before
    any pixel is allocated.
    """
    if data is None or len(data) == 0:
        return "empty-image", None
    fmt = sniff_image_format(data)
    if fmt == "unknown":
        what = _what_else(data)
        return f"decode-error:unknown-format{'=' + what if what else ''}", None
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        return f"too-large:{size[0]}x{size[1]}", None
    if is_truncated(data, fmt):
        return "truncated", None
    if fmt == "jpeg":
        pixels, damage = _decode_jpeg_noting_damage(data)
        if pixels is not None and damage:
            return f"corrupt-scan={damage}", None
    elif fmt == "tiff":
        pixels, damage = _decode_tiff_noting_damage(data)
        if pixels is not None and damage:
            return f"corrupt-data={damage}", None
    else:
        pixels = decode_image(data)
    if pixels is None:
        why = _why_undecodable(data, fmt)
        return f"decode-error:{fmt}{'=' + why if why else ''}", None
    h, w = pixels.shape[:2]
    if h * w > max_pixels:
        return f"too-large:{h}x{w}", None
    if min(h, w) < min_side:
        return f"too-small:{h}x{w}", None
    return None, pixels


_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF",
                b"avis": "AVIF"}


def _what_else(data: bytes) -> str | None:
    """What a file that is no image OpenCV reads is, where its first bytes say: an HTML
    page (a scraper's error page saved as .jpg, its title), a PDF, an SVG, or a phone's
    HEIC or AVIF photo, which OpenCV does not decode. None for anything else."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head")):
        title = re.search(rb"<title[^>]*>([^<]{1,80})", data[:4096], re.IGNORECASE)
        text = " ".join(title.group(1).decode("utf-8", "replace").split()) if title else ""
        return f"an HTML page{f' titled {text!r}' if text else ''}, not an image (a download that failed?)"
    if head.startswith(b"%pdf"):
        return "a PDF document, not an image"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return "an SVG drawing, which OpenCV does not read: render it to PNG"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return f"a {_HEIF_BRANDS[data[8:12]]} photo, which OpenCV does not read: convert it to JPEG or PNG"
    return None


def _why_undecodable(data: bytes, fmt: str) -> str | None:
    """Why OpenCV could not decode an image, in words a user can act on, or None. Looked
    for only once a decode failed, so a good image costs nothing more.

    OpenCV returns no reason: the codec prints it to the process's stderr (libpng's "IDAT:
    CRC error"), seen by no one on a worker. A PNG's chunks are checked here first (their
    CRCs, IHDR first: any PNG decoder's findings, whatever OpenCV was built with); else the
    image is decoded again with stderr kept (:func:`_decoded_saying`); a WebP that says
    nothing is checked against its RIFF header's size."""
    if fmt == "png":
        found = _png_damage(data)
        if found:
            return found
    if fmt == "exr" and not opencv_reads("OpenEXR"):
        return (f"this OpenCV ({cv2.__version__}) is built without OpenEXR, so it reads no EXR: convert the image to a "
                "float TIFF, or install an OpenCV built with OpenEXR")
    pixels, said = _decoded_saying(data)
    codec = [_plainly(_CODEC_LINE.sub("", line).strip()) for line in said if line.strip()]
    if pixels is None and codec:
        return " ".join(codec[0].split())[:200]
    if fmt == "webp" and len(data) >= 12:
        declared = int.from_bytes(data[4:8], "little") + 8
        if declared > len(data):
            return f"cut: its RIFF header says {declared} bytes, the file has {len(data)}"
        return "its VP8 image data is damaged (libwebp gives no detail)"
    return None


_CODEC_LINE = re.compile(r"^(libpng error: |\[\s*\w+:\d+@[\d.]+\] global \S+ )")  # libpng's prefix, OpenCV's log header
# OpenCV's own exception as its log quotes it: "imdecode_(''): can't read data: OpenCV(5.0.0)
# /io/opencv/.../bitstrm.cpp:59: error: (-2:Unspecified error) Unexpected end of input stream in function 'readBlock'"
_OPENCV_CALL = re.compile(r"^imdecode_ imdecode_\(''\): ")
_OPENCV_ERROR = re.compile(r"OpenCV\([\d.]+\) \S+: error: \(-?\d+:[^)]*\) (.*?)(?: in function '[^']*')?$")


def _plainly(line: str) -> str:
    """A codec's line without OpenCV's source paths and function names: a cut BMP or GIF
    was ``decode-error:bmp=imdecode_ imdecode_(''): can't read data: OpenCV(5.0.0)
    /io/opencv/modules/imgcodecs/src/bitstrm.cpp:59: error: (-2:Unspecified error) ...``."""
    line = _OPENCV_ERROR.sub(lambda m: m.group(1)[:1].lower() + m.group(1)[1:], _OPENCV_CALL.sub("", line))
    return line + " (the file is cut short)" if line.endswith("unexpected end of input stream") else line


@functools.cache
def opencv_reads(codec: str) -> bool:
    """Whether this OpenCV was built with ``codec`` ("OpenEXR", "JPEG 2000"), as its build
    information's Media I/O lines say ("NO" where it was not)."""
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.strip().partition(":")
        if name == codec:
            return value.strip() not in ("NO", "")
    return False


def _png_damage(data: bytes) -> str | None:
    """The first chunk whose CRC does not match its type and data (bytes changed in a
    copy or on disk), or a header that is not PNG's; None if the chunks are whole."""
    import zlib

    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos == 8 and kind != b"IHDR":
            return f"its first chunk is {kind!r}, not IHDR: not a PNG past its signature"
        end = pos + 12 + length
        if end > len(data):
            return None  # a cut file: is_truncated says so
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
            return f"chunk {name} at byte {pos}: CRC error (its data was changed)"
        if kind == b"IEND":
            return None
        pos = end
    return None


_LIBJPEG_DAMAGE = ("Corrupt JPEG data: ", "Premature end of JPEG file")
_AFTER_SCAN_DATA = re.compile(r"extraneous bytes before marker 0x(d[0-7a9]|c4)$")  # RSTn, SOS, EOI, DHT


def _damages_scan(line: str) -> bool:
    """libjpeg's warning is about the pixels: not a bad ICC profile, nor stray bytes
    between header segments (before a DQT, an APPn), after which the image decodes as it
    would without them; stray bytes before a marker that ends scan data mean the decoder
    finished the image before its data ran out (data in the middle was overwritten)."""
    if not line.startswith(_LIBJPEG_DAMAGE) or "bad ICC marker" in line:
        return False
    return "extraneous bytes" not in line or _AFTER_SCAN_DATA.search(line) is not None


_STDERR_LOCK = threading.Lock()
_stderr_sink = None


def _decode_jpeg_noting_damage(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(pixels, libjpeg's complaint about the scan data, or None).

    A JPEG whose entropy-coded data is damaged (zeroed, overwritten, cut and closed with
    an EOI) decodes whole, its lost blocks flat or garbled: libjpeg only warns ("Corrupt
    JPEG data: premature end of data segment", "bad Huffman code", "N extraneous bytes
    before marker") and OpenCV hands back an image. The warning is printed to the
    process's stderr and is the one place the damage is said, so stderr (fd 2, where C
    writes it) goes to a file for the decode, under a lock; other lines written there
    meanwhile (another thread's) are written out again. A decoder that prints nothing
    makes this a plain decode. Another thread decoding a damaged JPEG outside this lock
    in the same instant could be blamed on this one: dsbuild's workers run one task
    thread each.
    """
    pixels, said = _decoded_saying(data)
    damage = [line for line in said if _damages_scan(line)]
    others = [line for line in said if line not in damage]
    if others and sys.stderr is not None:
        sys.stderr.write("\n".join(others) + "\n")
    if not damage:
        return pixels, None
    return pixels, damage[0].removeprefix("Corrupt JPEG data: ").rstrip(".")


_TIFF_ERROR = re.compile(r"TIFF_Error\s+(.*)$")  # OpenCV's line for libtiff's error handler


def _decode_tiff_noting_damage(data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(pixels, libtiff's error about them, or None). libtiff decodes a TIFF whose strips
    are damaged to garbled pixels and reports the error through OpenCV's log, on stderr
    only; its warnings (a tag it does not know) are no damage and are said as before."""
    pixels, said = _decoded_saying(data)
    damage = [m.group(1).strip() for line in said if (m := _TIFF_ERROR.search(line))]
    others = [line for line in said if not _TIFF_ERROR.search(line)]
    if others and sys.stderr is not None:
        sys.stderr.write("\n".join(others) + "\n")
    return pixels, (" ".join(damage[0].split())[:200] if damage else None)


def _decoded_saying(data: bytes) -> tuple[np.ndarray | None, list[str]]:
    """(pixels, the lines the decoders printed to stderr meanwhile): fd 2, where C writes,
    goes to a file for the decode, under a lock."""
    global _stderr_sink
    with _STDERR_LOCK:
        if _stderr_sink is None or _stderr_sink[0] != os.getpid():  # a forked child's own file, not its parent's
            _stderr_sink = (os.getpid(), tempfile.TemporaryFile())
        sink = _stderr_sink[1]
        sink.seek(0)
        sink.truncate()
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr (a daemon's closed fd 2): nothing would be said
            return decode_image(data), []
        try:
            os.dup2(sink.fileno(), 2)
            pixels = decode_image(data)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return pixels, sink.read().decode("utf-8", "replace").splitlines()
