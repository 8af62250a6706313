"""mmseg-style folder: ``ann_dir/<split>/<name>.png`` index masks (255 = ignore) and the class
names in ``classes.txt`` (one a line; line *i* is value *i*) or ``dataset_info.json``. The key is
the PNG's stem, the name our export gave the image.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import cv2
import numpy as np

from pipeline.corrections.files import ExportFiles
from pipeline.corrections.formats import UNLABELLED, Correction, CorrectionSet


def _class_names(files: ExportFiles) -> list[str]:
    if "classes.txt" in files.names:
        return files.read("classes.txt").decode("utf-8").splitlines()
    if "dataset_info.json" in files.names:
        return list(json.loads(files.read("dataset_info.json"))["classes"])
    raise FileNotFoundError("mmseg folder: no classes.txt or dataset_info.json with the classes")


def read(files: ExportFiles) -> CorrectionSet:
    """Every ``ann_dir/**.png``; values at or above the number of classes become 255."""
    out = CorrectionSet("mmseg", class_names=_class_names(files))
    for name in files.find(".png"):
        if not name.startswith("ann_dir/"):
            continue
        mask = cv2.imdecode(np.frombuffer(files.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            out.problems.append(f"{name}: not a single-channel PNG")
            continue
        labels = np.where(mask < len(out.class_names), mask, UNLABELLED).astype(np.uint8)
        out.corrections.append(Correction(PurePosixPath(name).stem, False, labels))
    return out
