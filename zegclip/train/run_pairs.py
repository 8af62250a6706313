"""Training/evaluation pairs straight from a labelling run's output (pseudo-labels).

A run folder holds ``run.json`` (its vocabulary), ``labels/<shard>.parquet`` (PNG ``mask`` and
``confidence`` per image, ``source_uri``, ``status``) and ``_markers/<shard>.json`` for every
finished shard. Each ok row becomes a :class:`SegPair` named by its image id whose mask is the
run's mask with class ids mapped to ours by name (case-insensitive; other classes and unlabelled
pixels -> 255) and pixels below ``min_confidence`` set to 255. Images are fetched through
``source_uri``: loose files stay URIs read at load time; tar members (``<tar>#<member>``) and
Parquet rows (``<parquet>#row=<n>``) are read once per container and kept as bytes. The shard id
prefix (``images-``, ``tar-``, ``parquet-``) decides how a ``source_uri`` is read, so ``#`` or
``..`` in a member name is never taken as a path.

This reads the format written by ``pipeline.write`` without importing ``pipeline`` (the model
package never imports the pipeline); ``pipeline/schema.py`` documents the columns.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from collections.abc import Sequence

import fsspec
import numpy as np

from zegclip.train.data import IMAGE_SUFFIXES, SegPair, decode_mask, encode_png
from zegclip.vocab import IGNORE_INDEX

logger = logging.getLogger(__name__)

_TAR = re.compile(r"^(.+?\.tar)#(.+)$", re.IGNORECASE)
_PARQUET = re.compile(r"^(.+\.parquet)#row=(\d+)$", re.IGNORECASE)


def is_run(uri: str | None) -> bool:
    """True when ``uri`` is a labelling run's output folder (has ``run.json``)."""
    if not uri:
        return False
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.isfile(f"{path.rstrip('/')}/run.json")


def class_lut(vocabulary: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(65536,) uint8: run class id -> our class id, else 255."""
    ours = {n.casefold(): i for i, n in enumerate(names)}
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for run_id, name in enumerate(vocabulary):
        lut[run_id] = ours.get(name.casefold(), IGNORE_INDEX)
    return lut


class _Containers:
    """Image bytes of the last tar / Parquet container read (rows of a shard share one)."""

    def __init__(self, image_column: str | None) -> None:
        self.image_column = image_column
        self.uri: str | None = None
        self.items: dict = {}

    def get(self, uri: str, key, loader) -> bytes | None:
        if uri != self.uri:
            with fsspec.open(uri, "rb") as f:
                self.items, self.uri = loader(f.read()), uri
        return self.items.get(key)

    def tar_member(self, uri: str, member: str) -> bytes | None:
        return self.get(uri, member, _tar_members)

    def parquet_row(self, uri: str, row: int) -> bytes | None:
        return self.get(uri, row, self._parquet_images)

    def _parquet_images(self, data: bytes) -> dict[int, bytes | None]:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        column = self.image_column
        if column is None or column not in table.column_names:
            column = next(
                f.name
                for f in table.schema
                if str(f.type) in ("binary", "large_binary")
                or str(f.type).startswith("struct<bytes")
            )
        cells = table.column(column).to_pylist()
        return {i: c.get("bytes") if isinstance(c, dict) else c for i, c in enumerate(cells)}


def _tar_members(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for m in tar.getmembers():  # read into memory only; names never become paths
            if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES):
                out.setdefault(m.name, tar.extractfile(m).read())
    return out


def _image_ref(row: dict, containers: _Containers) -> str | bytes | None:
    """A row's image: its URI (loose file) or bytes (tar member, Parquet row); None if absent."""
    kind, uri = row["shard_id"].split("-", 1)[0], row["source_uri"]
    if kind == "images":  # fsspec would read "::" as URL chaining: read such names now
        return uri if "::" not in uri else fsspec.filesystem("file").cat_file(uri)
    if kind == "tar" and (m := _TAR.match(uri)):
        return containers.tar_member(m.group(1), m.group(2))
    if kind == "parquet" and (m := _PARQUET.match(uri)):
        return containers.parquet_row(m.group(1), int(m.group(2)))
    return None


def read_run(uri: str) -> tuple[dict, list[tuple[dict, str | bytes | None]]]:
    """``run.json`` and every row of a finished labelling run with its image reference.

    Returns:
        the run description and ``(row, image)`` per row, in marker order; ``image`` is a URI
        (loose file), bytes (tar member, Parquet row) or None (error row, image not found).

    Raises:
        FileNotFoundError: no finished shard.
    """
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    with fs.open(f"{root}/run.json", "r") as f:
        run = json.load(f)
    markers = sorted(fs.glob(f"{root}/_markers/*.json"))
    if not markers:
        raise FileNotFoundError(f"{uri}: the labelling run has no finished shard")
    containers = _Containers(run.get("config", {}).get("image_column"))
    out = []
    for marker in markers:
        shard = marker.rsplit("/", 1)[1][: -len(".json")]
        with fs.open(f"{root}/labels/{shard}.parquet", "rb") as f:
            rows = pq.read_table(f).to_pylist()
        for row in rows:
            image = _image_ref(row, containers) if row["status"] == "ok" else None
            out.append((row, image))
    return run, out


def pseudo_labels(row: dict, lut: np.ndarray, min_confidence: float) -> np.ndarray:
    """A row's (H, W) uint8 labels in our class order, 255 where unlabelled or unsure."""
    labels = lut[decode_mask(row["mask"]["bytes"])]
    if min_confidence > 0.0 and row.get("confidence"):
        confidence = decode_mask(row["confidence"]["bytes"]).astype(np.float32) / 255.0
        labels[confidence < min_confidence] = IGNORE_INDEX
    return labels


def check_fraction(value: float, flag: str) -> None:
    """Raise ``ValueError`` naming ``flag`` unless ``value`` is within [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} must be within [0, 1], got {value}")


def run_pairs(uri: str, names: Sequence[str], *, min_confidence: float = 0.0) -> list[SegPair]:
    """Pairs of every ok row of a finished labelling run, sorted by image id.

    Args:
        uri: run output folder (local or fsspec URI).
        names: our class names; the run's masks are mapped to them by name.
        min_confidence: pixels with confidence below this (0..1) become 255.

    Raises:
        FileNotFoundError: no finished shard. ValueError: ``min_confidence`` outside [0, 1].
    """
    check_fraction(min_confidence, "--min-confidence")
    run, rows = read_run(uri)
    lut = class_lut(run["vocabulary"], names)
    pairs, skipped = [], 0
    for row, image in rows:
        if image is None:
            skipped += 1
            continue
        mask = encode_png(pseudo_labels(row, lut, min_confidence))
        pairs.append(SegPair(row["image_id"], image, mask))
    logger.info("%s: %d pseudo-labelled pairs, %d rows skipped", uri, len(pairs), skipped)
    return sorted(pairs, key=lambda p: p.name)
