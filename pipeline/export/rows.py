"""Read a labelling run for export: its vocabulary and shards, and per shard the export items.

An item joins a row's mask (after the class map and ``--min-confidence``) with the original image
bytes fetched through ``source_uri``. Images whose EXIF orientation is not upright are re-encoded
upright (PNG), so every consumer sees the image the mask was predicted on, at the mask's size.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import encode, schema, storage, write
from pipeline.export import names, options
from pipeline.export.source import SourceError, SourceReader

logger = logging.getLogger(__name__)

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


@dataclass(frozen=True)
class RunInfo:
    """What an export needs to know about a finished labelling run.

    Attributes:
        uri: run output root.
        vocabulary: run class names, index = label id.
        image_column: Parquet image column the run read (None: auto-detected).
        shards: finished shard ids, sorted.
    """

    uri: str
    vocabulary: tuple[str, ...]
    image_column: str | None
    shards: tuple[str, ...]


@dataclass(frozen=True)
class ExportItem:
    """One image ready to be written by a format.

    Attributes:
        image_id: the run's (untrusted) image id; never used as a path.
        name: safe output stem from :func:`names.safe_name`.
        split: ``"train"`` or ``"val"``.
        image: encoded image bytes; ``image_ext`` its extension (``"jpg"``, ``"png"``, ...).
        labels: (H, W) uint8 export class ids, 255 = ignore.
    """

    image_id: str
    source_uri: str
    name: str
    split: str
    image: bytes
    image_ext: str
    labels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])

    def record(self, **files: str) -> dict:
        """JSON record for the export's name mapping: ids, name, split, size and ``files``."""
        return {
            "image_id": self.image_id,
            "source_uri": self.source_uri,
            "name": self.name,
            "split": self.split,
            "width": self.width,
            "height": self.height,
            **files,
        }


@dataclass(frozen=True)
class Skipped:
    """An image left out of the export and why (error row, too little labelled, unfetchable)."""

    image_id: str
    reason: str


def open_run(uri: str) -> RunInfo:
    """Read ``run.json`` and the finished shards of a labelling run.

    Raises:
        FileNotFoundError: no ``run.json`` (not a finished labelling run).
    """
    uri = storage.make_uri(*storage.split_uri(uri))  # absolute, so re-runs compare equal
    run_file = storage.join(uri, write.RUN_FILE)
    if not storage.exists(run_file):
        raise FileNotFoundError(f"{run_file} not found: RUN must be a labelling job's --output")
    run = json.loads(storage.read_bytes(run_file))
    config = run.get("config", {})
    return RunInfo(
        uri=uri.rstrip("/"),
        vocabulary=tuple(run["vocabulary"]),
        image_column=config.get("image_column"),
        shards=tuple(write.finished_parts(uri)),
    )


def read_shard_rows(run: RunInfo, shard_id: str) -> list[dict]:
    """The rows of ``labels/<shard_id>.parquet`` as dicts (mask/confidence as PNG structs)."""
    data = storage.read_bytes(write.label_uri(run.uri, shard_id))
    return pq.read_table(io.BytesIO(data)).to_pylist()


def upright_image(data: bytes, width: int, height: int, *, png: bool = False) -> tuple[bytes, str]:
    """Original bytes and extension, or a PNG of the upright pixels when EXIF rotation changes
    them or ``png`` asks for PNG (then a non-PNG image is re-encoded; PNG keeps its bytes).

    Raises:
        SourceError: undecodable, or its size is not the mask's ``(width, height)``.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            ext = _EXTENSIONS.get(img.format or "")
            upright = img.size == (width, height) and img.getexif().get(0x0112, 1) == 1
            if ext and upright and (ext == "png" or not png):
                return data, ext
            pixels = ImageOps.exif_transpose(img)
            if pixels.size != (width, height):
                raise SourceError(f"image is {pixels.size}, mask is {(width, height)}")
            return png_bytes(pixels), "png"
    except (UnidentifiedImageError, OSError) as e:
        raise SourceError(f"{type(e).__name__}: {e}") from e


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG; lossless, except that modes PNG cannot hold (CMYK, YCbCr, ...) become
    RGB."""
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def shard_items(
    run: RunInfo,
    shard_id: str,
    class_map: options.ClassMap,
    opts: options.ExportOptions,
) -> Iterator[ExportItem | Skipped]:
    """Every row of one shard as an :class:`ExportItem` or a :class:`Skipped` with a reason."""
    reader = SourceReader(run.image_column)
    for row in read_shard_rows(run, shard_id):
        image_id = row[schema.IMAGE_ID]
        if row[schema.STATUS] != schema.STATUS_OK:
            yield Skipped(image_id, f"labelling error: {row[schema.ERROR]}")
            continue
        labels = _labels(row, class_map, opts)
        labelled = float(np.count_nonzero(labels != options.IGNORE)) / max(labels.size, 1)
        if labelled < opts.min_labelled:
            yield Skipped(image_id, f"labelled fraction {labelled:.4f} below --min-labelled")
            continue
        try:
            raw = reader.fetch(row[schema.SOURCE_URI], row[schema.SHARD_ID])
            png = opts.image_format == options.IMAGE_PNG
            image, ext = upright_image(raw, labels.shape[1], labels.shape[0], png=png)
        except SourceError as e:
            yield Skipped(image_id, f"image not fetched: {e}")
            continue
        yield ExportItem(
            image_id=image_id,
            source_uri=row[schema.SOURCE_URI],
            name=names.safe_name(image_id),
            split=options.split_of(image_id, opts.val_fraction),
            image=image,
            image_ext=ext,
            labels=labels,
        )


def _labels(row: dict, class_map: options.ClassMap, opts: options.ExportOptions) -> np.ndarray:
    mask = encode.decode_png(row[schema.MASK]["bytes"])
    conf = row[schema.CONFIDENCE]
    confidence = encode.decode_png(conf["bytes"]) if conf and opts.min_confidence > 0 else None
    return options.filter_labels(mask, confidence, class_map, opts)
