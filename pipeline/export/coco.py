"""COCO-style semantic segmentation in the layout COCO readers detect::

    images/<split>/<name>.<ext>
    annotations/instances_<split>.json      file_name relative to images/<split>/

The ``instances_<split>.json`` name is the one Datumaro's ``coco`` / ``coco_instances`` importers
(and so CVAT's "COCO 1.0") detect, and the default of detectron2's and mmdetection's COCO
configs; Datumaro takes the subset from the name and the images from ``images/<subset>/``.
One annotation per class present in an image, its ``segmentation`` a compressed COCO
RLE made by ``pycocotools.mask.encode`` (``{"size": [H, W], "counts": str}``), with ``area`` and
``bbox`` (``[x, y, w, h]``) from ``pycocotools.mask.area`` / ``toBbox``, and ``iscrowd`` 0, as
in COCO-Stuff. Category ids are export class ids + 1 (COCO ids start at 1); ignore pixels have no
annotation. Image ids are 1..N in name order per split. ``info`` and ``licenses`` are present
(``pycocotools.coco.COCO.info()`` reads ``info``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import numpy as np

from pipeline import storage
from pipeline.export import options
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem

ANNOTATIONS_FILE = "instances_{split}.json"


def encode_classes(labels: np.ndarray) -> list[dict]:
    """(H, W) uint8 labels -> one COCO annotation dict (without ids) per present class."""
    from pycocotools import mask as mask_util  # only this format needs it

    out = []
    for c in np.unique(labels[labels != options.IGNORE]).tolist():
        rle = mask_util.encode(np.asfortranarray(labels == c, dtype=np.uint8))
        out.append(
            {
                "category_id": int(c) + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_util.area(rle)),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return out


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write each image; return records carrying the image's annotations."""
    records = []
    for item in items:
        image = ("images", item.split, f"{item.name}.{item.image_ext}")
        storage.write_bytes(out_uri(out, *image), item.image)
        records.append(item.record(image="/".join(image), annotations=encode_classes(item.labels)))
    return records


def _info() -> dict:
    """COCO's ``info`` block (its field names, as in the COCO data format)."""
    now = datetime.now(UTC)
    return {
        "description": "pre-labels exported by jobs/export.py (zegclip-labeler)",
        "version": "1.0",
        "year": now.year,
        "contributor": "zegclip-labeler",
        "date_created": now.isoformat(timespec="seconds"),
        "url": "",
    }


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Write ``annotations/instances_<split>.json`` for each split."""
    categories = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(class_names)]
    for split in options.SPLITS:
        split_records = sorted((r for r in records if r["split"] == split), key=lambda r: r["name"])
        if not split_records:
            continue
        images, annotations = [], []
        for image_id, r in enumerate(split_records, start=1):
            images.append(
                {
                    "id": image_id,
                    "file_name": r["image"].rsplit("/", 1)[1],  # relative to images/<split>/
                    "width": r["width"],
                    "height": r["height"],
                }
            )
            for a in r["annotations"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **a})
        doc = {
            "info": _info(),
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        uri = out_uri(out, "annotations", ANNOTATIONS_FILE.format(split=split))
        storage.write_bytes(uri, json.dumps(doc).encode())
