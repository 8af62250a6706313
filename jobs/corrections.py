"""Corrections (and a run's pseudo-labels) as training/evaluation pairs, with provenance.

Shared by ``jobs/train.py`` and ``jobs/evaluate.py`` (not a job itself): it joins the pipeline's
correction readers (``pipeline/corrections/``) with the model package's pairs, which neither
package may import from the other.

Classes: the tool's class names go through the export's ``--classes`` rules
(:func:`pipeline.export.options.build_class_map`: keep, rename, merge) and are then matched to
our vocabulary by case-insensitive name; names that match nothing become ignore (logged). The
pseudo-labels' run vocabulary goes through the same entries (those naming one of its classes),
or is matched by name when none does.

Mixing (``pseudo_labels`` given): every ok row of the run is a pair whose mask is the run's
pseudo-label (``--min-confidence`` applied); where a person labelled a pixel, their label wins.
Masks of mixed pairs mark machine pixels with ``zegclip.train.data.MACHINE`` so training can
weigh them (``--pseudo-weight``). Corrected images that are not in the run are human-only pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pipeline import storage
from pipeline.corrections import coco, cvat, formats, images, labelstudio, mmseg
from pipeline.corrections.files import ExportFiles
from pipeline.export.names import safe_name
from pipeline.export.options import build_class_map
from zegclip.train.data import MACHINE, SegPair, encode_png
from zegclip.train.run_pairs import check_fraction, class_lut, is_run, pseudo_labels, read_run
from zegclip.train.sources import load_pairs, read_classes
from zegclip.vocab import IGNORE_INDEX

logger = logging.getLogger(__name__)

READERS = {
    "labelstudio": labelstudio.read,
    "cvat": cvat.read,
    "coco": coco.read,
    "mmseg": mmseg.read,
}
# --data-format values: "pairs" = the other sources (run, images/masks folders, Parquet)
DATA_FORMATS = ("auto", *READERS, "pairs")


@dataclass
class Provenance:
    """Who labelled the training pixels (recorded in checkpoints and the next run's run.json).

    Attributes:
        human_images / human_pixels: images with a person's label, and their labelled pixels.
        machine_images / machine_pixels: images with pseudo-labelled pixels that no person
            overrode, and those pixels (after ``--min-confidence``).
        corrections / unmatched / wrong_size: corrections read; not found in the image index;
            whose size differs from the image's.
    """

    format: str = ""
    human_images: int = 0
    human_pixels: int = 0
    machine_images: int = 0
    machine_pixels: int = 0
    corrections: int = 0
    unmatched: int = 0
    wrong_size: int = 0
    pseudo_weight: float = 1.0
    min_confidence: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def from_run(uri: str) -> images.ImageIndex:
    """Index of a labelling run's ok rows."""
    _, rows = read_run(uri)
    refs = [
        images.ImageRef(r["image_id"], image, (r["height"], r["width"]), r)
        for r, image in rows
        if image is not None
    ]
    return images.ImageIndex(refs, {safe_name(r.image_id): r.image_id for r in refs}, uri)


def open_index(uri: str) -> images.ImageIndex:
    """A run (``run.json``) or an export (``image_names.jsonl``) folder.

    Raises:
        FileNotFoundError: neither file exists under ``uri``.
    """
    if storage.exists(storage.join(uri, "run.json")):
        return from_run(uri)
    if storage.exists(storage.join(uri, "image_names.jsonl")):
        return images.from_export(uri)
    raise FileNotFoundError(
        f"--images-from {uri}: neither a labelling run (run.json) nor an export (image_names.jsonl)"
    )


def correction_format(data: str | None, data_format: str = "auto") -> str | None:
    """The correction format of ``--data``, or None for the other sources.

    Raises:
        ValueError: unknown ``--data-format``.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"--data-format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}"
        )
    if not data or data_format == "pairs":
        return None
    if data_format != "auto":
        return data_format
    if is_run(data):
        return None
    try:
        return formats.detect(ExportFiles(data))
    except FileNotFoundError:
        return None


def vocabulary_lut(
    class_names: Sequence[str], entries: Sequence[str], names: Sequence[str]
) -> np.ndarray:
    """(256,) uint8: tool class index -> our class id (255 = ignore).

    Raises:
        OptionError: a ``--data-classes`` entry names a class the tool's export does not have.
    """
    class_map = build_class_map(list(class_names), list(entries))
    ours = {n.casefold(): i for i, n in enumerate(names)}
    to_ours = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for i, name in enumerate(class_map.names):
        to_ours[i] = ours.get(name.casefold(), IGNORE_INDEX)
    unknown = [n for n in class_map.names if n.casefold() not in ours]
    if unknown:
        logger.warning("correction classes %s match no --classes name; ignored", unknown)
    return to_ours[class_map.lut[:256]]


def _index(images_from: str | None, pseudo: str | None, data: str) -> images.ImageIndex:
    for uri in (images_from, pseudo, data):
        if uri and (
            storage.exists(storage.join(uri, "run.json"))
            or storage.exists(storage.join(uri, "image_names.jsonl"))
        ):
            return open_index(uri)
    if images_from:
        return open_index(images_from)  # raises, naming the flag
    raise FileNotFoundError(
        "--data holds corrections: give --images-from RUN_OR_EXPORT (the labelling run or our "
        "export the annotated images came from), or --pseudo-labels RUN"
    )


def _human(data: str, fmt: str, lut_args, index: images.ImageIndex, prov: Provenance) -> dict:
    """image id -> (H, W) uint8 labels in our class ids, for every usable correction."""
    found = READERS[fmt](ExportFiles(data))
    for problem in found.problems:
        logger.warning("%s: %s", data, problem)
    lut = vocabulary_lut(found.class_names, *lut_args)
    out = {}
    prov.corrections = len(found.corrections)
    for c in found.corrections:
        ref = index.lookup(c)
        if ref is None:
            prov.unmatched += 1
            continue
        if ref.size is not None and c.labels.shape != ref.size:
            prov.wrong_size += 1
            logger.warning(
                "correction %r is %s, its image %s; skipped", c.key, c.labels.shape, ref.size
            )
            continue
        out[ref.image_id] = lut[c.labels]
    if prov.unmatched:
        logger.warning("%d corrections name no image of %s; skipped", prov.unmatched, index.source)
    return out


def _mixed(human: np.ndarray | None, machine: np.ndarray | None, prov: Provenance) -> np.ndarray:
    """Human labels win; machine labels elsewhere, marked with MACHINE (uint16)."""
    shape = (human if human is not None else machine).shape
    out = np.full(shape, IGNORE_INDEX, dtype=np.uint16)
    taken = np.zeros(shape, dtype=bool)
    if human is not None:
        taken = human != IGNORE_INDEX
        out[taken] = human[taken]
        prov.human_images += int(taken.any())
        prov.human_pixels += int(taken.sum())
    if machine is not None:
        use = (machine != IGNORE_INDEX) & ~taken
        out[use] = machine[use].astype(np.uint16) + MACHINE
        prov.machine_images += int(use.any())
        prov.machine_pixels += int(use.sum())
    return out


def correction_pairs(
    data: str,
    names: Sequence[str],
    *,
    data_format: str = "auto",
    class_entries: Sequence[str] = (),
    images_from: str | None = None,
    pseudo_labels_run: str | None = None,
    min_confidence: float = 0.0,
    pseudo_weight: float = 1.0,
) -> tuple[list[SegPair], Provenance]:
    """Pairs from corrections, mixed with a run's pseudo-labels when ``pseudo_labels_run`` is set.

    Raises:
        FileNotFoundError / ValueError (OptionError): with the flag to fix.
    """
    check_fraction(min_confidence, "--min-confidence")
    check_fraction(pseudo_weight, "--pseudo-weight")
    fmt = correction_format(data, data_format)
    if fmt is None:
        raise ValueError(f"--data {data}: no corrections found (set --data-format)")
    index = _index(images_from, pseudo_labels_run, data)
    prov = Provenance(fmt, pseudo_weight=pseudo_weight, min_confidence=min_confidence)
    human = _human(data, fmt, (class_entries, names), index, prov)
    pairs = []
    machine_refs = {}
    if pseudo_labels_run:  # the index is often that run already: read it once
        same = index.source == pseudo_labels_run
        machine_refs = (index if same else from_run(pseudo_labels_run)).by_id
    run_lut = _run_lut(pseudo_labels_run, class_entries, names)
    for image_id in sorted(set(human) | set(machine_refs)):
        ref = machine_refs.get(image_id) or index.by_id[image_id]
        machine = (
            pseudo_labels(ref.row, run_lut, min_confidence) if image_id in machine_refs else None
        )
        h = human.get(image_id)
        if machine is not None and h is not None and machine.shape != h.shape:
            prov.wrong_size += 1
            h = None
        labels = _mixed(h, machine, prov)
        marked = machine is not None
        mask = labels if marked else labels.astype(np.uint8)
        pairs.append(SegPair(image_id, ref.image, encode_png(mask), provenance=marked))
    logger.info("%s: %s", data, prov.as_dict())
    if not pairs:
        raise FileNotFoundError(f"--data {data}: no correction matches an image of {index.source}")
    return pairs, prov


def _run_lut(run: str | None, entries: Sequence[str], names: Sequence[str]) -> np.ndarray | None:
    """(65536,) uint8: run class id -> our id, through the ``--data-classes`` entries that name
    a class of the run (the corrections came from an export of it), else by name."""
    if not run:
        return None
    import json

    vocabulary = json.loads(storage.read_bytes(storage.join(run, "run.json")))["vocabulary"]
    known = [e for e in entries if e.partition("=")[0].strip() in vocabulary]
    if not known:
        return class_lut(vocabulary, names)
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    lut[: len(vocabulary)] = vocabulary_lut(vocabulary, known, names)[: len(vocabulary)]
    return lut


def job_pairs(
    *,
    classes: str,
    data: str | None = None,
    images: str | None = None,
    masks: str | None = None,
    image_column: str = "image",
    mask_column: str = "mask",
    min_confidence: float = 0.0,
    data_format: str = "auto",
    class_entries: Sequence[str] = (),
    images_from: str | None = None,
    pseudo_labels_run: str | None = None,
    pseudo_weight: float = 1.0,
) -> tuple[list[SegPair], Provenance | None]:
    """The pairs a job's data flags name: corrections (optionally mixed), or
    ``zegclip.train.sources.load_pairs``'s sources. Provenance is None for the latter."""
    if correction_format(data, data_format) is None:
        if pseudo_labels_run:
            raise ValueError("--pseudo-labels needs --data with corrections (see --data-format)")
        pairs = load_pairs(
            data=data or "",
            images=images or "",
            masks=masks or "",
            image_column=image_column,
            mask_column=mask_column,
            classes=classes,
            min_confidence=min_confidence,
        )
        return pairs, None
    if images or masks:
        raise ValueError("give either --data CORRECTIONS or --images/--masks, not both")
    return correction_pairs(
        data,
        read_classes(classes),
        data_format=data_format,
        class_entries=class_entries,
        images_from=images_from,
        pseudo_labels_run=pseudo_labels_run,
        min_confidence=min_confidence,
        pseudo_weight=pseudo_weight,
    )
