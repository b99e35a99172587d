"""Boxes and keypoints: checked as a job gives them, converted to and from ``pascal_voc``
pixel edges, and moved by a transform's matrix (a box by its four corners, enveloped,
clipped, its visibility kept)."""

from __future__ import annotations

import numpy as np

BOX_FORMATS = ("pascal_voc", "coco", "yolo")


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
