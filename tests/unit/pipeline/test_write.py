"""Shard assembly, markers, class statistics and the output schema; local files, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema, storage, write
from pipeline.done import load_done


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
    table = write.assemble_part(parts, out_schema)
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
    table = write.assemble_part(
        [_stream_rows(["a", "b", "bad"])], schema.output_schema("abc", {}, "r")
    )
    stats = write.part_class_stats(table, 3)
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
    table = write.assemble_part([_stream_rows(["a"])], schema.output_schema("abc", {}, "r"))
    write.write_part_files(out, "s0", table, {"rows": 1, "errors": 0})
    assert write.finished_parts(out) == ["s0"]
    assert write.read_marker(out, "s0")["rows"] == 1
    back = pq.read_table(write.label_uri(out, "s0"))
    assert back.equals(table) and back.schema.metadata == table.schema.metadata
    assert [p.name for p in (tmp_path / "out" / "labels").iterdir()] == ["s0.parquet"]
    write.clear_outputs(out)
    assert write.finished_parts(out) == []
    assert not storage.exists(write.label_uri(out, "s0"))


def test_fingerprint_depends_on_vocabulary_and_model() -> None:
    a = write.fingerprint(["cat"], {"m": 1})
    assert a == write.fingerprint(["cat"], {"m": 1})
    assert a != write.fingerprint(["dog"], {"m": 1}) != write.fingerprint(["cat"], {"m": 2})


def _write_part(out: str, ids: list[str], shard: str = "s0") -> str:
    record = write.write_part(
        _stream_rows(ids, shard),
        output=out,
        out_schema=schema.output_schema("abc", {}, "r"),
        marker_base={"run_id": "r"},
        num_classes=3,
    ).to_pylist()[0]
    return record["part"]


def test_write_part_names_by_ids_and_reports_small_record(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    part = _write_part(out, ["b", "a", "bad1"])
    assert part == write.part_name(["a", "b", "bad1"]) == _write_part(out, ["a", "b", "bad1"])
    marker = write.read_marker(out, part)
    assert marker["ids"] == {"s0": ["a", "b", "bad1"]} and marker["error_ids"] == ["bad1"]
    assert marker["sources"] == {"s0": 3} and marker["rows"] == 3 and marker["errors"] == 1
    assert write.label_files(out) == [write.label_uri(out, part)]


def test_done_index_newest_part_wins_and_drop_rows_rewrites_older(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    old = _write_part(out, ["a", "bad"])
    new_rows = _stream_rows(["bad"]).to_pylist()
    new_rows[0].update(_stream_rows(["a"]).to_pylist()[0] | {schema.IMAGE_ID: "bad"})
    new = write.write_part(
        pa.Table.from_pylist(new_rows, schema=schema.STREAM_SCHEMA),
        output=out,
        out_schema=schema.output_schema("abc", {}, "r"),
        marker_base={"run_id": "r2"},
        num_classes=3,
    ).to_pylist()[0]["part"]
    index = load_done(out)
    assert index.status == {"a": "ok", "bad": "ok"} and index.owner["bad"] == new
    assert index.stale == {old: {"bad"}}
    write.drop_rows(out, old, ["bad"], 3)
    assert pq.read_table(write.label_uri(out, old))[schema.IMAGE_ID].to_pylist() == ["a"]
    assert write.read_marker(out, old)["error_ids"] == []
    assert load_done(out).stale == {}
    write.drop_rows(out, new, ["bad"], 3)  # a part left empty disappears, marker first
    assert write.finished_parts(out) == [old] and not storage.exists(write.label_uri(out, new))


def test_remove_orphans_deletes_unmarked_parquet_only(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    part = _write_part(out, ["a"])
    storage.write_bytes(write.label_uri(out, "part-orphan"), b"half a run")
    assert write.remove_orphans(out) == ["part-orphan.parquet"]
    assert [p.name for p in (tmp_path / "out" / "labels").iterdir()] == [f"{part}.parquet"]
