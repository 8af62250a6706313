"""Label Studio JSON export: tasks whose ``annotations[].result`` hold people's regions.

Brush regions (``brushlabels``, Label Studio RLE) are decoded with Label Studio's own converter
(``label_studio_converter.brush.decode_rle``, RGBA with the mask in alpha); polygon regions
(``polygonlabels``, points in percent of the image) are filled. ``predictions`` (our
pre-labels) are never read. Per task the latest annotation that was not cancelled is used;
tasks nobody annotated are skipped. Later regions paint over earlier ones.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import cv2
import numpy as np

from pipeline.corrections.files import ExportFiles
from pipeline.corrections.formats import (
    UNLABELLED,
    Correction,
    CorrectionSet,
    _is_labelstudio,
    json_docs,
)


def _latest(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))


def _brush(value: dict, height: int, width: int) -> np.ndarray:
    from label_studio_converter.brush import decode_rle

    rgba = decode_rle(value["rle"])
    return rgba.reshape(height, width, 4)[:, :, 3] > 127


def _polygon(value: dict, height: int, width: int) -> np.ndarray:
    points = np.asarray(value["points"], dtype=np.float64) * [width / 100.0, height / 100.0]
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas.astype(bool)


_REGIONS = {"brushlabels": _brush, "polygonlabels": _polygon}


def _task_key(task: dict) -> tuple[str, bool] | None:
    data = task.get("data") or {}
    if isinstance(data.get("image_id"), str):
        return data["image_id"], True
    image = str(data.get("image") or "")
    name = PurePosixPath(image.split("?d=", 1)[-1]).stem
    return (name, False) if name else None


def _paint(annotation: dict, out: CorrectionSet) -> np.ndarray | None:
    labels = None
    for region in annotation.get("result") or []:
        kind, value = region.get("type"), region.get("value") or {}
        if kind not in _REGIONS or not value.get(kind):
            continue
        height, width = int(region["original_height"]), int(region["original_width"])
        if labels is None:
            labels = np.full((height, width), UNLABELLED, dtype=np.uint8)
        if labels.shape != (height, width):
            raise ValueError(f"regions of sizes {labels.shape} and {(height, width)}")
        labels[_REGIONS[kind](value, height, width)] = out.class_index(value[kind][0])
    return labels


def read(files: ExportFiles) -> CorrectionSet:
    """Every annotated task of every Label Studio JSON export in ``files``."""
    out = CorrectionSet("labelstudio")
    for doc in json_docs(files, _is_labelstudio):
        for task in doc:
            key, annotation = _task_key(task), _latest(task)
            if key is None or annotation is None:
                continue
            try:
                labels = _paint(annotation, out)
            except (ValueError, KeyError, IndexError) as e:
                out.problems.append(f"task {key[0]!r}: {type(e).__name__}: {e}")
                continue
            if labels is not None:
                out.corrections.append(Correction(key[0], key[1], labels))
    return out
