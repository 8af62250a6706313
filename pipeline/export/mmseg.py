"""mmsegmentation layout: ``img_dir/<split>/<name>.<ext>`` + ``ann_dir/<split>/<name>.png``.

``BaseSegDataset(data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"),
img_suffix=".jpg", seg_map_suffix=".png", metainfo=dict(classes=...))`` pairs an image with the
annotation of the same stem. Annotations are uint8 index PNGs, 255 = ignore (mmseg's default
``ignore_index``), no ``reduce_zero_label``. ``dataset_info.json`` holds the classes and the image
suffix(es) to pass as ``img_suffix``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from pipeline import encode, storage
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem

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


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Write ``dataset_info.json`` (classes, suffixes, ignore index)."""
    suffixes = sorted({"." + r["image"].rsplit(".", 1)[1] for r in records})
    if len(suffixes) > 1:
        logger.warning("images have several suffixes %s; mmseg reads one per dataset", suffixes)
    info = {
        "classes": list(class_names),
        "img_suffixes": suffixes,
        "seg_map_suffix": ".png",
        "ignore_index": 255,
        "reduce_zero_label": False,
    }
    storage.write_bytes(out_uri(out, "dataset_info.json"), json.dumps(info, indent=2).encode())
