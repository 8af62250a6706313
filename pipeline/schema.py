"""Column names and the versioned output schema of the labelling job.

Output layout under ``--output``::

    labels/<part>.parquet          about --shard-size rows each, sorted by image_id; <part>
                                   hashes the file's image ids
    _markers/<part>.json           written after its Parquet file; a part is done iff this
                                   exists; lists its image ids (readers: write.label_files)
    run.json                       resolved config (no secrets), vocabulary, model, counts, errors
    class_stats.parquet            per class: pixels, images containing it, mean confidence

Every ``labels/*.parquet`` file has these columns (schema version ``SCHEMA_VERSION``):

==========================  ==================================  ===============================
column                      type                                meaning
==========================  ==================================  ===============================
image_id                    string                              unique id: path relative to the
                                                                input root; ``<tar>/<key>`` for
                                                                tar members; ``<parquet>/<row>``
source_uri                  string                              where the bytes came from
                                                                (``tar_uri#member``,
                                                                ``parquet_uri#row=N``)
shard_id                    string                              input shard the row came from
width, height               int32 (null if never decoded)       decoded size after EXIF rotation
mask                        struct<bytes: binary, path: string> PNG label map, same size as the
                                                                image; uint8 (<= 255 classes) or
                                                                uint16; 255 / 65535 = unlabelled.
                                                                Hugging Face ``Image`` feature.
confidence                  struct<bytes: binary, path: string> PNG uint8, round(conf * 255) of
                                                                the chosen class; ``Image``.
class_pixel_counts          list<int64>                         (C,) pixels per class, sums to
                                                                W*H minus unlabelled pixels
present_classes             list<int32>                         class ids with > 0 pixels, asc.
present_mean_confidence     list<float32>                       mean confidence per present class
status                      string                              "ok" or "error"
error                       string (null when ok)               "ExceptionType: message"
==========================  ==================================  ===============================

Error rows carry nulls in every model column. Schema metadata keys: ``huggingface`` (features
JSON so ``datasets`` decodes ``mask``/``confidence`` as images) and ``labeler`` (JSON with
``schema_version``, ``vocabulary`` (list of class names, index = label id), ``model``
(model description) and ``run_id``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1.1"

# Output columns.
IMAGE_ID = "image_id"
SOURCE_URI = "source_uri"
SHARD_ID = "shard_id"
WIDTH = "width"
HEIGHT = "height"
MASK = "mask"
CONFIDENCE = "confidence"
CLASS_PIXEL_COUNTS = "class_pixel_counts"
PRESENT_CLASSES = "present_classes"
PRESENT_MEAN_CONFIDENCE = "present_mean_confidence"
STATUS = "status"
ERROR = "error"

# Internal columns that only live inside the Ray Data stream.
DATA = "data"  # raw encoded bytes of one image
IMAGE = "image"  # decoded HWC uint8 RGB array
SHARD_SIZE = "shard_size"  # number of rows the shard emits; lets the driver detect completion
# Raw predictions between the model actor and the CPU encode stage: ``.npy`` bytes (shape and
# dtype included) of the label map, the confidence map, the (C,) confidence sums and the (C,)
# pixel counts the device computed (both null for float-confidence predictors).
PRED_LABELS = "pred_labels"
PRED_CONFIDENCE = "pred_confidence"
PRED_CONFIDENCE_SUMS = "pred_confidence_sums"
PRED_CLASS_COUNTS = "pred_class_counts"

STATUS_OK = "ok"
STATUS_ERROR = "error"

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

OUTPUT_FIELDS: tuple[pa.Field, ...] = (
    pa.field(IMAGE_ID, pa.string(), nullable=False),
    pa.field(SOURCE_URI, pa.string(), nullable=False),
    pa.field(SHARD_ID, pa.string(), nullable=False),
    pa.field(WIDTH, pa.int32()),
    pa.field(HEIGHT, pa.int32()),
    pa.field(MASK, IMAGE_STRUCT),
    pa.field(CONFIDENCE, IMAGE_STRUCT),
    pa.field(CLASS_PIXEL_COUNTS, pa.list_(pa.int64())),
    pa.field(PRESENT_CLASSES, pa.list_(pa.int32())),
    pa.field(PRESENT_MEAN_CONFIDENCE, pa.list_(pa.float32())),
    pa.field(STATUS, pa.string(), nullable=False),
    pa.field(ERROR, pa.string()),
)

OUTPUT_COLUMNS: tuple[str, ...] = tuple(f.name for f in OUTPUT_FIELDS)

# Columns the inference stage emits: the output columns plus the bookkeeping ones.
STREAM_SCHEMA = pa.schema([*OUTPUT_FIELDS, pa.field(SHARD_SIZE, pa.int64())])

# What the model actor emits: the stream's identity/status columns plus raw predictions.
PREDICTION_SCHEMA = pa.schema(
    [
        *(f for f in STREAM_SCHEMA if f.name in (IMAGE_ID, SOURCE_URI, SHARD_ID, SHARD_SIZE)),
        *(f for f in STREAM_SCHEMA if f.name in (WIDTH, HEIGHT, STATUS, ERROR)),
        pa.field(PRED_LABELS, pa.binary()),
        pa.field(PRED_CONFIDENCE, pa.binary()),
        pa.field(PRED_CONFIDENCE_SUMS, pa.binary()),
        pa.field(PRED_CLASS_COUNTS, pa.binary()),
    ]
)

CLASS_STATS_SCHEMA = pa.schema(
    [
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("pixels", pa.int64(), nullable=False),
        pa.field("images", pa.int64(), nullable=False),
        pa.field("mean_confidence", pa.float64()),  # null when the class never appears
    ]
)

_HF_VALUE = {
    pa.string(): "string",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
}


def _hf_feature(dtype: pa.DataType) -> dict[str, Any]:
    if dtype == IMAGE_STRUCT:
        return {"_type": "Image"}
    if pa.types.is_list(dtype):
        return {"_type": "Sequence", "feature": _hf_feature(dtype.value_type)}
    return {"_type": "Value", "dtype": _HF_VALUE[dtype]}


def huggingface_features() -> dict[str, Any]:
    """Hugging Face ``datasets`` features for the output columns (``mask`` -> ``Image``)."""
    return {f.name: _hf_feature(f.type) for f in OUTPUT_FIELDS}


def output_schema(class_names: Sequence[str], model: dict[str, Any], run_id: str) -> pa.Schema:
    """Output Parquet schema with ``huggingface`` and ``labeler`` metadata.

    Args:
        class_names: label id -> class name.
        model: JSON-serialisable model description.
        run_id: id of the run that wrote the file.
    """
    labeler = {
        "schema_version": SCHEMA_VERSION,
        "vocabulary": list(class_names),
        "model": model,
        "run_id": run_id,
    }
    hf = {"info": {"features": huggingface_features()}}
    metadata = {b"huggingface": json.dumps(hf), b"labeler": json.dumps(labeler)}
    return pa.schema(list(OUTPUT_FIELDS), metadata=metadata)


def label_dtype_for(num_classes: int) -> str:
    """Numpy dtype name of label maps: ``uint8`` when ids 0..254 suffice, else ``uint16``."""
    return "uint8" if num_classes <= 255 else "uint16"
