"""Transforms that move pixels: flips, rotate, affine, crops, resize; boxes, keypoints
and masks follow through their matrices."""

from __future__ import annotations

import math

import cv2
import numpy as np

from dsbuild.kernels.images.base import BORDERS, INTERPOLATIONS, GeometricTransform, TooSmall, _randint, _range, _resize_matrix, _scale, _translate, _uniform, resize_image
from dsbuild.kernels.images.levels import _checked_fill, _dst, alpha_weighted, fill_level


class HorizontalFlip(GeometricTransform):
    name = "hflip"

    def apply(self, image, params, owned=False):
        return cv2.flip(image, 1, dst=_dst(image, owned))  # OpenCV flips in place too

    def matrix(self, params, h, w):
        return np.array([[-1.0, 0, w - 1], [0, 1.0, 0], [0, 0, 1.0]]), (h, w)


class VerticalFlip(GeometricTransform):
    name = "vflip"

    def apply(self, image, params, owned=False):
        return cv2.flip(image, 0, dst=_dst(image, owned))

    def matrix(self, params, h, w):
        return np.array([[1.0, 0, 0], [0, -1.0, h - 1], [0, 0, 1.0]]), (h, w)


class _Warp(GeometricTransform):
    """Shared by rotate and affine: one cv2.warpAffine with the drawn matrix; ``fill`` (a
    constant border) is on the 8-bit scale at any depth (:func:`fill_level`). The fill is
    a colour: where the image has alpha, the border is transparent (outside the image
    there is nothing to see), not an opaque or half-transparent frame of the fill, and
    colour is mixed weighted by alpha (:func:`alpha_weighted`)."""

    def __init__(self, interpolation: str = "linear", border: str = "constant", fill: float = 0, p: float = 1.0):
        super().__init__(p)
        self.interpolation, self.border, self.fill = interpolation, border, _checked_fill(fill, self.name)
        self._flags = INTERPOLATIONS[interpolation]
        self._border = BORDERS[border]

    def apply(self, image, params, owned=False):
        h, w = image.shape[:2]
        m, _ = self.matrix(params, h, w)
        flags = INTERPOLATIONS[params["interpolation"]] if "interpolation" in params else self._flags
        fill = fill_level(params.get("fill", self.fill), image.dtype)

        def warp(pixels):  # outside the image: the fill, transparent (weighted by alpha: nothing at all)
            border = (fill, fill, fill, 0) if pixels.dtype == image.dtype else (0, 0, 0, 0)
            return cv2.warpAffine(pixels, m[:2], (w, h), flags=flags, borderMode=self._border, borderValue=border)

        return alpha_weighted(warp, image, fill)


class Rotate(_Warp):
    """Rotate about the centre by an angle in degrees drawn from ``limit``; same size."""

    name = "rotate"

    def __init__(self, limit=(-30, 30), **kw):
        super().__init__(**kw)
        self.limit = _range(limit, "rotate.limit", symmetric=True)

    def draw(self, rng, h, w):
        return {"angle": _uniform(rng, self.limit)}

    def matrix(self, params, h, w):
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), params["angle"], 1.0)
        return np.vstack([m, [0, 0, 1.0]]), (h, w)


class Affine(_Warp):
    """Scale, translate (as a fraction of size), rotate and shear (degrees) about the centre."""

    name = "affine"

    def __init__(self, scale=(1.0, 1.0), translate=(0.0, 0.0), rotate=(0.0, 0.0), shear=(0.0, 0.0), **kw):
        super().__init__(**kw)
        self.scale = _range(scale, "affine.scale")
        self.translate = _range(translate, "affine.translate", symmetric=True)
        self.rotate = _range(rotate, "affine.rotate", symmetric=True)
        self.shear = _range(shear, "affine.shear", symmetric=True)

    def draw(self, rng, h, w):
        return {
            "scale": _uniform(rng, self.scale),
            "tx": _uniform(rng, self.translate),
            "ty": _uniform(rng, self.translate),
            "angle": _uniform(rng, self.rotate),
            "shear": _uniform(rng, self.shear),
        }

    def matrix(self, params, h, w):
        cx, cy = (w - 1) / 2, (h - 1) / 2
        a = math.radians(params["angle"])
        rot = np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
        shear = np.array([[1.0, math.tan(math.radians(params["shear"])), 0], [0, 1.0, 0], [0, 0, 1.0]])
        s = params["scale"]
        m = _translate(cx + params["tx"] * w, cy + params["ty"] * h) @ rot @ shear @ _scale(s, s) @ _translate(-cx, -cy)
        return m, (h, w)


class _Crop(GeometricTransform):
    """A window of the image (a view, no copy)."""

    returns_view = True

    def apply(self, image, params, owned=False):
        y, x = params["y"], params["x"]
        return image[y : y + params["height"], x : x + params["width"]]

    def matrix(self, params, h, w):
        return _translate(-params["x"], -params["y"]), (params["height"], params["width"])

    def _fit(self, h: int, w: int) -> tuple[int, int]:
        if self.height > h or self.width > w:
            raise TooSmall(f"{self.name}: crop {self.height}x{self.width} is larger than the image {h}x{w} (height x width)")
        return self.height, self.width


class RandomCrop(_Crop):
    name = "random_crop"

    def __init__(self, height: int, width: int, p: float = 1.0):
        super().__init__(p)
        self.height, self.width = int(height), int(width)

    def draw(self, rng, h, w):
        ch, cw = self._fit(h, w)
        return {"y": _randint(rng, 0, h - ch), "x": _randint(rng, 0, w - cw), "height": ch, "width": cw}


class CenterCrop(_Crop):
    name = "center_crop"

    def __init__(self, height: int, width: int, p: float = 1.0):
        super().__init__(p)
        self.height, self.width = int(height), int(width)

    def draw(self, rng, h, w):
        ch, cw = self._fit(h, w)
        return {"y": (h - ch) // 2, "x": (w - cw) // 2, "height": ch, "width": cw}


class Resize(GeometricTransform):
    name = "resize"

    def __init__(self, height: int, width: int, interpolation: str = "linear", p: float = 1.0):
        super().__init__(p)
        self.height, self.width, self.interpolation = int(height), int(width), interpolation

    def apply(self, image, params, owned=False):
        return resize_image(image, self.height, self.width, params.get("interpolation", self.interpolation))

    def matrix(self, params, h, w):
        return _resize_matrix(h, w, self.height, self.width), (self.height, self.width)


class RandomResizedCrop(GeometricTransform):
    """A window with random area share and aspect ratio, resized to (height, width)."""

    name = "random_resized_crop"

    def __init__(self, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "linear", p: float = 1.0):
        super().__init__(p)
        self.height, self.width, self.interpolation = int(height), int(width), interpolation
        self.scale = _range(scale, "random_resized_crop.scale")
        self.ratio = _range(ratio, "random_resized_crop.ratio")

    def draw(self, rng, h, w):
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(rng, self.scale)
            aspect = math.exp(_uniform(rng, log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return {"y": _randint(rng, 0, h - ch), "x": _randint(rng, 0, w - cw), "crop_height": ch, "crop_width": cw}
        side = min(h, w)
        return {"y": (h - side) // 2, "x": (w - side) // 2, "crop_height": side, "crop_width": side}

    def apply(self, image, params, owned=False):
        y, x = params["y"], params["x"]
        window = image[y : y + params["crop_height"], x : x + params["crop_width"]]
        return resize_image(window, self.height, self.width, params.get("interpolation", self.interpolation))

    def matrix(self, params, h, w):
        m = _resize_matrix(params["crop_height"], params["crop_width"], self.height, self.width) @ _translate(-params["x"], -params["y"])
        return m, (self.height, self.width)
