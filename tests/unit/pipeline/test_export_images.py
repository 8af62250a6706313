"""Image files of an export: ``--image-format png`` and mmseg's one image suffix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.export import mmseg, options
from pipeline.export.rows import upright_image


def _encoded(fmt: str, array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


RGB = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)


def test_upright_image_keeps_bytes_unless_png_is_asked() -> None:
    jpeg, png = _encoded("JPEG", RGB), _encoded("PNG", RGB)
    assert upright_image(jpeg, 8, 6) == (jpeg, "jpg")
    assert upright_image(png, 8, 6, png=True) == (png, "png")
    data, ext = upright_image(jpeg, 8, 6, png=True)
    assert ext == "png" and Image.open(io.BytesIO(data)).format == "PNG"
    np.testing.assert_array_equal(_pixels(data), _pixels(jpeg))  # lossless
    cmyk = io.BytesIO()
    Image.fromarray(RGB).convert("CMYK").save(cmyk, format="JPEG")
    data, _ = upright_image(cmyk.getvalue(), 8, 6, png=True)
    assert Image.open(io.BytesIO(data)).mode == "RGB"


def test_image_format_is_validated() -> None:
    options.ExportOptions(image_format="png").validate()
    with pytest.raises(options.OptionError, match="--image-format"):
        options.ExportOptions(image_format="jpeg").validate()


def _write(out: Path, rel: str, data: bytes) -> dict:
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(data)
    return {"image": rel}


def test_one_suffix_reencodes_non_png_losslessly_and_is_idempotent(tmp_path: Path) -> None:
    jpeg, png = _encoded("JPEG", RGB), _encoded("PNG", RGB)
    records = [
        _write(tmp_path, "img_dir/train/a-1.jpg", jpeg),
        _write(tmp_path, "img_dir/val/b-2.png", png),
    ]
    marker_copy = [dict(r) for r in records]  # what the shard markers keep
    assert mmseg.one_suffix(str(tmp_path), records) == 1
    assert [r["image"] for r in records] == ["img_dir/train/a-1.png", "img_dir/val/b-2.png"]
    assert not (tmp_path / "img_dir/train/a-1.jpg").exists()
    np.testing.assert_array_equal(
        _pixels((tmp_path / records[0]["image"]).read_bytes()), _pixels(jpeg)
    )
    assert (tmp_path / "img_dir/val/b-2.png").read_bytes() == png  # PNG kept byte for byte
    written = (tmp_path / "img_dir/train/a-1.png").stat().st_mtime_ns
    assert mmseg.one_suffix(str(tmp_path), marker_copy) == 1  # a re-run: record updated only
    assert marker_copy == records
    assert (tmp_path / "img_dir/train/a-1.png").stat().st_mtime_ns == written
    same = [_write(tmp_path, "img_dir/train/c-3.jpg", jpeg)]
    assert mmseg.one_suffix(str(tmp_path), same) == 0 and same[0]["image"].endswith(".jpg")


def test_export_made_before_image_format_resumes(tmp_path: Path) -> None:
    import json

    from pipeline.export import rows, runner

    run = rows.RunInfo(str(tmp_path / "run"), ("a", "b"), None, ())
    plan = runner.ExportPlan(
        run,
        "mmseg",
        str(tmp_path / "out"),
        options.ExportOptions(),
        options.build_class_map(run.vocabulary, ()),
    )
    runner._check_config(plan)  # writes the config
    path = tmp_path / "out" / runner.CONFIG_FILE
    config = json.loads(path.read_text())
    del config["options"]["image_format"]  # as written before the option existed
    path.write_text(json.dumps(config))
    runner._check_config(plan)  # same settings: resumes
    png = runner.ExportPlan(**{**plan.__dict__, "opts": options.ExportOptions(image_format="png")})
    with pytest.raises(options.OptionError, match="other settings"):
        runner._check_config(png)
