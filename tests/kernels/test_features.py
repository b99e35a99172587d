import numpy as np
import pytest
from skimage import data as photos

from dsbuild.kernels.decode import encode_image
from dsbuild.kernels.features import color_histogram, feature_length, grey_pixels, hog, image_features


@pytest.fixture(scope="module")
def images():
    return [encode_image(photos.astronaut()[:, :, ::-1].copy()), encode_image(photos.camera()), encode_image(photos.coffee()[:, :, ::-1].copy(), "jpeg")]


@pytest.mark.parametrize("kind,size", [("pixels", 16), ("hog", 32), ("hog", 64), ("color_hist", 8)])
def test_feature_length_matches(images, kind, size):
    X = image_features(images, kind, size)
    assert X.shape == (3, feature_length(kind, size))
    assert np.isfinite(X).all()


def test_undecodable_image_gives_nan_row(images):
    X = image_features([images[0], b"not an image", None], "pixels")
    assert np.isfinite(X[0]).all() and np.isnan(X[1:]).all()


def test_descriptors_tell_images_apart():
    camera = photos.camera()
    flipped = camera[:, ::-1].copy()
    assert np.abs(hog(camera) - hog(camera.copy())).max() == 0
    assert np.abs(hog(camera) - hog(flipped)).sum() > 1
    assert grey_pixels(camera).max() <= 1.0
    astronaut = photos.astronaut()[:, :, ::-1].copy()
    hist = color_histogram(astronaut)
    assert hist.sum() == pytest.approx(1.0)
    assert np.abs(hist - color_histogram(np.stack([camera] * 3, axis=2))).sum() > 0.5
