"""Load an export with Datumaro (CVAT's dataset library); print what it read as JSON.

Runs in its own environment (``tests/reader_envs.py``). Formats:

* ``coco``: ``Dataset.import_from(EXPORT)``, the format Datumaro detects itself
  (``coco_instances``, also the importer of CVAT's "COCO 1.0");
* ``voc``: ``Dataset.import_from(EXPORT/annotations, "voc_segmentation")``. CVAT's
  "Segmentation mask 1.1" import (cvat/apps/dataset_manager/formats/mask.py) runs ``voc`` of
  CVAT's own Datumaro fork on the uploaded zip, which reads ImageSets/Segmentation; that fork is
  installed from git only. In Datumaro 1.x ``voc`` reads ImageSets/Main alone, and the same
  segmentation reader is ``voc_segmentation``.

Usage: python datumaro_reader.py coco|voc_segmentation DIR
Prints: {"version", "detected": formats Datumaro detects in DIR, "labels": label names,
"items": [{"id", "subset", "image": path relative to DIR or null, "image_shape",
"mask_shape", "mask_sha1", "mask_values"}]}. The mask is rebuilt from the item's mask
annotations as uint8 label ids of the export's classes.txt (255 where no annotation covers a
pixel); its sha1 is of the C-contiguous array.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def _mask(item, names: list[str], classes: list[str], shape) -> np.ndarray:
    """Index mask from the item's mask annotations (RleMask / Mask), by label name."""
    out = np.full(shape, 255, dtype=np.uint8)
    for ann in item.annotations:
        if not hasattr(ann, "image") or ann.label is None:
            continue  # boxes and labels: COCO bboxes come with each RLE
        name = names[ann.label]
        if name == "background":  # CVAT's ignore colour
            continue
        out[np.asarray(ann.image).astype(bool)] = classes.index(name)
    return out


def main(fmt: str, root: str) -> None:
    import datumaro
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset
    from datumaro.components.environment import Environment

    base = Path(root) / ("annotations" if fmt == "voc_segmentation" else "")
    detected = Environment().detect_dataset(str(base))
    dataset = Dataset.import_from(str(base), None if fmt == "coco" else fmt)  # coco: detected
    names = [c.name for c in dataset.categories()[AnnotationType.label]]
    classes = (Path(root) / "classes.txt").read_text().split("\n")
    items = []
    for item in dataset:
        media = item.media
        has_image = media is not None and media.has_data
        size = media.size if media is not None and media.size else None
        masks = [a for a in item.annotations if hasattr(a, "image")]
        shape = size or (np.asarray(masks[0].image).shape if masks else None)
        mask = _mask(item, names, classes, shape) if shape else None
        items.append(
            {
                "id": item.id,
                "subset": item.subset,
                "image": str(Path(media.path).relative_to(root)) if has_image else None,
                "image_shape": list(media.data.shape[:2]) if has_image else None,
                "mask_shape": list(mask.shape) if mask is not None else None,
                "mask_sha1": hashlib.sha1(mask.tobytes()).hexdigest() if mask is not None else None,
                "mask_values": sorted(set(mask.ravel().tolist())) if mask is not None else [],
            }
        )
    print(
        json.dumps(
            {
                "version": datumaro.__version__,
                "detected": sorted(detected),
                "labels": names,
                "items": sorted(items, key=lambda x: (x["subset"], x["id"])),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
