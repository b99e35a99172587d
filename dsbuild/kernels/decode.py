"""Image bytes <-> pixels with OpenCV, and the checks that decide an image is usable."""

from __future__ import annotations

import cv2
import numpy as np

from dsbuild.records import image_size, jpeg_orientation, sniff_image_format

_ENCODE_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tiff"}


def decode_image(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """Pixels (H×W or H×W×C, BGR order as OpenCV keeps them), or None if undecodable.

    Upright, as viewers show them: a JPEG's EXIF orientation is applied, as OpenCV's other
    read modes, PIL's ``exif_transpose`` and Hugging Face ``datasets`` apply it, and as
    labelling tools draw boxes on it. ``IMREAD_UNCHANGED`` (kept for 16-bit and alpha)
    is the one mode that leaves it out, so it is applied here.
    """
    if not data:
        return None
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is not None and flags == cv2.IMREAD_UNCHANGED and data[:2] == b"\xff\xd8":
        turn = _UPRIGHT.get(jpeg_orientation(data))
        if turn is not None:
            pixels = turn(pixels)
    return pixels


_UPRIGHT = {  # EXIF orientation -> what makes the stored pixels upright (PIL's exif_transpose)
    2: lambda p: cv2.flip(p, 1),
    3: lambda p: cv2.rotate(p, cv2.ROTATE_180),
    4: lambda p: cv2.flip(p, 0),
    5: cv2.transpose,
    6: lambda p: cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE),
    7: lambda p: cv2.flip(cv2.transpose(p), -1),
    8: lambda p: cv2.rotate(p, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def encode_image(pixels: np.ndarray, fmt: str = "png", quality: int | None = None) -> bytes:
    params: list[int] = []
    if fmt == "jpeg" and quality is not None:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == "webp" and quality is not None:
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(_ENCODE_EXT[fmt], pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {fmt}")
    return buf.tobytes()


def is_truncated(data: bytes, fmt: str) -> bool:
    """True when a PNG or JPEG stream lacks its end marker (a cut-off download or copy).

    OpenCV often decodes such files partially, filling the rest with grey, so decoding
    alone does not catch them.
    """
    tail = data[-64:]
    if fmt == "png":
        return b"IEND" not in tail
    if fmt == "jpeg":
        return b"\xff\xd9" not in tail
    return False


def image_problem(data: bytes | None, max_pixels: int, min_side: int = 1) -> tuple[str | None, np.ndarray | None]:
    """(reason, pixels): reason is None for a good image, else why it must be rejected.

    The size is read from the header first, so a decompression bomb is refused before
    any pixel is allocated.
    """
    if data is None or len(data) == 0:
        return "empty-image", None
    fmt = sniff_image_format(data)
    if fmt == "unknown":
        return "decode-error:unknown-format", None
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        return f"too-large:{size[0]}x{size[1]}", None
    if is_truncated(data, fmt):
        return "truncated", None
    pixels = decode_image(data)
    if pixels is None:
        return f"decode-error:{fmt}", None
    h, w = pixels.shape[:2]
    if h * w > max_pixels:
        return f"too-large:{h}x{w}", None
    if min(h, w) < min_side:
        return f"too-small:{h}x{w}", None
    return None, pixels
