"""URI helpers and local atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import storage


@pytest.mark.parametrize(
    ("child", "parent", "inside"),
    [
        ("s3://b/in/out", "s3://b/in", True),
        ("s3://b/in", "s3://b/in/", True),
        ("s3://b/input2", "s3://b/in", False),
        ("s3://c/in/out", "s3://b/in", False),
        ("gs://b/in/out", "s3://b/in", False),
        ("/d/in/x", "/d/in/*.jpg", True),
        ("/d/out", "/d/in/**/*.png", False),
    ],
)
def test_is_within(child: str, parent: str, inside: bool) -> None:
    assert storage.is_within(child, parent) is inside


def test_split_and_make_uri_round_trip() -> None:
    assert storage.split_uri("s3://bucket/a/b/") == ("s3", "bucket/a/b")
    assert storage.make_uri("s3", "bucket/a") == "s3://bucket/a"
    assert storage.split_uri("file:///tmp/x")[1] == "/tmp/x"
    assert storage.join("s3://b/out/", "labels", "x.parquet") == "s3://b/out/labels/x.parquet"


def test_write_bytes_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "o" / "f.bin")
    storage.write_bytes(uri, b"one")
    storage.write_bytes(uri, b"two")
    assert storage.read_bytes(uri) == b"two"
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["f.bin"]


def test_check_writable_leaves_nothing_behind(tmp_path: Path) -> None:
    storage.check_writable(str(tmp_path / "new"))
    assert list((tmp_path / "new").iterdir()) == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OSError):  # a folder cannot be created below a regular file
        storage.check_writable(str(tmp_path / "a-file" / "out"))


def test_s3_endpoint_comes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    fs, path = storage.filesystem_for("s3://bucket/key")
    assert path == "bucket/key"
    assert fs.region == "eu-west-1"
