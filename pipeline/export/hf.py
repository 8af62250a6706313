"""Hugging Face dataset: ``data/<split>-<hash of shard id>.parquet`` shards.

Columns: ``image`` and ``mask`` as ``Image`` features (``{bytes, path}``; the mask is a uint8
index PNG, 255 = ignore), ``image_id`` / ``name`` strings and ``classes``, a
``List(ClassLabel(names=...))`` of the classes present, which carries the class names in the
features. The features travel in each file's ``huggingface`` schema metadata, so
``datasets.load_dataset("parquet", data_dir=OUT)`` or ``load_dataset(OUT)`` decodes them; file names
start with the split so ``datasets`` assigns ``train`` / ``validation``. The file suffix is
hexadecimal, so it can never contain another split keyword.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import encode, schema, storage
from pipeline.export import options
from pipeline.export.names import out_uri
from pipeline.export.rows import ExportItem

IMAGE, MASK, IMAGE_ID, NAME, CLASSES = "image", "mask", "image_id", "name", "classes"


def hf_schema(class_names: Sequence[str]) -> pa.Schema:
    """Arrow schema with the ``huggingface`` features metadata."""
    features = {
        IMAGE: {"_type": "Image"},
        MASK: {"_type": "Image"},
        IMAGE_ID: {"_type": "Value", "dtype": "string"},
        NAME: {"_type": "Value", "dtype": "string"},
        CLASSES: {"_type": "List", "feature": {"_type": "ClassLabel", "names": list(class_names)}},
    }
    meta = {b"huggingface": json.dumps({"info": {"features": features}})}
    fields = [
        pa.field(IMAGE, schema.IMAGE_STRUCT),
        pa.field(MASK, schema.IMAGE_STRUCT),
        pa.field(IMAGE_ID, pa.string()),
        pa.field(NAME, pa.string()),
        pa.field(CLASSES, pa.list_(pa.int64())),
    ]
    return pa.schema(fields, metadata=meta)


def shard_file(split: str, shard_id: str) -> tuple[str, str]:
    """Path parts of a shard's file for one split."""
    digest = hashlib.sha1(shard_id.encode()).hexdigest()[:16]
    return ("data", f"{split}-{digest}.parquet")


def write_shard(out: str, shard_id: str, items: Iterable[ExportItem], class_names) -> list[dict]:
    """Write one Parquet file per split present in the shard; return one record per item."""
    rows: dict[str, list[dict]] = {s: [] for s in options.SPLITS}
    records = []
    for item in items:
        parts = shard_file(item.split, shard_id)
        present = np.unique(item.labels[item.labels != options.IGNORE]).tolist()
        rows[item.split].append(
            {
                IMAGE: {"bytes": item.image, "path": f"{item.name}.{item.image_ext}"},
                MASK: {"bytes": encode.encode_png(item.labels), "path": f"{item.name}.png"},
                IMAGE_ID: item.image_id,
                NAME: item.name,
                CLASSES: present,
            }
        )
        records.append(item.record(file="/".join(parts)))
    for split, split_rows in rows.items():
        if split_rows:
            table = pa.Table.from_pylist(split_rows, schema=hf_schema(class_names))
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            storage.write_bytes(out_uri(out, *shard_file(split, shard_id)), buf.getvalue())
    return records


def finish(out: str, records: Sequence[dict], class_names: Sequence[str]) -> None:
    """Nothing beyond the common files: the shards carry their features."""
