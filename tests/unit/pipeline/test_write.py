"""Shard assembly, markers, class statistics and the output schema; local files, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema, storage, write


def _stream_rows(ids: list[str], shard: str = "s0") -> pa.Table:
    rows = []
    for i, image_id in enumerate(ids):
        ok = not image_id.startswith("bad")
        rows.append(
            {
                schema.IMAGE_ID: image_id,
                schema.SOURCE_URI: f"/in/{image_id}",
                schema.SHARD_ID: shard,
                schema.SHARD_SIZE: len(set(ids)),
                schema.WIDTH: 2 if ok else None,
                schema.HEIGHT: 1 if ok else None,
                schema.MASK: {"bytes": b"m", "path": "m.png"} if ok else None,
                schema.CONFIDENCE: {"bytes": b"c", "path": "c.png"} if ok else None,
                schema.CLASS_PIXEL_COUNTS: [2, 0, 0] if i % 2 == 0 else [1, 0, 1] if ok else None,
                schema.PRESENT_CLASSES: [0] if i % 2 == 0 else [0, 2] if ok else None,
                schema.PRESENT_MEAN_CONFIDENCE: [0.5]
                if i % 2 == 0
                else [1.0, 0.25]
                if ok
                else None,
                schema.STATUS: "ok" if ok else "error",
                schema.ERROR: None if ok else "OSError: x",
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.STREAM_SCHEMA)


def test_assemble_dedupes_and_sorts() -> None:
    out_schema = schema.output_schema(["a", "b", "c"], {"name": "fake"}, "run-1")
    parts = [_stream_rows(["z", "a"]), _stream_rows(["a", "bad"])]
    table = write.assemble_shard(parts, out_schema)
    assert table[schema.IMAGE_ID].to_pylist() == ["a", "bad", "z"]
    assert table.schema.names == list(schema.OUTPUT_COLUMNS)
    assert schema.SHARD_SIZE not in table.schema.names


def test_schema_metadata_carries_vocabulary_model_and_hf_features() -> None:
    s = schema.output_schema(["cat", "dog"], {"name": "fake", "dim": 8}, "run-7")
    labeler = json.loads(s.metadata[b"labeler"])
    assert labeler == {
        "schema_version": schema.SCHEMA_VERSION,
        "vocabulary": ["cat", "dog"],
        "model": {"name": "fake", "dim": 8},
        "run_id": "run-7",
    }
    features = json.loads(s.metadata[b"huggingface"])["info"]["features"]
    assert features[schema.MASK] == {"_type": "Image"}
    assert features[schema.CONFIDENCE] == {"_type": "Image"}
    assert features[schema.CLASS_PIXEL_COUNTS]["feature"] == {"_type": "Value", "dtype": "int64"}
    assert set(features) == set(schema.OUTPUT_COLUMNS)


def test_class_stats_from_markers() -> None:
    table = write.assemble_shard(
        [_stream_rows(["a", "b", "bad"])], schema.output_schema("abc", {}, "r")
    )
    stats = write.shard_class_stats(table, 3)
    # a: [2,0,0] conf .5 ; b: [1,0,1] conf 1.0/.25
    assert stats == {"0": [3, 2, 2 * 0.5 + 1 * 1.0], "2": [1, 1, 0.25]}
    agg = write.class_stats_table(["x", "y", "z"], [{"class_stats": stats}] * 2).to_pylist()
    assert agg[0] == {
        "class_id": 0,
        "class_name": "x",
        "pixels": 6,
        "images": 4,
        "mean_confidence": 2.0 / 3,
    }
    assert agg[1]["pixels"] == 0 and agg[1]["mean_confidence"] is None


def test_write_shard_then_marker_and_clear(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    table = write.assemble_shard([_stream_rows(["a"])], schema.output_schema("abc", {}, "r"))
    write.write_shard(out, "s0", table, {"rows": 1, "errors": 0})
    assert write.finished_shards(out) == ["s0"]
    assert write.read_marker(out, "s0")["rows"] == 1
    back = pq.read_table(write.label_uri(out, "s0"))
    assert back.equals(table) and back.schema.metadata == table.schema.metadata
    assert [p.name for p in (tmp_path / "out" / "labels").iterdir()] == ["s0.parquet"]
    write.clear_outputs(out)
    assert write.finished_shards(out) == []
    assert not storage.exists(write.label_uri(out, "s0"))


def test_fingerprint_depends_on_vocabulary_and_model() -> None:
    a = write.fingerprint(["cat"], {"m": 1})
    assert a == write.fingerprint(["cat"], {"m": 1})
    assert a != write.fingerprint(["dog"], {"m": 1}) != write.fingerprint(["cat"], {"m": 2})
