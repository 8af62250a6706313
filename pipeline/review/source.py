"""Fetch an image's original bytes from the ``source_uri`` a labelling run recorded.

``source_uri`` takes three forms (see :mod:`pipeline.schema`): a plain object URI, a tar member
``<tar_uri>#<member>`` and a Parquet row ``<parquet_uri>#row=<N>``. Containers are cached per
process (a few at a time), so several sample images from one shard cost one download.
"""

from __future__ import annotations

import functools
import io
import re
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import read, storage

_PARQUET_ROW = re.compile(r"^(?P<uri>.+\.parquet)#row=(?P<row>\d+)$", re.IGNORECASE)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def split_source(source_uri: str) -> tuple[str, str, str | None]:
    """Classify a source URI.

    Returns:
        ``(kind, container_uri, member)``: kind is ``"images"``, ``"tar"`` or ``"parquet"``;
        member is the tar member name or the Parquet row number as text (None for images).
    """
    match = _PARQUET_ROW.match(source_uri)
    if match:
        return read.KIND_PARQUET, match["uri"], match["row"]
    for i, ch in enumerate(source_uri):  # the first '#' right after a tar file name
        if ch == "#" and source_uri[:i].lower().endswith(_TAR_SUFFIXES):
            return read.KIND_TAR, source_uri[:i], source_uri[i + 1 :]
    return read.KIND_IMAGES, source_uri, None


@functools.lru_cache(maxsize=4)
def _container_bytes(uri: str) -> bytes:
    return storage.read_bytes(uri)


def _tar_member(uri: str, member: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(_container_bytes(uri)), mode="r:*") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise FileNotFoundError(f"{member!r} is not a regular file in {uri}")
        return f.read()


def _parquet_row(uri: str, row: int, image_column: str | None) -> bytes:
    table = pq.read_table(pa.BufferReader(_container_bytes(uri)))
    column = table.column(read.find_image_column(table.schema, image_column))
    value = column[row].as_py()
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        raise ValueError(f"row {row} of {uri} has no image bytes")
    return data


def fetch_source(source_uri: str, image_column: str | None = None) -> bytes:
    """Encoded image bytes behind ``source_uri``.

    Args:
        source_uri: as recorded in a labels row.
        image_column: image column of Parquet inputs (the run's ``--image-column``).

    Raises:
        OSError: unreadable object (FileNotFoundError when missing).
        KeyError / ValueError / tarfile.TarError: the member or row is not there.
    """
    kind, uri, member = split_source(source_uri)
    if kind == read.KIND_TAR:
        return _tar_member(uri, member)
    if kind == read.KIND_PARQUET:
        return _parquet_row(uri, int(member), image_column)
    return storage.read_bytes(uri)
