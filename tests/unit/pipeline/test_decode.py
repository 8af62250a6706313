"""Decode stage on real and deliberately broken inputs; no Ray."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline import decode, schema

LIMIT = 10_000_000


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (grayscale) with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def photo_jpeg(sample_photos) -> bytes:
    return sample_photos.jpegs(1)[0].read_bytes()


def test_real_jpeg_decodes_to_rgb_uint8(photo_jpeg: bytes) -> None:
    rgb, size = decode.decode_image(photo_jpeg, LIMIT)
    assert rgb.dtype == np.uint8 and rgb.shape == (360, 480, 3)
    assert size == (480, 360)
    assert rgb.std() > 10  # a real photo, not a blank


@pytest.mark.parametrize(
    ("name", "make", "error_type"),
    [
        ("zero-byte", lambda j: b"", "ValueError"),
        ("garbage", lambda j: bytes(range(256)) * 8, "UnidentifiedImageError"),
        ("text", lambda j: b"hello, this is not an image\n" * 20, "UnidentifiedImageError"),
        ("truncated", lambda j: j[: len(j) // 2], "OSError"),
        ("bomb", lambda j: _png_header_only(50_000, 50_000), "ImageTooLargeError"),
    ],
)
def test_bad_inputs_become_error_rows(photo_jpeg: bytes, name: str, make, error_type: str) -> None:
    batch = {
        schema.DATA: np.array([make(photo_jpeg), photo_jpeg], dtype=object),
        schema.ERROR: np.array([None, None], dtype=object),
        schema.IMAGE_ID: np.array([f"{name}.jpg", "good.jpg"], dtype=object),
    }
    out = decode.decode_batch(batch, max_pixels=LIMIT)
    assert list(out[schema.STATUS]) == ["error", "ok"]
    assert out[schema.ERROR][0].startswith(error_type + ":"), out[schema.ERROR][0]
    assert out[schema.ERROR][1] is None
    assert out[schema.IMAGE][0].shape == (0, 0, 3)
    assert out[schema.IMAGE][1].shape == (360, 480, 3)
    assert list(out[schema.IMAGE_ID]) == [f"{name}.jpg", "good.jpg"]
    assert schema.DATA not in out


def test_bomb_row_keeps_its_declared_size() -> None:
    batch = {
        schema.DATA: np.array([_png_header_only(50_000, 40_000)], dtype=object),
        schema.ERROR: np.array([None], dtype=object),
    }
    out = decode.decode_batch(batch, max_pixels=LIMIT)
    assert (out[schema.WIDTH][0], out[schema.HEIGHT][0]) == (50_000, 40_000)
    assert "exceeds the limit of 10000000" in out[schema.ERROR][0]


def test_read_error_passes_through_without_decoding() -> None:
    batch = {
        schema.DATA: np.array([b""], dtype=object),
        schema.ERROR: np.array(["OSError: gone"], dtype=object),
    }
    out = decode.decode_batch(batch, max_pixels=LIMIT)
    assert out[schema.ERROR][0] == "OSError: gone"
    assert (out[schema.WIDTH][0], out[schema.HEIGHT][0]) == (-1, -1)


def test_grayscale_is_replicated_to_three_channels() -> None:
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    rgb, _ = decode.decode_image(_encode(Image.fromarray(gray), "PNG"), LIMIT)
    assert rgb.shape == (12, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_drops_alpha_keeps_colour() -> None:
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0
    rgb, _ = decode.decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), LIMIT)
    assert rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(rgb[0, 0], [200, 100, 50])


def test_cmyk_jpeg_converts_to_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    rgb, size = decode.decode_image(_encode(cmyk, "JPEG", quality=95), LIMIT)
    assert size == (8, 6) and rgb.dtype == np.uint8
    r, g, b = rgb[3, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.linspace(0, 65535, 32, dtype=np.uint16).reshape(4, 8)
    rgb, _ = decode.decode_image(_encode(Image.fromarray(values), "PNG"), LIMIT)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    assert len(np.unique(rgb[..., 0])) > 20  # clipping would collapse most values to 255


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape, red left half
    arr[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    rgb, size = decode.decode_image(data, LIMIT)
    assert size == (20, 40) and rgb.shape == (40, 20, 3)  # now portrait
    assert rgb[5, 10, 0] > 200 and rgb[35, 10, 0] < 60  # red moved to the top half


def test_palette_png_converts_to_rgb() -> None:
    img = Image.new("P", (6, 3))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((2, 1), 1)
    rgb, _ = decode.decode_image(_encode(img, "PNG"), LIMIT)
    np.testing.assert_array_equal(rgb[1, 2], [10, 200, 30])
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])


def _photo(sample_photos) -> Image.Image:
    path = sample_photos.jpegs(1)[0]
    return Image.open(path).convert("RGB").resize((96, 72))


@pytest.mark.parametrize(
    ("fmt", "kwargs", "mean_error"),
    [
        ("PNG", {}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("JPEG", {"quality": 95}, 4.0),  # lossy codecs: small mean error per channel
        ("AVIF", {"quality": 95}, 4.0),
    ],
)
def test_every_pillow_format_decodes_to_the_same_pixels(
    sample_photos, fmt: str, kwargs: dict, mean_error: float
) -> None:
    from PIL import features

    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow build has no AVIF codec")
    photo = _photo(sample_photos)
    rgb, size = decode.decode_image(_encode(photo, fmt, **kwargs), LIMIT)
    assert size == (96, 72) and rgb.dtype == np.uint8
    diff = np.abs(rgb.astype(int) - np.asarray(photo, dtype=int))
    assert diff.mean() <= mean_error


def test_animated_gif_decodes_its_first_frame() -> None:
    red = Image.new("RGB", (8, 6), (255, 0, 0))
    blue = Image.new("RGB", (8, 6), (0, 0, 255))
    buf = io.BytesIO()
    red.save(buf, format="GIF", save_all=True, append_images=[blue], duration=100)
    rgb, size = decode.decode_image(buf.getvalue(), LIMIT)
    assert size == (8, 6)
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    assert (rgb == rgb[0, 0]).all()
