"""Inference stage: ``SegmentationActor`` hosts one predictor per Ray actor.

The predictor is built once in ``__init__`` from the shared vocabulary embedding (an object
ref passed inside a list, or a plain array in tests). ``__call__`` segments the ``ok`` rows of a
decoded batch and returns the raw predictions (``schema.PREDICTION_SCHEMA``); PNG encoding and
statistics run after it in CPU tasks (``pipeline.encode_stage``). With ``prepared=True`` the
images were already resized by the model's prepare function in the decode tasks, and the
predictor gets the original sizes to label at.

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

from pipeline import schema
from pipeline.encode_stage import append_identity, pack_prediction, stream_error
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
        prepared: images were resized by the model's prepare function; pass original sizes.
    """

    def __init__(
        self,
        predictor_factory: PredictorFactory,
        class_embeddings: Any,
        num_classes: int,
        prepared: bool = False,
    ) -> None:
        self._predictor = predictor_factory(_resolve_embeddings(class_embeddings))
        self._num_classes = num_classes
        self._prepared = prepared

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Segment one decoded batch.

        Args:
            batch: output columns of ``pipeline.decode.decode_batch``.

        Returns:
            Table with ``pipeline.schema.PREDICTION_SCHEMA``; error rows keep their error.
        """
        ok = [i for i, s in enumerate(batch[schema.STATUS]) if s == schema.STATUS_OK]
        outputs: dict[int, dict[str, Any]] = {}
        for i, pred in self._predict(batch, ok).items():
            outputs[i] = {schema.ERROR: pred} if isinstance(pred, str) else pack_prediction(pred)
        return _to_prediction_table(batch, outputs)

    def _call_predictor(self, batch: dict[str, np.ndarray], rows: list[int]) -> list[Any]:
        images = [_writable(batch[schema.IMAGE][i]) for i in rows]
        if not self._prepared:
            return self._predictor.predict(images)
        sizes = [(int(batch[schema.HEIGHT][i]), int(batch[schema.WIDTH][i])) for i in rows]
        return self._predictor.predict(images, sizes)

    def _predict(self, batch: dict[str, np.ndarray], rows: list[int]) -> dict[int, Any]:
        """Predictions of ``rows`` (row -> prediction, or an error string for a failed image)."""
        if not rows:
            return {}
        try:
            predictions = self._call_predictor(batch, rows)
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
                results[i] = self._call_predictor(batch, [i])[0]
            except Exception as e:  # noqa: BLE001 - recorded as this image's error row
                results[i] = f"{type(e).__name__}: {e}"
        if all(isinstance(r, str) for r in results.values()):
            raise batch_error  # every image fails on its own: the model/device is broken
        return results


def _writable(image: np.ndarray) -> np.ndarray:
    """``image``, copied when read-only (Ray Data's batches view Arrow buffers): torch warns on
    ``from_numpy`` of a read-only array. One image's copy is small next to its inference."""
    return image if image.flags.writeable else image.copy()


def _to_prediction_table(
    batch: dict[str, np.ndarray], outputs: dict[int, dict[str, Any]]
) -> pa.Table:
    """Identity/status columns of ``batch`` plus raw predictions -> ``PREDICTION_SCHEMA``."""
    names = schema.PREDICTION_SCHEMA.names
    cols: dict[str, list[Any]] = {name: [] for name in names}
    raw = (
        schema.PRED_LABELS,
        schema.PRED_CONFIDENCE,
        schema.PRED_CONFIDENCE_SUMS,
        schema.PRED_CLASS_COUNTS,
    )
    for i in range(len(batch[schema.IMAGE_ID])):
        out = outputs.get(i, {})
        error = out.get(schema.ERROR, stream_error(batch[schema.ERROR][i]))
        append_identity(cols, batch, i)
        for name in (schema.WIDTH, schema.HEIGHT):
            cols[name].append(int(batch[name][i]))
        for name in raw:
            cols[name].append(out.get(name) if error is None else None)
        cols[schema.STATUS].append(schema.STATUS_OK if error is None else schema.STATUS_ERROR)
        cols[schema.ERROR].append(error)
    return pa.table(cols, schema=schema.PREDICTION_SCHEMA)
