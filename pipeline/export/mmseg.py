"""mmsegmentation layout: ``img_dir/<split>/<name>.<ext>`` + ``ann_dir/<split>/<name>.png``.

``BaseSegDataset(data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"),
img_suffix=".jpg", seg_map_suffix=".png", metainfo=dict(classes=...))`` pairs an image with the
annotation of the same stem. Annotations are uint8 index PNGs, 255 = ignore (mmseg's default
``ignore_index``), no ``reduce_zero_label``. ``dataset_info.json`` holds the classes and the one
image suffix to pass as ``img_suffix``.

``BaseSegDataset`` lists ``img_dir`` by that one suffix, so an export has one: images keep their
bytes when the run's images share a format; when a run mixes formats (JPEG and PNG inputs), every
non-PNG image is re-encoded as PNG, losslessly (PNG, not JPEG, so no pixel of any image changes;
the cost is size, see docs/export.md). ``--image-format png`` writes PNG from the start.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence

from PIL import Image

from pipeline import encode, storage
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem, png_bytes

logger = logging.getLogger(__name__)


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write each item's image and index-PNG annotation; return one record per item."""
    records = []
    for item in items:
        image = ("img_dir", item.split, f"{item.name}.{item.image_ext}")
        mask = ("ann_dir", item.split, f"{item.name}.png")
        storage.write_bytes(out_uri(out, *image), item.image)
        storage.write_bytes(out_uri(out, *mask), encode.encode_png(item.labels))
        records.append(item.record(image="/".join(image), mask="/".join(mask)))
    return records


def _suffix(record: dict) -> str:
    return "." + record["image"].rsplit(".", 1)[1]


def one_suffix(out: str, records: Sequence[dict]) -> int:
    """When ``records`` name images of several suffixes, re-encode every non-PNG image as PNG
    (reading it back from ``out``) and update its record; return how many were re-encoded.

    Idempotent: a re-run finds the PNG written and the original deleted, and only updates the
    record (the shard markers keep the original names).
    """
    if len({_suffix(r) for r in records}) < 2:
        return 0
    count = 0
    for record in records:
        if _suffix(record) == ".png":
            continue
        png = record["image"].rsplit(".", 1)[0] + ".png"
        old_uri, new_uri = out_uri(out, *record["image"].split("/")), out_uri(out, *png.split("/"))
        if storage.exists(old_uri):
            with Image.open(io.BytesIO(storage.read_bytes(old_uri))) as image:
                storage.write_bytes(new_uri, png_bytes(image))
            storage.delete_file(old_uri)
        record["image"] = png
        count += 1
    return count


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Make the image suffix unique (:func:`one_suffix`), write ``dataset_info.json``."""
    converted = one_suffix(out, records)
    if converted:
        logger.info("the run mixes image formats: %d images re-encoded as PNG", converted)
    (suffix,) = {_suffix(r) for r in records} or {".png"}
    info = {
        "classes": list(class_names),
        "img_suffix": suffix,
        "seg_map_suffix": ".png",
        "ignore_index": 255,
        "reduce_zero_label": False,
    }
    storage.write_bytes(out_uri(out, "dataset_info.json"), json.dumps(info, indent=2).encode())
