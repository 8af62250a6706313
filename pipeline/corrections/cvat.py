"""CVAT "Segmentation mask 1.1" export (zip or folder), as documented at
https://docs.cvat.ai/docs/manual/advanced/formats/format-smask/ ::

    labelmap.txt                       "# label:color_rgb:parts:actions", one label a line
    ImageSets/Segmentation/default.txt image names without extension
    SegmentationClass/<name>.png       RGB, one colour per label
    SegmentationObject/<name>.png      instance colours (not read)

Colours are mapped to labels through ``labelmap.txt``; ``background`` and colours it does not
list are "not annotated" (255). The key is the PNG's stem: the name our export gave the image.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.corrections.files import ExportFiles
from pipeline.corrections.formats import UNLABELLED, Correction, CorrectionSet

BACKGROUND = "background"


def parse_labelmap(text: str, out: CorrectionSet) -> dict[int, int]:
    """``labelmap.txt`` -> {packed 0xRRGGBB colour: class index}; background is left out."""
    colours: dict[int, int] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        rgb = [int(v) for v in rest.split(":", 1)[0].split(",")]
        if name == BACKGROUND or len(rgb) != 3:
            continue
        colours[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]] = out.class_index(name)
    return colours


def colours_to_labels(rgb: np.ndarray, colours: dict[int, int]) -> tuple[np.ndarray, int]:
    """(H, W, 3) uint8 -> (H, W) uint8 class indices (255 elsewhere) and the count of pixels
    with a colour the label map does not list (black excluded)."""
    wide = rgb.astype(np.int64)
    packed = (wide[..., 0] << 16) | (wide[..., 1] << 8) | wide[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    mapped = np.array([colours.get(int(v), UNLABELLED) for v in values], dtype=np.uint8)
    unknown = sum(
        int((inverse == i).sum()) for i, v in enumerate(values) if v and int(v) not in colours
    )
    return mapped[inverse.reshape(packed.shape)], unknown


def read(files: ExportFiles) -> CorrectionSet:
    """Every ``SegmentationClass/*.png`` of the export."""
    out = CorrectionSet("cvat")
    labelmap = files.find("labelmap.txt")
    colours = parse_labelmap(files.read(labelmap[0]).decode("utf-8"), out)
    for name in files.find(".png"):
        if PurePosixPath(name).parent.name != "SegmentationClass":
            continue
        try:
            with Image.open(io.BytesIO(files.read(name))) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            out.problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        labels, unknown = colours_to_labels(rgb, colours)
        if unknown:
            out.problems.append(f"{name}: {unknown} pixels of colours not in labelmap.txt")
        out.corrections.append(Correction(PurePosixPath(name).stem, False, labels))
    return out
