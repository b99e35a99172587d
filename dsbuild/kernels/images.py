"""Image augmentation on OpenCV/numpy, with boxes, keypoints and masks moved exactly.

A transform first *draws* its parameters from the ``np.random.Generator`` it is given
(a small JSON-able dict, stored per augmented copy), then *applies* them. Geometric
transforms also give the 3×3 matrix that maps pixel-index coordinates of the input to
those of the output (OpenCV's convention: the centre of pixel ``(row, col)`` is the
point ``(x=col, y=row)``), so keypoints, boxes and masks follow the pixels exactly.

Boxes are kept internally in ``pascal_voc`` pixel-edge coordinates (a box covering
columns 0..9 is ``x_min=0, x_max=10``); ``coco`` and ``yolo`` are converted at the edges.
A box is moved by its four corners, enveloped, clipped to the image, and dropped when
the share of it still inside falls below ``min_visibility``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

BOX_FORMATS = ("pascal_voc", "coco", "yolo")
BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
    "wrap": cv2.BORDER_WRAP,
}
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}

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


# -- the state that flows through a pipeline ------------------------------------------


@dataclass
class Targets:
    """An image and what must move with it. ``owned`` says the image may be overwritten.

    Boxes (pascal_voc, with their visibility) and keypoints are None when the caller
    passed none, so an image-only pipeline does no label work at all. ``table`` is a
    uint8 lookup table not yet applied to the image (see :class:`PixelTable`).
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    boxes: np.ndarray | None = None
    visibility: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    owned: bool = False
    table: np.ndarray | None = None

    def settled(self) -> Targets:
        """The same targets with the pending lookup table applied to the image (to its
        colour: an alpha channel is not a level of light)."""
        if self.table is None:
            return self
        image = on_colour(self.image, lambda colour, owned: apply_lut(colour, self.table, owned), self.owned)
        return self.but(image=image, owned=True, table=None)

    def but(self, **changes) -> Targets:
        """A copy with ``changes``: ``dataclasses.replace`` re-runs ``__init__`` through
        its field checks, ~10 µs a call, a third of a small pipeline's Python."""
        new = object.__new__(Targets)
        new.__dict__ = {**self.__dict__, **changes}
        return new

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


@dataclass
class Augmented:
    """The result of one pipeline run.

    ``box_index`` says which input boxes survived (to carry their labels along);
    keypoints that left the image are NaN, so keypoint order (a skeleton) is kept.
    """

    image: np.ndarray
    mask: np.ndarray | None
    boxes: np.ndarray
    box_index: np.ndarray
    keypoints: np.ndarray
    params: list[dict]


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


def alpha_weighted(resample, image: np.ndarray, fill: float = 0) -> np.ndarray:
    """``resample(pixels)`` (a warp, a resize, a filter: each output pixel a weighted mean
    of input pixels) on a BGRA image's colour weighted by its alpha, as compositing reads
    it, and divided by the mixed alpha after. Mixed as stored, the colour of transparent
    pixels (black in most PNGs with a transparent ground) bled into the visible ones beside
    them: a white object came out with a grey rim, 25 % darker over white. Where the result
    is fully transparent, its colour is ``fill`` (a level of the image's dtype)."""
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype not in (np.uint8, np.uint16):
        return resample(image)
    top = peak(image.dtype)
    pixels = image.astype(np.float32)
    weight = cv2.extractChannel(pixels, 3) * np.float32(1 / top)
    cv2.multiply(pixels, cv2.cvtColor(weight, cv2.COLOR_GRAY2BGRA), dst=pixels)  # (a, a, a, 1): OpenCV, ~10x numpy's speed
    out = resample(pixels)
    alpha = cv2.extractChannel(out, 3)
    seen = alpha >= 0.5  # not transparent once rounded
    gain = np.divide(np.float32(top), alpha, out=np.zeros_like(alpha), where=seen)
    cv2.multiply(out, cv2.cvtColor(gain, cv2.COLOR_GRAY2BGRA), dst=out)
    if fill:
        out[~seen, :3] = fill
    return cv2.add(cv2.min(cv2.max(out, (0.0,) * 4), (float(top),) * 4), (0.5,) * 4).astype(image.dtype)  # a scalar is channel 0's alone


def on_colour(image: np.ndarray, fn, owned: bool = False) -> np.ndarray:
    """``fn(pixels, owned)`` on the colour of an image; a BGRA image's alpha (transparency,
    not light) is kept as it was, as JPEG quality keeps it: brightness made a transparent
    background visible, noise made it speckled, and hue and saturation left BGRA alone."""
    if image.ndim != 3 or image.shape[2] != 4:
        return fn(image, owned)
    colour = fn(np.ascontiguousarray(image[..., :3]), True)
    return np.concatenate([colour, image[..., 3:]], axis=2)


# -- base classes ---------------------------------------------------------------------


class Transform:
    """One step: ``draw(rng, h, w) -> params``, ``apply(image, params) -> image``."""

    name: ClassVar[str] = ""
    geometric: ClassVar[bool] = False
    returns_view: ClassVar[bool] = False
    colour_only: ClassVar[bool] = False  # changes levels of light: an alpha channel is left alone
    integer_levels: ClassVar[bool] = False  # works on 8- or 16-bit levels (peak): a float image it cannot take

    def __init__(self, p: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{self.name}: p must be in [0, 1], got {p}")
        self.p = float(p)

    def draw(self, rng: np.random.Generator, h: int, w: int) -> dict:
        return {}

    def apply(self, image: np.ndarray, params: dict, owned: bool = False) -> np.ndarray:
        raise NotImplementedError

    def run(self, t: Targets, rng: np.random.Generator, log: list[dict], force: bool = False) -> Targets:
        if not force and self.p < 1.0 and rng.random() >= self.p:
            return t
        h, w = t.shape
        params = self.draw(rng, h, w)
        log.append({"op": self.name, **params})
        return self.run_with(t, params)

    def run_with(self, t: Targets, params: dict) -> Targets:
        t = t.settled()
        if self.colour_only:
            image = on_colour(t.image, lambda colour, owned: self.apply(colour, params, owned), t.owned)
        else:
            image = self.apply(t.image, params, t.owned)
        return Targets(image, t.mask, t.boxes, t.visibility, t.keypoints, owned=self._owns(t, image))

    def _owns(self, t: Targets, image: np.ndarray) -> bool:
        return t.owned or (image is not t.image and not self.returns_view)

    def integer_only(self) -> list[str]:
        """The names of the transforms here that take 8- or 16-bit images only."""
        return [self.name] if self.integer_levels else []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class GeometricTransform(Transform):
    """Moves pixels; boxes, keypoints and masks follow through :meth:`matrix`."""

    geometric = True

    def matrix(self, params: dict, h: int, w: int) -> tuple[np.ndarray, tuple[int, int]]:
        """(3×3 map from input to output pixel-index coordinates, output (h, w))."""
        raise NotImplementedError

    def apply_mask(self, mask: np.ndarray, params: dict) -> np.ndarray:
        """Same motion as the image, nearest-neighbour so labels stay labels."""
        return self.apply(mask, {**params, "interpolation": "nearest", "fill": 0})

    def run_with(self, t: Targets, params: dict) -> Targets:
        t = t.settled()
        boxes, visibility, keypoints = t.boxes, t.visibility, t.keypoints
        if boxes is not None or keypoints is not None:
            m, (oh, ow) = self.matrix(params, *t.shape)
            if boxes is not None:
                boxes, visibility = move_boxes(boxes, visibility, m, oh, ow)
            if keypoints is not None:
                keypoints = move_points(keypoints, m)
        image = self.apply(t.image, params, t.owned)
        mask = None if t.mask is None else self.apply_mask(t.mask, params)
        return Targets(image, mask, boxes, visibility, keypoints, owned=self._owns(t, image))


# -- moving boxes and points ----------------------------------------------------------


def move_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 3×3 affine map to (n, 2) points (pixel-index coordinates)."""
    if len(points) == 0:
        return points
    return points @ m[:2, :2].T + m[:2, 2]


def edge_matrix(m: np.ndarray) -> np.ndarray:
    """The same map for pixel-edge coordinates (index coordinate + 0.5)."""
    shift = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    back = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5], [0, 0, 1.0]])
    return shift @ m @ back


def move_boxes(boxes: np.ndarray, visibility: np.ndarray, m: np.ndarray, h: int, w: int):
    """Move pascal_voc boxes by their corners, envelope, clip to (h, w).

    Visibility is multiplied by the share of the moved box that stays inside the image,
    so after several steps it is the share of the original box still visible.
    """
    if len(boxes) == 0:
        return boxes, visibility
    e = edge_matrix(m)
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1)
    moved = corners @ e[:2, :2].T + e[:2, 2]
    lo, hi = moved.min(axis=1), moved.max(axis=1)
    area = np.prod(hi - lo, axis=1)
    clo = np.clip(lo, 0, [w, h])
    chi = np.clip(hi, 0, [w, h])
    clipped_area = np.prod(np.maximum(chi - clo, 0), axis=1)
    share = np.divide(clipped_area, area, out=np.zeros_like(area), where=area > 0)
    return np.concatenate([clo, chi], axis=1), visibility * share


def to_pascal_voc(boxes, fmt: str, h: int, w: int) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if fmt == "pascal_voc":
        return b.copy()
    if fmt == "coco":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    if fmt == "yolo":
        centre, size = b[:, :2] * [w, h], b[:, 2:] * [w, h]
        return np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    raise ValueError(f"box format {fmt!r}: expected one of {BOX_FORMATS}")


class AnnotationError(ValueError):
    """Boxes or keypoints that cannot move with their image as given: the row's own
    problem, not the transform's (augment rejects the row with it)."""


def checked_boxes(boxes, fmt: str, h: int, w: int) -> np.ndarray:
    """The boxes as (n, 4) pascal_voc edges, refused with the box named when one cannot be moved
    as given: not 4 numbers (two boxes of 2 numbers became one of 4), a missing number,
    a maximum below its minimum, or no part inside the image (pixel coordinates given as
    yolo's fractions). Such boxes were silently flipped the right way round, or dropped
    from every copy as if cut away."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise AnnotationError(f"boxes are 4 numbers each ({fmt}), got {np.asarray(boxes).tolist()}")
    edges = to_pascal_voc(b, fmt, h, w)
    for i, (box, (x0, y0, x1, y1)) in enumerate(zip(b, edges)):
        name = f"box {i} {box.tolist()} ({fmt})"
        if not np.isfinite(box).all():
            raise AnnotationError(f"{name} has a missing or infinite number")
        if x1 < x0 or y1 < y0:
            raise AnnotationError(f"{name} ends before it starts: {'width and height' if fmt != 'pascal_voc' else 'x_max and y_max'} "
                             "must not be below " + ("0" if fmt != "pascal_voc" else "x_min and y_min"))
        if x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0:
            hint = "; yolo boxes are fractions of the image (centre x, centre y, width, height from 0 to 1)" if fmt == "yolo" else ""
            raise AnnotationError(f"{name} lies outside the {h}x{w} image (height x width){hint}")
    return edges


def checked_keypoints(keypoints) -> np.ndarray:
    """The keypoints as an (n, 2) array, refused unless they are [x, y] pairs: COCO's
    [x, y, visibility] triples were read as pairs, two points making three."""
    k = np.array(keypoints, dtype=np.float64)
    if k.ndim != 2 or k.shape[1] != 2:
        raise AnnotationError(f"keypoints are [x, y] pairs, got {np.asarray(keypoints).tolist()}"
                         + (" (COCO's [x, y, visibility]: keep x and y)" if k.ndim == 2 and k.shape[1] == 3 else ""))
    return k


def from_pascal_voc(b: np.ndarray, fmt: str, h: int, w: int) -> np.ndarray:
    if fmt == "pascal_voc":
        return b
    if fmt == "coco":
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    if fmt == "yolo":
        return np.concatenate([(b[:, :2] + b[:, 2:]) / 2 / [w, h], (b[:, 2:] - b[:, :2]) / [w, h]], axis=1)
    raise ValueError(f"box format {fmt!r}: expected one of {BOX_FORMATS}")


# -- matrices -------------------------------------------------------------------------


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _resize_matrix(h: int, w: int, oh: int, ow: int) -> np.ndarray:
    """cv2.resize aligns pixel edges: edge coordinate x maps to x * ow / w."""
    sx, sy = ow / w, oh / h
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def resize_image(image: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """cv2.resize with one of :data:`INTERPOLATIONS`. Bilinear (the default, as in
    Albumentations) already takes OpenCV's fast area-average path when halving. Colour
    is mixed weighted by alpha (:func:`alpha_weighted`)."""
    return alpha_weighted(lambda pixels: cv2.resize(pixels, (width, height), interpolation=INTERPOLATIONS[interpolation]), image)


def _range(value, name: str, symmetric: bool = False) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise ValueError(f"{name}: range ({lo}, {hi}) is reversed")
    return lo, hi


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo if lo == hi else lo + (hi - lo) * rng.random()


def _randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi], inclusive (``rng.random`` is ~5× cheaper than ``integers``)."""
    return lo if lo >= hi else lo + min(int(rng.random() * (hi - lo + 1)), hi - lo)


# -- geometric transforms -------------------------------------------------------------


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
            raise ValueError(f"{self.name}: crop {self.height}x{self.width} is larger than the image {h}x{w}")
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


# -- pixel transforms -----------------------------------------------------------------


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
        channels = 1 if image.ndim == 2 else min(image.shape[2], 3)  # not alpha
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
        alpha = image[..., 3:] if image.ndim == 3 and image.shape[2] == 4 else None
        color = image if alpha is None else image[..., :3]
        scale = peak(image.dtype) / 255
        if scale != 1:
            color = (color / scale + 0.5).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", color, (cv2.IMWRITE_JPEG_QUALITY, params["quality"]))
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if out.ndim == 3 and color.ndim == 2:
            out = out[..., 0]
        if scale != 1:
            out = (out * scale + 0.5).astype(image.dtype)
        return out if alpha is None else np.concatenate([out, alpha], axis=2)


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


# -- groups ---------------------------------------------------------------------------


class OneOf(Transform):
    """With probability p, apply one child, chosen with weights proportional to their p."""

    name = "one_of"

    def __init__(self, transforms: list[Transform], p: float = 1.0):
        super().__init__(p)
        if not transforms:
            raise ValueError("one_of needs at least one transform")
        self.transforms = list(transforms)
        weights = np.array([t.p for t in self.transforms], dtype=float)
        self.weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))

    def integer_only(self) -> list[str]:
        return [name for child in self.transforms for name in child.integer_only()]

    def run(self, t, rng, log, force=False):
        if not force and self.p < 1.0 and rng.random() >= self.p:
            return t
        child = self.transforms[int(rng.choice(len(self.transforms), p=self.weights))]
        return child.run(t, rng, log, force=True)


class SomeOf(Transform):
    """With probability p, pick ``n`` children at random and run them in the listed order."""

    name = "some_of"

    def __init__(self, transforms: list[Transform], n: int = 1, p: float = 1.0):
        super().__init__(p)
        if not 0 < n <= len(transforms):
            raise ValueError(f"some_of: n={n} must be in 1..{len(transforms)}")
        self.transforms, self.n = list(transforms), int(n)

    def integer_only(self) -> list[str]:
        return [name for child in self.transforms for name in child.integer_only()]

    def run(self, t, rng, log, force=False):
        if not force and self.p < 1.0 and rng.random() >= self.p:
            return t
        for i in sorted(rng.choice(len(self.transforms), size=self.n, replace=False)):
            t = self.transforms[int(i)].run(t, rng, log)
        return t


class Compose:
    """Transforms applied in order to an image and everything that moves with it."""

    def __init__(self, transforms: list[Transform], box_format: str = "pascal_voc", min_visibility: float = 0.0, min_area: float = 0.0):
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box format {box_format!r}: expected one of {BOX_FORMATS}")
        self.transforms = list(transforms)
        self.box_format, self.min_visibility, self.min_area = box_format, float(min_visibility), float(min_area)

    def integer_only(self) -> list[str]:
        """The transforms that take 8- or 16-bit images only, each named once: a float image
        is refused by them whether or not a copy draws them, so it is told apart by its
        depth alone, not by chance."""
        return list(dict.fromkeys(name for t in self.transforms for name in t.integer_only()))

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, boxes=None, keypoints=None, mask=None, owned: bool = False) -> Augmented:
        """Run the transforms; ``owned=True`` lets them overwrite ``image`` (saves copies)."""
        h, w = image.shape[:2]
        t = Targets(image, mask, owned=owned)
        if boxes is not None:
            t.boxes = checked_boxes(boxes, self.box_format, h, w)
            t.visibility = np.ones(len(t.boxes))
        if keypoints is not None:
            t.keypoints = checked_keypoints(keypoints)
        log: list[dict] = []
        for transform in self.transforms:
            t = transform.run(t, rng, log)
        t = t.settled()
        oh, ow = t.shape
        out_boxes, box_index, kp = _NO_BOXES, _NO_INDEX, _NO_POINTS
        if t.boxes is not None:
            area = np.prod(t.boxes[:, 2:] - t.boxes[:, :2], axis=1)
            keep = (t.visibility >= max(self.min_visibility, 1e-12)) & (area > self.min_area)
            out_boxes = from_pascal_voc(t.boxes[keep], self.box_format, oh, ow)
            box_index = np.flatnonzero(keep)
        if t.keypoints is not None:
            kp = t.keypoints.copy()
            outside = (kp[:, 0] < -0.5) | (kp[:, 1] < -0.5) | (kp[:, 0] >= ow - 0.5) | (kp[:, 1] >= oh - 0.5)
            kp[outside] = np.nan
        return Augmented(t.image, t.mask, out_boxes, box_index, kp, log)


_NO_BOXES = np.zeros((0, 4))
_NO_INDEX = np.zeros(0, dtype=np.int64)
_NO_POINTS = np.zeros((0, 2))


# -- building a pipeline from a job file ----------------------------------------------

TRANSFORMS: dict[str, type[Transform]] = {
    cls.name: cls
    for cls in (
        HorizontalFlip, VerticalFlip, Rotate, Affine, RandomCrop, CenterCrop, Resize, RandomResizedCrop,
        Brightness, Contrast, Gamma, HueSaturation, GaussianBlur, GaussianNoise, JpegQuality, Cutout,
    )
}


def transform_from_spec(spec: Any) -> Transform:
    """``"hflip"``, ``{"rotate": {"limit": 15}}``, ``{"one_of": [...], "p": 0.5}``,
    ``{"some_of": [...], "n": 2}`` -> a Transform (errors name the unknown part)."""
    if isinstance(spec, str):
        spec = {spec: {}}
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"a transform is a name or a one-key mapping, got {spec!r}")
    for group, cls in (("one_of", OneOf), ("some_of", SomeOf)):
        if group in spec:
            extra = {k: v for k, v in spec.items() if k != group}
            return cls([transform_from_spec(s) for s in spec[group]], **extra)
    if len(spec) != 1:
        raise ValueError(f"a transform is a one-key mapping like {{rotate: {{limit: 15}}}}, got {spec!r}")
    (name, options), = spec.items()
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}{_did_you_mean(name, TRANSFORMS)}; "
                         f"known: {', '.join(sorted(TRANSFORMS))}, one_of, some_of")
    options = options or {}
    if not isinstance(options, dict):
        raise ValueError(f"transform {name!r}: options are a mapping like {{p: 0.5}}, got {options!r}")
    valid = _options_of(TRANSFORMS[name])
    for key in options:
        if key not in valid:
            raise ValueError(f"transform {name!r}: unknown option {key!r}{_did_you_mean(key, valid)}; options: {', '.join(valid)}")
    try:
        return TRANSFORMS[name](**options)
    except TypeError as e:
        raise ValueError(f"transform {name!r}: {e}") from None


def _options_of(cls) -> list[str]:
    """The keyword options a transform takes, its own and those it hands on (``**kw``)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names += [q.name for q in params if q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL) and q.name not in names]
        if not any(q.kind == q.VAR_KEYWORD for q in params):
            break
    return names


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
