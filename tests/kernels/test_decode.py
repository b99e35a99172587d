"""decode_image: pixels upright as viewers, PIL and Hugging Face ``datasets`` show them."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from dsbuild.kernels.decode import decode_image
from dsbuild.records import image_size, jpeg_orientation

PORTRAIT = data.astronaut()[:300, :200]  # RGB, taller than wide
PIL_TURN = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def jpeg(pixels, orientation=None, big_endian=False, **save) -> bytes:
    """A JPEG with an EXIF orientation tag (PIL writes little-endian TIFF; cameras write both)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", exif=_big_endian_exif(orientation) if big_endian else exif.tobytes(), quality=95, **save)
    return buf.getvalue()


def _big_endian_exif(orientation: int) -> bytes:
    ifd = (1).to_bytes(2, "big") + (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
    ifd += orientation.to_bytes(2, "big") + b"\0\0" + (0).to_bytes(4, "big")
    return b"Exif\0\0MM\0\x2a" + (8).to_bytes(4, "big") + ifd


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_applies_it(orientation):
    blob = jpeg(PORTRAIT, orientation)
    stored = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)  # as stored
    expected = stored if orientation == 1 else np.asarray(Image.fromarray(stored).transpose(PIL_TURN[orientation]))
    upright = decode_image(blob)
    assert np.array_equal(upright, expected)
    assert jpeg_orientation(blob) == orientation
    assert image_size(blob) == upright.shape[:2] == ((200, 300) if orientation >= 5 else (300, 200))
    grey = decode_image(blob, cv2.IMREAD_GRAYSCALE)  # OpenCV turns it itself in this mode: not twice
    assert grey.shape == upright.shape[:2]


def test_orientation_in_big_endian_exif_and_in_none():
    assert jpeg_orientation(jpeg(PORTRAIT, 6, big_endian=True)) == 6
    assert decode_image(jpeg(PORTRAIT, 6, big_endian=True)).shape[:2] == (200, 300)
    assert jpeg_orientation(jpeg(PORTRAIT)) == 1
    assert jpeg_orientation(jpeg(PORTRAIT, 6, progressive=True)) == 6
    assert jpeg_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00") == 1  # cut short: as if none
