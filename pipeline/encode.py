"""Predictions -> output values: PNG label maps, quantised confidence PNGs, per-class stats."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from pipeline import schema
from pipeline.predictor import PredictionLike

# zlib levels chosen by measurement (bench/bench_png.py, 360x480, one core; docs/gpu.md): label
# maps are blocky, level 3 is fastest and small (1.3 ms, 7.9 KiB); confidence maps are smooth
# and dominate, level 3 costs 12.6 ms for 58 KiB, level 1 2.9 ms for 63 KiB (+9 %).
PNG_COMPRESS_LEVEL = 3
CONFIDENCE_PNG_LEVEL = 1


def unlabelled_value(dtype: np.dtype | str) -> int:
    """255 for uint8 label maps, 65535 for uint16."""
    return int(np.iinfo(np.dtype(dtype)).max)


def encode_png(array: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Single-channel (H, W) uint8 or uint16 array -> PNG bytes (lossless; zlib ``level``)."""
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected (H, W) uint8/uint16, got {array.shape} {array.dtype}")
    buf = io.BytesIO()  # fromarray picks "L" for uint8 and "I;16" for uint16
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes written by :func:`encode_png` -> (H, W) uint8 or uint16 array."""
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr.astype(np.uint16) if arr.dtype.itemsize > 1 else arr.astype(np.uint8)


def quantise_confidence(confidence: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W) uint8 ``round(conf * 255)``."""
    return np.rint(np.clip(confidence, 0.0, 1.0) * 255.0).astype(np.uint8)


def normalise_labels(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Cast a label map to the output dtype, mapping the input's unlabelled value.

    Args:
        label_map: (H, W) unsigned ints; values < num_classes or the dtype's max (unlabelled).
        num_classes: vocabulary size C.

    Returns:
        (H, W) uint8 when C <= 255 else uint16; unlabelled = 255 / 65535.

    Raises:
        ValueError: labels that are neither a class id nor unlabelled.
    """
    out_dtype = np.dtype(schema.label_dtype_for(num_classes))
    labels = np.asarray(label_map)
    unlabelled = labels == unlabelled_value(labels.dtype) if labels.dtype.kind == "u" else None
    invalid = (labels < 0) | (labels >= num_classes)
    if unlabelled is not None:
        invalid &= ~unlabelled
    if invalid.any():
        bad = np.unique(labels[invalid])[:5]
        raise ValueError(f"label map has ids outside 0..{num_classes - 1}: {bad}")
    out = labels.astype(out_dtype)
    if unlabelled is not None:
        out[unlabelled] = unlabelled_value(out_dtype)
    return out


def class_statistics(
    labels: np.ndarray, confidence: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class pixel counts and mean confidence.

    Args:
        labels: (H, W) output label map (see :func:`normalise_labels`).
        confidence: (H, W) float confidence in [0, 1].
        num_classes: C.

    Returns:
        ``counts`` (C,) int64 (sum = labelled pixels), ``present`` (K,) int32 ascending ids with
        counts > 0, ``present_mean_confidence`` (K,) float32.
    """
    flat = labels.ravel().astype(np.int64)
    keep = flat < num_classes
    counts = np.bincount(flat[keep], minlength=num_classes).astype(np.int64)
    sums = np.bincount(
        flat[keep], weights=confidence.ravel()[keep].astype(np.float64), minlength=num_classes
    )
    present = np.flatnonzero(counts).astype(np.int32)
    mean = (sums[present] / counts[present]).astype(np.float32)
    return counts, present, mean


def confidence_statistics(
    prediction: PredictionLike, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The uint8 confidence map and per-class statistics of a float or pre-quantised prediction.

    A uint8 ``confidence`` (already ``round(conf * 255)``, e.g. from the GPU) comes with
    ``confidence_sums`` (C,) float64, the sums of the unquantised confidence per class, so the
    mean confidence is the same as from the float map, and usually with the device's
    ``class_counts`` (C,) int64, used as they are (no recount of the label map).

    Returns:
        ``quantised`` (H, W) uint8, then :func:`class_statistics`'s counts, present, mean.

    Raises:
        ValueError: a uint8 confidence without ``confidence_sums``.
    """
    confidence = np.asarray(prediction.confidence)
    if confidence.dtype != np.uint8:
        confidence = confidence.astype(np.float32)
        counts, present, mean = class_statistics(labels, confidence, num_classes)
        return quantise_confidence(confidence), counts, present, mean
    sums = getattr(prediction, "confidence_sums", None)
    if sums is None:
        raise ValueError("a uint8 confidence map needs confidence_sums for the mean confidence")
    counts = getattr(prediction, "class_counts", None)
    if counts is None or np.shape(counts) != (num_classes,):
        flat = labels.ravel().astype(np.int64)
        counts = np.bincount(flat[flat < num_classes], minlength=num_classes)
    counts = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts).astype(np.int32)
    mean = (np.asarray(sums, dtype=np.float64)[present] / counts[present]).astype(np.float32)
    return confidence, counts, present, mean


def encode_prediction(
    prediction: PredictionLike, *, num_classes: int, image_id: str, size: tuple[int, int]
) -> dict[str, Any]:
    """One prediction -> output column values (see ``pipeline.schema``).

    Args:
        prediction: model output for one image.
        num_classes: C.
        image_id: used for the ``path`` field of the image structs.
        size: (width, height) of the decoded image; the label map must match it.

    Raises:
        ValueError: wrong shape or invalid label ids.
    """
    w, h = size
    if prediction.label_map.shape != (h, w) or prediction.confidence.shape != (h, w):
        raise ValueError(
            f"prediction shapes {prediction.label_map.shape}/{prediction.confidence.shape} "
            f"do not match the image ({h}, {w})"
        )
    labels = normalise_labels(prediction.label_map, num_classes)
    quantised, counts, present, mean = confidence_statistics(prediction, labels, num_classes)
    stem = image_id.rsplit(".", 1)[0] if "/" not in image_id.rsplit(".", 1)[-1] else image_id
    return {
        schema.MASK: {"bytes": encode_png(labels), "path": f"{stem}.png"},
        schema.CONFIDENCE: {
            "bytes": encode_png(quantised, CONFIDENCE_PNG_LEVEL),
            "path": f"{stem}.confidence.png",
        },
        schema.CLASS_PIXEL_COUNTS: counts.tolist(),
        schema.PRESENT_CLASSES: present.tolist(),
        schema.PRESENT_MEAN_CONFIDENCE: mean.tolist(),
    }
