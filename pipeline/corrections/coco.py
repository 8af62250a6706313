"""COCO JSON (``images``, ``annotations``, ``categories``): segmentation as RLE (compressed or
not) or polygons, decoded with ``pycocotools``.

Both our layout (``annotations/<split>.json``, ``file_name`` = ``<split>/<name>.<ext>``) and the
standard one (``annotations/instances_<subset>.json``, ``images/<subset>/``) are read: every JSON
file that is a COCO document counts, and the key is the stem of ``file_name``, the name our
export gave the image. Annotations are painted in id order (later ones win); images without any
annotation are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath

import numpy as np

from pipeline.corrections.files import ExportFiles
from pipeline.corrections.formats import (
    UNLABELLED,
    Correction,
    CorrectionSet,
    _is_coco,
    json_docs,
)


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict or polygon list) -> (H, W) bool."""
    from pycocotools import mask as mask_util

    if isinstance(segmentation, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        rle["counts"] = (
            rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
        )
    return mask_util.decode(rle).astype(bool)


def _read_doc(doc: dict, out: CorrectionSet) -> None:
    category = {c["id"]: out.class_index(c["name"]) for c in doc["categories"]}
    by_image = defaultdict(list)
    for a in sorted(doc["annotations"], key=lambda a: a.get("id", 0)):
        by_image[a["image_id"]].append(a)
    for image in doc["images"]:
        annotations = by_image.get(image["id"])
        if not annotations:
            continue
        height, width = int(image["height"]), int(image["width"])
        labels = np.full((height, width), UNLABELLED, dtype=np.uint8)
        try:
            for a in annotations:
                labels[decode_segmentation(a["segmentation"], height, width)] = category[
                    a["category_id"]
                ]
        except (KeyError, ValueError, TypeError) as e:
            out.problems.append(f"{image.get('file_name')!r}: {type(e).__name__}: {e}")
            continue
        stem = PurePosixPath(str(image["file_name"])).stem
        out.corrections.append(Correction(stem, False, labels))


def read(files: ExportFiles) -> CorrectionSet:
    """Every COCO document among the export's JSON files."""
    out = CorrectionSet("coco")
    for doc in json_docs(files, _is_coco):
        _read_doc(doc, out)
    return out
