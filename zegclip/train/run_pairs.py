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

import cv2
import fsspec
import numpy as np

from zegclip.train.data import IMAGE_SUFFIXES, SegPair, decode_mask
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


def _class_lut(vocabulary: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(65536,) uint8: run class id -> our class id, else 255."""
    ours = {n.casefold(): i for i, n in enumerate(names)}
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for run_id, name in enumerate(vocabulary):
        lut[run_id] = ours.get(name.casefold(), IGNORE_INDEX)
    return lut


def _encode_png(labels: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", labels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def pseudo_mask(row: dict, lut: np.ndarray, min_confidence: float) -> bytes:
    """A row's mask as PNG bytes of (H, W) uint8 ids in our class order, 255 = ignore."""
    labels = lut[decode_mask(row["mask"]["bytes"])]
    if min_confidence > 0.0 and row.get("confidence"):
        confidence = decode_mask(row["confidence"]["bytes"]).astype(np.float32) / 255.0
        labels[confidence < min_confidence] = IGNORE_INDEX
    return _encode_png(labels)


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


def run_pairs(uri: str, names: Sequence[str], *, min_confidence: float = 0.0) -> list[SegPair]:
    """Pairs of every ok row of a finished labelling run, sorted by image id.

    Args:
        uri: run output folder (local or fsspec URI).
        names: our class names; the run's masks are mapped to them by name.
        min_confidence: pixels with confidence below this (0..1) become 255.

    Raises:
        FileNotFoundError: no finished shard. ValueError: ``min_confidence`` outside [0, 1].
    """
    import pyarrow.parquet as pq

    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must be within [0, 1], got {min_confidence}")
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    with fs.open(f"{root}/run.json", "r") as f:
        run = json.load(f)
    lut = _class_lut(run["vocabulary"], names)
    markers = sorted(fs.glob(f"{root}/_markers/*.json"))
    if not markers:
        raise FileNotFoundError(f"{uri}: the labelling run has no finished shard")
    containers = _Containers(run.get("config", {}).get("image_column"))
    pairs, skipped = [], 0
    for marker in markers:
        shard = marker.rsplit("/", 1)[1][: -len(".json")]
        with fs.open(f"{root}/labels/{shard}.parquet", "rb") as f:
            rows = pq.read_table(f).to_pylist()
        for row in rows:
            image = _image_ref(row, containers) if row["status"] == "ok" else None
            if image is None:
                skipped += 1
                continue
            mask = pseudo_mask(row, lut, min_confidence)
            pairs.append(SegPair(row["image_id"], image, mask))
    logger.info("%s: %d pseudo-labelled pairs, %d rows skipped", uri, len(pairs), skipped)
    return sorted(pairs, key=lambda p: p.name)
