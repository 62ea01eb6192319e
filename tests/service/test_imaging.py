"""app.imaging: upload validation, decoding of every pixel format, EXIF, decompression bombs, geometry policy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app import imaging
from app.errors import ServiceError
from tests.app_helpers import encode, gradient, png_header_only

LIMITS = {"max_bytes": 1 << 20, "max_pixels": 1_000_000}


def decode(data: bytes, native=(32, 32), keep_original=False) -> imaging.Decoded:
    return imaging.decode(data, native_hw=native, keep_original=keep_original, **LIMITS)


def refused(data: bytes) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        decode(data)
    return info.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_native_rgb(fmt):
    d = decode(encode(Image.fromarray(gradient(60, 40)), fmt))
    assert d.pixels.shape == (32, 32, 3) and d.pixels.dtype == np.uint8
    assert d.source_format == fmt and d.original_size == (60, 40)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_unsupported_formats_are_415(fmt):
    err = refused(encode(Image.fromarray(gradient(20, 20)), fmt))
    assert err.status_code == 415 and err.error == "unsupported_format" and fmt in err.detail


def test_empty_not_an_image_and_oversized():
    assert refused(b"").status_code == 400
    assert refused(b"hello, I am text").status_code == 415
    big = encode(Image.fromarray(gradient(20, 20)), "PNG") + b"\0" * (LIMITS["max_bytes"])
    assert refused(big).status_code == 413


def test_truncated_file_is_400():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    err = refused(data[: len(data) // 2])
    assert err.status_code == 400 and err.error == "corrupt_image"
    jpeg = encode(Image.fromarray(gradient(64, 64)), "JPEG")
    assert refused(jpeg[:200]).status_code == 400


def test_decompression_bomb_refused_from_the_header():
    err = refused(png_header_only(50_000, 50_000))  # 2.5 G pixels declared in a ~100-byte file
    assert err.status_code == 413 and err.error == "too_many_pixels"
    err = refused(png_header_only(2000, 1000))  # above our limit, below Pillow's: our own check
    assert err.status_code == 413 and "2000x1000" in err.detail


@pytest.mark.filterwarnings(
    "error::PIL.Image.DecompressionBombWarning"
)  # what app.imaging installs (pytest resets it)
def test_pillow_bomb_warning_refuses_even_with_a_higher_limit_of_ours():
    # 100 M pixels: between Pillow's warning (89 M) and error (179 M) levels, and under our limit here.
    with pytest.raises(ServiceError) as info:
        imaging.decode(
            png_header_only(10_000, 10_000), native_hw=(32, 32), max_bytes=1 << 20, max_pixels=150_000_000
        )
    assert info.value.status_code == 413 and info.value.error == "too_many_pixels"


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "1", "I;16"])
def test_other_modes_are_converted(mode):
    rgb = Image.fromarray(gradient(40, 40))
    if mode == "I;16":
        im = Image.fromarray((np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16))
    else:
        im = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    d = decode(encode(im, fmt))
    assert d.pixels.shape == (32, 32, 3)
    assert d.pixels.std() > 1  # not a flat (clipped or blank) picture


def test_16_bit_grey_is_rescaled_not_clipped():
    im = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    d = decode(encode(im, "PNG"), native=(8, 8))
    assert abs(int(d.pixels.mean()) - 128) <= 1


def test_alpha_is_composited_over_white():
    im = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    d = decode(encode(im, "PNG"), native=(8, 8))
    assert (d.pixels == 255).all()


def test_exif_rotation_is_honoured():
    # A landscape picture stored with orientation 6 (rotate 90 degrees clockwise to display): upright it is portrait.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    im = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    d = decode(encode(im, "JPEG", exif=exif.tobytes(), quality=95), native=(8, 8), keep_original=True)
    assert d.original.size == (20, 40)  # upright: 20 wide, 40 tall
    top, bottom = d.original.crop((0, 0, 20, 20)), d.original.crop((0, 20, 20, 40))
    assert np.asarray(top).mean() > 200 and np.asarray(bottom).mean() < 50  # the white half is now on top


def test_geometry_policy_centre_crop_and_sizes():
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, 30:70] = 200  # the centred 40x40 square is grey, the margins black
    d = decode(encode(Image.fromarray(pixels), "PNG"), native=(16, 16), keep_original=True)
    assert d.crop_box == (30, 0, 70, 40)
    assert (np.abs(d.pixels.astype(int) - 200) <= 2).all()  # the crop holds only the centre
    edited = np.full((16, 16, 3), 50, np.uint8)
    assert imaging.restore_geometry(edited, d, "native").shape == (16, 16, 3)
    assert imaging.restore_geometry(edited, d, "crop").shape == (40, 40, 3)
    full = imaging.restore_geometry(edited, d, "original")
    assert full.shape == (40, 100, 3)
    assert (full[:, 30:70] == 50).all() and (full[:, :30] == 0).all() and (full[:, 70:] == 0).all()


def test_non_square_native_size_crops_to_its_aspect():
    assert imaging.center_box(100, 100, 2.0) == (0, 25, 100, 75)
    d = decode(encode(Image.fromarray(gradient(90, 90)), "PNG"), native=(16, 32))
    assert d.pixels.shape == (16, 32, 3)


def test_jpeg_draft_decoding_keeps_native_size():
    d = decode(encode(Image.fromarray(gradient(800, 600)), "JPEG"), native=(64, 64))
    assert d.pixels.shape == (64, 64, 3)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_round_trip(fmt):
    pixels = gradient(24, 16)
    data = imaging.encode(pixels, fmt, quality=95)
    assert imaging.sniff_format(data) == imaging.FORMATS[fmt]
    assert Image.open(io.BytesIO(data)).size == (24, 16)
