"""Image transforms: labels move exactly with pixels, draws are reproducible, pixels are right."""

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from skimage import data

from dsbuild.kernels.images import (
    TRANSFORMS,
    Compose,
    from_pascal_voc,
    to_pascal_voc,
    transform_from_spec,
)

ASTRONAUT = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)

EXACT = [  # integer motions: a lit pixel lands exactly on the moved point
    "hflip",
    "vflip",
    {"random_crop": {"height": 40, "width": 50}},
    {"center_crop": {"height": 33, "width": 41}},
]
WARPS = [  # interpolating motions: the blob's centre of mass lands on the moved point
    {"rotate": {"limit": 180}},
    {"affine": {"scale": [0.7, 1.4], "translate": 0.1, "rotate": 45, "shear": 20}},
    {"resize": {"height": 97, "width": 61}},
    {"random_resized_crop": {"height": 64, "width": 80, "scale": [0.3, 1.0]}},
]

settings.register_profile("fast", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fast")


def blob(h, w, x, y, sigma=2.0):
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.round(g * 255).astype(np.uint8)


def centre_of_mass(img):
    img = img.astype(np.float64)
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    total = img.sum()
    return (xx * img).sum() / total, (yy * img).sum() / total


@given(
    spec=st.sampled_from(EXACT),
    h=st.integers(60, 90),
    w=st.integers(60, 90),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_a_pixel_lands_exactly_where_the_keypoint_goes(spec, h, w, fx, fy, seed):
    x, y = int(fx * (w - 1)), int(fy * (h - 1))
    img = np.zeros((h, w), np.uint8)
    img[y, x] = 255
    out = Compose([transform_from_spec(spec)])(img, np.random.default_rng(seed), keypoints=[[x, y]])
    kx, ky = out.keypoints[0]
    if np.isnan(kx):
        assert out.image.max() == 0, "keypoint said invisible but the pixel is still in the image"
    else:
        assert out.image[int(ky), int(kx)] == 255
        assert (kx, ky) == (int(kx), int(ky))


@given(
    spec=st.sampled_from(WARPS),
    fx=st.floats(0.3, 0.7),
    fy=st.floats(0.3, 0.7),
    seed=st.integers(0, 2**32),
)
def test_a_blob_centre_lands_where_the_keypoint_goes(spec, fx, fy, seed):
    h, w = 120, 110
    x, y = fx * (w - 1), fy * (h - 1)
    img = blob(h, w, x, y)
    out = Compose([transform_from_spec(spec)])(img, np.random.default_rng(seed), keypoints=[[x, y]])
    kx, ky = out.keypoints[0]
    oh, ow = out.image.shape
    assume(8 < kx < ow - 9 and 8 < ky < oh - 9)
    cx, cy = centre_of_mass(out.image)
    assert abs(cx - kx) < 0.35 and abs(cy - ky) < 0.35


@given(
    spec=st.sampled_from(EXACT + [{"resize": {"height": 100, "width": 140}}]),
    x0=st.integers(0, 60),
    y0=st.integers(0, 60),
    bw=st.integers(4, 30),
    bh=st.integers(4, 30),
    seed=st.integers(0, 2**32),
)
def test_axis_aligned_moves_keep_boxes_on_the_painted_rectangle(spec, x0, y0, bw, bh, seed):
    h = w = 100
    img = np.zeros((h, w), np.uint8)
    img[y0 : y0 + bh, x0 : x0 + bw] = 255
    box = [x0, y0, x0 + bw, y0 + bh]
    out = Compose([transform_from_spec(spec)])(img, np.random.default_rng(seed), boxes=[box], mask=img.copy())
    resize = "resize" in str(spec)
    assert resize or np.array_equal(out.image, out.mask)
    ys, xs = np.nonzero(out.mask)
    if len(out.box_index) == 0:
        assert len(xs) == 0
        return
    painted = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    tol = 1.0 if resize else 1e-9
    assert np.allclose(out.boxes[0], painted, atol=tol)


@given(angle=st.floats(-180, 180), seed=st.integers(0, 100))
def test_rotated_boxes_contain_the_rotated_rectangle(angle, seed):
    img = np.zeros((101, 101), np.uint8)
    img[40:60, 30:70] = 255
    rotate = transform_from_spec({"rotate": {"limit": [angle, angle], "interpolation": "nearest"}})
    out = Compose([rotate])(img, np.random.default_rng(seed), boxes=[[30, 40, 70, 60]])
    ys, xs = np.nonzero(out.image)
    x0, y0, x1, y1 = out.boxes[0]
    assert xs.min() >= x0 - 0.5 and xs.max() + 1 <= x1 + 0.5
    assert ys.min() >= y0 - 0.5 and ys.max() + 1 <= y1 + 0.5


@pytest.mark.parametrize("fmt", ["pascal_voc", "coco", "yolo"])
def test_box_formats_round_trip(fmt):
    rng = np.random.default_rng(0)
    voc = np.sort(rng.uniform(0, 50, (7, 4)).reshape(7, 2, 2), axis=1).transpose(0, 2, 1).reshape(7, 4)
    voc = voc[:, [0, 2, 1, 3]]
    there = from_pascal_voc(voc, fmt, 60, 80)
    assert np.allclose(to_pascal_voc(there, fmt, 60, 80), voc)


def test_yolo_boxes_follow_a_flip():
    out = Compose([transform_from_spec("hflip")], box_format="yolo")(
        ASTRONAUT, np.random.default_rng(0), boxes=[[0.25, 0.5, 0.1, 0.2]]
    )
    assert np.allclose(out.boxes, [[0.75, 0.5, 0.1, 0.2]])


def test_boxes_mostly_cut_away_are_dropped_by_visibility():
    crop = transform_from_spec({"center_crop": {"height": 100, "width": 100}})
    img = np.zeros((200, 200), np.uint8)
    boxes = [[40, 90, 60, 110], [90, 90, 110, 110], [0, 0, 10, 10]]  # 1/2 visible, whole, gone
    keep_half = Compose([crop], min_visibility=0.4)(img, np.random.default_rng(0), boxes=boxes)
    strict = Compose([crop], min_visibility=0.6)(img, np.random.default_rng(0), boxes=boxes)
    assert list(keep_half.box_index) == [0, 1]
    assert np.allclose(keep_half.boxes[0], [0, 40, 10, 60])
    assert list(strict.box_index) == [1]


def test_same_generator_same_copy_and_params_replay_it():
    specs = [
        "hflip",
        {"affine": {"scale": [0.8, 1.2], "rotate": 20}},
        {"one_of": ["brightness", "gamma", "contrast"]},
        {"some_of": ["gaussian_noise", "gaussian_blur", "jpeg", "cutout", "hue_saturation"], "n": 2},
        {"random_resized_crop": {"height": 128, "width": 128}},
    ]
    pipeline = Compose([transform_from_spec(s) for s in specs])
    a = pipeline(ASTRONAUT, np.random.default_rng(7))
    b = pipeline(ASTRONAUT, np.random.default_rng(7))
    c = pipeline(ASTRONAUT, np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and a.params == b.params
    assert not np.array_equal(a.image, c.image)
    assert [p["op"] for p in a.params][0] == "hflip"
    assert len(a.params) == 6  # hflip, affine, one of three, two of five, crop


def test_input_image_is_never_overwritten():
    original = ASTRONAUT.copy()
    specs = ["brightness", "contrast", "gamma", "gaussian_noise", "cutout", {"random_crop": {"height": 100, "width": 100}}, "brightness"]
    for spec in specs:
        Compose([transform_from_spec(spec)])(ASTRONAUT, np.random.default_rng(0))
    Compose([transform_from_spec(s) for s in specs[-2:]])(ASTRONAUT, np.random.default_rng(0))
    assert np.array_equal(original, ASTRONAUT)


def test_one_of_applies_exactly_one_and_some_of_exactly_n():
    one = Compose([transform_from_spec({"one_of": ["hflip", "vflip", "gamma"]})])
    some = Compose([transform_from_spec({"some_of": ["hflip", "vflip", "gamma", "brightness"], "n": 2})])
    for seed in range(20):
        assert len(one(ASTRONAUT, np.random.default_rng(seed)).params) == 1
        assert len(some(ASTRONAUT, np.random.default_rng(seed)).params) == 2


def test_probability_decides_how_often_a_transform_runs():
    pipeline = Compose([transform_from_spec({"hflip": {"p": 0.3}})])
    small = ASTRONAUT[:8, :8]
    ran = sum(bool(pipeline(small, np.random.default_rng(s)).params) for s in range(2000))
    assert 500 < ran < 700


@pytest.fixture(params=["stringzilla", "opencv"])
def lut_backend(request, monkeypatch):
    """Pixel LUTs run on stringzilla when it is installed and on OpenCV otherwise: test both."""
    from dsbuild.kernels.images import levels as images

    if request.param == "opencv":
        monkeypatch.setattr(images, "_sz", None)
    elif images._sz is None:
        pytest.skip("stringzilla is not installed; the OpenCV path is tested")
    return request.param


def test_pixel_transforms_compute_what_they_say(lut_backend):
    img = ASTRONAUT
    run = lambda spec: Compose([transform_from_spec(spec)])(img, np.random.default_rng(0)).image  # noqa: E731
    brighter = run({"brightness": {"limit": [0.1, 0.1]}}).astype(int)
    assert np.array_equal(brighter, np.minimum(img.astype(int) + 26, 255))
    gamma = run({"gamma": {"limit": [2.0, 2.0]}})
    assert np.array_equal(gamma, np.round(255 * (img / 255.0) ** 2).astype(np.uint8))
    flat = run({"contrast": {"limit": [-0.5, -0.5]}})
    assert flat.std() < 0.55 * img.std() and abs(flat.mean() - img.mean()) < 1.5
    noisy = run({"gaussian_noise": {"std": [0.05, 0.05]}}).astype(float) - img
    middle = (img > 60) & (img < 195)
    assert abs(noisy[middle].std() - 0.05 * 255) < 0.5 and abs(noisy[middle].mean()) < 0.2
    blurred = run({"gaussian_blur": {"sigma": [2, 2]}})
    assert np.abs(blurred.astype(int) - cv2.GaussianBlur(img, (13, 13), 2).astype(int)).max() <= 1
    holes = Compose([transform_from_spec({"cutout": {"holes": [3, 3], "size": [0.1, 0.1]}})])(img, np.random.default_rng(0))
    for y, x, rh, rw in holes.params[0]["rects"]:
        assert (holes.image[y : y + rh, x : x + rw] == 0).all()
    same_hue = run({"hue_saturation": {"hue": [0, 0], "saturation": [0, 0]}})
    assert np.abs(same_hue.astype(int) - img).mean() < 1.0
    shifted = run({"hue_saturation": {"hue": [30, 30], "saturation": [0, 0]}})
    assert np.abs(shifted.astype(int) - img).mean() > 5
    jpeg = run({"jpeg": {"quality": [30, 30]}})
    assert 1.0 < np.abs(jpeg.astype(int) - img).mean() < 10


def test_lookup_tables_leave_a_borrowed_image_alone_and_overwrite_an_owned_one(lut_backend):
    from dsbuild.kernels.images import apply_lut

    lut = (255 - np.arange(256)).astype(np.uint8)
    img = ASTRONAUT.copy()
    out = apply_lut(img, lut)
    assert out is not img and np.array_equal(img, ASTRONAUT) and np.array_equal(out, 255 - ASTRONAUT)
    assert apply_lut(img, lut, owned=True) is img and np.array_equal(img, 255 - ASTRONAUT)


@pytest.mark.parametrize("owned", [False, True])
def test_consecutive_lookup_tables_give_the_bytes_of_one_after_another(lut_backend, owned):
    """Brightness, gamma and contrast compose into one table; a flip in between settles it."""
    specs = [{"brightness": {"limit": [0.15, 0.15]}}, {"gamma": {"limit": [0.7, 0.7]}}, "hflip",
             {"brightness": {"limit": [-0.3, -0.3]}}, {"contrast": {"limit": [0.4, 0.4]}}, {"gamma": {"limit": [1.3, 1.3]}}]
    steps = [transform_from_spec(s) for s in specs]
    expected = ASTRONAUT
    for step in steps:
        expected = step.apply(expected, step.draw(np.random.default_rng(0), *expected.shape[:2]))
    img = ASTRONAUT.copy()
    out = Compose(steps)(img, np.random.default_rng(0), owned=owned)
    assert np.array_equal(out.image, expected)
    assert owned or np.array_equal(img, ASTRONAUT)


@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 3), (8, 11, 4), (1, 1, 3)])
@pytest.mark.parametrize("flip", ["hflip", "vflip"])
def test_flips_overwrite_only_an_owned_image(shape, flip):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    expected = img[:, ::-1] if flip == "hflip" else img[::-1]
    borrowed = img.copy()
    assert np.array_equal(Compose([transform_from_spec(flip)])(borrowed, np.random.default_rng(0)).image, expected)
    assert np.array_equal(borrowed, img)
    owned = img.copy()
    out = Compose([transform_from_spec(flip)])(owned, np.random.default_rng(0), owned=True).image
    assert np.array_equal(out, expected) and np.shares_memory(out, owned)


def test_resizes_interpolate_as_albumentations_does_by_default():
    """Bilinear, OpenCV's INTER_LINEAR, for both resize and random resized crop."""
    out = Compose([transform_from_spec({"resize": {"height": 256, "width": 200}})])(ASTRONAUT, np.random.default_rng(0))
    assert np.array_equal(out.image, cv2.resize(ASTRONAUT, (200, 256), interpolation=cv2.INTER_LINEAR))
    spec = {"random_resized_crop": {"height": 128, "width": 96, "scale": [0.3, 0.6]}}
    out = Compose([transform_from_spec(spec)])(ASTRONAUT, np.random.default_rng(0))
    p = out.params[0]
    window = ASTRONAUT[p["y"] : p["y"] + p["crop_height"], p["x"] : p["x"] + p["crop_width"]]
    assert np.array_equal(out.image, cv2.resize(window, (96, 128), interpolation=cv2.INTER_LINEAR))


def test_bad_specs_say_what_is_wrong():
    with pytest.raises(ValueError, match="did you mean 'rotate'"):
        transform_from_spec({"rotat": {}})
    with pytest.raises(ValueError, match="transform 'rotate'"):
        transform_from_spec({"rotate": {"angle": 3}})
    with pytest.raises(ValueError, match="larger than the image"):
        Compose([transform_from_spec({"random_crop": {"height": 900, "width": 10}})])(ASTRONAUT, np.random.default_rng(0))


def test_shift_tables_saturate_like_the_arithmetic():
    from dsbuild.kernels.images import shift_table

    levels = np.arange(256, dtype=np.float64)
    for shift in range(-300, 301):
        table = shift_table(shift)
        assert table.dtype == np.uint8 and not table.flags.writeable
        assert np.array_equal(table, np.clip(levels + shift, 0, 255).astype(np.uint8)), shift


@pytest.mark.parametrize("name, params, tolerance", [
    ("brightness", {"delta": 0.15}, 1.0),
    ("contrast", {"factor": 0.3}, 1.0),
    ("gamma", {"gamma": 1.4}, 1.0),
    ("hue_saturation", {"hue": 12, "saturation": 25, "value": -10}, 5.0),  # 8-bit HSV: 2° hue steps
])
def test_pixel_transforms_act_alike_on_16_bit_images(name, params, tolerance):
    """A 16-bit image (depth maps, medical and scientific images) takes the same change,
    as a share of its range, as the 8-bit one; the lookup tables failed on it, as did
    OpenCV's 8-bit HSV."""
    eight = cv2.resize(data.astronaut(), (96, 64))
    sixteen = eight.astype(np.uint16) * 257
    transform = TRANSFORMS[name]()
    out8, out16 = transform.apply(eight, params), transform.apply(sixteen, params)
    assert out16.dtype == np.uint16 and out16.shape == sixteen.shape
    assert np.abs(out16 / 257 - out8).max() <= tolerance and np.abs(out16 / 257 - out8).mean() < 0.5


def test_noise_and_jpeg_keep_a_16_bit_image_16_bit_and_alpha_as_it_was():
    rgb = cv2.resize(data.astronaut(), (96, 64))
    sixteen = rgb.astype(np.uint16) * 257
    noisy = TRANSFORMS["gaussian_noise"]().apply(sixteen, {"std": 0.05, "seed": 3})
    assert noisy.dtype == np.uint16 and 0.04 < np.std(noisy / 65535 - sixteen / 65535) < 0.06
    squeezed = TRANSFORMS["jpeg"]().apply(sixteen, {"quality": 70})
    assert squeezed.dtype == np.uint16 and np.abs(squeezed / 257 - TRANSFORMS["jpeg"]().apply(rgb, {"quality": 70})).max() <= 1
    rgba = np.dstack([rgb, np.arange(rgb.size // 3, dtype=np.uint32).reshape(rgb.shape[:2]).astype(np.uint8)])
    out = TRANSFORMS["jpeg"]().apply(rgba, {"quality": 70})
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], rgba[..., 3])


@pytest.mark.parametrize("spec, params", [
    ({"rotate": {"fill": 255}}, {"angle": 45}),
    ({"affine": {"fill": 128}}, {"scale": 0.5, "tx": 0, "ty": 0, "angle": 0, "shear": 0}),
    ({"cutout": {"fill": 255}}, {"rects": [[0, 0, 8, 8]]}),
])
def test_fill_is_the_same_shade_at_any_depth(spec, params):
    """``fill`` is on the 8-bit scale, scaled to the image's range: 255 filled a 16-bit
    image's corners with 255 of 65535, near black, where the 8-bit copy's were white."""
    eight = cv2.resize(data.camera(), (48, 40))
    transform = transform_from_spec(spec)
    fill = next(iter(spec.values()))["fill"]
    for image, level in ((eight, fill), (eight.astype(np.uint16) * 257, fill * 257), (eight / np.float32(255), fill / 255)):
        assert transform.apply(image, params)[0, 0] == pytest.approx(level)


@pytest.mark.parametrize("fill", [65535, -1, "white"])
def test_a_fill_off_the_8_bit_scale_is_refused_when_the_job_is_read(fill):
    with pytest.raises(ValueError, match=r"rotate.fill: a grey level from 0 \(black\) to 255 \(white\)"):
        transform_from_spec({"rotate": {"fill": fill}})


def test_pixel_transforms_name_the_image_types_they_cannot_take():
    with pytest.raises(ValueError, match="float32 images are not supported"):
        TRANSFORMS["gamma"]().apply(np.zeros((4, 4), np.float32), {"gamma": 1.2})


def test_a_misspelt_transform_or_option_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"transform 'rotate': unknown option 'angle'; options: limit, interpolation, border, fill, p"):
        transform_from_spec({"rotate": {"angle": 15}})
    with pytest.raises(ValueError, match=r"transform 'affine': unknown option 'rotation' \(did you mean 'rotate'\?\)"):
        transform_from_spec({"affine": {"rotation": 15}})
    with pytest.raises(ValueError, match=r"unknown transform 'brightnes' \(did you mean 'brightness'\?\)"):
        transform_from_spec("brightnes")
    with pytest.raises(ValueError, match=r"transform 'rotate': options are a mapping"):
        transform_from_spec({"rotate": 15})


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("specs", [
    [{"brightness": {"limit": [0.2, 0.2]}}],
    [{"contrast": {"limit": [-0.5, -0.5]}}],
    [{"gamma": {"limit": [0.5, 0.5]}}],
    [{"gaussian_noise": {"std": [0.1, 0.1]}}],
    [{"hue_saturation": {"hue": [30, 30], "saturation": [40, 40]}}],
    [{"brightness": {"limit": [0.2, 0.2]}}, "gamma", "vflip", "contrast"],  # composed tables, settled by a flip
])
def test_pixel_transforms_change_the_colour_of_a_bgra_image_and_leave_its_alpha(specs, dtype):
    """Alpha is transparency, not light: brightness made a transparent background show
    (alpha 0 -> 51), noise speckled it, and hue_saturation left a BGRA image's colour
    as it was while recording the shift as applied. The colour changes as the BGR
    image's does."""
    rgb = cv2.resize(ASTRONAUT, (48, 40)).astype(dtype) * (257 if dtype == np.uint16 else 1)
    alpha = np.zeros(rgb.shape[:2], dtype)
    alpha[10:30, 10:40], alpha[:5] = np.iinfo(dtype).max, np.iinfo(dtype).max // 2
    bgra = np.dstack([rgb, alpha])
    for owned in (False, True):
        out = Compose([transform_from_spec(s) for s in specs])(bgra.copy(), np.random.default_rng(1), owned=owned).image
        same = Compose([transform_from_spec(s) for s in specs])(rgb.copy(), np.random.default_rng(1)).image
        moved = alpha[::-1] if "vflip" in specs else alpha
        assert out.dtype == dtype and out.shape == bgra.shape
        assert np.array_equal(out[..., 3], moved)
        assert np.array_equal(out[..., :3], same)


@pytest.mark.parametrize("fmt, boxes, says", [
    ("pascal_voc", [[100.0, 100.0, 50.0, 50.0]], "ends before it starts"),  # was turned the right way round
    ("coco", [[10.0, 10.0, -5.0, 20.0]], "ends before it starts"),
    ("pascal_voc", [[1.0, 2.0], [3.0, 4.0]], "4 numbers each"),  # was one box [1, 2, 3, 4]
    ("pascal_voc", [[np.nan, 1.0, 5.0, 5.0]], "missing or infinite"),  # was dropped from the copy
    ("pascal_voc", [[300.0, 300.0, 400.0, 400.0]], "lies outside the 256x256 image"),
    ("yolo", [[100.0, 100.0, 50.0, 50.0]], "yolo boxes are fractions"),  # pixels as yolo: every box dropped
])
def test_boxes_that_cannot_be_moved_as_given_are_refused_by_name(fmt, boxes, says):
    image = cv2.resize(ASTRONAUT, (256, 256))
    with pytest.raises(ValueError, match=f"(box 0 .*)?{says}"):
        Compose([transform_from_spec("hflip")], fmt)(image, np.random.default_rng(0), boxes=boxes)


def test_boxes_partly_outside_or_flat_still_move():
    image = cv2.resize(ASTRONAUT, (256, 256))
    out = Compose([transform_from_spec("hflip")])(image, np.random.default_rng(0), boxes=[[-10.0, 5.0, 20.0, 30.0], [5.0, 5.0, 5.0, 9.0]])
    assert out.boxes.tolist()[0] == [236.0, 5.0, 256.0, 30.0]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("fill", [0, 128, 255])
@pytest.mark.parametrize("spec, params", [
    ("rotate", {"angle": 45}),
    ("affine", {"scale": 0.5, "tx": 0, "ty": 0, "angle": 0, "shear": 0}),
])
def test_a_warp_border_is_transparent_in_an_image_with_alpha(spec, params, fill, dtype):
    """Where a rotation or a shrink leaves no pixel of the image, there is nothing: alpha 0,
    the fill its colour. The fill went to alpha too, so a white fill made an opaque white
    frame around a cut-out object and a grey one a half-transparent frame."""
    top = np.iinfo(dtype).max
    bgra = np.dstack([cv2.resize(ASTRONAUT, (48, 40)), np.full((40, 48), 255, np.uint8)]).astype(dtype) * (top // 255)
    out = transform_from_spec({spec: {"fill": fill}}).apply(bgra, params)
    assert out.dtype == dtype and out.shape == bgra.shape
    assert list(out[0, 0]) == [fill * (top // 255)] * 3 + [0]
    assert out[20, 24, 3] == top  # the image itself stays opaque


@pytest.mark.parametrize("fill", [0, 255])
def test_cutout_fills_the_colour_of_its_holes_and_keeps_alpha(fill):
    """Cutout hides part of what the image shows, as an occluder would: the hole takes the
    fill's colour and the image's alpha is kept. The fill went to alpha too: black cut a
    transparent hole through the object, white put an opaque patch on its transparent
    background."""
    bgra = np.dstack([cv2.resize(ASTRONAUT, (48, 40)), np.zeros((40, 48), np.uint8)])
    bgra[:, 24:, 3] = 255  # transparent left half, opaque right half
    out = Compose([transform_from_spec({"cutout": {"fill": fill}})])(bgra.copy(), np.random.default_rng(0)).image
    holes = (out[..., :3] != bgra[..., :3]).any(axis=2)
    assert holes.any() and (out[holes][:, :3] == fill).all()
    assert np.array_equal(out[..., 3], bgra[..., 3])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("spec, params", [
    ({"rotate": {}}, {"angle": 10}),
    ({"affine": {}}, {"scale": 0.8, "tx": 0.05, "ty": 0, "angle": 5, "shear": 3}),
    ({"resize": {"height": 61, "width": 61}}, {}),
    ({"random_resized_crop": {"height": 80, "width": 80}}, {"y": 4, "x": 6, "crop_height": 70, "crop_width": 75}),
    ({"gaussian_blur": {}}, {"sigma": 2.0}),
])
def test_resampling_an_image_with_alpha_does_not_bleed_transparent_colour(spec, params, dtype):
    """A white disc on a transparent ground (stored black, as most such PNGs store it),
    rotated, resized or blurred: its rim mixed in the black of the transparent pixels
    beside it, and over white it showed a grey ring 25 % darker. Colour is mixed weighted
    by alpha, as compositing reads it: over white the disc stays white."""
    top = np.iinfo(dtype).max
    bgra = np.zeros((96, 96, 4), np.uint8)
    cv2.circle(bgra, (48, 48), 30, (255, 255, 255, 255), -1)
    bgra = bgra.astype(dtype) * (top // 255)
    out = transform_from_spec(spec).apply(bgra, params)
    assert out.dtype == dtype and out.shape[2] == 4
    alpha = out[..., 3:] / top
    over_white = out[..., :3] / top * alpha + (1 - alpha)
    assert over_white.min() > 0.99
    assert 0 < alpha.mean() < 1 and ((alpha > 0) & (alpha < 1)).any()  # the rim is still soft


def test_a_warp_of_an_image_with_alpha_keeps_its_opaque_colour():
    """Weighting colour by alpha changes nothing where the image is opaque."""
    bgra = np.dstack([cv2.resize(ASTRONAUT, (48, 40)), np.full((40, 48), 255, np.uint8)])
    params = {"angle": 20}
    out = transform_from_spec("rotate").apply(bgra, params)
    alone = transform_from_spec("rotate").apply(bgra[..., :3].copy(), params)
    inside = out[..., 3] == 255
    assert inside.mean() > 0.6 and np.abs(out[..., :3][inside].astype(int) - alone[inside]).max() <= 1


def _grey_alpha(dtype):
    """The camera man, grey, with the horse's silhouette as a soft alpha (real planes)."""
    grey = cv2.resize(data.camera(), (80, 64), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize((~data.horse()).astype(np.uint8) * 255, (80, 64), interpolation=cv2.INTER_AREA)
    scale = 257 if dtype == np.uint16 else 1
    return np.dstack([grey, alpha]).astype(dtype) * scale


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_grey_with_alpha_is_transformed_as_grey_and_its_alpha_as_bgras(name, dtype):
    """A grey+alpha PNG, which OpenCV decodes to BGRA, went through the transforms as
    colour: gaussian_noise speckled it with colour, and every copy was written colour.
    As 2 channels (grey, alpha) each transform changes its grey as it changes a grey
    image (with the same draws) and its alpha as it changes a BGRA image's."""
    options = {"random_crop": {"height": 40, "width": 50}, "center_crop": {"height": 40, "width": 50},
               "resize": {"height": 30, "width": 70}, "random_resized_crop": {"height": 48, "width": 48}}.get(name, {})
    ga = _grey_alpha(dtype)
    bgra = cv2.merge([ga[..., 0]] * 3 + [ga[..., 1]])
    runs = {}
    for key, image in (("ga", ga), ("bgra", bgra), ("grey", np.ascontiguousarray(ga[..., 0]))):
        runs[key] = Compose([transform_from_spec({name: {**options, "p": 1.0}})])(image.copy(), np.random.default_rng(5)).image
    out = runs["ga"]
    assert out.dtype == dtype and out.ndim == 3 and out.shape[2] == 2
    assert np.array_equal(out[..., 1], runs["bgra"][..., 3])
    if name in ("gaussian_noise", "cutout", "brightness", "contrast", "gamma", "hue_saturation", "jpeg"):
        assert np.array_equal(out[..., 0], runs["grey"])  # colour only: as a grey image's
    assert np.abs(out[..., 0].astype(int) - runs["bgra"][..., 0]).max() <= (1 if name != "gaussian_noise" else np.iinfo(dtype).max)
