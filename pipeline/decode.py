"""CPU decode stage: encoded bytes -> HWC uint8 RGB arrays, with per-row status and error.

Handles EXIF orientation, palette/grayscale/RGBA/CMYK/16-bit inputs and a pixel limit against
decompression bombs. Bad inputs (empty, truncated, not an image, too large) become error rows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import schema

logger = logging.getLogger(__name__)

EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageTooLargeError(ValueError):
    """The image has more pixels than the configured limit; ``size`` is (width, height)."""

    def __init__(self, message: str, size: tuple[int, int]) -> None:
        super().__init__(message)
        self.size = size


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB; 16/32-bit integer data is scaled, not clipped."""
    if img.mode in _INT_MODES:
        arr = np.asarray(img).astype(np.float64)
        scale = 257.0 if arr.max(initial=0) <= 65535 else arr.max() / 255.0
        gray = np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode == "P":
        img = img.convert("RGBA")  # honours palette transparency before dropping alpha
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Disable PIL's global bomb check (it raises before the size is known to us) so that
    ``max_pixels`` is the only limit; single-threaded decode workers make this safe."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def decode_image(data: bytes, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image.

    Args:
        data: encoded image file bytes.
        max_pixels: images with more pixels raise :class:`ImageTooLargeError`.

    Returns:
        ``(rgb, (width, height))``: HWC uint8 RGB array after EXIF orientation, and its size.

    Raises:
        ValueError: empty input or too many pixels.
        PIL.UnidentifiedImageError: not an image.
        OSError: truncated or corrupt data.
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    with _own_pixel_limit(), Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise ImageTooLargeError(
                f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                "(raise --max-image-pixels if intended)",
                (w, h),
            )
        img.load()
        try:
            img = ImageOps.exif_transpose(img)
        except (ValueError, OSError, KeyError, TypeError) as e:  # broken EXIF: keep pixels
            logger.debug("ignoring unusable EXIF orientation: %s", e)
        rgb = _to_rgb(img)
    return rgb, (rgb.shape[1], rgb.shape[0])


def _object_array(items: list[object]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def decoded_batch(images: list[np.ndarray], ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """``decode_batch``-shaped columns for images already decoded in memory (benchmarks, tests).

    Args:
        images: (H, W, 3) uint8 RGB arrays.
        ids: image ids (default ``0.jpg``, ``1.jpg``, ...); sources are ``file:///<id>``.
    """
    n = len(images)
    ids = ids or [f"{i}.jpg" for i in range(n)]
    return {
        schema.IMAGE_ID: _object_array(list(ids)),
        schema.SOURCE_URI: _object_array([f"file:///{i}" for i in ids]),
        schema.SHARD_ID: _object_array(["s"] * n),
        schema.SHARD_SIZE: np.full(n, n, dtype=np.int64),
        schema.IMAGE: _object_array(list(images)),
        schema.WIDTH: np.array([p.shape[1] for p in images], dtype=np.int32),
        schema.HEIGHT: np.array([p.shape[0] for p in images], dtype=np.int32),
        schema.STATUS: _object_array([schema.STATUS_OK] * n),
        schema.ERROR: _object_array([None] * n),
    }


def decode_batch(batch: dict[str, np.ndarray], max_pixels: int) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` function: bytes -> images, status and error per row.

    Args:
        batch: columns ``data`` (object array of bytes), ``error`` (read errors or None) and
            pass-through columns (id, source, shard).
        max_pixels: see :func:`decode_image`.

    Returns:
        The pass-through columns plus ``image`` (object array of HWC uint8; (0, 0, 3) for error
        rows), ``width``/``height`` (int32, -1 when unknown), ``status`` and ``error``.
    """
    images, widths, heights, statuses, errors = [], [], [], [], []
    for data, read_error in zip(batch[schema.DATA], batch[schema.ERROR], strict=True):
        image, size = EMPTY_IMAGE, (-1, -1)
        error = read_error if isinstance(read_error, str) else None  # NaN/None: no error
        if error is None:
            try:
                image, size = decode_image(bytes(data), max_pixels)
            except ImageTooLargeError as e:
                size, error = e.size, f"{type(e).__name__}: {e}"
            except (
                OSError,
                ValueError,
                UnidentifiedImageError,
                Image.DecompressionBombError,
                SyntaxError,
                EOFError,
            ) as e:
                error = f"{type(e).__name__}: {e}"
            except Exception as e:  # per-row boundary: any decoder failure is a data error
                logger.warning("unexpected decoder failure: %r", e)
                error = f"{type(e).__name__}: {e}"
        images.append(image)
        widths.append(size[0])
        heights.append(size[1])
        statuses.append(schema.STATUS_OK if error is None else schema.STATUS_ERROR)
        errors.append(error)
    out = {k: v for k, v in batch.items() if k not in (schema.DATA, schema.ERROR)}
    out[schema.IMAGE] = _object_array(images)
    out[schema.WIDTH] = np.asarray(widths, dtype=np.int32)
    out[schema.HEIGHT] = np.asarray(heights, dtype=np.int32)
    out[schema.STATUS] = np.asarray(statuses, dtype=object)
    out[schema.ERROR] = _object_array(errors)
    return out


def prepare_batch(
    batch: dict[str, np.ndarray], prepare_image: Callable[[np.ndarray], np.ndarray]
) -> dict[str, np.ndarray]:
    """Ray ``map_batches`` function after :func:`decode_batch` (fused into its CPU tasks): the
    model's own CPU preprocessing (e.g. the official cv2 short-side resize) of every ``ok`` image.

    Args:
        batch: output of :func:`decode_batch`; ``width``/``height`` stay the decoded size.
        prepare_image: picklable HWC uint8 -> HWC uint8 function from the model spec.

    Returns:
        The same columns, ``image`` replaced; an image the function rejects becomes an error row.
    """
    images, statuses, errors = [], [], []
    for image, status, error in zip(
        batch[schema.IMAGE], batch[schema.STATUS], batch[schema.ERROR], strict=True
    ):
        if status == schema.STATUS_OK:
            try:
                image = prepare_image(image)
            except Exception as e:  # noqa: BLE001 - per-row boundary: the image is the problem
                image, status, error = EMPTY_IMAGE, schema.STATUS_ERROR, f"{type(e).__name__}: {e}"
        images.append(image)
        statuses.append(status)
        errors.append(error)
    out = dict(batch)
    out[schema.IMAGE] = _object_array(images)
    out[schema.STATUS] = np.asarray(statuses, dtype=object)
    out[schema.ERROR] = _object_array(errors)
    return out
