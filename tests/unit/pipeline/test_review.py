"""``pipeline.review`` pieces without Ray: source URIs, overlays, per-image confidence, escaping,
a local report end to end, and ``jobs/label.py --review`` flag handling."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline import encode, schema, write
from pipeline.config import ConfigError
from pipeline.review import build_report, load, overlay, page
from pipeline.review.source import fetch_source, split_source

REPO = Path(__file__).resolve().parents[3]


def test_split_source_recognises_tar_members_parquet_rows_and_plain_files() -> None:
    assert split_source("s3://b/x/a#b.png") == ("images", "s3://b/x/a#b.png", None)
    assert split_source("s3://b/p.tar#dir/<b>.png") == ("tar", "s3://b/p.tar", "dir/<b>.png")
    assert split_source("/d/t.tar#a#b.jpg") == ("tar", "/d/t.tar", "a#b.jpg")
    assert split_source("gs://b/t.parquet#row=12") == ("parquet", "gs://b/t.parquet", "12")


def test_fetch_source_reads_tar_member_and_parquet_row(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../x<y>.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    assert fetch_source(f"{tmp_path}/s.tar#../x<y>.png") == b"abc"
    import pyarrow.parquet as pq

    col = pa.array(
        [{"bytes": b"r0", "path": "a"}, {"bytes": b"r1", "path": "b"}], schema.IMAGE_STRUCT
    )
    pq.write_table(pa.table({"img": col}), tmp_path / "t.parquet")
    assert fetch_source(f"{tmp_path}/t.parquet#row=1") == b"r1"


def test_overlay_tints_labelled_pixels_only() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 1]], np.uint8)
    colours = overlay.palette(2)
    out = overlay.overlay(image, labels, colours)
    expected = np.rint((1 - overlay.ALPHA) * 100 + overlay.ALPHA * colours[0].astype(float))
    np.testing.assert_array_equal(out[0, 0], expected.astype(np.uint8))
    np.testing.assert_array_equal(out[1, 0], [100, 100, 100])
    assert len({tuple(c) for c in overlay.palette(40)}) == 40


def test_image_confidence_weights_class_means_by_pixels() -> None:
    rows = pa.table(
        {
            schema.CLASS_PIXEL_COUNTS: [[30, 0, 10], [0, 0, 0], None],
            schema.PRESENT_CLASSES: [[0, 2], [], None],
            schema.PRESENT_MEAN_CONFIDENCE: [[0.5, 0.9], [], None],
            schema.WIDTH: pa.array([10, 4, None], pa.int32()),
            schema.HEIGHT: pa.array([5, 4, None], pa.int32()),
        }
    )
    conf = load.image_confidence(rows)
    np.testing.assert_allclose(conf[:2], [0.6, 0.0])
    assert np.isnan(conf[2])
    frac = load.labelled_fraction(rows)
    np.testing.assert_allclose(frac[:2], [0.8, 0.0])
    assert np.isnan(frac[2])


def test_page_escapes_every_value() -> None:
    evil = '"><script>alert(1)</script>'
    html = page.render(
        {
            "run_uri": evil,
            "summary": [(evil, evil)],
            "plots": [],
            "classes": [
                {
                    "id": 0,
                    "name": evil,
                    "colour": "#000000",
                    "pixels": 1,
                    "images": 1,
                    "mean_confidence": "0.5",
                }
            ],
            "gallery": [
                {
                    "thumb": "thumbs/00000.jpg",
                    "image_id": evil,
                    "confidence": "0.1",
                    "labelled": "1%",
                    "note": evil,
                    "legend": [{"name": evil, "colour": "#fff"}],
                }
            ],
            "ok_images": 1,
            "errors": [{"image_id": evil, "source_uri": evil, "error": evil}],
            "error_count": 1,
            "seconds": "0",
        }
    )
    assert "<script" not in html and html.count("&lt;script&gt;") >= 8


def _local_run(root: Path, names: list[str]) -> None:
    """A minimal run written with the pipeline's own writer: one shard, one error row."""
    class_names = ("sky", "<road>")
    rows = []
    for i, name in enumerate(names):
        img = np.zeros((8, 12, 3), np.uint8)
        img[:, :, i % 3] = 200
        Image.fromarray(img).save(root / name)
        mask = np.zeros((8, 12), np.uint8)
        mask[:4] = 1
        mask[0, 0] = 255
        conf = np.full((8, 12), 0.2 + 0.3 * i, np.float32)
        counts = [int((mask == 0).sum()), int((mask == 1).sum())]
        rows.append(
            {
                schema.IMAGE_ID: name,
                schema.SOURCE_URI: str(root / name),
                schema.SHARD_ID: "s0",
                schema.WIDTH: 12,
                schema.HEIGHT: 8,
                schema.MASK: {"bytes": encode.encode_png(mask), "path": None},
                schema.CONFIDENCE: {
                    "bytes": encode.encode_png(encode.quantise_confidence(conf)),
                    "path": None,
                },
                schema.CLASS_PIXEL_COUNTS: counts,
                schema.PRESENT_CLASSES: [0, 1],
                schema.PRESENT_MEAN_CONFIDENCE: [0.2 + 0.3 * i] * 2,
                schema.STATUS: "ok",
                schema.ERROR: None,
            }
        )
    rows.append(
        {
            schema.IMAGE_ID: "gone.png",
            schema.SOURCE_URI: str(root / "gone.png"),
            schema.SHARD_ID: "s0",
            schema.STATUS: "error",
            schema.ERROR: "ValueError: <bad> & worse",
        }
    )
    out_schema = schema.output_schema(class_names, {"name": "t"}, "r1")
    table = pa.Table.from_pylist(rows, schema=out_schema)
    write.write_part_files(str(root / "run"), "s0", table, {})
    stats = write.class_stats_table(
        class_names, [{"class_stats": write.part_class_stats(table, 2)}]
    )
    write.write_class_stats(str(root / "run"), stats)


def test_local_report_end_to_end_without_run_json(tmp_path: Path) -> None:
    evil = '"><img src=x onerror=alert(1)>.png'  # a legal local file name (no slash)
    _local_run(tmp_path, [evil, "a.png"])
    result = build_report(str(tmp_path / "run"), str(tmp_path / "rep"), sample=10, workers=1)
    assert (result.images, result.errors, result.sampled) == (3, 1, 2)
    html = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    shown = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png"
    assert shown in html and "<img src=x" not in html and "&lt;road&gt;" in html
    assert "ValueError: &lt;bad&gt; &amp; worse" in html
    assert html.index(shown) < html.index(">a.png<")  # 0.2 before 0.5
    thumb = Image.open(tmp_path / "rep" / "thumbs" / "00000.jpg")
    assert thumb.size == (2 * 12 + 4, 8)


def test_report_refuses_remote_out_and_missing_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="local folder"):
        build_report(str(tmp_path), "s3://bucket/report")
    with pytest.raises(load.RunNotFoundError, match="labelling run"):
        build_report(str(tmp_path), str(tmp_path / "rep"))


@pytest.fixture(scope="module")
def label_cli():
    spec = importlib.util.spec_from_file_location("label_cli_review", REPO / "jobs" / "label.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_review_flag(label_cli, tmp_path: Path) -> None:
    base = ["--input", str(tmp_path / "in"), "--vocab", "v.txt"]
    local = base + ["--output", str(tmp_path / "out")]
    cfg = label_cli.resolve_config(local + ["--review"])
    assert label_cli.review_dir(local + ["--review"], cfg) == str(tmp_path / "out" / "report")
    assert label_cli.review_dir(local + ["--review", "r/"], cfg) == "r/"
    assert label_cli.review_dir(local, cfg) is None
    remote = base + ["--output", "s3://b/out", "--review"]
    with pytest.raises(ConfigError, match="--review"):
        label_cli.review_dir(remote, label_cli.resolve_config(remote))
    with pytest.raises(ConfigError, match="local folder"):
        label_cli.review_dir(local + ["--review", "s3://b/r"], cfg)
