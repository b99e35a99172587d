"""Transforms that change levels of light (brightness, contrast, gamma, hue and saturation,
noise, JPEG artefacts) or pixels in place (blur, cutout)."""

from __future__ import annotations

import math
from typing import ClassVar

import cv2
import numpy as np

from dsbuild.kernels.images.base import Targets, Transform, _randint, _range, _uniform
from dsbuild.kernels.images.levels import _LEVELS, _UNIT, _checked_fill, _dst, _levels, alpha_weighted, apply_lut, fill_level, has_alpha, peak, shift_table


class PixelTable(Transform):
    """A map of each level to another, drawn once per image: ``curve`` of every level.

    On 8-bit images consecutive ones compose into one table (``later[earlier]``) that is
    applied in a single pass when a different transform or the end comes: the same bytes
    as applying them one after another, a pass over the pixels instead of one per
    transform. A 16-bit image goes through a table of its 65,536 levels.
    """

    reads_image: ClassVar[bool] = False  # the table depends on the pixels (settle first)
    colour_only = True
    integer_levels = True

    def curve(self, params: dict, levels: np.ndarray, top: int, image: np.ndarray) -> np.ndarray:
        """Each of ``levels`` (floats, 0 … ``top``) mapped, before rounding and clipping."""
        raise NotImplementedError

    def table(self, params: dict, image: np.ndarray) -> np.ndarray:
        top = peak(image.dtype)
        return (self.curve(params, _levels(image.dtype), top, image).clip(0, top) + 0.5).astype(image.dtype)

    def apply(self, image, params, owned=False):
        table = self.table(params, image)
        return apply_lut(image, table, owned) if image.dtype == np.uint8 else table[image]

    def run_with(self, t: Targets, params: dict) -> Targets:
        if t.image.dtype != np.uint8:
            return super().run_with(t, params)
        if self.reads_image:
            t = t.settled()
        table = self.table(params, t.image)
        return t.but(table=table if t.table is None else table[t.table])


class Brightness(PixelTable):
    """Add ``delta × 255`` (delta drawn from ``limit``), saturating."""

    name = "brightness"

    def __init__(self, limit=(-0.2, 0.2), p: float = 1.0):
        super().__init__(p)
        self.limit = _range(limit, "brightness.limit", symmetric=True)

    def draw(self, rng, h, w):
        return {"delta": _uniform(rng, self.limit)}

    def curve(self, params, levels, top, image):
        return levels + round(params["delta"] * top)

    def table(self, params, image):
        if image.dtype != np.uint8:
            return super().table(params, image)
        return shift_table(round(params["delta"] * 255))

    def apply(self, image, params, owned=False):
        """Alone, a saturating add: no table to build."""
        shift = round(params["delta"] * peak(image.dtype))
        if shift == 0:
            return image
        if shift > 0:
            return cv2.add(image, (shift,) * 4, dst=_dst(image, owned))
        return cv2.subtract(image, (-shift,) * 4, dst=_dst(image, owned))


class Contrast(PixelTable):
    """Scale distances from the image's mean grey by ``1 + factor``; brightness stays.

    The mean is taken over about 64 evenly spaced rows: as good an estimate for a
    natural image, and a small share of the reads (the lookup table reads every pixel).
    """

    name = "contrast"
    reads_image = True

    def __init__(self, limit=(-0.2, 0.2), p: float = 1.0):
        super().__init__(p)
        self.limit = _range(limit, "contrast.limit", symmetric=True)

    def draw(self, rng, h, w):
        return {"factor": _uniform(rng, self.limit)}

    def curve(self, params, levels, top, image):
        alpha = 1.0 + params["factor"]
        channels = 1 if image.ndim == 2 else image.shape[2] - has_alpha(image)  # not alpha
        mean = sum(cv2.mean(image[:: max(1, image.shape[0] // 64)])[:channels]) / channels
        return levels * alpha + (1 - alpha) * mean


class Gamma(PixelTable):
    """``255 × (x / 255) ** gamma`` through a lookup table."""

    name = "gamma"

    def __init__(self, limit=(0.8, 1.2), p: float = 1.0):
        super().__init__(p)
        self.limit = _range(limit, "gamma.limit")

    def draw(self, rng, h, w):
        return {"gamma": _uniform(rng, self.limit)}

    def curve(self, params, levels, top, image):
        return np.power(_UNIT if top == 255 else levels / top, params["gamma"]) * top


class HueSaturation(Transform):
    """Shift hue (OpenCV degrees/2, wraps at 180) and saturation/value (added, saturating).

    Images are BGR, as OpenCV decodes them.
    """

    name = "hue_saturation"
    colour_only = True
    integer_levels = True

    def __init__(self, hue=(-10, 10), saturation=(-20, 20), value=(0, 0), p: float = 1.0):
        super().__init__(p)
        self.hue = _range(hue, "hue_saturation.hue", symmetric=True)
        self.saturation = _range(saturation, "hue_saturation.saturation", symmetric=True)
        self.value = _range(value, "hue_saturation.value", symmetric=True)

    def draw(self, rng, h, w):
        return {
            "hue": int(round(_uniform(rng, self.hue))),
            "saturation": int(round(_uniform(rng, self.saturation))),
            "value": int(round(_uniform(rng, self.value))),
        }

    def apply(self, image, params, owned=False):
        if image.ndim == 2 or image.shape[2] != 3:
            return image
        if image.dtype != np.uint8:
            return self._deep(image, params)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hue, sat, val = cv2.split(hsv)
        if params["hue"]:
            hue = apply_lut(hue, np.mod(_LEVELS + params["hue"], 180).astype(np.uint8), owned=True)
        if params["saturation"]:
            lut = np.clip(_LEVELS + params["saturation"], 0, 255).astype(np.uint8)
            lut[0] = 0  # grey stays grey
            sat = apply_lut(sat, lut, owned=True)
        if params["value"]:
            val = apply_lut(val, np.clip(_LEVELS + params["value"], 0, 255).astype(np.uint8), owned=True)
        return cv2.cvtColor(cv2.merge((hue, sat, val), dst=hsv), cv2.COLOR_HSV2BGR, dst=hsv)

    @staticmethod
    def _deep(image, params):
        """A 16-bit image in floating HSV (OpenCV has no 16-bit HSV): hue in degrees,
        saturation and value as fractions; the shifts are the 8-bit ones in those units."""
        top = peak(image.dtype)
        hsv = cv2.cvtColor(image.astype(np.float32) / top, cv2.COLOR_BGR2HSV)
        hue, sat, val = cv2.split(hsv)
        hue = np.mod(hue + 2 * params["hue"], 360)
        sat = np.where(sat > 0, np.clip(sat + params["saturation"] / 255, 0, 1), 0)  # grey stays grey
        val = np.clip(val + params["value"] / 255, 0, 1)
        bgr = cv2.cvtColor(cv2.merge((hue, sat.astype(np.float32), val)), cv2.COLOR_HSV2BGR)
        return (bgr * top + 0.5).clip(0, top).astype(image.dtype)


class GaussianBlur(Transform):
    """Separable Gaussian filter; the kernel covers ±3 sigma.

    ``sepFilter2D`` with a float kernel is ~2× faster than ``GaussianBlur``'s bit-exact
    fixed-point path on one thread, and differs from it by at most one grey level.
    """

    name = "gaussian_blur"

    def __init__(self, sigma=(0.5, 3.0), p: float = 1.0):
        super().__init__(p)
        self.sigma = _range(sigma, "gaussian_blur.sigma")

    def draw(self, rng, h, w):
        return {"sigma": _uniform(rng, self.sigma)}

    def apply(self, image, params, owned=False):
        sigma = params["sigma"]
        k = 2 * int(math.ceil(3 * sigma)) + 1
        kernel = cv2.getGaussianKernel(k, sigma)
        return alpha_weighted(lambda pixels: cv2.sepFilter2D(pixels, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101), image)


class GaussianNoise(Transform):
    """Add zero-mean noise with standard deviation ``std`` × the brightest level, per
    pixel and channel.

    The noise comes from OpenCV's generator seeded with a seed drawn from ``rng`` (the
    seed is recorded), which is ~2.5× faster than numpy's normal sampler.
    """

    name = "gaussian_noise"
    colour_only = True
    integer_levels = True

    def __init__(self, std=(0.02, 0.1), p: float = 1.0):
        super().__init__(p)
        self.std = _range(std, "gaussian_noise.std")

    def draw(self, rng, h, w):
        return {"std": _uniform(rng, self.std), "seed": int(rng.integers(0, 2**31 - 1))}

    def apply(self, image, params, owned=False):
        top = peak(image.dtype)
        cv2.setRNGSeed(params["seed"])
        if top == 255:
            noise = np.empty(image.shape, dtype=np.int16)
            cv2.randn(noise.reshape(image.shape[0], -1), 0.0, params["std"] * 255)
            return cv2.add(image, noise, dst=_dst(image, owned), dtype=cv2.CV_8U)
        noise = np.empty(image.shape, dtype=np.float32)
        cv2.randn(noise.reshape(image.shape[0], -1), 0.0, params["std"] * top)
        return (image + noise + 0.5).clip(0, top).astype(image.dtype)


class JpegQuality(Transform):
    """Encode as JPEG at a drawn quality and decode again (compression artefacts)."""

    name = "jpeg"
    integer_levels = True

    def __init__(self, quality=(60, 95), p: float = 1.0):
        super().__init__(p)
        self.quality = _range(quality, "jpeg.quality")

    def draw(self, rng, h, w):
        lo, hi = self.quality
        return {"quality": _randint(rng, int(lo), int(hi))}

    def apply(self, image, params, owned=False):
        """JPEG holds 8-bit colour or grey: a 16-bit image goes through it scaled to 8 bits
        and comes back scaled up, and an alpha channel is kept as it was."""
        alpha = image[..., -1:] if has_alpha(image) else None
        color = image if alpha is None else image[..., :3] if image.shape[2] == 4 else image[..., 0]
        scale = peak(image.dtype) / 255
        if scale != 1:
            color = (color / scale + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", color, (cv2.IMWRITE_JPEG_QUALITY, params["quality"]))
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if out.ndim == 3 and color.ndim == 2:
            out = out[..., 0]
        if scale != 1:
            out = (out * scale + 0.5).astype(image.dtype)
        return out if alpha is None else np.dstack([out, alpha])


class Cutout(Transform):
    """Fill ``holes`` rectangles (side a fraction of the image side) with ``fill``, on the
    8-bit scale at any depth (:func:`fill_level`). A hole hides what the image shows, as
    an occluder would: it takes the fill's colour and keeps the image's alpha (the fill
    in alpha cut transparent holes through an object, or put opaque patches on its
    transparent background)."""

    name = "cutout"
    colour_only = True

    def __init__(self, holes=(1, 4), size=(0.05, 0.2), fill: float = 0, p: float = 1.0):
        super().__init__(p)
        self.holes = _range(holes, "cutout.holes")
        self.size = _range(size, "cutout.size")
        self.fill = _checked_fill(fill, self.name)

    def draw(self, rng, h, w):
        lo, hi = int(self.holes[0]), int(self.holes[1])
        n = _randint(rng, lo, hi)
        rects = []
        for _ in range(n):
            rh = max(1, int(round(h * _uniform(rng, self.size))))
            rw = max(1, int(round(w * _uniform(rng, self.size))))
            rects.append([_randint(rng, 0, h - rh), _randint(rng, 0, w - rw), rh, rw])
        return {"rects": rects}

    def apply(self, image, params, owned=False):
        out = image if owned else image.copy()
        for y, x, rh, rw in params["rects"]:
            out[y : y + rh, x : x + rw] = fill_level(self.fill, image.dtype)
        return out
