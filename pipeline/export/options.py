"""Export options shared by every format: class mapping, confidence/area filters, train/val split.

``--classes`` is a comma list (or a file, one entry a line) of ``NAME`` or ``NAME=NEW``
entries over the run's vocabulary. Listed classes are kept in the order their (new) names first
appear; several sources with the same new name are merged; unlisted classes become ignore.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = 255  # ignore value of every exported mask
MAX_CLASSES = 255  # ids 0..254, so masks are uint8 with 255 = ignore
SPLITS = ("train", "val")
IMAGE_AUTO, IMAGE_PNG = "auto", "png"
IMAGE_FORMATS = (IMAGE_AUTO, IMAGE_PNG)


class OptionError(ValueError):
    """A bad option value; the message names the flag."""


@dataclass(frozen=True)
class ExportOptions:
    """Options applied to every image before a format writes it.

    Attributes:
        min_confidence: pixels whose confidence is below this (0..1) become ignore; 0 keeps all.
        min_labelled: images whose labelled fraction (after the other options) is below this
            (0..1) are skipped.
        classes: ``--classes`` entries, or empty for the run's vocabulary unchanged.
        val_fraction: share of images (by a stable hash of the image id) put in ``val``;
            0 puts every image in ``train``.
        image_format: ``auto``: images keep their bytes (formats that need one image suffix,
            ``mmseg``, re-encode the non-PNG ones as PNG when a run mixes formats); ``png``:
            every image is written as PNG (lossless).
    """

    min_confidence: float = 0.0
    min_labelled: float = 0.0
    classes: tuple[str, ...] = ()
    val_fraction: float = 0.0
    image_format: str = IMAGE_AUTO

    def validate(self) -> None:
        """Raise :class:`OptionError` naming the flag of an out-of-range value."""
        for flag, value in (
            ("--min-confidence", self.min_confidence),
            ("--min-labelled", self.min_labelled),
            ("--split", self.val_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise OptionError(f"{flag} must be within [0, 1], got {value}")
        if self.image_format not in IMAGE_FORMATS:
            choices = ", ".join(IMAGE_FORMATS)
            raise OptionError(f"--image-format must be one of {choices}, got {self.image_format!r}")


@dataclass(frozen=True)
class ClassMap:
    """Run class ids -> export class ids.

    Attributes:
        names: export class names (index = export id).
        lut: (65536,) uint8; ``lut[run_id]`` is the export id or 255 (ignore); 255 and 65535 (the
            run's unlabelled values) map to 255.
    """

    names: tuple[str, ...]
    lut: np.ndarray

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) uint8/uint16 run labels -> (H, W) uint8 export labels (255 = ignore)."""
        return self.lut[labels]


def build_class_map(vocabulary: Sequence[str], entries: Sequence[str]) -> ClassMap:
    """Resolve ``--classes`` entries against the run's vocabulary.

    Raises:
        OptionError: an unknown or repeated source name, or more than 255 export classes.
    """
    if not entries:
        entries = list(vocabulary)
    index = {name: i for i, name in enumerate(vocabulary)}
    lut = np.full(65536, IGNORE, dtype=np.uint8)
    names: list[str] = []
    used: set[str] = set()
    for entry in entries:
        source, _, target = (s.strip() for s in entry.partition("="))
        target = target or source
        if source not in index:
            raise OptionError(f"--classes: {source!r} is not in the run's vocabulary")
        if source in used:
            raise OptionError(f"--classes: {source!r} is listed twice")
        used.add(source)
        if target not in names:
            names.append(target)
        lut[index[source]] = names.index(target)
    if len(names) > MAX_CLASSES:
        raise OptionError(f"--classes: at most {MAX_CLASSES} export classes, got {len(names)}")
    return ClassMap(tuple(names), lut)


def parse_class_entries(spec: str | None, read_text=None) -> tuple[str, ...]:
    """``--classes`` value -> entries: a comma list, or (``read_text`` given) a file's lines.

    Args:
        spec: flag value or None.
        read_text: callable reading a URI to text, used when ``spec`` names an existing file.
    """
    if not spec:
        return ()
    text = read_text(spec) if read_text is not None else None
    parts = text.splitlines() if text is not None else spec.split(",")
    return tuple(p.strip() for p in parts if p.strip() and not p.strip().startswith("#"))


def read_text_if_file(spec: str) -> str | None:
    """Text of the file ``spec`` names (local or URI), or None when it names no readable file."""
    from pipeline import storage

    try:
        return storage.read_bytes(spec).decode() if storage.exists(spec) else None
    except (OSError, ValueError):
        return None


def class_entries_from_flag(spec: str | None) -> tuple[str, ...]:
    """``--classes``-style flag value (comma list or file) -> entries."""
    return parse_class_entries(spec, read_text_if_file)


def split_of(image_id: str, val_fraction: float) -> str:
    """``"val"`` for a stable ``val_fraction`` share of ids (SHA-1 based), else ``"train"``."""
    if val_fraction <= 0.0:
        return "train"
    digest = hashlib.sha1(image_id.encode("utf-8", "surrogatepass")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def filter_labels(
    labels: np.ndarray, confidence: np.ndarray | None, class_map: ClassMap, options: ExportOptions
) -> np.ndarray:
    """Apply the class map and ``--min-confidence`` to one mask.

    Args:
        labels: (H, W) uint8/uint16 run label map (255 / 65535 = unlabelled).
        confidence: (H, W) uint8, round(conf * 255), or None.

    Returns:
        (H, W) uint8 export labels, 255 = ignore.
    """
    out = class_map.apply(labels)
    if options.min_confidence > 0.0 and confidence is not None:
        out[confidence.astype(np.float32) / 255.0 < options.min_confidence] = IGNORE
    return out
