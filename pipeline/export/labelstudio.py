"""Label Studio tasks with brush pre-annotations (``brushlabels``, Label Studio RLE).

Documented at https://labelstud.io/guide/predictions (section "Import brush segmentation
pre-annotations in RLE format") and https://labelstud.io/guide/storage#Local-storage::

    images/<name>.<ext>     images, served by Label Studio's local-files storage
    tasks.json              [{"data": {"image": "/data/local-files/?d=images/<name>.<ext>",
                              "image_id": ..., "split": ...},
                              "predictions": [{"model_version": ..., "result": [one
                              brushlabels region per class]}]}]
    label_config.xml        <BrushLabels name="tag" toName="image"> with one <Label> per class

Set ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<out>``, add a local-files storage for ``<out>/images``,
paste ``label_config.xml`` as the labelling interface and import ``tasks.json``. Masks are
encoded by Label Studio's own converter (``label_studio_converter.brush.mask2rle``); class names
are XML-escaped in the config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from pipeline import storage
from pipeline.export import options, palette
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem

FROM_NAME, TO_NAME = "tag", "image"
MODEL_VERSION = "zegclip-labeler"


def brush_results(
    labels: np.ndarray,
    class_names: Sequence[str],
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
) -> list[dict]:
    """(H, W) uint8 export labels -> one Label Studio ``brushlabels`` result per present class
    (region id ``c<class index>``), painted by ``from_name`` on ``to_name``."""
    from label_studio_converter.brush import mask2rle  # only this format needs it

    height, width = labels.shape
    out = []
    for c in np.unique(labels[labels != options.IGNORE]).tolist():
        rle = mask2rle(np.where(labels == c, 255, 0).astype(np.uint8))
        out.append(
            {
                "id": f"c{c}",
                "type": "brushlabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": rle, "brushlabels": [class_names[c]]},
            }
        )
    return out


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write each image; return records carrying the image's Label Studio task."""
    records = []
    for item in items:
        image = ("images", f"{item.name}.{item.image_ext}")
        storage.write_bytes(out_uri(out, *image), item.image)
        task = {
            "data": {
                "image": "/data/local-files/?d=" + "/".join(image),
                "image_id": item.image_id,
                "split": item.split,
            },
            "predictions": [
                {"model_version": MODEL_VERSION, "result": brush_results(item.labels, class_names)}
            ],
        }
        records.append(item.record(image="/".join(image), task=task))
    return records


def label_config(class_names: Sequence[str]) -> str:
    """Labelling-interface XML; every class name is escaped as an attribute value."""
    colours = palette.class_colours(len(class_names))
    labels = "\n".join(
        f"    <Label value={quoteattr(n)} background={quoteattr(palette.to_hex(c))}/>"
        for n, c in zip(class_names, colours, strict=True)
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n'
        "</View>\n"
    )


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Write ``tasks.json`` (by name) and ``label_config.xml``."""
    tasks = [r["task"] for r in sorted(records, key=lambda r: r["name"])]
    storage.write_bytes(out_uri(out, "tasks.json"), json.dumps(tasks).encode())
    storage.write_bytes(out_uri(out, "label_config.xml"), label_config(class_names).encode())
