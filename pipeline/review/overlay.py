"""Overlay thumbnails: the image beside the image tinted with its label map.

Runs in worker processes (see :func:`make_thumbnails`): each task fetches its source image,
decodes it like the labelling job did (EXIF orientation included, so it lines up with the
mask), and writes one JPEG under a name the caller generated, never one taken from the input.
"""

from __future__ import annotations

import colorsys
import io
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline import decode, encode
from pipeline.review.source import fetch_source

logger = logging.getLogger(__name__)

THUMB_SIDE = 256  # longest side of each half of a thumbnail, pixels
ALPHA = 0.55  # weight of the class colour over the image
UNAVAILABLE_GREY = 96


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 distinct colours: golden-ratio hues, alternating brightness."""
    colours = []
    for c in range(num_classes):
        hue = (c * 0.618033988749895) % 1.0
        value = 0.95 if c % 2 == 0 else 0.7
        colours.append(colorsys.hsv_to_rgb(hue, 0.85, value))
    return np.rint(np.array(colours, dtype=np.float64).reshape(-1, 3) * 255).astype(np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    """``#rrggbb`` for an RGB triple."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


@dataclass(frozen=True)
class ThumbTask:
    """One thumbnail to make.

    Attributes:
        out_path: local file to write (a generated name inside the report folder).
        source_uri: where the image bytes live.
        mask_png: the row's label-map PNG (uint8 or uint16, unlabelled = dtype max).
        num_classes: vocabulary size C.
        image_column: the run's ``--image-column`` (Parquet inputs).
        max_pixels: decompression-bomb limit for the source image.
    """

    out_path: str
    source_uri: str
    mask_png: bytes
    num_classes: int
    image_column: str | None = None
    max_pixels: int = 89_478_485


@dataclass(frozen=True)
class ThumbResult:
    """What a task produced: ``present`` class ids in the mask; ``note`` says what went wrong
    (e.g. the source image could not be fetched, so the mask is drawn on grey)."""

    out_path: str
    present: tuple[int, ...]
    note: str | None


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _load_image(task: ThumbTask, size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) uint8 image resized to ``size`` (W, H), or grey and a note on failure."""
    try:
        rgb, _ = decode.decode_image(
            fetch_source(task.source_uri, task.image_column), task.max_pixels
        )
        img = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)
        return np.asarray(img), None
    except Exception as e:  # any failure to fetch/decode is shown on the card, not fatal
        grey = np.full((size[1], size[0], 3), UNAVAILABLE_GREY, dtype=np.uint8)
        return grey, f"image unavailable ({type(e).__name__}: {e})"


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) uint8/uint16 label ids; ids >= C (unlabelled) stay untinted.
        colours: (C, 3) uint8 from :func:`palette`.

    Returns:
        (H, W, 3) uint8.
    """
    known = labels < len(colours)
    out = image.astype(np.float32)
    tint = colours[np.where(known, labels, 0)].astype(np.float32)
    out[known] = (1 - ALPHA) * out[known] + ALPHA * tint[known]
    return np.rint(out).astype(np.uint8)


def make_thumbnail(task: ThumbTask) -> ThumbResult:
    """Write ``[image | overlay]`` as a JPEG to ``task.out_path``."""
    mask = encode.decode_png(task.mask_png)
    size = _fit((mask.shape[1], mask.shape[0]), THUMB_SIDE)
    image, note = _load_image(task, size)
    small = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    tinted = overlay(image, small, palette(task.num_classes))
    canvas = np.concatenate([image, np.full((size[1], 4, 3), 255, np.uint8), tinted], axis=1)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="JPEG", quality=85)
    with open(task.out_path, "wb") as f:
        f.write(buf.getvalue())
    present = np.unique(mask[mask < task.num_classes])
    return ThumbResult(task.out_path, tuple(int(c) for c in present), note)


def make_thumbnails(tasks: Sequence[ThumbTask], workers: int | None = None) -> list[ThumbResult]:
    """Run :func:`make_thumbnail` for every task in a process pool; results in task order.

    Args:
        tasks: thumbnails to make.
        workers: processes (default: CPU count, at most one per task). 1 runs in-process.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if workers == 1 or len(tasks) <= 1:
        return [make_thumbnail(t) for t in tasks]
    # spawn: forked children would share the parent's object-store client threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        chunk = max(1, len(tasks) // (workers * 4))
        return list(pool.map(make_thumbnail, tasks, chunksize=chunk))
