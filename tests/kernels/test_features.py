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


def test_a_sixteen_bit_image_keeps_its_brightness_in_every_descriptor():
    """16-bit images were stretched from their own darkest to brightest pixel, so one 50
    times too dark had the features of a good one (sanitize could not see it), as 8-bit
    images never were. Now a 16-bit image's features are its 8-bit version's."""
    camera = photos.camera()
    deep = camera.astype(np.uint16) * 257
    blobs = [encode_image(deep, "png"), encode_image(deep // 50, "png"), encode_image(camera, "png"), encode_image(camera // 50, "png")]
    for kind in ("pixels", "hog", "color_hist"):
        bright16, dark16, bright8, dark8 = image_features(blobs, kind)
        assert np.allclose(bright16, bright8), kind
        assert np.linalg.norm(bright16 - dark16) > 0.5 * np.linalg.norm(bright8 - dark8) > 0, kind


def test_float_and_32_bit_images_have_features_of_their_own():
    """A float image of 0-255 levels was read as 0-1 and clipped (all white), a 32-bit one
    scaled by its dtype's range (flat grey): every such image had one feature vector. With
    no 8-bit convention to follow, they are scaled from their own range."""
    camera, coins = photos.camera(), photos.coins()
    for kind, fn in (("pixels", grey_pixels), ("hog", hog)):
        for dtype in (np.float32, np.int32):
            assert np.allclose(fn(camera.astype(dtype)), fn(camera)), (kind, dtype)
            assert not np.allclose(fn(camera.astype(dtype)), fn(coins.astype(dtype))), (kind, dtype)
    assert np.allclose(grey_pixels(camera / 255.0), grey_pixels(camera))  # floats in 0-1 stay as they were


def test_category_counts_merge_in_any_order_and_keep_the_most_frequent():
    import pandas as pd

    from dsbuild.kernels.features import CategoryCounts

    frame = pd.DataFrame({"c": list("aaaabbbccd") + [None], "k": ["x"] * 11})
    whole = CategoryCounts.of(frame, ["c", "k"])
    parts = [CategoryCounts.of(frame.iloc[i::3], ["c", "k"]) for i in range(3)]
    assert parts[2].merge(parts[0]).merge(parts[1]) == whole
    encoder = whole.encoder(max_categories=3)
    assert encoder.names() == ["c=a", "c=b", "c=infrequent", "k=x"]
    X = encoder.transform(frame)
    assert X[0].tolist() == [1, 0, 0, 1] and X[8].tolist() == [0, 0, 1, 1] and np.isnan(X[10, :3]).all()
