"""Scheduled runs on a growing bucket: real local Ray, real moto S3 on 127.0.0.1, real photos.

A re-run labels only images without a row, whatever was added in between and in whatever name
order; earlier Parquet files stay byte-identical; ``--retry-errors`` replaces error rows so
that every input still has exactly one row.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from ray import cloudpickle

from pipeline import schema, storage, write
from pipeline.config import LabelJobConfig
from pipeline.run import run_label_job

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLASSES = ("red", "green", "blue")
MODEL = {"name": "colour-threshold", "version": 1}


ID_STATUS = [schema.IMAGE_ID, schema.STATUS]  # the columns these tests read


def _config(input_uri: str, output: str, **kw: object) -> LabelJobConfig:
    base = LabelJobConfig(
        input=input_uri,
        output=output,
        vocab="colours.txt",
        class_names=CLASSES,
        batch_size=8,
        concurrency="1",
        num_gpus_per_actor=0,
        shard_size=8,
        max_error_rate=1.0,
    )
    return replace(base, **kw)


def _checksums(client, bucket: str) -> dict[str, str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix="out/labels/").get("Contents", [])
    return {
        o["Key"]: hashlib.sha256(
            client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        ).hexdigest()
        for o in listing
        if o["Key"].endswith(".parquet")
    }


def _run_json(output: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(output, write.RUN_FILE)))


def test_growing_bucket_labels_only_new_images(
    ray_local: None,
    s3_bucket: str,
    moto_s3: str,
    sample_photos,
    colour_factory,
    counting_encoder,
) -> None:
    client = boto3.client("s3", endpoint_url=moto_s3)
    bucket = s3_bucket.removeprefix("s3://")
    photos = sample_photos.jpegs(80)
    later = {p.name for i, p in enumerate(photos) if i % 4 == 1}  # 20 names between the others
    for p in photos:
        if p.name not in later:
            client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
    output, cfg = f"{s3_bucket}/out", _config(f"{s3_bucket}/in", f"{s3_bucket}/out")

    first = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert first.images == 60 and first.errors == 0
    before = _checksums(client, bucket)
    assert len(before) == first.parts_written

    for p in photos:
        if p.name in later:
            client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
    second = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert second.images == 20 and second.already_labelled == 60
    run = _run_json(output)
    assert run["counts"]["images"] == 20 and run["output_totals"]["images"] == 80
    after = _checksums(client, bucket)
    assert {k: after[k] for k in before} == before  # earlier files untouched
    new_ids = write.read_labels(output, ID_STATUS).filter(
        pa.compute.is_in(
            write.read_labels(output, ID_STATUS)[schema.IMAGE_ID],
            pa.array(sorted(later)),
        )
    )
    assert new_ids.num_rows == 20
    ids = write.read_labels(output, ID_STATUS)[schema.IMAGE_ID].to_pylist()
    assert len(ids) == len(set(ids)) == 80 and set(ids) == {p.name for p in photos}

    third = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert third.images == 0 and _checksums(client, bucket) == after


def test_retry_errors_replaces_error_rows(
    ray_local: None, tmp_path: Path, sample_photos, colour_factory, counting_encoder
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photos = sample_photos.jpegs(5)
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    (src / photos[2].name).write_bytes(photos[2].read_bytes()[:300])  # truncated upload
    (src / "notes.txt").write_text("not an image")
    output = str(tmp_path / "out")
    cfg = _config(str(src), output, shard_size=3, batch_size=3)

    first = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert (first.images, first.errors) == (5, 1)
    assert _run_json(output)["other_input_files"] == ["notes.txt"]
    (src / photos[2].name).write_bytes(photos[2].read_bytes())  # upload completed

    plain = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    assert plain.images == 0  # an error row is a row: only --retry-errors relabels it
    retry = run_label_job(replace(cfg, retry_errors=True), colour_factory, counting_encoder, MODEL)
    assert (retry.images, retry.errors) == (1, 0)
    table = write.read_labels(output, ID_STATUS)
    assert sorted(table[schema.IMAGE_ID].to_pylist()) == sorted(p.name for p in photos)
    assert set(table[schema.STATUS].to_pylist()) == {"ok"}
    assert _run_json(output)["output_totals"] == {
        "parts": len(write.label_files(output)),
        "images": 5,
        "error": 0,
    }
    files = sorted(p.name for p in (tmp_path / "out" / "labels").iterdir())
    assert files == sorted(u.rsplit("/", 1)[-1] for u in write.label_files(output))


def test_every_input_is_labelled_or_named(
    ray_local: None, tmp_path: Path, sample_photos, colour_factory, counting_encoder
) -> None:
    from PIL import Image, features

    src = tmp_path / "in"
    (src / "tmp").mkdir(parents=True)
    photo = Image.open(sample_photos.jpegs(1)[0]).convert("RGB")
    images = {"a.gif": "GIF", "b.webp": "WEBP", "c.tif": "TIFF", "d.bmp": "BMP", "e.png": "PNG"}
    if features.check("avif"):
        images["f.avif"] = "AVIF"
    for name, fmt in images.items():
        photo.save(src / name, format=fmt)
    photo.save(src / "tmp" / "g.png")
    (src / "notes.txt").write_text("not an image")
    (src / "meta.json").write_text("{}")
    output = str(tmp_path / "out")
    cfg = _config(str(src), output, exclude="tmp/*")

    summary = run_label_job(cfg, colour_factory, counting_encoder, MODEL)
    table = write.read_labels(output, ID_STATUS)
    assert sorted(table[schema.IMAGE_ID].to_pylist()) == sorted(images)
    assert set(table[schema.STATUS].to_pylist()) == {"ok"}
    run = _run_json(output)
    assert run["other_input_files"] == ["meta.json", "notes.txt"]
    assert run["counts"]["other_input_files"] == 2 and run["counts"]["excluded_input_files"] == 1
    assert "2 other files (meta.json, notes.txt), 1 excluded" in summary.table()
