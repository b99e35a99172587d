"""``validate_images``: decode every image and reject the broken, truncated or oversized ones."""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dsbuild.kernels.decode import as_stored, image_problem
from dsbuild.records import (
    IMAGE_FORMATS,
    image_bytes,
    missing_image_reason,
    sniff_image_format,
)
from dsbuild.stages.base import MapStage, StageOptions, register, reject
from dsbuild.stages.clean.cells import _as_received, _rejects_as_received

_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff", "pgm": "pnm", "ppm": "pnm", "pbm": "pnm", "pam": "pnm",
                   "netpbm": "pnm", "j2k": "jp2", "jpeg2000": "jp2", "jpx": "jp2"}


class ValidateImagesOptions(StageOptions):
    max_pixels: int = Field(50_000_000, gt=0, description="reject images with more pixels (decompression bombs)")
    min_side: int = Field(1, ge=1, description="reject images whose height or width is smaller")
    formats: list[str] | None = Field(
        None, description=f"allowed formats ({', '.join(IMAGE_FORMATS)}; jpg and tif too, any case), "
        "read from the bytes; default any OpenCV reads")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, names: list[str] | None) -> list[str] | None:
        """Names as the bytes are sniffed (``jpg`` is ``jpeg``): an unknown one is a typo,
        which would otherwise reject every image."""
        return None if names is None else [_image_format(name) for name in names]


def _image_format(name: str) -> str:
    key = str(name).strip().lower().lstrip(".")
    key = _FORMAT_ALIASES.get(key, key)
    if key not in IMAGE_FORMATS:
        close = difflib.get_close_matches(key, IMAGE_FORMATS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown image format {name!r}{hint}; known: {', '.join(IMAGE_FORMATS)}")
    return key


@register
class ValidateImages(MapStage):
    """Decode every image; undecodable, truncated, empty or oversized ones, and JPEGs
    whose scan data libjpeg finds damaged (``corrupt-scan=<its warning>``), go to rejects.

    Fills ``<image>_height``, ``<image>_width``, ``<image>_channels`` from the decoded
    pixels, so later stages can trust them. ``formats`` is checked on the format sniffed
    from the bytes, so it holds for every source (a Parquet or Hugging Face image column
    has no ``<image>_format`` beside it); others are ``format-not-allowed:<format>``.
    """

    name = "validate_images"
    Options = ValidateImagesOptions

    def _column(self) -> str:
        return self.ctx.roles.image_column

    def check(self, meta):
        self.require_image_column(meta)

    def process(self, part):
        col = self._column()
        o = self.options
        n = len(part)
        reasons = np.full(n, None, dtype=object)
        height = np.zeros(n, dtype=np.int64)
        width = np.zeros(n, dtype=np.int64)
        channels = np.zeros(n, dtype=np.int64)
        for i, cell in enumerate(part[col].to_numpy(dtype=object)):
            data = image_bytes(cell)
            reason, pixels = image_problem(data, o.max_pixels, o.min_side) if data is not None else (missing_image_reason(cell), None)
            if reason is None and o.formats is not None and (fmt := sniff_image_format(data)) not in o.formats:
                reason = f"format-not-allowed:{fmt}"
            if reason is None:
                height[i], width[i] = pixels.shape[:2]
                pixels = as_stored(pixels, data)  # a grey+alpha PNG: 2, as an augmented copy of it says
                channels[i] = 1 if pixels.ndim == 2 else pixels.shape[2]
            reasons[i] = reason
        bad = np.array([r is not None for r in reasons], dtype=bool)
        part = reject(part, bad, reasons)
        sizes = [f"{col}_height", f"{col}_width", f"{col}_channels"]
        received = _as_received(part, [c for c in sizes if c in part.columns])
        for name, values in zip(sizes, (height, width, channels)):
            # nullable, as the image sources give sizes: a rejected image's size is not 0
            part[name] = pd.array(np.where(bad, 0, values), dtype="Int64")
            part.loc[bad, name] = pd.NA
        return _rejects_as_received(part, received)
