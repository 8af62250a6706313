"""Where corrected images are: found by the ids our exports recorded, never by file names.

An index is built from a labelling run (``jobs/corrections.py``: every ok row, its image
through ``source_uri`` as the run's shard kind says, and ``safe_name(image_id)``) or from one of
our exports (``image_names.jsonl``: image id, safe name, and the image file, whose path components
are checked like every export path). A correction is looked up by image id or safe name in that
index; anything else a tool's file says (``../../x.jpg``, ``/etc/passwd``) finds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline import storage
from pipeline.corrections.formats import Correction
from pipeline.export.names import out_uri


@dataclass(frozen=True)
class ImageRef:
    """One image corrections may refer to.

    Attributes:
        image_id: the run's image id.
        image: URI or encoded bytes (``zegclip.train.data.SegPair.image``).
        size: (H, W) of the labelled image, or None when unknown.
        row: the run's row (pseudo-label, confidence), or None for an export's image.
    """

    image_id: str
    image: str | bytes
    size: tuple[int, int] | None
    row: dict | None = None


class ImageIndex:
    """Image id -> :class:`ImageRef`, and safe export name -> image id."""

    def __init__(self, refs: list[ImageRef], names: dict[str, str], source: str) -> None:
        self.by_id = {r.image_id: r for r in refs}
        self.by_name = names
        self.source = source

    def lookup(self, correction: Correction) -> ImageRef | None:
        """The image a correction is about, or None when the index does not know its key."""
        image_id = correction.key if correction.by_id else self.by_name.get(correction.key)
        return self.by_id.get(image_id) if image_id is not None else None


def from_export(uri: str) -> ImageIndex:
    """Index of one of our exports (``image_names.jsonl``); unsafe image paths are dropped."""
    text = storage.read_bytes(storage.join(uri, "image_names.jsonl")).decode("utf-8")
    refs, names = [], {}
    for line in text.splitlines():
        record = json.loads(line)
        try:
            image = out_uri(uri, *str(record["image"]).split("/"))
        except ValueError:
            continue
        size = (int(record["height"]), int(record["width"]))
        refs.append(ImageRef(record["image_id"], image, size))
        names[record["name"]] = record["image_id"]
    return ImageIndex(refs, names, uri)
