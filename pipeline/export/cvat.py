"""CVAT "Segmentation mask 1.1" import layout (Pascal VOC segmentation, read by Datumaro).

Documented at https://docs.cvat.ai/docs/manual/advanced/formats/format-smask/ ::

    images/<name>.<ext>                              upload these as the task's images
    annotations/labelmap.txt                         "# label:color_rgb:parts:actions" lines
    annotations/ImageSets/Segmentation/<split>.txt   image names without extension
    annotations/SegmentationClass/<name>.png         RGB masks, one colour per label

Zip the *contents* of ``annotations/`` and import it into the task as "Segmentation mask 1.1".
Ignore pixels are black, CVAT's ``background``; classes get Pascal VOC colours 1..C.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from pipeline import storage
from pipeline.export import options, palette
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem

BACKGROUND = "background"
_FORBIDDEN = (":", "\n", "\r", "#")  # labelmap.txt separators / comment marker


def validate_classes(class_names: Sequence[str]) -> None:
    """Raise ``OptionError`` for names labelmap.txt cannot hold (``:``, ``#``, newlines,
    ``background``)."""
    for name in class_names:
        if any(ch in name for ch in _FORBIDDEN) or name == BACKGROUND or not name.strip():
            raise options.OptionError(
                f"--format cvat: class name {name!r} cannot go in labelmap.txt; "
                "rename it with --classes OLD=NEW"
            )


def colour_mask(labels: np.ndarray, num_classes: int) -> bytes:
    """(H, W) uint8 export labels -> RGB PNG bytes; class c is VOC colour c + 1, ignore black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:num_classes] = palette.class_colours(num_classes)
    buf = io.BytesIO()
    Image.fromarray(lut[labels], mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write each image and its colour mask; return one record per item."""
    records = []
    for item in items:
        image = ("images", f"{item.name}.{item.image_ext}")
        mask = ("annotations", "SegmentationClass", f"{item.name}.png")
        storage.write_bytes(out_uri(out, *image), item.image)
        storage.write_bytes(out_uri(out, *mask), colour_mask(item.labels, len(class_names)))
        records.append(item.record(image="/".join(image), mask="/".join(mask)))
    return records


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Write ``labelmap.txt`` and one image list per split."""
    lines = ["# label:color_rgb:parts:actions", f"{BACKGROUND}:0,0,0::"]
    for name, colour in zip(class_names, palette.class_colours(len(class_names)), strict=True):
        lines.append(f"{name}:{','.join(str(int(v)) for v in colour)}::")
    labelmap = "\n".join(lines) + "\n"
    storage.write_bytes(out_uri(out, "annotations", "labelmap.txt"), labelmap.encode())
    for split in options.SPLITS:
        stems = sorted(r["name"] for r in records if r["split"] == split)
        if stems:
            uri = out_uri(out, "annotations", "ImageSets", "Segmentation", f"{split}.txt")
            storage.write_bytes(uri, ("\n".join(stems) + "\n").encode())
