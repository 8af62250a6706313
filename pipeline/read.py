"""Input listing and reading: which inputs exist, which still need a row, and their bytes.

A *shard* is the unit of reading:

* a ``.tar`` file (WebDataset layout ``key.jpg|png|...`` plus optional side files) is one shard;
  its id comes from its own path;
* a ``.parquet`` file with an image column (binary, or the Hugging Face ``Image`` struct
  ``{bytes, path}``) is one shard; its id comes from its own path;
* loose image files that still need a row are sorted and cut into groups of ``shard_size``;
  a group's id is a hash of its own members' ids, never of other files' names.

Which images still need a row is decided from the output (``pipeline.write.DoneIndex``), not
from shard names, so inputs added in any name order never change finished work. Tar and
Parquet shards carry the ids already labelled (``skip``) so a partly finished file is resumed.

Every listed file is accounted for: images (every extension Pillow can open), tar/Parquet
shards, and *other* files, which are named in ``run.json``. Reading never raises for bad data:
unreadable members become rows with an ``error`` value.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import logging
import re
import tarfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline import schema, storage
from pipeline.config import ConfigError

logger = logging.getLogger(__name__)


_EXTERNAL_DECODERS = {"EPS"}  # Pillow opens these only through Ghostscript


def _pillow_extensions() -> tuple[str, ...]:
    """Lower-case file extensions of every format the installed Pillow can decode by itself."""
    Image.init()
    opened = set(Image.OPEN) - _EXTERNAL_DECODERS
    return tuple(sorted(e for e, fmt in Image.registered_extensions().items() if fmt in opened))


IMAGE_EXTENSIONS = _pillow_extensions()  # .jpg .png .gif .webp .bmp .tiff (.avif) ...
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
        shard_id: stable id derived only from the shard's own members / file path.
        kind: ``"images"``, ``"tar"`` or ``"parquet"``.
        uris: member image URIs (images) or the single file URI (tar, parquet).
        root: input root that image ids are relative to.
        skip: image ids of a tar/Parquet shard that already have a row (not emitted again).
    """

    shard_id: str
    kind: str
    uris: tuple[str, ...]
    root: str
    skip: tuple[str, ...] = ()

    def to_row(self) -> dict[str, object]:
        """Row for a Ray Dataset of shard descriptors."""
        return {
            "shard_id": self.shard_id,
            "kind": self.kind,
            "uris": list(self.uris),
            "root": self.root,
            "skip": list(self.skip),
        }


@dataclass
class Listing:
    """Everything found under ``--input``.

    Attributes:
        root: input root that image ids are relative to.
        images: loose image URIs, sorted.
        files: tar and Parquet shards (without ``skip``), sorted by URI.
        other: ids (relative paths) of files that are neither images nor shards, sorted.
        excluded: files left out by ``--include`` / ``--exclude`` or hidden (``_*``, ``.*``).
    """

    root: str
    images: list[str] = field(default_factory=list)
    files: list[ShardSpec] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    excluded: int = 0


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def relative(uri: str, root: str) -> str:
    """Image id of ``uri``: its path relative to the input ``root``."""
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri.rsplit("/", 1)[-1]


def _file_shard_id(kind: str, rel: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.rsplit(".", 1)[0])[-60:]
    return f"{kind}-{stem}-{_digest(rel)}"


def parse_globs(text: str | None) -> tuple[str, ...]:
    """Comma-separated glob patterns -> tuple (empty when ``text`` is None or blank)."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _selected(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """``rel`` matches an include pattern (or none are given) and no exclude pattern.

    Patterns match the whole relative path (``*`` crosses ``/``) or just the file name.
    """
    name = rel.rsplit("/", 1)[-1]

    def hit(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    return (not include or hit(include)) and not hit(exclude)


def list_inputs(
    input_uri: str, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Listing:
    """List and classify the input's files (one listing; no object is read).

    Args:
        input_uri: folder/prefix, glob or single file.
        include: glob patterns a file must match (all files when empty).
        exclude: glob patterns that drop a file.

    Raises:
        FileNotFoundError: the input does not exist.
    """
    listing = Listing(storage.input_root(input_uri))
    for uri in storage.list_files(input_uri):
        rel = relative(uri, listing.root)
        lower = uri.lower()
        if rel.rsplit("/", 1)[-1].startswith(("_", ".")) or not _selected(rel, include, exclude):
            listing.excluded += 1  # hidden / marker files (e.g. _SUCCESS) or filtered out
        elif lower.endswith(".tar"):
            spec = ShardSpec(_file_shard_id(KIND_TAR, rel), KIND_TAR, (uri,), listing.root)
            listing.files.append(spec)
        elif lower.endswith(".parquet"):
            spec = ShardSpec(_file_shard_id(KIND_PARQUET, rel), KIND_PARQUET, (uri,), listing.root)
            listing.files.append(spec)
        elif lower.endswith(IMAGE_EXTENSIONS):
            listing.images.append(uri)
        else:
            listing.other.append(rel)
    return listing


def image_shards(uris: Sequence[str], root: str, shard_size: int) -> list[ShardSpec]:
    """Cut loose image URIs (in the given order) into shards of ``shard_size``.

    A shard's id hashes its own members' ids only, so it never depends on other files.
    """
    shards = []
    for start in range(0, len(uris), shard_size):
        members = tuple(uris[start : start + shard_size])
        digest = _digest("\n".join(relative(u, root) for u in members))
        shards.append(ShardSpec(f"images-{digest}", KIND_IMAGES, members, root))
    return shards


def list_shards(input_uri: str, shard_size: int) -> tuple[list[ShardSpec], int]:
    """All shards of the input as if nothing were labelled yet, and the number of other files.

    Convenience for tests and tools; the job plans with :func:`list_inputs` instead.
    """
    listing = list_inputs(input_uri)
    shards = listing.files + image_shards(listing.images, listing.root, shard_size)
    return shards, len(listing.other) + listing.excluded


def count_rows(shard: ShardSpec) -> int:
    """Rows the shard will emit (``skip`` excluded); cheap for images/parquet, scans tar
    headers."""
    if shard.kind == KIND_IMAGES:
        return len(shard.uris)
    return max(_count_all_rows(shard) - len(shard.skip), 0)


def _count_all_rows(shard: ShardSpec) -> int:
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
    rel = relative(uri, root)
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
    rel = relative(uri, shard.root)
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
    rel = relative(uri, shard.root)
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
    """Read the images of a shard that are not in ``shard.skip``, as tables of at most
    ``ROWS_PER_BLOCK`` rows.

    Each row carries ``shard_size``: the row count of the *whole* shard, skipped rows included,
    which markers record so a later run knows when a tar/Parquet shard is complete. Never
    raises for bad data; see module docstring.
    """
    if shard.kind == KIND_IMAGES:
        rows = _read_images(shard)
    elif shard.kind == KIND_TAR:
        rows = _read_tar(shard)
    else:
        rows = _read_parquet(shard, image_column)
    total = len(rows)
    skip = set(shard.skip)
    rows = [r for r in rows if r[0] not in skip]
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        chunk = rows[start : start + ROWS_PER_BLOCK]
        ids, uris, data, errors = zip(*chunk, strict=True)
        yield pa.table(
            [
                list(ids),
                list(uris),
                [shard.shard_id] * len(chunk),
                [total] * len(chunk),
                list(data),
                list(errors),
            ],
            schema=READ_SCHEMA,
        )


def read_shard_batch(batch: pa.Table, image_column: str | None = None) -> Iterator[pa.Table]:
    """Ray ``map_batches`` adapter: a batch of shard descriptors -> tables of image bytes."""
    for row in batch.to_pylist():
        spec = ShardSpec(
            row["shard_id"], row["kind"], tuple(row["uris"]), row["root"], tuple(row["skip"])
        )
        yield from read_shard(spec, image_column)
