"""Levels of light: the peak and fill level of a depth, lookup tables applied in place or in
one pass, and colour weighted by alpha."""

from __future__ import annotations

import cv2
import numpy as np

try:  # a SIMD byte-translate, 3× faster than cv2.LUT on one thread; optional
    import stringzilla as _sz
except ImportError:  # pragma: no cover - depends on the environment
    _sz = None


def _dst(image: np.ndarray, owned: bool) -> np.ndarray | None:
    """Where an elementwise OpenCV op may write: over the input when we own it."""
    return image if owned and image.flags.c_contiguous else None


def apply_lut(image: np.ndarray, lut: np.ndarray, owned: bool = False) -> np.ndarray:
    """``lut[image]`` for uint8 images; in place when the caller owns ``image``, else in
    one pass into a new array (not a copy and then a pass over the copy)."""
    if _sz is not None and image.flags.c_contiguous:
        source = memoryview(image.reshape(-1))
        if owned:
            _sz.translate(source, memoryview(lut), inplace=True)
            return image
        out = np.empty_like(image)
        _sz.translate(source, memoryview(lut), out=memoryview(out.reshape(-1)))
        return out
    return cv2.LUT(image, lut, dst=image) if owned else cv2.LUT(image, lut)


_LEVELS = np.arange(256, dtype=np.float64)


_UNIT = _LEVELS / 255


_DEEP_LEVELS = np.arange(65536, dtype=np.float64)


def peak(dtype) -> int:
    """The brightest level of an image type: 255 for 8-bit images, 65535 for 16-bit
    ones (depth maps, medical and scientific images), whose pixel transforms act on the
    same fractions of that range."""
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"{dtype} images are not supported by pixel transforms: 8- or 16-bit integers only")


def fill_level(fill: float, dtype) -> float:
    """A fill given on the 8-bit scale (0 black, 255 white) as a level of ``dtype``, so one
    job fills 8- and 16-bit images with the same shade (16-bit: × 257; floats, read as 0-1:
    / 255), as brightness shifts both by the same share of their range. Given in the
    image's own units, 255 was near black in a 16-bit image."""
    if np.issubdtype(dtype, np.floating):
        return fill / 255
    info = np.iinfo(dtype)
    return round(info.min + fill * (int(info.max) - int(info.min)) / 255)


def _checked_fill(fill, name: str) -> float:
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 255:
        raise ValueError(f"{name}.fill: a grey level from 0 (black) to 255 (white), scaled to the image's depth "
                         f"(255 is 65535 in a 16-bit image), got {fill!r}")
    return float(fill)


def _levels(dtype) -> np.ndarray:
    return _LEVELS if dtype == np.uint8 else _DEEP_LEVELS


_SHIFTED = np.clip(np.arange(-255, 511), 0, 255).astype(np.uint8)  # [j] = clip(j - 255)


_SHIFTED.flags.writeable = False


def shift_table(shift: int) -> np.ndarray:
    """``clip(level + shift, 0, 255)`` for every uint8 level, as a read-only slice of one
    table: made per copy, the numpy arithmetic on 256 floats took ~100 µs in the augment
    stage (its code and data cold after a decode and an encode), the slice ~1 µs."""
    shift = min(max(int(shift), -255), 255)
    return _SHIFTED[255 + shift : 511 + shift]


def has_alpha(image: np.ndarray) -> bool:
    """BGRA, or grey with alpha (2 channels: :func:`dsbuild.kernels.decode.as_stored`)."""
    return image.ndim == 3 and image.shape[2] in (2, 4)


def _with_one(plane: np.ndarray, channels: int) -> np.ndarray:
    """(p, p, p, 1) for BGRA, (p, 1) for grey with alpha: a plane to scale colour by."""
    if channels == 4:
        return cv2.cvtColor(plane, cv2.COLOR_GRAY2BGRA)  # OpenCV, ~10x numpy's speed
    return cv2.merge([plane, np.ones_like(plane)])


def alpha_weighted(resample, image: np.ndarray, fill: float = 0) -> np.ndarray:
    """``resample(pixels)`` (a warp, a resize, a filter: each output pixel a weighted mean
    of input pixels) on a BGRA (or grey+alpha) image's colour weighted by its alpha, as
    compositing reads it, and divided by the mixed alpha after. Mixed as stored, the colour
    of transparent pixels (black in most PNGs with a transparent ground) bled into the
    visible ones beside them: a white object came out with a grey rim, 25 % darker over
    white. Where the result is fully transparent, its colour is ``fill`` (a level of the
    image's dtype).

    Grey with alpha is resampled a plane at a time: OpenCV 5.0's ``warpAffine`` of 2
    channels is not its bilinear interpolation (up to 3 levels off one plane's; nearest
    picked other pixels), its 1-, 3- and 4-channel warps are."""
    if not has_alpha(image) or image.dtype not in (np.uint8, np.uint16):
        return resample(image)
    top, n = peak(image.dtype), image.shape[2]
    pixels = image.astype(np.float32)
    weight = cv2.extractChannel(pixels, n - 1) * np.float32(1 / top)
    cv2.multiply(pixels, _with_one(weight, n), dst=pixels)
    out = resample(pixels) if n == 4 else cv2.merge([resample(plane) for plane in cv2.split(pixels)])  # see below
    alpha = cv2.extractChannel(out, n - 1)
    seen = alpha >= 0.5  # not transparent once rounded
    gain = np.divide(np.float32(top), alpha, out=np.zeros_like(alpha), where=seen)
    cv2.multiply(out, _with_one(gain, n), dst=out)
    if fill:
        out[~seen, : n - 1] = fill
    return cv2.add(cv2.min(cv2.max(out, (0.0,) * 4), (float(top),) * 4), (0.5,) * 4).astype(image.dtype)  # a scalar is channel 0's alone


def on_colour(image: np.ndarray, fn, owned: bool = False) -> np.ndarray:
    """``fn(pixels, owned)`` on the colour of an image; the alpha of a BGRA or grey+alpha
    image (transparency, not light) is kept as it was, as JPEG quality keeps it: brightness
    made a transparent background visible, noise made it speckled, and hue and saturation
    left BGRA alone. Grey with alpha is changed as grey is: noise on its BGRA was colour."""
    if not has_alpha(image):
        return fn(image, owned)
    if image.shape[2] == 2:
        grey = fn(np.ascontiguousarray(image[..., 0]), True)
        return np.dstack([grey, image[..., 1]])
    colour = fn(np.ascontiguousarray(image[..., :3]), True)
    return np.concatenate([colour, image[..., 3:]], axis=2)
