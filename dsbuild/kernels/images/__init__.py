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

The modules: ``levels`` (levels of light, lookup tables, alpha), ``annotations`` (boxes
and keypoints), ``base`` (the targets and the base transforms), ``geometric``, ``pixel``,
``compose`` (groups, and a pipeline from a job file).
"""

from dsbuild.kernels.images.annotations import (  # noqa: F401 - the names other modules and tests import from here
    BOX_FORMATS, AnnotationError, checked_boxes, checked_keypoints, edge_matrix, from_pascal_voc, move_boxes, move_points,
    to_pascal_voc,
)
from dsbuild.kernels.images.base import (  # noqa: F401
    BORDERS, INTERPOLATIONS, Augmented, GeometricTransform, Targets, TooSmall, Transform, resize_image,
)
from dsbuild.kernels.images.compose import TRANSFORMS, Compose, OneOf, SomeOf, _options_of, transform_from_spec  # noqa: F401
from dsbuild.kernels.images.geometric import (  # noqa: F401
    Affine, CenterCrop, HorizontalFlip, RandomCrop, RandomResizedCrop, Resize, Rotate, VerticalFlip,
)
from dsbuild.kernels.images.levels import alpha_weighted, apply_lut, fill_level, on_colour, peak, shift_table  # noqa: F401
from dsbuild.kernels.images.pixel import (  # noqa: F401
    Brightness, Contrast, Cutout, Gamma, GaussianBlur, GaussianNoise, HueSaturation, JpegQuality, PixelTable,
)
