"""The correction formats, their detection, and what every reader returns.

Every reader returns a :class:`CorrectionSet`: the class names the file uses and one
:class:`Correction` per annotated image, keyed by what the tool kept of our export: the image id
(Label Studio tasks carry ``data.image_id``) or the export's safe file stem (CVAT, COCO, mmseg).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from pipeline.corrections.files import ExportFiles

UNLABELLED = 255


@dataclass(frozen=True)
class Correction:
    """One image's annotation as a tool exported it.

    Attributes:
        key: image id (``by_id``) or the safe name our export gave the image.
        by_id: whether ``key`` is an image id.
        labels: (H, W) uint8 indices into the set's ``class_names``; 255 = not annotated.
    """

    key: str
    by_id: bool
    labels: np.ndarray


@dataclass
class CorrectionSet:
    """A tool export's class names (index = label value) and corrections."""

    format: str
    class_names: list[str] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # per-image problems, reported not fatal

    def class_index(self, name: str) -> int:
        """Index of ``name``, appended when new."""
        if name not in self.class_names:
            self.class_names.append(name)
        return self.class_names.index(name)


def _json(files: ExportFiles, name: str):
    try:
        return json.loads(files.read(name))
    except (ValueError, UnicodeDecodeError):
        return None


def _is_coco(doc) -> bool:
    return isinstance(doc, dict) and {"images", "annotations", "categories"} <= set(doc)


def _is_labelstudio(doc) -> bool:
    return isinstance(doc, list) and all(isinstance(t, dict) and "data" in t for t in doc)


def detect(files: ExportFiles) -> str | None:
    """``labelstudio``, ``cvat``, ``coco``, ``mmseg``, or None when none matches."""
    if files.find("labelmap.txt") and any("SegmentationClass/" in n for n in files.names):
        return "cvat"
    if any(n.startswith("ann_dir/") for n in files.names):
        return "mmseg"
    for name in files.find(".json"):
        doc = _json(files, name)
        if _is_coco(doc):
            return "coco"
        if _is_labelstudio(doc):
            return "labelstudio"
    return None


def json_docs(files: ExportFiles, accept) -> list:
    """Every JSON member that ``accept`` recognises, in name order."""
    docs = (_json(files, n) for n in files.find(".json"))
    return [d for d in docs if accept(d)]
