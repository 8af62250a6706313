"""Fetch an image's original bytes through a labelling run's ``source_uri``.

``source_uri`` forms (see :mod:`pipeline.schema`): a file URI (loose images),
``<tar uri>#<member>`` and ``<parquet uri>#row=<n>``. The shard id's prefix (``images-``,
``tar-``, ``parquet-``) says which, so a ``#`` or ``..`` inside a name is never re-interpreted as
a path. Rows of one shard share their container, so the last container read is cached: a tar or
Parquet shard is downloaded once per export, not once per image.
"""

from __future__ import annotations

import io
import re
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import read, storage

_TAR = re.compile(r"^(.+?\.tar)#(.+)$", re.IGNORECASE)
_PARQUET = re.compile(r"^(.+\.parquet)#row=(\d+)$", re.IGNORECASE)


class SourceError(OSError):
    """The image behind a ``source_uri`` cannot be fetched."""


class SourceReader:
    """Reads image bytes by ``source_uri``, caching the last tar/Parquet container.

    Args:
        image_column: Parquet image column the labelling run used (None: auto-detect).
    """

    def __init__(self, image_column: str | None = None) -> None:
        self.image_column = image_column
        self._key: str | None = None
        self._members: dict[str, bytes] | list[bytes | None] = {}

    def fetch(self, source_uri: str, shard_id: str) -> bytes:
        """Original encoded bytes of one image.

        Args:
            source_uri: the row's ``source_uri``.
            shard_id: the row's ``shard_id``; its prefix is the shard kind.

        Raises:
            SourceError: missing file, member or row, or an unreadable container.
        """
        kind = shard_id.split("-", 1)[0]
        try:
            if kind == read.KIND_IMAGES:
                return storage.read_bytes(source_uri)
            if kind == read.KIND_TAR and (m := _TAR.match(source_uri)):
                return self._tar_member(m.group(1), m.group(2))
            if kind == read.KIND_PARQUET and (m := _PARQUET.match(source_uri)):
                return self._parquet_row(m.group(1), int(m.group(2)))
        except (OSError, tarfile.TarError, EOFError, ValueError, pa.ArrowException) as e:
            raise SourceError(f"{source_uri}: {type(e).__name__}: {e}") from e
        raise SourceError(f"{source_uri}: not a {kind} source")

    def _container(self, uri: str, load) -> dict[str, bytes] | list[bytes | None]:
        if self._key != uri:
            self._key, self._members = None, {}
            self._members = load(storage.read_bytes(uri))
            self._key = uri
        return self._members

    def _tar_member(self, uri: str, member: str) -> bytes:
        members = self._container(uri, _tar_members)
        if member not in members:
            raise SourceError(f"{uri}: no member {member!r}")
        return members[member]

    def _parquet_row(self, uri: str, row: int) -> bytes:
        rows = self._container(uri, self._parquet_images)
        if row >= len(rows) or not rows[row]:
            raise SourceError(f"{uri}: no image bytes in row {row}")
        return rows[row]

    def _parquet_images(self, data: bytes) -> list[bytes | None]:
        table = pq.read_table(pa.BufferReader(data))
        column = table.column(read.find_image_column(table.schema, self.image_column))
        if pa.types.is_struct(column.type):
            column = pa.chunked_array([c.field("bytes") for c in column.chunks])
        return column.to_pylist()


def _tar_members(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.lower().endswith(read.IMAGE_EXTENSIONS):
                # read into memory only: member names never become paths
                out.setdefault(m.name, tar.extractfile(m).read())
    return out
