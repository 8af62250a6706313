"""``pipeline.run`` end to end: real local Ray, real moto S3 on 127.0.0.1, real images.

The model is the colour-threshold predictor from ``tests/fakes.py`` (pure numpy), which keeps
these tests about the pipeline: listing, reading, decode errors, actors, per-shard writes,
markers, resumption and statistics.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import ColourPredictor, tar_bytes
from PIL import Image
from ray import cloudpickle

from pipeline import encode, schema, storage, write
from pipeline.config import ConfigError, LabelJobConfig
from pipeline.run import plan_job, run_label_job

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test factories reach Ray workers

CLASSES = ("red", "green", "blue")
MODEL = {"name": "colour-threshold", "version": 1}


def _put(client, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


def _parquet_bytes(images: list[bytes | None]) -> bytes:
    col = pa.array(
        [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)], type=schema.IMAGE_STRUCT
    )
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image": col, "label": list(range(len(images)))}), buf)
    return buf.getvalue().to_pybytes()


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture()
def dataset(s3_bucket: str, moto_s3: str, sample_photos) -> dict:
    """Upload a small mixed input; return its URI and the expected ids, sizes and errors."""
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    camvid, voc = sample_photos.jpegs(7), sample_photos.pngs(6)
    sizes: dict[str, tuple[int, int]] = {}
    for p in camvid[:6] + voc[:2]:
        _put(client, bucket, f"in/loose/{p.name}", p.read_bytes())
        sizes[f"loose/{p.name}"] = Image.open(p).size
    good = camvid[0].read_bytes()
    bad = {
        "loose/corrupt.jpg": bytes(range(256)) * 16,
        "loose/truncated.jpg": good[: len(good) // 3],
        "loose/empty.png": b"",
        "loose/notes.jpg": b"this is a text file, not a JPEG\n" * 10,
        "loose/bomb.png": _bomb_png(),
    }
    for rel, data in bad.items():
        _put(client, bucket, f"in/{rel}", data)
    _put(client, bucket, "in/loose/README.txt", b"ignored: unsupported extension")
    tar_members = {
        "000.png": voc[2].read_bytes(),
        "000.json": b"{}",
        "001.png": voc[3].read_bytes(),
        "002.jpg": b"\xff\xd8\xff garbage",
    }
    _put(client, bucket, "in/shards/part-000.tar", tar_bytes(tar_members))
    sizes["shards/part-000.tar/000.png"] = Image.open(voc[2]).size
    sizes["shards/part-000.tar/001.png"] = Image.open(voc[3]).size
    _put(
        client,
        bucket,
        "in/tables/part-000.parquet",
        _parquet_bytes([camvid[6].read_bytes(), None, voc[4].read_bytes()]),
    )
    sizes["tables/part-000.parquet/000000"] = Image.open(camvid[6]).size
    sizes["tables/part-000.parquet/000002"] = Image.open(voc[4]).size
    errors = {
        **{rel: None for rel in bad},
        "shards/part-000.tar/002.jpg": None,
        "tables/part-000.parquet/000001": None,
    }
    return {"input": f"{s3_bucket}/in", "sizes": sizes, "errors": set(errors), "bucket": s3_bucket}


def _config(dataset: dict, output: str, **kw: object) -> LabelJobConfig:
    base = LabelJobConfig(
        input=dataset["input"],
        output=output,
        vocab="colours.txt",
        class_names=CLASSES,
        batch_size=4,
        concurrency="1",
        num_gpus_per_actor=0,
        num_cpus_per_actor=0.5,
        shard_size=4,
        max_image_pixels=50_000_000,
        max_error_rate=1.0,
    )
    return replace(base, **kw)


def _marker_run_ids(output: str) -> dict[str, str]:
    return {p: m["run_id"] for p, m in write.read_markers(output).items()}


def test_s3_end_to_end_rows_errors_masks_stats(
    ray_local: None, dataset: dict, colour_factory, counting_encoder
) -> None:
    output = f"{dataset['bucket']}/out"
    cfg = _config(dataset, output)
    summary = run_label_job(cfg, colour_factory, counting_encoder, MODEL)

    assert counting_encoder.calls == 1
    table = write.read_labels(output)
    ids = table[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == len(dataset["sizes"]) + len(dataset["errors"])
    errors = {r[schema.IMAGE_ID]: r for r in table.to_pylist() if r[schema.STATUS] == "error"}
    assert set(errors) == dataset["errors"]
    assert errors["loose/bomb.png"][schema.ERROR].startswith("ImageTooLargeError")
    assert errors["loose/empty.png"][schema.ERROR].startswith("ValueError: empty file")
    assert all(r[schema.MASK] is None for r in errors.values())
    for row in table.to_pylist():
        if row[schema.STATUS] != "ok":
            continue
        w, h = dataset["sizes"][row[schema.IMAGE_ID]]
        assert (row[schema.WIDTH], row[schema.HEIGHT]) == (w, h)
        mask = encode.decode_png(row[schema.MASK]["bytes"])
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        counts = np.asarray(row[schema.CLASS_PIXEL_COUNTS])
        assert counts.sum() == np.count_nonzero(mask != 255)
        np.testing.assert_array_equal(counts, np.bincount(mask[mask != 255], minlength=3))
        assert row[schema.PRESENT_CLASSES] == np.flatnonzero(counts).tolist()
        assert encode.decode_png(row[schema.CONFIDENCE]["bytes"]).shape == (h, w)

    assert summary.images == table.num_rows and summary.errors == len(dataset["errors"])
    markers = write.read_markers(output).values()
    assert summary.parts_written == len(markers) >= 19 // 4
    assert all(1 <= m["rows"] <= 4 for m in markers)  # at most --shard-size rows per file
    assert summary.already_labelled == 0
    meta = json.loads(table.schema.metadata[b"labeler"])
    assert meta["vocabulary"] == list(CLASSES) and meta["model"] == MODEL
    hf = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf[schema.MASK] == {"_type": "Image"}

    run = json.loads(storage.read_bytes(storage.join(output, "run.json")))
    assert run["counts"]["error"] == len(dataset["errors"])
    assert run["counts"]["other_input_files"] == 1
    assert run["other_input_files"] == ["loose/README.txt"]
    assert {e["image_id"] for e in run["first_errors"]} == dataset["errors"]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(run) and "testing" not in json.dumps(run)

    stats_fs, stats_path = storage.filesystem_for(storage.join(output, "class_stats.parquet"))
    stats = pq.read_table(stats_path, filesystem=stats_fs).to_pylist()
    ok_rows = [r for r in table.to_pylist() if r[schema.STATUS] == "ok"]
    for c in range(3):
        assert stats[c]["pixels"] == sum(r[schema.CLASS_PIXEL_COUNTS][c] for r in ok_rows)
        assert stats[c]["images"] == sum(c in r[schema.PRESENT_CLASSES] for r in ok_rows)
    assert 0.0 < stats[0]["mean_confidence"] <= 1.0


def test_rerun_skips_finished_shards_and_overwrite_redoes(
    ray_local: None, dataset: dict, colour_factory, counting_encoder
) -> None:
    output = f"{dataset['bucket']}/out"
    first = run_label_job(_config(dataset, output), colour_factory, counting_encoder, MODEL)
    runs_before = _marker_run_ids(output)

    again = run_label_job(_config(dataset, output), colour_factory, counting_encoder, MODEL)
    assert again.images == again.parts_written == 0 and again.already_labelled == first.images
    assert _marker_run_ids(output) == runs_before
    assert write.read_labels(output).num_rows == first.images

    redo = run_label_job(
        _config(dataset, output, overwrite=True), colour_factory, counting_encoder, MODEL
    )
    assert redo.images == first.images and redo.already_labelled == 0
    assert set(_marker_run_ids(output).values()) == {redo.run_id}
    table = write.read_labels(output)
    assert table.num_rows == first.images
    assert len(set(table[schema.IMAGE_ID].to_pylist())) == first.images


class StopAfterFirstShard:
    """Predictor factory for an interrupted run: after ``calls_ok`` batches, each call waits up
    to 3 s for a shard marker and raises once one exists, so some work is saved and some not.
    (Ray delivers a batch's output only around the next call, so waiting forever would hang.)"""

    def __init__(self, output: str, calls_ok: int) -> None:
        self.output, self.calls_ok = output, calls_ok

    def __call__(self, embeddings: np.ndarray):
        outer = self

        class Failing(ColourPredictor):
            def predict(self, images):
                if self.calls >= outer.calls_ok:
                    deadline = time.monotonic() + 3
                    while time.monotonic() < deadline:
                        if write.finished_parts(outer.output):
                            raise RuntimeError("simulated preemption")
                        time.sleep(0.1)
                return super().predict(images)

        return Failing(embeddings)


def test_interrupted_run_resumes_without_duplicates(
    ray_local: None, dataset: dict, colour_factory, counting_encoder, tmp_path: Path
) -> None:
    output = str(tmp_path / "out")  # local output: exercises rename-based atomic writes
    cfg = _config(dataset, output)
    with pytest.raises(Exception, match="simulated preemption"):
        run_label_job(cfg, StopAfterFirstShard(output, calls_ok=1), counting_encoder, MODEL)
    total = len(dataset["sizes"]) + len(dataset["errors"])
    saved = sum(m["rows"] for m in write.read_markers(output).values())
    assert 1 <= saved < total
    assert not list((tmp_path / "out" / "labels").glob(".tmp-*"))

    resumed = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert resumed.already_labelled == saved
    assert resumed.images == total - saved
    table = write.read_labels(output)
    ids = table[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == total
    on_disk = list((tmp_path / "out" / "labels").glob("*.parquet"))
    assert len(on_disk) == len(write.label_files(output))


def test_configuration_errors_stop_before_work(
    ray_local: None, dataset: dict, colour_factory, counting_encoder, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        plan_job(_config(dataset, str(tmp_path / "o"), input=f"{dataset['bucket']}/nope"), MODEL)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="no images"):
        plan_job(_config(dataset, str(tmp_path / "o"), input=str(tmp_path / "empty")), MODEL)
    with pytest.raises(ConfigError, match="inside --input"):
        plan_job(_config(dataset, dataset["input"] + "/out"), MODEL)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        plan_job(_config(dataset, str(tmp_path / "file" / "out")), MODEL)

    output = str(tmp_path / "out")
    run_label_job(_config(dataset, output, limit=1), colour_factory, counting_encoder, MODEL)
    assert len(write.finished_parts(output)) == 1  # --limit rounds to whole shards
    with pytest.raises(ConfigError, match="another vocabulary or model"):
        run_label_job(
            _config(dataset, output), colour_factory, counting_encoder, {**MODEL, "version": 2}
        )
    assert counting_encoder.calls == 1  # the failed run never encoded the vocabulary
