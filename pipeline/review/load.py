"""Read what the review needs from a labelling run, local or on an object store.

Only small columns are read for every row; mask and confidence PNGs are read for the sampled
rows only, so the cost of a review is bounded by the sample size, not the run size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema, storage, write

logger = logging.getLogger(__name__)

ROW_COLUMNS = (
    schema.IMAGE_ID,
    schema.SOURCE_URI,
    schema.WIDTH,
    schema.HEIGHT,
    schema.CLASS_PIXEL_COUNTS,
    schema.PRESENT_CLASSES,
    schema.PRESENT_MEAN_CONFIDENCE,
    schema.STATUS,
    schema.ERROR,
)
FILE_COLUMN = "_file"  # label file URI of each row, added by :func:`read_rows`


class RunNotFoundError(FileNotFoundError):
    """The URI holds no labelling run (no ``labels/*.parquet``)."""


@dataclass(frozen=True)
class Run:
    """A labelling run's metadata and light per-row columns.

    Attributes:
        uri: run output URI.
        summary: parsed ``run.json`` (empty when missing, e.g. a run still in progress).
        class_stats: ``class_stats.parquet`` rows as dicts (class_id, class_name, pixels,
            images, mean_confidence).
        class_names: label id -> class name.
        rows: table of ``ROW_COLUMNS`` plus ``FILE_COLUMN``, one row per image.
    """

    uri: str
    summary: dict[str, Any]
    class_stats: list[dict[str, Any]]
    class_names: tuple[str, ...]
    rows: pa.Table


def label_files(uri: str) -> list[str]:
    """Sorted ``labels/*.parquet`` URIs of the run.

    Raises:
        RunNotFoundError: none exist.
    """
    try:
        files = storage.list_files(storage.join(uri, write.LABELS_DIR))
    except FileNotFoundError:
        files = []
    files = [f for f in files if f.endswith(".parquet") and "/.tmp-" not in f]
    if not files:
        raise RunNotFoundError(f"{uri}: no {write.LABELS_DIR}/*.parquet; is this a labelling run?")
    return files


def _read_parquet(uri: str, columns: Sequence[str] | None = None, **kw: Any) -> pa.Table:
    fs, path = storage.filesystem_for(uri)
    return pq.read_table(path, filesystem=fs, columns=list(columns) if columns else None, **kw)


def read_rows(files: Sequence[str]) -> pa.Table:
    """Light columns of every row of ``files`` plus the file each row came from."""
    parts = []
    for f in files:
        table = _read_parquet(f, ROW_COLUMNS)
        parts.append(table.append_column(FILE_COLUMN, pa.array([f] * table.num_rows)))
    return pa.concat_tables(parts)


def _vocabulary(files: Sequence[str], summary: dict[str, Any]) -> tuple[str, ...]:
    if summary.get("vocabulary"):
        return tuple(summary["vocabulary"])
    fs, path = storage.filesystem_for(files[0])
    meta = pq.read_schema(path, filesystem=fs).metadata or {}
    return tuple(json.loads(meta.get(b"labeler", b"{}")).get("vocabulary", []))


def _class_stats(uri: str, rows: pa.Table, class_names: Sequence[str]) -> list[dict[str, Any]]:
    stats_uri = storage.join(uri, write.CLASS_STATS_FILE)
    if storage.exists(stats_uri):
        return _read_parquet(stats_uri).to_pylist()
    logger.warning("%s missing; computing class statistics from the rows", stats_uri)
    marker = {"class_stats": write.part_class_stats(rows, len(class_names))}
    return write.class_stats_table(class_names, [marker]).to_pylist()


def load_run(uri: str) -> Run:
    """Read ``run.json``, ``class_stats.parquet`` and the light columns of every row.

    Raises:
        RunNotFoundError: no label files under ``uri``.
    """
    files = label_files(uri)
    run_file = storage.join(uri, write.RUN_FILE)
    summary = json.loads(storage.read_bytes(run_file)) if storage.exists(run_file) else {}
    rows = read_rows(files)
    names = _vocabulary(files, summary)
    return Run(uri, summary, _class_stats(uri, rows, names), names, rows)


def image_confidence(rows: pa.Table) -> np.ndarray:
    """(N,) float64 mean confidence over each row's labelled pixels.

    NaN for error rows and for images without a labelled pixel (there is nothing to average).
    """
    counts = rows[schema.CLASS_PIXEL_COUNTS].to_pylist()
    present = rows[schema.PRESENT_CLASSES].to_pylist()
    means = rows[schema.PRESENT_MEAN_CONFIDENCE].to_pylist()
    out = np.full(rows.num_rows, np.nan)
    for i, (c, p, m) in enumerate(zip(counts, present, means, strict=True)):
        weights = np.asarray(c, dtype=np.float64)[p] if c and p else np.zeros(0)
        total = weights.sum()
        if total > 0:
            out[i] = float(np.dot(weights, m) / total)
    return out


def labelled_pixels(rows: pa.Table) -> np.ndarray:
    """(N,) int64 labelled pixels of each row (0 for error rows)."""
    return np.array(
        [sum(c) if c else 0 for c in rows[schema.CLASS_PIXEL_COUNTS].to_pylist()], dtype=np.int64
    )


def labelled_fraction(rows: pa.Table) -> np.ndarray:
    """(N,) float64 share of each image's pixels that carry a label (NaN for error rows)."""
    labelled = labelled_pixels(rows)
    width = rows[schema.WIDTH].cast(pa.float64()).to_numpy(zero_copy_only=False)
    height = rows[schema.HEIGHT].cast(pa.float64()).to_numpy(zero_copy_only=False)
    area = width * height  # NaN where the image was never decoded
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, labelled / area, np.nan)


@dataclass(frozen=True)
class Totals:
    """Figures over every row of a run, from the label files (so also for unfinished runs).

    An image is *labelled* when at least one of its pixels carries a class.

    Attributes:
        rows: rows in the label files.
        ok: rows with status ok.
        errors: error rows.
        labelled: ok images with at least one labelled pixel.
        pixels: pixels of the ok images.
        labelled_pixels: pixels that carry a class.
    """

    rows: int
    ok: int
    errors: int
    labelled: int
    pixels: int
    labelled_pixels: int


def totals(rows: pa.Table) -> Totals:
    """:class:`Totals` of ``rows`` (the light columns of :func:`read_rows`)."""
    ok = pc.equal(rows[schema.STATUS], schema.STATUS_OK).to_numpy(zero_copy_only=False)
    width = rows[schema.WIDTH].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    height = rows[schema.HEIGHT].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    labelled = labelled_pixels(rows)
    return Totals(
        rows=rows.num_rows,
        ok=int(ok.sum()),
        errors=int(pc.sum(pc.equal(rows[schema.STATUS], schema.STATUS_ERROR)).as_py() or 0),
        labelled=int((ok & (labelled > 0)).sum()),
        pixels=int((width * height)[ok].sum()),
        labelled_pixels=int(labelled[ok].sum()),
    )


def read_masks(picks: pa.Table) -> dict[str, tuple[bytes, bytes]]:
    """``{image_id: (mask_png, confidence_png)}`` for the rows in ``picks`` (needs FILE_COLUMN)."""
    out: dict[str, tuple[bytes, bytes]] = {}
    for f in sorted(set(picks[FILE_COLUMN].to_pylist())):
        ids = picks.filter(pc.equal(picks[FILE_COLUMN], f))[schema.IMAGE_ID]
        table = _read_parquet(
            f,
            (schema.IMAGE_ID, schema.MASK, schema.CONFIDENCE),
            filters=pc.field(schema.IMAGE_ID).isin(ids),
        )
        for row in table.to_pylist():
            out[row[schema.IMAGE_ID]] = (row[schema.MASK]["bytes"], row[schema.CONFIDENCE]["bytes"])
    return out
