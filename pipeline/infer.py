"""Inference stage: ``SegmentationActor`` hosts one predictor per Ray actor.

The predictor is built once in ``__init__`` from the shared vocabulary embedding (an object
ref passed inside a list, or a plain array in tests). ``__call__`` segments the ``ok`` rows of a
decoded batch and returns a Parquet-ready Arrow table with PNG-encoded outputs.

When the predictor raises on a batch, its images are retried one by one: an image that still
fails alone becomes an error row (e.g. an extreme aspect ratio that exhausts memory), the others
are kept. If every image fails alone too, the model or device is broken: the exception propagates,
the job fails, and a re-run resumes from the last finished shard instead of recording thousands
of bogus error rows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import encode, schema
from pipeline.predictor import PredictorFactory

logger = logging.getLogger(__name__)


def _resolve_embeddings(class_embeddings: Any) -> np.ndarray:
    """A ``[ObjectRef]`` list (Ray Data does not resolve refs in constructor args) or an array."""
    if isinstance(class_embeddings, list | tuple):
        import ray

        return np.array(ray.get(class_embeddings[0]))  # writable copy; object-store data is not
    return np.asarray(class_embeddings)


class SegmentationActor:
    """Callable class for ``Dataset.map_batches(..., compute=ActorPoolStrategy(...))``.

    Args:
        predictor_factory: ``(embeddings (S, ...) float32) -> Predictor``, called once.
        class_embeddings: ``[ObjectRef]`` of the vocabulary embedding, or the array itself.
        num_classes: C, the vocabulary size.
    """

    def __init__(
        self, predictor_factory: PredictorFactory, class_embeddings: Any, num_classes: int
    ) -> None:
        self._predictor = predictor_factory(_resolve_embeddings(class_embeddings))
        self._num_classes = num_classes

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Segment one decoded batch.

        Args:
            batch: output columns of ``pipeline.decode.decode_batch``.

        Returns:
            Table with ``pipeline.schema.STREAM_SCHEMA``; error rows keep their error.
        """
        ok = [i for i, s in enumerate(batch[schema.STATUS]) if s == schema.STATUS_OK]
        outputs: dict[int, dict[str, Any]] = {}
        for i, pred in self._predict(batch, ok).items():
            outputs[i] = (
                self._encode(batch, i, pred) if not isinstance(pred, str) else {schema.ERROR: pred}
            )
        return _to_table(batch, outputs)

    def _predict(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[int, Any]:
        """Predictions of ``rows`` (row -> prediction, or an error string for a failed image)."""
        if not rows:
            return {}
        try:
            predictions = self._predictor.predict([batch[schema.IMAGE][i] for i in rows])
        except Exception as batch_error:  # noqa: BLE001 - isolate the image(s) that fail
            logger.warning("batch of %d failed (%s); retrying one by one", len(rows), batch_error)
            return self._predict_one_by_one(batch, rows, batch_error)
        if len(predictions) != len(rows):
            raise RuntimeError(f"predictor gave {len(predictions)} results for {len(rows)} images")
        return dict(zip(rows, predictions, strict=True))

    def _predict_one_by_one(
        self, batch: dict[str, np.ndarray], rows: list[int], batch_error: Exception
    ) -> dict[int, Any]:
        results: dict[int, Any] = {}
        for i in rows:
            try:
                results[i] = self._predictor.predict([batch[schema.IMAGE][i]])[0]
            except Exception as e:  # noqa: BLE001 - recorded as this image's error row
                results[i] = f"{type(e).__name__}: {e}"
        if all(isinstance(r, str) for r in results.values()):
            raise batch_error  # every image fails on its own: the model/device is broken
        return results

    def _encode(self, batch: dict[str, np.ndarray], i: int, pred: Any) -> dict[str, Any]:
        size = (int(batch[schema.WIDTH][i]), int(batch[schema.HEIGHT][i]))
        image_id = str(batch[schema.IMAGE_ID][i])
        try:
            return encode.encode_prediction(
                pred, num_classes=self._num_classes, image_id=image_id, size=size
            )
        except ValueError as e:  # a malformed prediction for this image: record it
            logger.warning("bad prediction for %s: %s", image_id, e)
            return {schema.ERROR: f"{type(e).__name__}: {e}"}


_MODEL_COLUMNS = (
    schema.MASK,
    schema.CONFIDENCE,
    schema.CLASS_PIXEL_COUNTS,
    schema.PRESENT_CLASSES,
    schema.PRESENT_MEAN_CONFIDENCE,
)


def _stream_error(value: Any) -> str | None:
    """An error string from the stream; Ray turns all-null object columns into NaN floats."""
    return value if isinstance(value, str) and value else None


def _to_table(batch: dict[str, np.ndarray], outputs: dict[int, dict[str, Any]]) -> pa.Table:
    n = len(batch[schema.IMAGE_ID])
    cols: dict[str, list[Any]] = {name: [] for name in schema.STREAM_SCHEMA.names}
    for i in range(n):
        out = outputs.get(i, {})
        error = out.get(schema.ERROR, _stream_error(batch[schema.ERROR][i]))
        for name in (schema.IMAGE_ID, schema.SOURCE_URI, schema.SHARD_ID, schema.SHARD_SIZE):
            cols[name].append(
                batch[name][i].item() if hasattr(batch[name][i], "item") else batch[name][i]
            )
        for name in (schema.WIDTH, schema.HEIGHT):
            value = int(batch[name][i])
            cols[name].append(value if value >= 0 else None)
        for name in _MODEL_COLUMNS:
            cols[name].append(out.get(name) if error is None else None)
        cols[schema.STATUS].append(schema.STATUS_OK if error is None else schema.STATUS_ERROR)
        cols[schema.ERROR].append(error)
    return pa.table(cols, schema=schema.STREAM_SCHEMA)
