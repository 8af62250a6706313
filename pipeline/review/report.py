"""Build the static review report of a labelling run: ``index.html`` + plots + thumbnails.

The report folder is self-contained (relative links only, no scripts, no network) and opens
from disk. Its cost is bounded by ``sample``: only the sampled rows' masks are read and only
their source images fetched, whatever the size of the run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema, storage
from pipeline.review import load, overlay, page, plots
from pipeline.review.source import split_source

logger = logging.getLogger(__name__)

THUMBS_DIR = "thumbs"
INDEX = "index.html"
DEFAULT_SAMPLE = 64
DEFAULT_MAX_ERRORS = 500


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote: ``index`` path, rows seen and shown, seconds taken."""

    index: Path
    images: int
    errors: int
    sampled: int
    seconds: float


def check_out_dir(out: str) -> Path:
    """The report folder as a local path.

    Raises:
        ValueError: ``out`` is an object-store URI (the report is meant to be opened from disk).
    """
    scheme, path = storage.split_uri(out)
    if scheme != "file":
        raise ValueError(f"--out {out}: the report is written to a local folder, not {scheme}://")
    return Path(path)


def pick_sample(rows: pa.Table, confidence: np.ndarray, sample: int) -> pa.Table:
    """The ``sample`` ok rows to draw, in order: first the images without a labelled pixel
    (NaN ``confidence``), then the lowest mean confidence; ties by image id."""
    ok = np.flatnonzero(pc.equal(rows[schema.STATUS], schema.STATUS_OK).to_numpy(False))
    ids = rows[schema.IMAGE_ID].to_numpy(zero_copy_only=False)[ok]
    key = np.nan_to_num(confidence[ok], nan=-1.0)
    order = np.lexsort((ids, key))[:sample]
    return rows.take(pa.array(ok[order])).append_column(
        "_confidence", pa.array(confidence[ok[order]])
    )


def _clear_thumbs(folder: Path) -> None:
    """Remove thumbnails of an earlier report (only names this module generates)."""
    for f in folder.glob("[0-9][0-9][0-9][0-9][0-9].jpg"):
        f.unlink()


def _thumb_tasks(run: load.Run, picks: pa.Table, folder: Path) -> list[overlay.ThumbTask]:
    masks = load.read_masks(picks)
    config = run.summary.get("config", {})
    extra: dict[str, Any] = {"image_column": config.get("image_column")}
    if config.get("max_image_pixels"):
        extra["max_pixels"] = int(config["max_image_pixels"])
    return [
        overlay.ThumbTask(
            out_path=str(folder / f"{i:05d}.jpg"),
            source_uri=row[schema.SOURCE_URI],
            mask_png=masks[row[schema.IMAGE_ID]][0],
            num_classes=len(run.class_names),
            **extra,
        )
        for i, row in enumerate(picks.select([schema.IMAGE_ID, schema.SOURCE_URI]).to_pylist())
    ]


def _make_thumbs(tasks: list[overlay.ThumbTask], workers: int | None) -> list[overlay.ThumbResult]:
    """Thumbnails in task order; work is grouped by source container to reuse downloads."""
    order = sorted(range(len(tasks)), key=lambda i: split_source(tasks[i].source_uri)[1])
    made = overlay.make_thumbnails([tasks[i] for i in order], workers)
    results: list[overlay.ThumbResult | None] = [None] * len(tasks)
    for i, result in zip(order, made, strict=True):
        results[i] = result
    return results  # type: ignore[return-value]


def _gallery(run: load.Run, picks: pa.Table, results, colours, out: Path) -> list[dict]:
    fractions = load.labelled_fraction(picks)
    cards = []
    for i, (row, result) in enumerate(zip(picks.to_pylist(), results, strict=True)):
        cards.append(
            {
                "thumb": Path(result.out_path).relative_to(out).as_posix(),
                "image_id": row[schema.IMAGE_ID],
                "figures": page.card_figures(row["_confidence"], fractions[i]),
                "note": result.note,
                "legend": [
                    {"name": run.class_names[c], "colour": overlay.hex_colour(colours[c])}
                    for c in result.present
                ],
            }
        )
    return cards


def _plots(run: load.Run, confidence: np.ndarray, colours: np.ndarray, out: Path) -> list[dict]:
    names = [s["class_name"] for s in run.class_stats]
    specs = [
        ("class_pixels.png", [s["pixels"] for s in run.class_stats], "Pixels per class", "pixels"),
        ("class_images.png", [s["images"] for s in run.class_stats], "Images per class", "images"),
    ]
    for file, values, title, xlabel in specs:
        plots.class_bars(out / file, names, values, colours, title=title, xlabel=xlabel)
    plots.histogram(
        out / "confidence.png",
        confidence,
        title="Mean confidence of labelled pixels per image",
        xlabel="mean confidence",
        empty="no image has a labelled pixel",
    )
    return [
        {"file": "class_pixels.png", "alt": "bar chart: labelled pixels per class"},
        {"file": "class_images.png", "alt": "bar chart: images containing each class"},
        {"file": "confidence.png", "alt": "histogram of per-image mean confidence"},
    ]


def _classes(run: load.Run, colours: np.ndarray) -> list[dict]:
    return [
        {
            "id": s["class_id"],
            "name": s["class_name"],
            "colour": overlay.hex_colour(colours[s["class_id"]]),
            "pixels": s["pixels"],
            "images": s["images"],
            "mean_confidence": page.decimal(s["mean_confidence"]),
        }
        for s in run.class_stats
    ]


def _errors(rows: pa.Table, limit: int) -> tuple[list[dict], int]:
    errors = rows.filter(pc.equal(rows[schema.STATUS], schema.STATUS_ERROR))
    errors = errors.sort_by(schema.IMAGE_ID).slice(0, limit)
    cols = [schema.IMAGE_ID, schema.SOURCE_URI, schema.ERROR]
    total = pc.sum(pc.equal(rows[schema.STATUS], schema.STATUS_ERROR)).as_py() or 0
    return errors.select(cols).to_pylist(), total


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build_report(
    run_uri: str,
    out: str,
    *,
    sample: int = DEFAULT_SAMPLE,
    max_errors: int = DEFAULT_MAX_ERRORS,
    workers: int | None = None,
) -> ReportResult:
    """Write the review report of the run at ``run_uri`` into the local folder ``out``.

    Args:
        run_uri: labelling run output (local path, ``s3://``, ``gs://`` ...).
        out: local report folder; created if missing; an earlier report there is replaced.
        sample: overlays to draw (lowest mean confidence first); bounds the cost.
        max_errors: error rows listed.
        workers: thumbnail processes (default: CPU count).

    Raises:
        load.RunNotFoundError: no labelling run at ``run_uri``.
        ValueError: ``out`` is not local, or ``sample`` < 0.
    """
    start = time.monotonic()
    if sample < 0 or max_errors < 0:
        raise ValueError("--sample and --max-errors must be >= 0.")
    folder = check_out_dir(out)
    run = load.load_run(run_uri)
    (folder / THUMBS_DIR).mkdir(parents=True, exist_ok=True)
    _clear_thumbs(folder / THUMBS_DIR)
    colours = overlay.palette(len(run.class_names))
    confidence = load.image_confidence(run.rows)
    totals = load.totals(run.rows)
    picks = pick_sample(run.rows, confidence, sample)
    logger.info("review: %d rows, drawing %d overlays", run.rows.num_rows, picks.num_rows)
    results = _make_thumbs(_thumb_tasks(run, picks, folder / THUMBS_DIR), workers)
    errors, error_count = _errors(run.rows, max_errors)
    context = {
        "run_uri": run_uri,
        "summary": page.summary_items(run.summary, run_uri, totals),
        "plots": _plots(run, confidence, colours, folder),
        "classes": _classes(run, colours),
        "gallery": _gallery(run, picks, results, colours, folder),
        "totals": totals,
        "errors": errors,
        "error_count": error_count,
        "seconds": f"{time.monotonic() - start:.1f}",
    }
    _write_text(folder / INDEX, page.render(context))
    seconds = time.monotonic() - start
    logger.info("review written to %s in %.1f s", folder / INDEX, seconds)
    return ReportResult(folder / INDEX, run.rows.num_rows, error_count, picks.num_rows, seconds)
