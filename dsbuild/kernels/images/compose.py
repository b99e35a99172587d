"""Transforms in order or chosen at random (``Compose``, ``one_of``, ``some_of``), and a
pipeline built from a job file's transforms."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import numpy as np

from dsbuild.kernels.images.annotations import BOX_FORMATS, checked_boxes, checked_keypoints, from_pascal_voc
from dsbuild.kernels.images.base import Augmented, Targets, Transform
from dsbuild.kernels.images.geometric import Affine, CenterCrop, HorizontalFlip, RandomCrop, RandomResizedCrop, Resize, Rotate, VerticalFlip
from dsbuild.kernels.images.pixel import Brightness, Contrast, Cutout, Gamma, GaussianBlur, GaussianNoise, HueSaturation, JpegQuality


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
