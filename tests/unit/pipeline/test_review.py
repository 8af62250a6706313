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
from page_checks import missing_figures
from PIL import Image

from pipeline import encode, schema, write
from pipeline.config import ConfigError
from pipeline.review import build_report, load, overlay, page, plots
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
    np.testing.assert_allclose(conf[0], 0.6)
    assert np.isnan(conf[1]) and np.isnan(conf[2])  # no labelled pixel; error row
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
                    "figures": evil,
                    "note": evil,
                    "legend": [{"name": evil, "colour": "#fff"}],
                }
            ],
            "totals": load.Totals(1, 1, 0, 1, 4, 1),
            "errors": [{"image_id": evil, "source_uri": evil, "error": evil}],
            "error_count": 1,
            "seconds": "0",
        }
    )
    assert "<script" not in html and html.count("&lt;script&gt;") >= 9


def _local_run(root: Path, names: list[str], unlabelled: tuple[str, ...] = ()) -> None:
    """A minimal run written with the pipeline's own writer: one shard, one error row; the
    images named in ``unlabelled`` have no labelled pixel."""
    class_names = ("sky", "<road>")
    rows = []
    for i, name in enumerate(names):
        img = np.zeros((8, 12, 3), np.uint8)
        img[:, :, i % 3] = 200
        Image.fromarray(img).save(root / name)
        mask = np.zeros((8, 12), np.uint8)
        mask[:4] = 1
        mask[0, 0] = 255
        if name in unlabelled:
            mask[:] = 255
        conf = np.full((8, 12), 0.2 + 0.3 * i, np.float32)
        counts = [int((mask == 0).sum()), int((mask == 1).sum())]
        present = [c for c in (0, 1) if counts[c]]
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
                schema.PRESENT_CLASSES: present,
                schema.PRESENT_MEAN_CONFIDENCE: [0.2 + 0.3 * i] * len(present),
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
    assert missing_figures(html) == []
    assert "missing: the run has not finished" in html


RUN_JSON = {  # as pipeline.run writes it for a training-free run with the default min score
    "run_id": "r1",
    "finished_at": "2026-12-03T10:00:00+00:00",
    "config": {"input": "/in", "min_score": None},
    "vocabulary": ["sky", "<road>"],
    "model": {
        "checkpoint": None,
        "clip_model": "ViT-B-16",
        "clip_pretrained": "openai",
        "clip_weights": None,
        "method": "naclip",
        "templates": None,
        "background": [],
        "min_score": None,
        "device": "auto",
        "precision": "auto",
        "compile": False,
    },
    "min_score": {"value": 0.1, "default": True},
    "counts": {"images": 3, "ok": 2, "error": 1, "parts_written": 1, "already_labelled": 4},
    "images_per_s": 2.5,
}


def _cells(html: str, table: str) -> dict[str, str]:
    """``{th: td}`` of the rows of the table with id ``table``."""
    import re

    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", body))


def test_report_figures_agree_and_none_is_missing(tmp_path: Path) -> None:
    import json

    _local_run(tmp_path, ["a.png", "b.png"], unlabelled=("b.png",))
    (tmp_path / "run" / "run.json").write_text(json.dumps(RUN_JSON))
    build_report(str(tmp_path / "run"), str(tmp_path / "rep"), sample=10, workers=1)
    html = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert missing_figures(html) == []
    cells = _cells(html, "summary")
    assert cells["labelled images"] == "1 of 2 ok images have a labelled pixel"
    labelled = 8 * 12 - 1  # a.png: every pixel but one
    assert cells["labelled pixels"] == f"49.5% of the ok images&#39; pixels ({labelled} of 192)"
    assert cells["min score"] == "0.1 (the model&#39;s default)"
    assert cells["model: training-free method"] == "naclip"
    assert cells["model: CLIP model"] == "ViT-B-16" and cells["model: torch.compile"] == "off"
    assert cells["model: prompt templates"] == "the model&#39;s default"
    keys = [k for k in cells if k.startswith("model: ")]
    assert keys[:3] == [
        "model: CLIP model",
        "model: CLIP pretrained weights",
        "model: training-free method",
    ]
    assert not any("{" in v for v in cells.values())  # no raw JSON
    assert cells["label files of the last run"] == (
        "1 label files written; 4 images already labelled, skipped"
    )
    # b.png has no labelled pixel: first in the gallery, said in words, not in the histogram
    figures = html.split('class="figures">')[1:]
    assert figures[0].startswith("no labelled pixel<")
    assert figures[1].startswith("mean confidence 0.200 · labelled 99.0%")
    assert "(2 of 2 ok images)" in html and "without a labelled pixel (1 in the run)" in html
    # the checker itself catches a missing figure
    broken = html.replace(">naclip<", ">None<", 1)
    assert missing_figures(broken) == ["td. after 'model: training-free method': 'None'"]
    assert missing_figures(html.replace("<td>naclip</td>", "<td> </td>", 1)) != []
    assert missing_figures(html.replace("0.200 ·", "nan ·", 1)) != []


def test_min_score_text_names_its_origin() -> None:
    given = {"config": {"min_score": 0.3}, "min_score": {"value": 0.3, "default": False}}
    assert page.min_score_text(given) == "0.3 (--min-score)"
    off = {"config": {}, "min_score": {"value": None, "default": True}}
    assert page.min_score_text(off) == "none (no threshold) (the model's default)"
    assert page.min_score_text({"config": {"min_score": 0.2}}) == "0.2 (--min-score)"
    assert "not recorded" in page.min_score_text({"config": {}})
    checkpoint = {"checkpoint": "s3://b/m.safetensors", "clip_model": "ViT-B-16", "compile": True}
    assert page.model_items(checkpoint) == [
        ("model: checkpoint", "s3://b/m.safetensors"),
        ("model: torch.compile", "on"),
    ]
    random = {"clip_model": "tiny.json", "clip_pretrained": None, "clip_weights": None}
    assert page.model_items(random)[1] == (
        "model: CLIP pretrained weights",
        "none (random weights)",
    )
    assert page.model_items({"name": "colour"}) == [("model: name", "colour")]


def test_plots_count_axes_start_at_zero_even_when_empty(tmp_path: Path) -> None:
    colours = overlay.palette(2)
    kw = {"title": "t", "xlabel": "x"}
    assert plots.class_bars(tmp_path / "a.png", ["a", "b"], [0, 0], colours, **kw) == (0, 1)
    assert plots.class_bars(tmp_path / "b.png", ["a", "b"], [0, 20], colours, **kw) == (0, 21)
    nan = np.array([np.nan, np.nan])
    assert plots.histogram(tmp_path / "h.png", nan, empty="none", **kw) == (0, 1)
    lo, hi = plots.histogram(tmp_path / "h.png", np.array([0.5, np.nan, 0.52]), empty="", **kw)
    assert lo == 0 and 2 <= hi < 3


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
