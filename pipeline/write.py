"""Output side, run inside Ray workers: per-part Parquet + marker; plus the index of what is done.

The write stage (:func:`write_part`) turns about ``shard_size`` labelled rows into
``labels/<part>.parquet``, where ``<part>`` hashes the part's own image ids (a retried task
rewrites the same file). The Parquet file becomes visible atomically (``storage.write_bytes``)
and its marker ``_markers/<part>.json`` is written after it: a part is done iff its marker
exists, and readers use :func:`label_files`. Markers list their image ids (per input shard),
error ids, the input shards' total row counts and class statistics, so the next run can tell
from the output alone which inputs still need a row (:func:`load_done`), and
``class_stats.parquet`` always covers every finished part.

Exactly one row per image: an image relabelled by ``--retry-errors`` gets its new row in a new
part; the older part is then rewritten without it (:func:`drop_rows`, atomic replace, then its
marker). Until that happens (e.g. the run was killed in between) the newer part wins
(markers are ordered by ``written_at``), and the next run finishes the rewrite.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema, storage
from pipeline.lease import LeaseToken

logger = logging.getLogger(__name__)

LABELS_DIR = "labels"
MARKERS_DIR = "_markers"
RUN_FILE = "run.json"
CLASS_STATS_FILE = "class_stats.parquet"
MAX_ERRORS_PER_PART = 20  # error rows a part reports back to the driver
MARKER_READ_THREADS = 16  # markers are small objects; reading them is latency-bound


def label_uri(output: str, part: str) -> str:
    """URI of a part's Parquet file."""
    return storage.join(output, LABELS_DIR, f"{part}.parquet")


def marker_uri(output: str, part: str) -> str:
    """URI of a part's completion marker."""
    return storage.join(output, MARKERS_DIR, f"{part}.json")


def part_name(image_ids: Sequence[str]) -> str:
    """``part-<hash>`` of a set of image ids: the same rows always get the same file name."""
    text = "\n".join(sorted(image_ids))
    return "part-" + hashlib.sha1(text.encode()).hexdigest()[:16]


def fingerprint(class_names: Sequence[str], model: dict[str, Any]) -> str:
    """Hash of vocabulary + model; outputs of different fingerprints must not be mixed."""
    text = json.dumps({"vocabulary": list(class_names), "model": model}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_parts(output: str) -> list[str]:
    """Names of the parts that have a marker, sorted."""
    try:
        uris = storage.list_files(storage.join(output, MARKERS_DIR))
    except FileNotFoundError:
        return []
    names = (u.rsplit("/", 1)[-1] for u in uris)
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json"))


def label_files(output: str) -> list[str]:
    """URIs of the finished Parquet files: what a reader of the output should read."""
    return [label_uri(output, p) for p in finished_parts(output)]


def read_labels(output: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every row a reader of ``output`` sees: the finished (marked) Parquet files, concatenated.

    Args:
        columns: column names to read (default: all).
    """
    tables = []
    for uri in label_files(output):
        fs, path = storage.filesystem_for(uri)
        tables.append(pq.read_table(path, filesystem=fs, columns=columns))
    return pa.concat_tables(tables)


def read_marker(output: str, part: str) -> dict[str, Any]:
    """Parsed marker of a finished part."""
    return json.loads(storage.read_bytes(marker_uri(output, part)))


def read_markers(output: str) -> dict[str, dict[str, Any]]:
    """Every marker under ``output``, read concurrently: ``{part: marker}``."""
    parts = finished_parts(output)
    with ThreadPoolExecutor(max_workers=MARKER_READ_THREADS) as pool:
        return dict(zip(parts, pool.map(lambda p: read_marker(output, p), parts), strict=True))


def remove_orphans(output: str) -> list[str]:
    """Delete Parquet files without a marker (a run killed between the two writes) and
    leftover temporary files. Only the holder of the output's lease calls this.

    A marker that appears after its file was deleted (a writer of a run whose lease was taken
    over, caught between its lease check and its marker write) is deleted too, so no marker
    is ever left without its Parquet file.

    Returns:
        The deleted file names.
    """
    try:
        uris = storage.list_files(storage.join(output, LABELS_DIR))
    except FileNotFoundError:
        return []
    done = {f"{p}.parquet" for p in finished_parts(output)}
    orphans = [u for u in uris if u.rsplit("/", 1)[-1] not in done]
    for uri in orphans:
        storage.delete_file(uri)
    names = [u.rsplit("/", 1)[-1] for u in orphans]
    for part in set(finished_parts(output)) & {n.removesuffix(".parquet") for n in names}:
        logger.warning("%s: marked by a run that lost its lease, after cleanup; removed", part)
        storage.delete_file(marker_uri(output, part))
    return names


def clear_outputs(output: str) -> None:
    """Delete everything a previous run wrote under ``output`` (used by ``--overwrite``).

    Markers go first: a run killed part-way leaves unmarked Parquet files (orphans, removed by
    the next run), never a marker without its file."""
    for name in (MARKERS_DIR, LABELS_DIR):
        storage.delete_tree(storage.join(output, name))
    for name in (RUN_FILE, CLASS_STATS_FILE):
        storage.delete_file(storage.join(output, name))


def assemble_part(parts: Sequence[pa.Table], out_schema: pa.Schema) -> pa.Table:
    """Concatenate a part's row batches, drop duplicate image ids, sort by image id.

    Args:
        parts: tables with (at least) the output columns.
        out_schema: from ``schema.output_schema``.
    """
    table = pa.concat_tables([p.select(list(schema.OUTPUT_COLUMNS)) for p in parts])
    table = table.sort_by(schema.IMAGE_ID)
    ids = table.column(schema.IMAGE_ID).to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    if len(keep) != len(ids):
        table = table.take(pa.array(keep))
    return table.cast(out_schema)


def part_class_stats(table: pa.Table, num_classes: int) -> dict[str, list[float]]:
    """Sparse class statistics of one part: ``{class_id: [pixels, images, confidence_sum]}``."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    conf_sum = np.zeros(num_classes, dtype=np.float64)
    ok = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_OK))
    for counts, present, mean in zip(
        ok[schema.CLASS_PIXEL_COUNTS].to_pylist(),
        ok[schema.PRESENT_CLASSES].to_pylist(),
        ok[schema.PRESENT_MEAN_CONFIDENCE].to_pylist(),
        strict=True,
    ):
        counts = np.asarray(counts, dtype=np.int64)
        pixels += counts
        images[present] += 1
        conf_sum[present] += np.asarray(mean, dtype=np.float64) * counts[present]
    return {
        str(c): [int(pixels[c]), int(images[c]), float(conf_sum[c])] for c in np.flatnonzero(pixels)
    }


def write_part_files(
    output: str,
    part: str,
    table: pa.Table,
    marker: dict[str, Any],
    fence: Callable[[], None] | None = None,
) -> None:
    """Write ``labels/<part>.parquet`` and then its marker.

    Args:
        output: output root URI.
        part: part name (file stem).
        table: rows with the output schema.
        marker: JSON fields for the marker (run id, fingerprint, ids, counts, class stats).
        fence: called before each of the two writes; raises when the run lost its lease
            (``pipeline.lease.LeaseToken.verify``).
    """
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    if fence is not None:
        fence()
    storage.write_bytes(label_uri(output, part), buf.getvalue().to_pybytes())
    if fence is not None:
        fence()
    storage.write_bytes(marker_uri(output, part), json.dumps(marker).encode())


def _ids_by_source(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for image_id, source in zip(
        table[schema.IMAGE_ID].to_pylist(), table[schema.SHARD_ID].to_pylist(), strict=True
    ):
        out[source].append(image_id)
    return dict(out)


def part_marker(table: pa.Table, sources: dict[str, int], num_classes: int) -> dict[str, Any]:
    """Marker fields describing the rows of ``table`` (output schema).

    Args:
        table: the part's rows.
        sources: total row count of each input shard the rows come from.
        num_classes: C.
    """
    errors = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_ERROR))
    return {
        "rows": table.num_rows,
        "errors": errors.num_rows,
        "ids": _ids_by_source(table),
        "error_ids": errors[schema.IMAGE_ID].to_pylist(),
        "sources": sources,
        "class_stats": part_class_stats(table, num_classes),
    }


def write_part(
    batch: pa.Table,
    *,
    output: str,
    out_schema: pa.Schema,
    marker_base: dict[str, Any],
    num_classes: int,
    lease: LeaseToken | None = None,
) -> pa.Table:
    """Ray ``map_batches`` function of the write stage (runs in a worker).

    Args:
        batch: labelled rows with ``schema.STREAM_SCHEMA`` columns.
        output: output root URI.
        out_schema: from ``schema.output_schema``.
        marker_base: run id, fingerprint, schema version.
        num_classes: C.
        lease: the run's lease, verified before the Parquet file and before the marker.

    Returns:
        One small row for the driver: ``part``, ``rows``, ``errors`` and ``first_errors``
        (JSON list of ``{image_id, source_uri, error}``).
    """
    table = assemble_part([batch], out_schema)
    sources = dict(
        zip(batch[schema.SHARD_ID].to_pylist(), batch[schema.SHARD_SIZE].to_pylist(), strict=True)
    )
    part = part_name(table[schema.IMAGE_ID].to_pylist())
    marker = {
        **marker_base,
        "part": part,
        "written_at": datetime.now(UTC).isoformat(),
        **part_marker(table, sources, num_classes),
    }
    write_part_files(output, part, table, marker, lease.verify if lease else None)
    errors = table.filter(pc.equal(table[schema.STATUS], schema.STATUS_ERROR))
    first = errors.select([schema.IMAGE_ID, schema.SOURCE_URI, schema.ERROR]).slice(
        0, MAX_ERRORS_PER_PART
    )
    return pa.table(
        {
            "part": [part],
            "rows": [table.num_rows],
            "errors": [errors.num_rows],
            "first_errors": [json.dumps(first.to_pylist())],
        }
    )


def drop_rows(
    output: str,
    part: str,
    image_ids: Sequence[str],
    num_classes: int,
    lease: LeaseToken | None = None,
) -> None:
    """Remove superseded rows from a finished part: rewrite its Parquet file (atomic replace),
    then its marker; when no row is left, delete the marker first, then the file.

    Args:
        output: output root URI.
        part: part name.
        image_ids: ids whose rows a newer part holds.
        num_classes: C.
        lease: the run's lease, verified before each write or delete.
    """
    fence = lease.verify if lease else None
    marker = read_marker(output, part)
    table = pq.read_table(pa.BufferReader(storage.read_bytes(label_uri(output, part))))
    keep = pc.invert(pc.is_in(table[schema.IMAGE_ID], pa.array(list(image_ids), pa.string())))
    table = table.filter(keep)
    if table.num_rows == 0:
        if fence is not None:
            fence()
        storage.delete_file(marker_uri(output, part))
        storage.delete_file(label_uri(output, part))
        return
    kept = set(table[schema.SHARD_ID].to_pylist())
    sources = {s: n for s, n in marker["sources"].items() if s in kept}
    marker.update(part_marker(table, sources, num_classes))
    write_part_files(output, part, table, marker, fence)


def class_stats_table(class_names: Sequence[str], markers: Sequence[dict[str, Any]]) -> pa.Table:
    """Aggregate marker class stats into ``schema.CLASS_STATS_SCHEMA`` (one row per class)."""
    n = len(class_names)
    pixels = np.zeros(n, dtype=np.int64)
    images = np.zeros(n, dtype=np.int64)
    conf_sum = np.zeros(n, dtype=np.float64)
    for marker in markers:
        for key, (p, i, s) in marker.get("class_stats", {}).items():
            c = int(key)
            pixels[c] += p
            images[c] += i
            conf_sum[c] += s
    mean = [float(conf_sum[c] / pixels[c]) if pixels[c] else None for c in range(n)]
    return pa.table(
        [list(range(n)), list(class_names), pixels, images, mean], schema=schema.CLASS_STATS_SCHEMA
    )


def write_class_stats(output: str, table: pa.Table) -> None:
    """Write ``class_stats.parquet``."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(storage.join(output, CLASS_STATS_FILE), buf.getvalue().to_pybytes())


def write_run_file(output: str, summary: dict[str, Any]) -> None:
    """Write ``run.json`` (indented, keys sorted)."""
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    storage.write_bytes(storage.join(output, RUN_FILE), text.encode())
