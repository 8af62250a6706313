"""Shard listing and reading on a local folder; no Ray."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import read, schema

PNG = b"\x89PNG fake bytes"  # reading does not decode


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def input_dir(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    (root / "loose" / "sub").mkdir(parents=True)
    for name in ["b.jpg", "a.png", "c.webp", "sub/d.JPEG", "e.bmp"]:
        (root / "loose" / name).write_bytes(PNG + name.encode())
    (root / "loose" / "notes.txt").write_text("ignored")
    (root / "loose" / "_SUCCESS").write_text("")
    _tar(
        root / "shard-0.tar",
        {"k1.jpg": b"j1", "k1.json": b"{}", "k2.png": b"p2", "k2.jpg": b"dup", "k3.json": b"{}"},
    )
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": b"x1", "path": "x1.png"}, {"bytes": None, "path": "x2.png"}],
                type=schema.IMAGE_STRUCT,
            ),
            "label": [1, 2],
        }
    )
    pq.write_table(table, root / "part-0.parquet")
    return root


def test_listing_is_deterministic_and_groups_loose_images(input_dir: Path) -> None:
    shards, ignored = read.list_shards(str(input_dir), shard_size=2)
    again, _ = read.list_shards(str(input_dir), shard_size=2)
    assert shards == again
    assert ignored == 2
    kinds = [s.kind for s in shards]
    assert kinds.count("tar") == 1 and kinds.count("parquet") == 1 and kinds.count("images") == 3
    loose = [s for s in shards if s.kind == "images"]
    members = [Path(u).name for s in loose for u in s.uris]
    assert members == ["a.png", "b.jpg", "c.webp", "e.bmp", "d.JPEG"]  # sorted by full path
    assert all(s.shard_id.startswith("images-") for s in loose)
    assert len({s.shard_id for s in shards}) == len(shards)


def test_loose_shard_id_depends_only_on_its_own_members(input_dir: Path) -> None:
    listing = read.list_inputs(str(input_dir))
    first = read.image_shards(listing.images[:2], listing.root, 2)
    (input_dir / "loose" / "aa.png").write_bytes(PNG)  # sorts between existing names
    again = read.list_inputs(str(input_dir))
    assert len(again.images) == len(listing.images) + 1
    assert read.image_shards(listing.images[:2], again.root, 2) == first
    assert read.image_shards(listing.images[:1], listing.root, 2) != first


def test_listing_classifies_every_file_and_applies_globs(input_dir: Path) -> None:
    (input_dir / "loose" / "anim.gif").write_bytes(PNG)
    (input_dir / "loose" / "meta.json").write_text("{}")
    listing = read.list_inputs(str(input_dir))
    names = [Path(u).name for u in listing.images]
    assert "anim.gif" in names and "d.JPEG" in names
    assert listing.other == ["loose/meta.json", "loose/notes.txt"]
    assert listing.excluded == 1  # _SUCCESS
    assert len(listing.files) == 2
    only_jpg = read.list_inputs(str(input_dir), include=["*.jpg", "*.jpeg"])
    assert [Path(u).name for u in only_jpg.images] == ["b.jpg"]  # globs are case-sensitive
    no_sub = read.list_inputs(str(input_dir), exclude=read.parse_globs("loose/sub/*, *.txt"))
    assert "d.JPEG" not in [Path(u).name for u in no_sub.images]
    assert no_sub.other == ["loose/meta.json"]


def test_pillow_formats_are_image_extensions() -> None:
    for ext in (".gif", ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"):
        assert ext in read.IMAGE_EXTENSIONS
    assert ".txt" not in read.IMAGE_EXTENSIONS and ".json" not in read.IMAGE_EXTENSIONS


def test_skip_leaves_out_labelled_members(input_dir: Path) -> None:
    shard = next(s for s in read.list_shards(str(input_dir), 10)[0] if s.kind == "tar")
    rows = _rows(replace(shard, skip=("shard-0.tar/k1.jpg",)))
    assert [r[schema.IMAGE_ID] for r in rows] == ["shard-0.tar/k2.png"]
    assert rows[0][schema.SHARD_SIZE] == 2  # the whole tar's row count


def test_glob_and_single_file_inputs(input_dir: Path) -> None:
    shards, _ = read.list_shards(str(input_dir / "loose" / "*.jpg"), 10)
    assert [Path(u).name for s in shards for u in s.uris] == ["b.jpg"]
    single, _ = read.list_shards(str(input_dir / "shard-0.tar"), 10)
    assert len(single) == 1 and single[0].kind == "tar"


def test_missing_input_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read.list_shards(str(tmp_path / "nope"), 10)


def _rows(shard: read.ShardSpec) -> list[dict]:
    return [r for t in read.read_shard(shard) for r in t.to_pylist()]


def test_read_loose_images_with_relative_ids(input_dir: Path) -> None:
    shard = next(s for s in read.list_shards(str(input_dir), 10)[0] if s.kind == "images")
    rows = _rows(shard)
    assert [r[schema.IMAGE_ID] for r in rows] == [
        "loose/a.png",
        "loose/b.jpg",
        "loose/c.webp",
        "loose/e.bmp",
        "loose/sub/d.JPEG",
    ]
    assert all(r[schema.SHARD_SIZE] == 5 and r[schema.ERROR] is None for r in rows)
    assert rows[0][schema.DATA] == PNG + b"a.png"


def test_read_tar_takes_first_image_per_key(input_dir: Path) -> None:
    shard = next(s for s in read.list_shards(str(input_dir), 10)[0] if s.kind == "tar")
    rows = _rows(shard)
    assert [(r[schema.IMAGE_ID], r[schema.DATA]) for r in rows] == [
        ("shard-0.tar/k1.jpg", b"j1"),
        ("shard-0.tar/k2.png", b"p2"),
    ]
    assert rows[0][schema.SOURCE_URI].endswith("shard-0.tar#k1.jpg")
    assert read.count_rows(shard) == 2


def test_read_parquet_hf_struct_and_null_bytes(input_dir: Path) -> None:
    shard = next(s for s in read.list_shards(str(input_dir), 10)[0] if s.kind == "parquet")
    rows = _rows(shard)
    assert [r[schema.DATA] for r in rows] == [b"x1", b""]
    assert rows[0][schema.ERROR] is None and "no image bytes" in rows[1][schema.ERROR]
    assert rows[1][schema.SOURCE_URI].endswith("part-0.parquet#row=1")
    assert read.count_rows(shard) == 2


def test_corrupt_tar_and_empty_parquet_become_single_error_rows(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
    pq.write_table(pa.table({"image": pa.array([], pa.binary())}), tmp_path / "empty.parquet")
    _tar(tmp_path / "noimg.tar", {"a.json": b"{}"})
    shards, _ = read.list_shards(str(tmp_path), 10)
    rows = {s.uris[0].rsplit("/", 1)[-1]: _rows(s) for s in shards}
    assert [len(v) for v in rows.values()] == [1, 1, 1]
    assert rows["bad.tar"][0][schema.ERROR].startswith("ReadError")
    assert rows["empty.parquet"][0][schema.ERROR].startswith("EmptyShard")
    assert rows["noimg.tar"][0][schema.ERROR].startswith("EmptyShard")


def test_find_image_column() -> None:
    s = pa.schema([("id", pa.int64()), ("img", pa.binary())])
    assert read.find_image_column(s) == "img"
    with pytest.raises(ValueError, match="no binary"):
        read.find_image_column(pa.schema([("id", pa.int64())]))
