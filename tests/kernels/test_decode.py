"""decode_image: pixels upright as viewers, PIL and Hugging Face ``datasets`` show them;
is_truncated: a cut file, not one with bytes after its end; for_format: a copy's pixels
converted as its format can hold them."""

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps
from skimage import data

from dsbuild.kernels.decode import as_stored, decode_image, encode_image, for_format, image_problem, is_truncated, stored_grey_alpha, to_uint8
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


def _with_png_exif(png: bytes, orientation: int, header: bytes = b"") -> bytes:
    """A PNG with an eXIf chunk after IHDR (``header``: the ``Exif\\0\\0`` some writers keep)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = header + exif.tobytes()[6:]  # PIL's bytes start with JPEG's Exif header
    chunk = len(payload).to_bytes(4, "big") + b"eXIf" + payload + zlib.crc32(b"eXIf" + payload).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_of_png_and_webp_is_applied_as_pil_applies_it(fmt, orientation):
    """PNG's eXIf and WebP's EXIF chunk turn the picture too (PIL's exif_transpose and
    OpenCV's colour mode apply them): only a JPEG's was applied, so such a PNG or WebP was
    decoded, sized and augmented on its side."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(PORTRAIT).save(buf, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    blob = buf.getvalue()
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))).convert("RGB"))
    upright = decode_image(blob)
    assert np.array_equal(upright, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    assert image_size(blob) == upright.shape[:2] == ((200, 300) if orientation >= 5 else (300, 200))


def test_a_sixteen_bit_png_with_an_exif_header_in_its_exif_chunk_is_turned():
    deep = cv2.cvtColor(PORTRAIT, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    for header in (b"", b"Exif\x00\x00"):
        blob = _with_png_exif(encode_image(deep, "png"), 6, header)
        assert np.array_equal(decode_image(blob), cv2.rotate(deep, cv2.ROTATE_90_CLOCKWISE))
        assert image_size(blob) == (200, 300)


# -- is_truncated ------------------------------------------------------------------------

# What a Samsung phone appends after a JPEG's EOI (SEFT: its trailer of extra data), 208 bytes.
SAMSUNG_TRAILER = (b"\x00\x00\x0a\x01\x0d\x00\x00\x00Image_UTC_Data1700000000000".ljust(96, b"\x00")
                   + b"\x00\x00\xa1\x0a\x0d\x00\x00\x00MCC_Data310".ljust(80, b"\x00")
                   + b"SEFH\x6b\x00\x00\x00\x02\x00\x00\x00\xd0\x00\x00\x00SEFT".ljust(32, b"\x00"))


def _cuts(blob: bytes) -> list[int]:
    """Where a download or copy stops short: half-way, most of the way, the last bytes."""
    return [len(blob) // 2, len(blob) * 9 // 10, len(blob) - 3, len(blob) - 1]


def _assert_cut_only_before_the_end(blob: bytes, fmt: str, extra: bytes) -> None:
    assert not is_truncated(blob, fmt)
    assert not is_truncated(blob + extra, fmt)  # bytes after the end marker are not a cut
    assert not is_truncated(blob + extra[: len(extra) // 2], fmt)  # nor a trailer cut short
    for cut in _cuts(blob):
        assert is_truncated(blob[:cut], fmt), cut


def test_a_jpeg_with_a_phones_trailer_is_whole_and_cut_ones_are_not():
    """A complete JPEG followed by a phone's 208-byte trailer was rejected as truncated:
    the end marker was looked for in the last 64 bytes only."""
    blob = encode_image(data.astronaut(), "jpeg", 90)
    assert len(SAMSUNG_TRAILER) == 208
    _assert_cut_only_before_the_end(blob, "jpeg", SAMSUNG_TRAILER)
    assert np.array_equal(decode_image(blob + SAMSUNG_TRAILER), decode_image(blob))
    restarts = cv2.imencode(".jpg", data.astronaut(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1].tobytes()
    assert b"\xff\xd7" in restarts  # RST0-7 markers inside the scan do not end it
    _assert_cut_only_before_the_end(restarts, "jpeg", SAMSUNG_TRAILER)


def test_a_png_padded_after_iend_is_whole_and_cut_ones_are_not():
    blob = encode_image(data.coins(), "png")
    _assert_cut_only_before_the_end(blob, "png", b"\0" * 100)
    assert is_truncated(blob[:-12], "png") and is_truncated(blob[:-12] + b"\0" * 100, "png")  # IEND gone: padded or not


def test_a_progressive_jpeg_is_walked_through_every_scan():
    """Several scans, each ended by the next marker: whole with a trailer, cut in any scan."""
    blob = cv2.imencode(".jpg", data.coffee()[..., ::-1], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert blob.count(b"\xff\xda") > 2  # progressive: several start-of-scan markers
    _assert_cut_only_before_the_end(blob, "jpeg", SAMSUNG_TRAILER)
    first_scans = blob.index(b"\xff\xda", blob.index(b"\xff\xda") + 2)
    assert is_truncated(blob[:first_scans], "jpeg")  # the first scan whole, the rest missing


def _with_exif_thumbnail(blob: bytes, thumbnail: bytes) -> bytes:
    """``blob`` with an APP1 EXIF segment holding ``thumbnail`` as cameras write it (IFD1's
    JPEGInterchangeFormat): a whole JPEG, FFD8..FFD9, inside the header. PIL reads such
    thumbnails but does not write them."""
    ifd0 = (1).to_bytes(2, "little") + _entry(0x0112, 3, 1) + (26).to_bytes(4, "little")  # orientation 1, IFD1 at 26
    ifd1 = (2).to_bytes(2, "little") + _entry(0x0201, 4, 56) + _entry(0x0202, 4, len(thumbnail)) + (0).to_bytes(4, "little")
    payload = b"Exif\0\0" + b"II*\0" + (8).to_bytes(4, "little") + ifd0 + ifd1 + thumbnail
    return blob[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + blob[2:]


def _entry(tag: int, kind: int, value: int) -> bytes:
    return tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little") + value.to_bytes(4, "little")


def test_an_exif_thumbnails_end_marker_is_not_the_images():
    """The thumbnail's FFD9 inside APP1 ends no image: a file cut just after it is cut."""
    thumbnail = encode_image(data.astronaut()[::8, ::8], "jpeg", 80)
    blob = _with_exif_thumbnail(encode_image(data.astronaut(), "jpeg", 90), thumbnail)
    ifd1 = Image.open(io.BytesIO(blob)).getexif().get_ifd(ExifTags.IFD.IFD1)
    assert ifd1[0x0202] == len(thumbnail)  # PIL finds the thumbnail where a camera's would be
    assert decode_image(blob).shape == (512, 512, 3)
    _assert_cut_only_before_the_end(blob, "jpeg", SAMSUNG_TRAILER)
    after_thumbnail = blob.index(thumbnail) + len(thumbnail)
    for cut in (after_thumbnail, after_thumbnail + 30):
        assert is_truncated(blob[:cut], "jpeg"), cut


# -- damaged scans --------------------------------------------------------------------------

PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "coins", "moon", "page", "text", "horse", "brick", "grass",
          "hubble_deep_field", "immunohistochemistry", "retina", "logo", "clock", "colorwheel", "checkerboard"]


def _scan(blob: bytes) -> tuple[int, int]:
    """Where the (first) scan's entropy-coded data starts and the EOI before which it ends."""
    sos = blob.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(blob[sos + 2 : sos + 4], "big"), blob.rindex(b"\xff\xd9")


@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_have_no_damaged_scan(name):
    """skimage's pictures (photos, scans, drawings with flat areas) in the encodings PIL
    and OpenCV write: none is said to be damaged."""
    pixels = getattr(data, name)()
    pixels = pixels[..., :3] if pixels.ndim == 3 else pixels
    pixels = pixels if pixels.dtype == np.uint8 else (pixels * 255).astype(np.uint8)
    for save in ({}, {"optimize": True}, {"progressive": True}, {"subsampling": 0}):
        assert image_problem(jpeg(pixels, **save), 10**9)[0] is None
    assert image_problem(encode_image(pixels, "jpeg", 80), 10**9)[0] is None


@pytest.mark.parametrize("damage", ["zeroed", "second half zeroed", "overwritten"])
def test_a_jpeg_whose_scan_data_is_damaged_is_rejected(damage):
    """The file is whole (every marker, an EOI), so OpenCV decoded it to an image — grey
    blocks or garbage — and it passed as good; libjpeg's warning says the scan is damaged."""
    blob = bytearray(jpeg(data.astronaut()))
    start, end = _scan(blob)
    middle = (start + end) // 2
    if damage == "zeroed":
        blob[start:end] = bytes(end - start)
    elif damage == "second half zeroed":
        blob[middle:end] = bytes(end - middle)
    else:
        blob[middle : middle + 4000] = np.random.default_rng(0).integers(0, 0xFF, 4000, dtype=np.uint8).tobytes()
    assert cv2.imdecode(np.frombuffer(bytes(blob), np.uint8), cv2.IMREAD_UNCHANGED) is not None
    reason, pixels = image_problem(bytes(blob), 10**9)
    assert reason.startswith("corrupt-scan=") and pixels is None
    assert reason in ("corrupt-scan=premature end of data segment", "corrupt-scan=bad Huffman code") or "extraneous bytes" in reason


def test_stray_bytes_between_header_segments_are_no_damaged_scan(capsys):
    """libjpeg warns about them too ('4 extraneous bytes before marker 0xdb'), but the
    picture decodes as it would without them: rejected as corrupt-scan, it was a good
    image lost. The warning is still written out, as libjpeg printed it."""
    blob = encode_image(data.camera(), "jpeg", 90)
    at = blob.index(b"\xff\xdb")
    padded = blob[:at] + b"\x00\x11\x22\x33" + blob[at:]
    reason, pixels = image_problem(padded, 10**9)
    assert reason is None and np.array_equal(pixels, decode_image(blob))
    assert "4 extraneous bytes before marker 0xdb" in capsys.readouterr().err


# -- for_format --------------------------------------------------------------------------

COINS_16 = data.coins().astype(np.uint16) * 257  # 16-bit, full range: coins = value * 255 / 65535
ASTRONAUT_ALPHA = np.dstack([data.astronaut()[..., ::-1], data.camera()])  # BGRA, a real (non-flat) alpha


def test_sixteen_bits_are_scaled_to_eight_by_their_range_and_rounded():
    """OpenCV's JPEG and WebP encoders clip a 16-bit image (nearly all 255): the value is
    scaled, value * 255 / 65535, and rounded, not cut down."""
    assert np.array_equal(for_format(COINS_16, "jpeg"), data.coins())
    assert np.array_equal(for_format(COINS_16 - 128, "jpeg"), data.coins())  # rounded: 128 / 257 < 0.5
    assert np.array_equal(for_format(COINS_16 + 128, "bmp"), data.coins())
    floats = data.astronaut().astype(np.float32) / 255
    assert np.array_equal(for_format(floats, "jpeg"), data.astronaut())  # floats: 0-1
    assert np.array_equal(for_format(floats, "png"), data.astronaut())  # PNG holds 8 and 16 bits only
    signed = ((data.camera().astype(np.int32) - 128) * 257 + 128).astype(np.int16)  # int16's range, -32768..32767
    assert np.array_equal(for_format(signed, "webp")[..., 0], data.camera())
    assert for_format(COINS_16, "png") is COINS_16 and for_format(COINS_16, "tiff") is COINS_16  # held as it is


def test_channels_as_each_format_holds_them():
    """JPEG: alpha dropped, grey stays grey. WebP: grey made colour (OpenCV would do it in
    the encoder), alpha kept unless fully opaque (WebP stores none then)."""
    camera, colour = data.camera(), ASTRONAUT_ALPHA[..., :3]
    assert for_format(camera, "jpeg") is camera
    assert np.array_equal(for_format(ASTRONAUT_ALPHA, "jpeg"), colour)
    assert np.array_equal(for_format(camera, "webp"), np.dstack([camera] * 3))
    assert for_format(ASTRONAUT_ALPHA, "webp") is ASTRONAUT_ALPHA
    opaque = np.dstack([colour, np.full_like(camera, 255)])
    assert np.array_equal(for_format(opaque, "webp"), colour)
    assert for_format(ASTRONAUT_ALPHA, "png") is ASTRONAUT_ALPHA


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "bmp", "tiff"])
def test_a_converted_image_decodes_with_its_dtype_and_channels(fmt):
    """What for_format gives is what the encoded copy decodes as, so a copy's columns can
    be filled from it without decoding."""
    opaque = np.dstack([data.astronaut()[..., ::-1], np.full_like(data.camera(), 255)])
    for pixels in (data.camera(), COINS_16, data.astronaut()[..., ::-1], ASTRONAUT_ALPHA, opaque):
        converted = for_format(pixels, fmt)
        decoded = decode_image(encode_image(converted, fmt, 90 if fmt in ("jpeg", "webp") else None))
        assert (decoded.dtype, decoded.shape) == (converted.dtype, converted.shape), pixels.shape
        assert np.abs(decoded.astype(float) - converted).mean() < 0.01 * np.iinfo(converted.dtype).max


GREY_ALPHA = np.dstack([data.camera(), data.coins()[:512, :384].repeat(2, axis=0)[:512].repeat(2, axis=1)[:, :512]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_with_alpha_is_written_as_each_format_holds_it(dtype):
    """Grey with alpha (2 channels, as :func:`as_stored` gives a grey+alpha PNG): a PNG
    of grey+alpha that OpenCV and PIL read back as written, smaller than BGRA; a
    JPEG of the grey (alpha dropped); WebP, TIFF and BMP, which OpenCV writes no 2
    channels in, BGRA with equal colour channels."""
    ga = GREY_ALPHA.astype(dtype) * (257 if dtype == np.uint16 else 1)
    png = encode_image(for_format(ga, "png"), "png")
    assert stored_grey_alpha(png) and png[24] == (16 if dtype == np.uint16 else 8)
    assert np.array_equal(as_stored(decode_image(png), png), ga)
    assert len(png) < len(encode_image(cv2.merge([ga[..., 0]] * 3 + [ga[..., 1]]), "png"))
    if dtype == np.uint8:
        shown = Image.open(io.BytesIO(png))
        assert shown.mode == "LA" and np.array_equal(np.asarray(shown), ga)
    eight = for_format(ga, "jpeg")
    assert eight.shape == ga.shape[:2] and eight.dtype == np.uint8
    for fmt in ("webp", "tiff", "bmp"):
        out = for_format(ga, fmt)
        assert out.shape == (*ga.shape[:2], 4), fmt
        alpha = ga[..., 1] if fmt == "tiff" else to_uint8(ga[..., 1])  # TIFF holds 16 bits
        assert np.array_equal(out[..., 0], out[..., 2]) and np.array_equal(out[..., 3], alpha), fmt
    assert as_stored(decode_image(encode_image(ASTRONAUT_ALPHA, "png")), encode_image(ASTRONAUT_ALPHA, "png")).shape[2] == 4


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_grey_tiff_with_alpha_keeps_its_alpha_and_depth(dtype, orientation):
    """OpenCV decodes a grey+alpha TIFF (2 samples a pixel) to 8-bit grey: the alpha and
    a 16-bit depth were lost without a word, and validate_images called it 1 channel.
    It is decoded as BGRA at its depth (as a grey+alpha PNG is), upright by its tag."""
    import tifffile

    ga = GREY_ALPHA[:300, :200].astype(dtype) * (257 if dtype == np.uint16 else 1)
    buf = io.BytesIO()
    tifffile.imwrite(buf, ga, photometric="minisblack", extrasamples=[2], extratags=[(274, "H", 1, orientation, True)])
    blob = buf.getvalue()
    upright = np.rot90(ga, -1) if orientation == 6 else ga  # 6: turn 90 degrees clockwise to view
    pixels = decode_image(blob)
    assert pixels.dtype == dtype and pixels.shape == (*upright.shape[:2], 4)
    assert stored_grey_alpha(blob) and np.array_equal(as_stored(pixels, blob), upright)
    assert image_size(blob) == upright.shape[:2]
    if dtype == np.uint8:
        shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))))
        assert np.array_equal(shown, upright)
    assert image_problem(blob, 10**8)[0] is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiffs_size_is_read_from_its_header_upright(orientation):
    """OpenCV turns a TIFF by its orientation tag; the header size says the same."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(PORTRAIT).save(buf, "TIFF", exif=exif.tobytes())
    assert image_size(buf.getvalue()) == decode_image(buf.getvalue()).shape[:2]


def test_a_huge_tiff_is_refused_from_its_header_before_any_pixel_is_decoded(monkeypatch):
    """A 1 MB TIFF of 20,000 x 20,000 pixels was decoded whole (400 MB) before max_pixels
    refused it: its size was not read from the header, as the other formats' are."""
    from dsbuild.kernels import decode

    ok, buf = cv2.imencode(".tiff", np.zeros((4000, 3000), np.uint8), [cv2.IMWRITE_TIFF_COMPRESSION, 8])
    assert image_size(buf.tobytes()) == (4000, 3000)
    # big-endian, the width a LONG, the height a SHORT
    mm = b"MM\x00*" + (8).to_bytes(4, "big") + (2).to_bytes(2, "big")
    mm += (256).to_bytes(2, "big") + (4).to_bytes(2, "big") + (1).to_bytes(4, "big") + (70000).to_bytes(4, "big")
    mm += (257).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + (5).to_bytes(2, "big") + b"\0\0"
    assert image_size(mm) == (5, 70000)
    assert image_size(b"II*\x00\x08\x00\x00\x00") is None  # cut short
    monkeypatch.setattr(decode, "decode_image", lambda *a, **k: pytest.fail("decoded"))
    assert decode.image_problem(buf.tobytes(), max_pixels=10_000_000)[0] == "too-large:4000x3000"


def _png_chunks(data: bytes) -> dict[bytes, int]:
    """Offset of each chunk type's first chunk in a PNG."""
    import struct

    pos, found = 8, {}
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        found.setdefault(kind, pos)
        pos += 12 + length
    return found


def test_an_undecodable_png_or_webp_is_rejected_with_a_reason_to_act_on():
    """OpenCV returns nothing for a damaged PNG and libpng says why on the process's
    stderr only: the reject said 'decode-error:png', for a bad CRC as for a file that is
    not a PNG past its signature. The reason now names the damage, and a good image costs
    nothing more (the reason is looked for after a decode fails)."""
    from skimage import data as samples

    pixels = np.ascontiguousarray(samples.astronaut()[:, :, ::-1])
    png = encode_image(pixels, "png")
    chunks = _png_chunks(png)
    idat = bytearray(png)
    idat[chunks[b"IDAT"] + 100] ^= 0xFF
    assert image_problem(bytes(idat), 10**9)[0] == f"decode-error:png=chunk IDAT at byte {chunks[b'IDAT']}: CRC error (its data was changed)"
    header = bytearray(png)
    header[chunks[b"IHDR"] + 10] ^= 0xFF  # the width
    assert image_problem(bytes(header), 10**9)[0].startswith("decode-error:png=chunk IHDR at byte 8: CRC error")
    webp = encode_image(pixels, "webp", 90)
    assert image_problem(webp[:20000], 10**9)[0] == f"decode-error:webp=cut: its RIFF header says {len(webp)} bytes, the file has 20000"


def test_a_tiff_whose_data_libtiff_finds_damaged_is_rejected_with_its_error():
    """libtiff decodes a TIFF whose compressed strips were overwritten to garbled pixels and
    prints its error to stderr only ("Using code not yet in table"): the image passed
    validation, garbled, and was augmented. It is rejected as corrupt-data=<libtiff's
    error>, as a JPEG's damaged scan is; a whole TIFF is not."""
    from skimage import data as samples

    tiff = cv2.imencode(".tiff", np.ascontiguousarray(samples.coffee()[:, :, ::-1]))[1].tobytes()
    assert image_problem(tiff, 10**9)[0] is None
    damaged = bytearray(tiff)
    damaged[len(tiff) // 3 : len(tiff) // 3 + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    assert decode_image(bytes(damaged)) is not None  # garbled, not refused
    assert image_problem(bytes(damaged), 10**9)[0] == "corrupt-data=Using code not yet in table"


def test_a_float_image_becomes_eight_bits_only_from_zero_to_one():
    """to_uint8 reads floats as 0-1: one holding other values or NaN is named, not clipped."""
    from dsbuild.kernels.decode import levels_problem

    camera = data.camera().astype(np.float32)
    assert levels_problem(camera / 255, "jpeg") is None and levels_problem(camera, "tiff") is None
    assert levels_problem(camera, "webp").startswith("a float32 image with values from 0 to 255 cannot be written as webp")
    camera[0, 0] = np.nan
    assert levels_problem(camera / 255, "png") == "a float32 image with NaN or infinite pixels cannot be written as png"


def test_a_32_bit_integer_image_is_refused_eight_bits():
    """Scaled by int32's range, an image of depths in mm (0-5000) came out flat grey."""
    from dsbuild.kernels.decode import levels_problem

    depth = (data.camera().astype(np.int32) * 20)
    assert levels_problem(depth, "png") == (
        "an int32 image with values from 0 to 5100 cannot be written as png: its levels have no 8-bit scale; convert it "
        "(a 16-bit PNG keeps 65,536 levels), or keep it a TIFF (format: same)")
    assert levels_problem(depth, "tiff") is None and levels_problem(data.camera().astype(np.int16), "jpeg") is None


def test_a_cut_bmp_or_gif_says_so_without_opencvs_source_paths():
    """The reason quoted OpenCV's log whole: 'decode-error:bmp=imdecode_ imdecode_(''): can't
    read data: OpenCV(5.0.0) /io/opencv/modules/imgcodecs/src/bitstrm.cpp:59: error: ...'."""
    from PIL import Image

    bmp = cv2.imencode(".bmp", data.camera())[1].tobytes()
    assert image_problem(bmp[: len(bmp) // 2], 10**9)[0] == (
        "decode-error:bmp=can't read data: unexpected end of input stream (the file is cut short)")
    buffer = io.BytesIO()
    Image.fromarray(data.camera()).save(buffer, "GIF")
    reason = image_problem(buffer.getvalue()[:5000], 10**9)[0]
    assert reason.startswith("decode-error:gif=can't read") and "OpenCV(" not in reason and "bitstrm.cpp" not in reason


def test_a_file_that_is_another_kind_of_document_says_what_it_is():
    """A scraper's error page saved as .jpg, a PDF, an SVG or a phone's HEIC photo were
    all decode-error:unknown-format: the reason now says which (the rule stays, so the
    manifest counts them together); bytes of no known kind say nothing more."""
    page = b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>nginx</body></html>"
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    said = {name: image_problem(blob, 10**8)[0] for name, blob in {
        "page": page, "pdf": b"%PDF-1.7\n%\xe2\xe3", "svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "heic": heic, "text": b"definitely not a jpeg"}.items()}
    assert said["page"] == "decode-error:unknown-format=an HTML page titled '403 Forbidden', not an image (a download that failed?)"
    assert said["pdf"] == "decode-error:unknown-format=a PDF document, not an image"
    assert said["svg"].startswith("decode-error:unknown-format=an SVG drawing")
    assert said["heic"].startswith("decode-error:unknown-format=a HEIC photo, which OpenCV does not read")
    assert said["text"] == "decode-error:unknown-format"


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img


@pytest.mark.parametrize(("ext", "dtype"), [(".pgm", np.uint8), (".pgm", np.uint16), (".ppm", np.uint8), (".ppm", np.uint16),
                                            (".pbm", np.uint8), (".jp2", np.uint8), (".jp2", np.uint16)])
def test_netpbm_and_jpeg_2000_are_read_at_their_depth(ext, dtype):
    """PGM, PPM, PBM and JPEG 2000, which OpenCV reads, were refused as
    ``decode-error:unknown-format``; they decode at their depth (16 bits stay 16), their
    size read from the header."""
    picture = data.camera() if ext in (".pgm", ".pbm") else _bgr(data.astronaut())
    picture = picture[:300, :200]
    if ext == ".pbm":
        picture = np.where(picture > 128, 255, 0).astype(np.uint8)
    picture = picture.astype(dtype) * (257 if dtype == np.uint16 else 1)
    blob = encode_image(picture, "jp2") if ext == ".jp2" else cv2.imencode(ext, picture)[1].tobytes()
    assert image_size(blob) == (300, 200)
    reason, pixels = image_problem(blob, max_pixels=10**7)
    assert reason is None
    assert pixels.dtype == dtype and np.array_equal(pixels, picture)  # encode_image writes JPEG 2000 losslessly


def test_a_netpbm_image_of_ten_bits_is_put_on_sixteen_bits_scale():
    """A PGM of MAXVAL 1023 (a 10-bit camera's) came out of OpenCV as 0-1023 in 16 bits,
    nearly black, and 0-4 in 8 bits; its levels are now value × 65535 / 1023, and as 8
    bits they are the picture's. A header with comments, and ASCII pixels, are read."""
    camera = data.camera()[:64, :48]
    ten = (camera.astype(np.uint32) * 1023 // 255).astype(">u2")
    blob = b"P5\n# from a 10-bit sensor\n48 64\n# levels\n1023\n" + ten.tobytes()
    assert image_size(blob) == (64, 48)
    reason, pixels = image_problem(blob, max_pixels=10**7)
    assert reason is None and pixels.dtype == np.uint16
    assert np.array_equal(pixels, (ten.astype(np.uint32) * 65535 + 511) // 1023)
    assert np.abs(to_uint8(pixels).astype(int) - camera).max() <= 1
    assert np.abs(decode_image(blob, cv2.IMREAD_GRAYSCALE).astype(int) - camera).max() <= 1  # as hashes read it
    ascii_grey = b"P2\n3 2\n# twelve bits\n4095\n0 4095 2048\n1 2 3\n"
    reason, pixels = image_problem(ascii_grey, max_pixels=10**7)
    assert reason is None and pixels.tolist() == [[0, 65535, 32776], [16, 32, 48]]


def _exr(pixels: np.ndarray) -> bytes:
    """An uncompressed scan-line OpenEXR file of float32 B, G, R channels (the format's
    minimal header: channels, compression, windows, line order, aspect, screen)."""
    import struct

    h, w = pixels.shape[:2]

    def attribute(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    channels = b"".join(c + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for c in (b"B", b"G", b"R")) + b"\0"
    window = struct.pack("<iiii", 0, 0, w - 1, h - 1)
    header = (b"\x76\x2f\x31\x01" + struct.pack("<i", 2) + attribute("channels", "chlist", channels)
              + attribute("compression", "compression", b"\0") + attribute("dataWindow", "box2i", window)
              + attribute("displayWindow", "box2i", window) + attribute("lineOrder", "lineOrder", b"\0")
              + attribute("pixelAspectRatio", "float", struct.pack("<f", 1)) + attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0))
              + attribute("screenWindowWidth", "float", struct.pack("<f", 1)) + b"\0")
    start = len(header) + 8 * h
    lines = [struct.pack("<ii", y, 12 * w) + np.ascontiguousarray(pixels[y].T).astype("<f4").tobytes() for y in range(h)]
    offsets = np.cumsum([start] + [len(line) for line in lines[:-1]]).astype("<u8").tobytes()
    return header + offsets + b"".join(lines)


def test_an_exr_is_read_where_opencv_has_openexr_and_refused_saying_so_where_not():
    """An EXR was ``decode-error:unknown-format``. Its size is read from its header
    (max_pixels holds before a pixel is decoded); where this OpenCV has OpenEXR it is
    read as float32, and where it has not the reason says so and what to do."""
    from dsbuild.kernels.decode import opencv_reads

    picture = (_bgr(data.astronaut())[:40, :24] / 255).astype(np.float32)
    blob = _exr(picture)
    assert image_size(blob) == (40, 24)
    assert image_problem(blob, max_pixels=40 * 24 - 1)[0] == "too-large:40x24"
    reason, pixels = image_problem(blob, max_pixels=10**7)
    if opencv_reads("OpenEXR"):
        assert reason is None and pixels.dtype == np.float32 and np.allclose(pixels, picture)
    else:
        assert pixels is None and reason == (
            f"decode-error:exr=this OpenCV ({cv2.__version__}) is built without OpenEXR, so it reads no EXR: convert the "
            "image to a float TIFF, or install an OpenCV built with OpenEXR")


def test_a_folder_of_netpbm_jpeg_2000_and_exr_files_is_read_validated_and_augmented(client, tmp_path):
    """A folder of PGM, JPEG 2000 and EXR files: the images source skipped them (not its
    extensions), and named with ``extensions`` they were rejected as unknown. Now the
    16-bit PGM and JPEG 2000 pass validate_images and get 16-bit copies in their own
    format, and the EXR is read where this OpenCV has OpenEXR (the worker setup enables
    it) or rejected naming its file and why."""
    import pandas as pd

    import dsbuild
    from dsbuild.kernels.decode import opencv_reads

    folder = tmp_path / "scans"
    folder.mkdir()
    grey = data.camera()[:48, :40].astype(np.uint16) * 257
    colour = _bgr(data.astronaut())[:32, :56].astype(np.uint16) * 257
    (folder / "camera.pgm").write_bytes(cv2.imencode(".pgm", grey)[1].tobytes())
    (folder / "astronaut.jp2").write_bytes(encode_image(colour, "jp2"))
    (folder / "sky.exr").write_bytes(_exr((colour / 65535).astype(np.float32)))
    assert set(client.run(lambda: __import__("os").environ.get("OPENCV_IO_ENABLE_OPENEXR")).values()) == {"1"}
    job = {"name": "scans", "source": {"format": "images", "path": str(folder)}, "columns": {"image": "image"},
           "stages": [{"validate_images": {}}, {"augment": {"transforms": ["hflip"], "copies": 1}}],
           "sink": {"path": str(tmp_path / "out")}}
    dsbuild.run(job, client=client)
    kept = pd.read_parquet(tmp_path / "out" / "data").set_index("id")
    rejects = pd.read_parquet(tmp_path / "out" / "rejects").set_index("id")
    for name, picture, fmt in (("camera.pgm", grey, "pnm"), ("astronaut.jp2", colour, "jp2")):
        assert kept.loc[name, "image_format"] == fmt and kept.loc[name, "image_channels"] == (1 if picture.ndim == 2 else 3)
        copy = kept.loc[f"{name}#aug0"]
        assert copy["image_format"] == fmt and np.array_equal(decode_image(copy["image"]), picture[:, ::-1])
    if opencv_reads("OpenEXR"):
        assert kept.loc["sky.exr#aug0", "image_format"] == "tiff" and rejects.empty
    else:
        assert kept.index.tolist().count("sky.exr") == 0
        assert rejects.loc["sky.exr", "reason"].startswith(f"decode-error:exr=this OpenCV ({cv2.__version__}) is built without OpenEXR")


def test_lossless_files_are_told_from_lossy_ones_by_their_headers():
    """What ``near_dedup_images``' ``keep: lossless`` ranks on: PNG, BMP, TIFF, netpbm and
    VP8L WebP hold the pixels exactly; JPEG, VP8 WebP (with alpha too) and JPEG 2000
    (lossy at OpenCV's default rate) do not."""
    from dsbuild.kernels.decode import is_lossless

    photo = _bgr(data.astronaut())[:64, :64]
    alpha = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    alpha[..., 3] = 128

    def written(ext, pixels=photo, params=()):
        return cv2.imencode(ext, pixels, list(params))[1].tobytes()

    exact = [written(".png"), written(".bmp"), written(".tiff"), written(".ppm"), written(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)),
             written(".webp", alpha, (cv2.IMWRITE_WEBP_QUALITY, 101))]
    lossy = [written(".jpg"), written(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80)), written(".webp", alpha, (cv2.IMWRITE_WEBP_QUALITY, 80)),
             written(".jp2"), None, b"not an image"]
    assert [is_lossless(b) for b in exact] == [True] * len(exact)
    assert [is_lossless(b) for b in lossy] == [False] * len(lossy)
    assert all(np.array_equal(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)[..., :3], photo) for b in exact)


def test_a_bare_jpeg_2000_codestream_is_read_and_sized():
    """A .j2k file is the codestream alone, without the JP2 boxes: sniffed by its SOC and
    SIZ markers, sized from SIZ (the grid less its offset), decoded as the JP2 is."""
    picture = _bgr(data.astronaut())[:48, :64]
    boxed = encode_image(picture, "jp2")
    codestream = boxed[boxed.index(b"jp2c") + 4 :]  # the contiguous codestream box's content
    assert codestream[:4] == b"\xff\x4f\xff\x51" and image_size(codestream) == (48, 64)
    reason, pixels = image_problem(codestream, max_pixels=10**7)
    assert reason is None and np.array_equal(pixels, picture)


@pytest.mark.parametrize(("ext", "channels", "error"), [(".pfm", 3, 0.0), (".pfm", 1, 0.0), (".hdr", 3, 0.01)])
def test_float_maps_pfm_and_radiance_hdr_are_read_as_float(ext, channels, error):
    """PFM and Radiance HDR, which OpenCV reads, were refused as unknown-format: they
    decode as float32 (HDR's shared-exponent levels within 1 %), sized from their headers
    before a pixel is decoded; augment's copies of them are float TIFFs."""
    from dsbuild.stages.augment import _format_of

    picture = (_bgr(data.astronaut())[:40, :56] / 255).astype(np.float32)
    picture = picture if channels == 3 else np.ascontiguousarray(picture[..., 0])
    blob = cv2.imencode(ext, picture)[1].tobytes()
    assert image_size(blob) == (40, 56)
    assert image_problem(blob, max_pixels=40 * 56 - 1)[0] == "too-large:40x56"
    reason, pixels = image_problem(blob, max_pixels=10**7)
    assert reason is None and pixels.dtype == np.float32 and np.abs(pixels - picture).max() <= error
    assert _format_of(blob, pixels) == "tiff"
