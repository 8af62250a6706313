"""Output side: per-shard Parquet + marker, class statistics and ``run.json``.

A shard's Parquet file becomes visible atomically (see ``storage.write_bytes``); its marker
``_markers/<shard_id>.json`` is written after it and is the only proof that the shard is done.
Markers also carry the shard's class statistics, so ``class_stats.parquet`` always covers every
finished shard, including those from earlier runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema, storage

logger = logging.getLogger(__name__)

LABELS_DIR = "labels"
MARKERS_DIR = "_markers"
RUN_FILE = "run.json"
CLASS_STATS_FILE = "class_stats.parquet"


def label_uri(output: str, shard_id: str) -> str:
    """URI of a shard's Parquet file."""
    return storage.join(output, LABELS_DIR, f"{shard_id}.parquet")


def marker_uri(output: str, shard_id: str) -> str:
    """URI of a shard's completion marker."""
    return storage.join(output, MARKERS_DIR, f"{shard_id}.json")


def fingerprint(class_names: Sequence[str], model: dict[str, Any]) -> str:
    """Hash of vocabulary + model; outputs of different fingerprints must not be mixed."""
    text = json.dumps({"vocabulary": list(class_names), "model": model}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_shards(output: str) -> list[str]:
    """Shard ids that have a marker."""
    try:
        uris = storage.list_files(storage.join(output, MARKERS_DIR))
    except FileNotFoundError:
        return []
    names = (u.rsplit("/", 1)[-1] for u in uris)
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


def read_marker(output: str, shard_id: str) -> dict[str, Any]:
    """Parsed marker of a finished shard."""
    return json.loads(storage.read_bytes(marker_uri(output, shard_id)))


def clear_outputs(output: str) -> None:
    """Delete everything a previous run wrote under ``output`` (used by ``--overwrite``)."""
    for name in (LABELS_DIR, MARKERS_DIR):
        storage.delete_tree(storage.join(output, name))
    for name in (RUN_FILE, CLASS_STATS_FILE):
        uri = storage.join(output, name)
        if storage.exists(uri):
            fs, path = storage.filesystem_for(uri)
            fs.delete_file(path)


def assemble_shard(parts: Sequence[pa.Table], out_schema: pa.Schema) -> pa.Table:
    """Concatenate a shard's row batches, drop duplicate image ids, sort by image id.

    Args:
        parts: tables with (at least) the output columns.
        out_schema: from ``schema.output_schema``.
    """
    table = pa.concat_tables([p.select(list(schema.OUTPUT_COLUMNS)) for p in parts])
    table = table.sort_by(schema.IMAGE_ID)
    ids = table.column(schema.IMAGE_ID).to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    if len(keep) != len(ids):
        table = table.take(pa.array(keep))
    return table.cast(out_schema)


def shard_class_stats(table: pa.Table, num_classes: int) -> dict[str, list[float]]:
    """Sparse class statistics of one shard: ``{class_id: [pixels, images, confidence_sum]}``."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    conf_sum = np.zeros(num_classes, dtype=np.float64)
    ok = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_OK))
    for counts, present, mean in zip(
        ok[schema.CLASS_PIXEL_COUNTS].to_pylist(),
        ok[schema.PRESENT_CLASSES].to_pylist(),
        ok[schema.PRESENT_MEAN_CONFIDENCE].to_pylist(),
        strict=True,
    ):
        counts = np.asarray(counts, dtype=np.int64)
        pixels += counts
        images[present] += 1
        conf_sum[present] += np.asarray(mean, dtype=np.float64) * counts[present]
    return {
        str(c): [int(pixels[c]), int(images[c]), float(conf_sum[c])] for c in np.flatnonzero(pixels)
    }


def write_shard(output: str, shard_id: str, table: pa.Table, marker: dict[str, Any]) -> None:
    """Write ``labels/<shard_id>.parquet`` and then its marker.

    Args:
        output: output root URI.
        shard_id: shard id.
        table: rows with the output schema.
        marker: extra JSON fields for the marker (run id, fingerprint, counts, class stats).
    """
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(label_uri(output, shard_id), buf.getvalue().to_pybytes())
    storage.write_bytes(marker_uri(output, shard_id), json.dumps(marker).encode())


def class_stats_table(class_names: Sequence[str], markers: Sequence[dict[str, Any]]) -> pa.Table:
    """Aggregate marker class stats into ``schema.CLASS_STATS_SCHEMA`` (one row per class)."""
    n = len(class_names)
    pixels = np.zeros(n, dtype=np.int64)
    images = np.zeros(n, dtype=np.int64)
    conf_sum = np.zeros(n, dtype=np.float64)
    for marker in markers:
        for key, (p, i, s) in marker.get("class_stats", {}).items():
            c = int(key)
            pixels[c] += p
            images[c] += i
            conf_sum[c] += s
    mean = [float(conf_sum[c] / pixels[c]) if pixels[c] else None for c in range(n)]
    return pa.table(
        [list(range(n)), list(class_names), pixels, images, mean], schema=schema.CLASS_STATS_SCHEMA
    )


def write_class_stats(output: str, table: pa.Table) -> None:
    """Write ``class_stats.parquet``."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(storage.join(output, CLASS_STATS_FILE), buf.getvalue().to_pybytes())


def write_run_file(output: str, summary: dict[str, Any]) -> None:
    """Write ``run.json`` (indented, keys sorted)."""
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    storage.write_bytes(storage.join(output, RUN_FILE), text.encode())
