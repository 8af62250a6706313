"""Safe export names, guarded output paths and the shared export options (no Ray, no I/O)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.export import names, options
from pipeline.export.source import SourceError, SourceReader

HOSTILE = [
    "../../x.jpg",
    "/etc/passwd",
    "a/../../b.png",
    "..",
    ".hidden.jpg",
    "C:\\Windows\\evil.jpg",
    "tab\tnew\nline\x00nul.jpg",
    "ünï cödé.png",
    "<script>alert(1)</script>.jpg",
    "x" * 5000 + ".jpg",
    "",
]


@pytest.mark.parametrize("image_id", HOSTILE)
def test_safe_name_is_a_plain_safe_file_name(image_id: str, tmp_path) -> None:
    name = names.safe_name(image_id)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*-[0-9a-f]{12}", name)
    assert len(name) <= names.MAX_STEM_CHARS + 1 + names.HASH_CHARS
    uri = names.out_uri(str(tmp_path), "img", f"{name}.jpg")
    assert uri == f"{tmp_path}/img/{name}.jpg"


def test_names_are_stable_and_collision_free() -> None:
    # Ids that sanitise to the same stem still get different names.
    ids = ["a b.jpg", "a_b.jpg", "a?b.jpg", "A b.jpg", "a b.png", "a b"]
    mapped = {i: names.safe_name(i) for i in ids}
    assert len(set(mapped.values())) == len(ids)
    assert mapped == {i: names.safe_name(i) for i in ids}
    names.check_unique(mapped)
    with pytest.raises(ValueError, match="both map to"):
        names.check_unique({"a": "n", "b": "n"})


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "../x", ".hidden", "/abs", "a\\b", "é"])
def test_out_uri_rejects_unsafe_parts(part: str, tmp_path) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        names.out_uri(str(tmp_path), part)


def test_class_map_keeps_renames_merges_and_ignores() -> None:
    cm = options.build_class_map(
        ["sky", "road", "car", "truck"], ["road", "car=vehicle", "truck=vehicle"]
    )
    assert cm.names == ("road", "vehicle")
    labels = np.array([[0, 1, 2, 3, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(cm.apply(labels), [[255, 0, 1, 1, 255]])
    wide = np.array([[65535, 2]], dtype=np.uint16)
    np.testing.assert_array_equal(cm.apply(wide), [[255, 1]])
    with pytest.raises(options.OptionError, match="--classes: 'boat'"):
        options.build_class_map(["sky"], ["boat"])
    with pytest.raises(options.OptionError, match="twice"):
        options.build_class_map(["sky"], ["sky", "sky=air"])


def test_min_confidence_and_split() -> None:
    cm = options.build_class_map(["a", "b"], [])
    labels = np.array([[0, 1, 1]], dtype=np.uint8)
    conf = np.array([[255, 127, 128]], dtype=np.uint8)  # 1.0, 0.498, 0.502
    out = options.filter_labels(labels, conf, cm, options.ExportOptions(min_confidence=0.5))
    np.testing.assert_array_equal(out, [[0, 255, 1]])
    splits = [options.split_of(f"img-{i}", 0.2) for i in range(2000)]
    assert 0.17 < splits.count("val") / 2000 < 0.23
    assert splits == [options.split_of(f"img-{i}", 0.2) for i in range(2000)]
    assert options.split_of("x", 0.0) == "train"
    with pytest.raises(options.OptionError, match="--split"):
        options.ExportOptions(val_fraction=1.5).validate()


def test_source_kind_comes_from_the_shard_not_the_name(tmp_path) -> None:
    (tmp_path / "a.tar#b.jpg").write_bytes(b"loose")
    reader = SourceReader()
    assert reader.fetch(str(tmp_path / "a.tar#b.jpg"), "images-00000-abc") == b"loose"
    with pytest.raises(SourceError):
        reader.fetch(str(tmp_path / "a.tar#b.jpg"), "tar-a-abc")
    with pytest.raises(SourceError):  # '..' inside a member is a member name, not a path
        reader.fetch(f"{tmp_path}/deep/x.tar#../../a.tar#b.jpg", "tar-x-abc")


def test_upright_image_keeps_bytes_or_rotates_by_exif() -> None:
    import io

    from PIL import Image

    from pipeline.export.rows import upright_image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    plain = buf.getvalue()
    assert upright_image(plain, 40, 20) == (plain, "jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", exif=exif)
    data, ext = upright_image(buf.getvalue(), 20, 40)
    assert ext == "png" and Image.open(io.BytesIO(data)).size == (20, 40)
    with pytest.raises(SourceError, match="mask is"):
        upright_image(plain, 41, 20)
    with pytest.raises(SourceError):
        upright_image(b"not an image", 1, 1)
