"""What flows through a pipeline (``Targets``, ``Augmented``), the base transforms, and the
matrices and draws the transforms share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from dsbuild.kernels.images.annotations import move_boxes, move_points
from dsbuild.kernels.images.levels import alpha_weighted, apply_lut, on_colour

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


class TooSmall(ValueError):
    """An image smaller than a transform's fixed output (a crop larger than it): the row's
    own problem, as one thumbnail among photos is, not the job's (augment rejects the row)."""


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
