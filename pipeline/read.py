"""Input shards: listing them deterministically and reading their image bytes.

A *shard* is the unit of output and of resumption:

* a ``.tar`` file (WebDataset layout ``key.jpg|png|...`` plus optional side files) is one shard;
* a ``.parquet`` file with an image column (binary, or the Hugging Face ``Image`` struct
  ``{bytes, path}``) is one shard;
* loose image files are sorted by URI and cut into groups of ``shard_size``. Their shard id
  holds the group index and a hash of the member list, so it is stable across re-runs of the
  same input and changes when the membership does.

Reading never raises for bad data: unreadable members become rows with an ``error`` value.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
import tarfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema, storage
from pipeline.config import ConfigError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
KIND_IMAGES, KIND_TAR, KIND_PARQUET = "images", "tar", "parquet"
ROWS_PER_BLOCK = 64  # bounds the size of blocks the read stage emits
READ_THREADS = 8  # concurrent GETs per read task for loose images

READ_SCHEMA = pa.schema(
    [
        (schema.IMAGE_ID, pa.string()),
        (schema.SOURCE_URI, pa.string()),
        (schema.SHARD_ID, pa.string()),
        (schema.SHARD_SIZE, pa.int64()),
        (schema.DATA, pa.binary()),
        (schema.ERROR, pa.string()),
    ]
)


@dataclass(frozen=True)
class ShardSpec:
    """One input shard.

    Attributes:
        shard_id: stable id; also the output file stem.
        kind: ``"images"``, ``"tar"`` or ``"parquet"``.
        uris: member image URIs (images) or the single file URI (tar, parquet).
        root: input root that image ids are relative to.
    """

    shard_id: str
    kind: str
    uris: tuple[str, ...]
    root: str

    def to_row(self) -> dict[str, object]:
        """Row for a Ray Dataset of shard descriptors."""
        return {
            "shard_id": self.shard_id,
            "kind": self.kind,
            "uris": list(self.uris),
            "root": self.root,
        }


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _relative(uri: str, root: str) -> str:
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri.rsplit("/", 1)[-1]


def _file_shard_id(kind: str, rel: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.rsplit(".", 1)[0])[-60:]
    return f"{kind}-{stem}-{_digest(rel)}"


def list_shards(input_uri: str, shard_size: int) -> tuple[list[ShardSpec], int]:
    """List the input's shards in a deterministic order.

    Args:
        input_uri: folder/prefix, glob or single file.
        shard_size: loose images per shard.

    Returns:
        ``(shards, num_ignored_files)``; ignored files have no supported extension.

    Raises:
        FileNotFoundError: the input does not exist.
    """
    root = storage.input_root(input_uri)
    images: list[str] = []
    shards: list[ShardSpec] = []
    ignored = 0
    for uri in storage.list_files(input_uri):
        rel = _relative(uri, root)
        if rel.rsplit("/", 1)[-1].startswith(("_", ".")):
            ignored += 1  # hidden / marker files, e.g. _SUCCESS
        elif uri.lower().endswith(".tar"):
            shards.append(ShardSpec(_file_shard_id(KIND_TAR, rel), KIND_TAR, (uri,), root))
        elif uri.lower().endswith(".parquet"):
            shards.append(ShardSpec(_file_shard_id(KIND_PARQUET, rel), KIND_PARQUET, (uri,), root))
        elif uri.lower().endswith(IMAGE_EXTENSIONS):
            images.append(uri)
        else:
            ignored += 1
    for index, start in enumerate(range(0, len(images), shard_size)):
        members = tuple(images[start : start + shard_size])
        digest = _digest("\n".join(_relative(u, root) for u in members))
        shards.append(ShardSpec(f"images-{index:05d}-{digest}", KIND_IMAGES, members, root))
    return shards, ignored


def count_rows(shard: ShardSpec) -> int:
    """Rows the shard will emit; cheap for images/parquet, scans tar headers."""
    if shard.kind == KIND_IMAGES:
        return len(shard.uris)
    fs, path = storage.filesystem_for(shard.uris[0])
    try:
        with fs.open_input_file(path) as f:
            if shard.kind == KIND_PARQUET:
                return max(pq.ParquetFile(f).metadata.num_rows, 1)
            with tarfile.open(fileobj=f, mode="r:") as tar:
                return max(len(_tar_image_members(tar.getmembers())), 1)
    except (OSError, tarfile.TarError, pa.ArrowException):
        return 1  # unreadable shards emit a single error row


def _tar_image_members(members: Sequence[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """First image member per WebDataset key (key = name up to the basename's first dot)."""
    seen: set[str] = set()
    out = []
    for m in members:
        if not m.isfile() or not m.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        folder, _, base = m.name.rpartition("/")
        key = f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


Row = tuple[str, str, bytes, "str | None"]  # image_id, source_uri, data, error


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _read_one(uri: str, root: str) -> Row:
    rel = _relative(uri, root)
    try:
        return (rel, uri, storage.read_bytes(uri), None)
    except OSError as e:  # vanished or unreadable object: record, keep going
        return (rel, uri, b"", _error(e))


def _read_images(shard: ShardSpec) -> list[Row]:
    # Object-store GETs are latency-bound; a few threads per task keep a CPU busy.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return list(pool.map(functools.partial(_read_one, root=shard.root), shard.uris))


def _read_tar(shard: ShardSpec) -> list[Row]:
    uri = shard.uris[0]
    rel = _relative(uri, shard.root)
    rows: list[Row] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(uri)), mode="r:*") as tar:
            for m in _tar_image_members(tar.getmembers()):
                data = tar.extractfile(m).read()
                rows.append((f"{rel}/{m.name}", f"{uri}#{m.name}", data, None))
    except (OSError, tarfile.TarError, EOFError) as e:
        rows.append((f"{rel}#unreadable", uri, b"", _error(e)))
    if not rows:
        rows.append((f"{rel}#empty", uri, b"", "EmptyShard: no image members in the tar file"))
    return rows


def find_image_column(table_schema: pa.Schema, preferred: str | None = None) -> str:
    """Name of the image column: ``preferred`` or the first binary / ``{bytes, path}`` column.

    Raises:
        ValueError: no such column.
    """
    if preferred is not None:
        if preferred not in table_schema.names:
            raise ValueError(f"image column {preferred!r} not in {table_schema.names}")
        return preferred
    for f in table_schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            return f.name
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            return f.name
    raise ValueError(f"no binary or {{bytes, path}} image column in {table_schema.names}")


def check_image_column(shards: Sequence[ShardSpec], image_column: str | None) -> None:
    """Driver check: the first Parquet shard has the image column (its footer only is read).

    Raises:
        ConfigError: ``--image-column`` given without Parquet inputs, or the column (named or
            auto-detected) is not in the first Parquet file. An unreadable file is left to the
            per-row errors of the run.
    """
    parquet = [s for s in shards if s.kind == KIND_PARQUET]
    if not parquet:
        if image_column is not None:
            raise ConfigError(
                f"--image-column {image_column}: applies to .parquet inputs and --input has none."
            )
        return
    fs, path = storage.filesystem_for(parquet[0].uris[0])
    try:
        with fs.open_input_file(path) as f:
            file_schema = pq.ParquetFile(f).schema_arrow
    except (OSError, pa.ArrowException):
        return
    try:
        find_image_column(file_schema, image_column)
    except ValueError as e:
        flag = "--image-column" if image_column is not None else "--input (or set --image-column)"
        raise ConfigError(f"{flag}: {e} of {parquet[0].uris[0]}.") from e


def _read_parquet(shard: ShardSpec, image_column: str | None) -> list[Row]:
    uri = shard.uris[0]
    rel = _relative(uri, shard.root)
    try:
        table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
        column = table.column(find_image_column(table.schema, image_column))
        if pa.types.is_struct(column.type):
            column = pa.chunked_array([c.field("bytes") for c in column.chunks])
        values = column.to_pylist()
    except (OSError, ValueError, pa.ArrowException) as e:
        return [(f"{rel}#unreadable", uri, b"", _error(e))]
    if not values:
        return [(f"{rel}#empty", uri, b"", "EmptyShard: the parquet file has no rows")]
    rows: list[Row] = []
    for i, data in enumerate(values):
        error = None if data else "ValueError: no image bytes in this row"
        rows.append((f"{rel}/{i:06d}", f"{uri}#row={i}", data or b"", error))
    return rows


def read_shard(shard: ShardSpec, image_column: str | None = None) -> Iterator[pa.Table]:
    """Read every image of a shard, as tables of at most ``ROWS_PER_BLOCK`` rows.

    Each row carries ``shard_size`` (the shard's total row count) so a consumer knows when it
    has seen the whole shard. Never raises for bad data; see module docstring.
    """
    if shard.kind == KIND_IMAGES:
        rows = _read_images(shard)
    elif shard.kind == KIND_TAR:
        rows = _read_tar(shard)
    else:
        rows = _read_parquet(shard, image_column)
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        chunk = rows[start : start + ROWS_PER_BLOCK]
        ids, uris, data, errors = zip(*chunk, strict=True)
        yield pa.table(
            [
                list(ids),
                list(uris),
                [shard.shard_id] * len(chunk),
                [len(rows)] * len(chunk),
                list(data),
                list(errors),
            ],
            schema=READ_SCHEMA,
        )


def read_shard_batch(batch: pa.Table, image_column: str | None = None) -> Iterator[pa.Table]:
    """Ray ``map_batches`` adapter: a batch of shard descriptors -> tables of image bytes."""
    for row in batch.to_pylist():
        spec = ShardSpec(row["shard_id"], row["kind"], tuple(row["uris"]), row["root"])
        yield from read_shard(spec, image_column)
