"""FiftyOne ``ImageSegmentationDirectory`` layout.

Documented at https://docs.voxel51.com/user_guide/dataset_creation/datasets.html
(section "ImageSegmentationDirectory")::

    data/<name>.<ext>          images
    labels/<name>.png          semantic masks (uint8 class ids; 255 = ignore) matched by name
    mask_targets.json          {"0": "class", ...} for ``dataset.default_mask_targets``

Load with ``fo.Dataset.from_dir(dataset_dir=OUT,
dataset_type=fo.types.ImageSegmentationDirectory)``, then set ``default_mask_targets`` from
``mask_targets.json`` (keys as ints). FiftyOne has no splits in this layout: with ``--split``
each image's split is a tag in ``splits.json`` ({"train": [names], "val": [names]}).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from pipeline import encode, storage
from pipeline.export import options
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write each image and its index-PNG mask; return one record per item."""
    records = []
    for item in items:
        image = ("data", f"{item.name}.{item.image_ext}")
        mask = ("labels", f"{item.name}.png")
        storage.write_bytes(out_uri(out, *image), item.image)
        storage.write_bytes(out_uri(out, *mask), encode.encode_png(item.labels))
        records.append(item.record(image="/".join(image), mask="/".join(mask)))
    return records


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Write ``mask_targets.json`` and ``splits.json``."""
    targets = {str(i): n for i, n in enumerate(class_names)}
    storage.write_bytes(out_uri(out, "mask_targets.json"), json.dumps(targets).encode())
    splits = {s: sorted(r["name"] for r in records if r["split"] == s) for s in options.SPLITS}
    storage.write_bytes(out_uri(out, "splits.json"), json.dumps(splits).encode())
