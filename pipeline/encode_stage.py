"""CPU stage after the model actor: raw predictions -> PNGs and per-class statistics.

The actor (``pipeline.infer``) only runs the model and ships each prediction as ``.npy`` bytes;
this ``map_batches`` function, run in plain CPU tasks, builds the output rows
(``schema.STREAM_SCHEMA``) with :func:`pipeline.encode.encode_prediction`, so PNG encoding never
holds a GPU actor.
"""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import encode, schema
from pipeline.predictor import PredictionLike

logger = logging.getLogger(__name__)

_MODEL_COLUMNS = (
    schema.MASK,
    schema.CONFIDENCE,
    schema.CLASS_PIXEL_COUNTS,
    schema.PRESENT_CLASSES,
    schema.PRESENT_MEAN_CONFIDENCE,
)


def pack_array(array: np.ndarray) -> bytes:
    """Array -> ``.npy`` bytes (shape and dtype kept; no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def unpack_array(data: bytes) -> np.ndarray:
    """``.npy`` bytes from :func:`pack_array` -> array."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def pack_prediction(prediction: PredictionLike) -> dict[str, bytes | None]:
    """A prediction -> the actor's raw columns (see ``schema.PREDICTION_SCHEMA``); the counts
    travel with the confidence sums (a device predictor's), so the encode stage need not recount."""
    sums = getattr(prediction, "confidence_sums", None)
    counts = None if sums is None else getattr(prediction, "class_counts", None)
    return {
        schema.PRED_LABELS: pack_array(np.asarray(prediction.label_map)),
        schema.PRED_CONFIDENCE: pack_array(np.asarray(prediction.confidence)),
        schema.PRED_CONFIDENCE_SUMS: None if sums is None else pack_array(np.asarray(sums)),
        schema.PRED_CLASS_COUNTS: None if counts is None else pack_array(np.asarray(counts)),
    }


def stream_error(value: Any) -> str | None:
    """An error string from the stream; Ray turns all-null object columns into NaN floats."""
    return value if isinstance(value, str) and value else None


def encode_batch(batch: dict[str, np.ndarray], num_classes: int) -> pa.Table:
    """Ray ``map_batches`` function: the actor's raw predictions -> output rows.

    Args:
        batch: columns of ``schema.PREDICTION_SCHEMA`` (numpy format).
        num_classes: C.

    Returns:
        Table with ``schema.STREAM_SCHEMA``; a malformed prediction becomes an error row.
    """
    outputs: dict[int, dict[str, Any]] = {}
    for i, labels in enumerate(batch[schema.PRED_LABELS]):
        if stream_error(batch[schema.ERROR][i]) is None and labels is not None:
            outputs[i] = _encode_row(batch, i, num_classes)
    return to_stream_table(batch, outputs)


def _encode_row(batch: dict[str, np.ndarray], i: int, num_classes: int) -> dict[str, Any]:
    sums = batch[schema.PRED_CONFIDENCE_SUMS][i]
    counts = batch[schema.PRED_CLASS_COUNTS][i]
    prediction = SimpleNamespace(
        label_map=unpack_array(batch[schema.PRED_LABELS][i]),
        confidence=unpack_array(batch[schema.PRED_CONFIDENCE][i]),
        confidence_sums=None if sums is None else unpack_array(sums),
        class_counts=None if counts is None else unpack_array(counts),
    )
    size = (int(batch[schema.WIDTH][i]), int(batch[schema.HEIGHT][i]))
    image_id = str(batch[schema.IMAGE_ID][i])
    try:
        return encode.encode_prediction(
            prediction, num_classes=num_classes, image_id=image_id, size=size
        )
    except ValueError as e:  # a malformed prediction for this image: record it
        logger.warning("bad prediction for %s: %s", image_id, e)
        return {schema.ERROR: f"{type(e).__name__}: {e}"}


def append_identity(cols: dict[str, list[Any]], batch: dict[str, np.ndarray], i: int) -> None:
    """Append row ``i``'s pass-through identity columns (id, source, shard, shard size)."""
    for name in (schema.IMAGE_ID, schema.SOURCE_URI, schema.SHARD_ID, schema.SHARD_SIZE):
        value = batch[name][i]
        cols[name].append(value.item() if hasattr(value, "item") else value)


def to_stream_table(batch: dict[str, np.ndarray], outputs: dict[int, dict[str, Any]]) -> pa.Table:
    """Pass-through columns of ``batch`` plus each row's ``outputs`` -> ``STREAM_SCHEMA``."""
    n = len(batch[schema.IMAGE_ID])
    cols: dict[str, list[Any]] = {name: [] for name in schema.STREAM_SCHEMA.names}
    for i in range(n):
        out = outputs.get(i, {})
        error = out.get(schema.ERROR, stream_error(batch[schema.ERROR][i]))
        append_identity(cols, batch, i)
        for name in (schema.WIDTH, schema.HEIGHT):
            value = batch[name][i]
            cols[name].append(int(value) if value is not None and int(value) >= 0 else None)
        for name in _MODEL_COLUMNS:
            cols[name].append(out.get(name) if error is None else None)
        cols[schema.STATUS].append(schema.STATUS_OK if error is None else schema.STATUS_ERROR)
        cols[schema.ERROR].append(error)
    return pa.table(cols, schema=schema.STREAM_SCHEMA)
