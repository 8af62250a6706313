"""Evaluate a checkpoint, or a labelling run's Parquet output, against ground-truth masks.

Examples::

    python jobs/evaluate.py --checkpoint runs/camvid/model_final.safetensors \\
        --images camvid/test --masks camvid/testannot --classes camvid/classes.txt \\
        --unseen car,pedestrian
    python jobs/evaluate.py --predictions s3://bucket/label-run --data s3://bucket/gt \\
        --classes classes.txt --unseen car,pedestrian

Metrics (mmseg definitions, see :mod:`zegclip.train.metrics`): pixel accuracy, mIoU over seen and
unseen classes, hIoU and a per-class IoU table. Labelling-job rows are matched to ground truth by
image id (corrections) or the file stem of their source URI; their class ids are mapped to ours
by class name (from the Parquet ``labeler`` metadata); unknown names and unlabelled pixels count
as misses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path, PurePosixPath

import fsspec
import numpy as np

if __package__ in (None, ""):  # `python jobs/evaluate.py` from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.flags import JobHelpFormatter  # noqa: E402
from pipeline import schema  # noqa: E402
from zegclip.train.calibration import (  # noqa: E402
    CalibrationCounts,
    format_sweep,
    pixel_outcomes,
    recommend,
    sweep,
)
from zegclip.train.data import PairError, decode_mask, load_pair  # noqa: E402
from zegclip.train.metrics import compute_metrics, confusion_matrix, format_table  # noqa: E402
from zegclip.train.sources import read_classes, read_unseen  # noqa: E402

logger = logging.getLogger("jobs.evaluate")


def evaluate_checkpoint(
    checkpoint: str,
    pairs: list,
    names: list[str],
    seen: np.ndarray,
    *,
    reduce_zero_label: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """Confusion matrix of a model's argmax predictions (no score threshold) over ``pairs``."""
    import zegclip

    model = zegclip.load_model(checkpoint, device=device)
    emb = model.encode_vocabulary(names)
    predictor = zegclip.SegPredictor(
        model, emb, np.arange(len(names)), len(names), seen=seen, min_score=None, device=device
    )
    conf = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    for pair in pairs:
        try:
            image, gt = load_pair(pair, len(names), reduce_zero_label=reduce_zero_label)
        except PairError as e:
            logger.warning("skipping %s: %s", pair.name, e)
            continue
        label_map = predictor.predict([image])[0].label_map
        conf += confusion_matrix(gt, label_map, len(names))
    return conf


def _prediction_files(root: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    fs, path = fsspec.core.url_to_fs(root)
    files = sorted(
        f
        for f in fs.glob(f"{path.rstrip('/')}/**/*.parquet")
        if not f.endswith("class_stats.parquet")
    )
    if not files:
        raise FileNotFoundError(f"--predictions {root}: no Parquet files")
    return fs, files


def _id_map(table_schema, names: list[str]) -> np.ndarray:
    """(65536,) prediction id -> our class id (unknown names and unlabelled -> C)."""
    lut = np.full(65536, len(names), dtype=np.int64)
    meta = json.loads((table_schema.metadata or {}).get(b"labeler", b"{}"))
    vocab = meta.get("vocabulary")
    if vocab is None:
        logger.warning("predictions carry no vocabulary metadata; assuming our class order")
        vocab = names
    ours = {n.casefold(): i for i, n in enumerate(names)}
    for pid, name in enumerate(vocab):
        lut[pid] = ours.get(name.casefold(), len(names))
    return lut


def _row_key(row: dict) -> str:
    uri = row.get(schema.SOURCE_URI) or row.get(schema.IMAGE_ID) or ""
    if not str(row.get(schema.SHARD_ID, "")).startswith("images-"):
        uri = uri.split("#", 1)[0]  # tar member / Parquet row: the container's stem
    return PurePosixPath(uri).stem  # a loose file's name may itself hold "#"


def evaluate_predictions(
    root: str,
    pairs: list,
    names: list[str],
    *,
    reduce_zero_label: bool = False,
    calibration: CalibrationCounts | None = None,
    min_confidence: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """Confusion matrix of a labelling run's masks against the ground truth of ``pairs``.

    With ``calibration``, also accumulates per-confidence-level counts for a threshold sweep.

    Returns:
        the matrix and counts (``matched``, ``unmatched``, ``errors``, ``missing``).
    """
    import pyarrow.parquet as pq

    by_stem = {p.name: p for p in pairs}
    conf = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    counts = {"matched": 0, "unmatched": 0, "errors": 0}
    seen_stems: set[str] = set()
    fs, files = _prediction_files(root)
    for file in files:
        with fs.open(file, "rb") as f:
            table = pq.read_table(f)
        lut = _id_map(table.schema, names)
        for row in table.to_pylist():
            pair = by_stem.get(row.get(schema.IMAGE_ID)) or by_stem.get(_row_key(row))
            if row.get(schema.STATUS) != schema.STATUS_OK or not row.get(schema.MASK):
                counts["errors"] += 1
                continue
            if pair is None:
                counts["unmatched"] += 1
                continue
            _, gt = load_pair(pair, len(names), reduce_zero_label=reduce_zero_label)
            pred = lut[decode_mask(row[schema.MASK]["bytes"]).astype(np.int64)]
            if min_confidence > 0.0 and row.get(schema.CONFIDENCE):
                low = decode_mask(row[schema.CONFIDENCE]["bytes"]) / 255.0 < min_confidence
                pred[low] = len(names)  # unlabelled: counts as a miss
            conf += confusion_matrix(gt, pred, len(names))
            if calibration is not None:
                calibration.add(gt, pred, decode_mask(row[schema.CONFIDENCE]["bytes"]))
            counts["matched"] += 1
            seen_stems.add(pair.name)
    counts["missing"] = len(set(by_stem) - seen_stems)
    return conf, counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(
        prog="jobs/evaluate.py",
        description=__doc__.split("\n")[0],
        formatter_class=JobHelpFormatter,
        epilog="Exit codes: 0 done; 1 --calibrate found no threshold reaching "
        "--target-precision;\n2 configuration error (nothing was evaluated).",
    )
    p.add_argument("--checkpoint", help="model checkpoint (ours or official .pth), path or URI")
    p.add_argument("--predictions", help="labelling-job output folder (Parquet), path or URI")
    p.add_argument("--classes", required=True, help="class names file, mask id order")
    p.add_argument("--unseen", default="", help="comma list or file; default: the checkpoint's")
    p.add_argument(
        "--data",
        help="images/ + masks/ folder, Parquet with image and mask columns, a labelling run, or "
        "people's corrections (Label Studio JSON, CVAT Segmentation mask 1.1 zip/folder, COCO, "
        "mmseg folder); path or URI",
    )
    p.add_argument(
        "--data-format",
        default="auto",
        help="what --data holds: auto, labelstudio, cvat, coco, mmseg or pairs (the others)",
    )
    p.add_argument(
        "--data-classes",
        help="corrections: NAME or NAME=NEW entries (comma list or file) mapping the tool's "
        "classes, as jobs/export.py --classes; then matched to --classes by name",
    )
    p.add_argument(
        "--images-from",
        help="corrections: the labelling run or our export whose recorded image ids locate the "
        "images (default: --data itself when it is one)",
    )
    p.add_argument("--images", help="image folder (with --masks)")
    p.add_argument("--masks", help="ground-truth mask folder, same stems as the images")
    p.add_argument("--image-column", default="image", help="Parquet image column")
    p.add_argument("--mask-column", default="mask", help="Parquet mask column")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        help="labelling-run pixels (--data RUN or --predictions) below this confidence (0..1) "
        "are unlabelled",
    )
    p.add_argument(
        "--reduce-zero-label",
        action="store_true",
        help="id 0 is background: ignore it and shift the other ids down",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--limit", type=int, default=0, help="first N pairs only (0 = all)")
    p.add_argument("--json", help="also write the metrics as JSON here")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="with --predictions: sweep the unlabelled threshold (see docs/review.md)",
    )
    p.add_argument("--target-precision", type=float, default=0.9, help="pixel precision wanted")
    p.add_argument("--threshold-step", type=float, default=0.05, help="sweep step")
    p.add_argument(
        "--calibration-out",
        default="calibration",
        help="folder for calibration.json/.png and label-config.json (jobs/label.py --config)",
    )
    args = p.parse_args(argv)
    if not (args.checkpoint or args.predictions):
        p.error("give --checkpoint and/or --predictions")
    if args.calibrate and not args.predictions:
        p.error("--calibrate needs --predictions (a labelling run made with a low --min-score)")
    if not (0 < args.target_precision <= 1 and 0 < args.threshold_step <= 1):
        p.error("--target-precision and --threshold-step must be in (0, 1]")
    return args


def write_calibration(counts: CalibrationCounts, args: argparse.Namespace) -> dict:
    """Sweep, print the table, write the JSON, the plot and the ``--config`` file for label.py."""
    from pipeline.review.plots import threshold_sweep

    thresholds = np.round(np.arange(0.0, 1.0 + 1e-9, args.threshold_step), 6)
    result = sweep(counts, thresholds)
    pick = recommend(result, args.target_precision)
    chosen = None if pick is None else float(thresholds[pick])
    print(f"threshold sweep (* = recommended for precision >= {args.target_precision})")
    print(format_sweep(result, pick))
    out = Path(args.calibration_out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {"precision": result.precision, "coverage": result.coverage, "mIoU": result.miou}
    threshold_sweep(
        out / "calibration.png", thresholds, curves, target=args.target_precision, chosen=chosen
    )
    report = {"target_precision": args.target_precision, "recommended_min_score": chosen}
    report["sweep"] = result.rows()
    (out / "calibration.json").write_text(json.dumps(report, indent=2))
    if chosen is None:
        logger.error(
            "no threshold reaches precision %s; no label config written", args.target_precision
        )
    else:
        (out / "label-config.json").write_text(json.dumps({"min_score": chosen}, indent=2))
        print(f"recommended --min-score {chosen}: {out / 'label-config.json'}")
    return report


def _seen_mask(args: argparse.Namespace, names: list[str]) -> np.ndarray:
    unseen = {u.casefold() for u in read_unseen(args.unseen)}
    unknown = unseen - {n.casefold() for n in names}
    if unknown:
        raise ValueError(f"--unseen names {sorted(unknown)} are not classes")
    return np.array([n.casefold() not in unseen for n in names], dtype=bool)


def _prepare(args: argparse.Namespace) -> tuple[list[str], np.ndarray, list]:
    """Classes, seen mask and pairs; the checkpoint's header and the device checked first.

    Raises:
        FileNotFoundError / ValueError: with the flag to fix.
    """
    if args.limit < 0:
        raise ValueError(f"--limit must be >= 0, got {args.limit}")
    if args.checkpoint:
        import zegclip

        zegclip.check_device(args.device)
        zegclip.check_checkpoint(args.checkpoint)
    from jobs.corrections import job_pairs
    from pipeline.export.options import class_entries_from_flag

    names = read_classes(args.classes)
    pairs, _ = job_pairs(
        classes=args.classes,
        data=args.data,
        images=args.images,
        masks=args.masks,
        image_column=args.image_column,
        mask_column=args.mask_column,
        min_confidence=args.min_confidence,
        data_format=args.data_format,
        class_entries=class_entries_from_flag(args.data_classes),
        images_from=args.images_from,
    )
    pairs = pairs[: args.limit or None]
    return names, _seen_mask(args, names), pairs


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the tables, returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        names, seen, pairs = _prepare(args)
    except (FileNotFoundError, ValueError) as e:  # PairError, CheckpointError: ValueErrors
        logger.error("configuration error: %s", e)
        return 2
    report: dict = {}
    if args.checkpoint:
        conf = evaluate_checkpoint(
            args.checkpoint,
            pairs,
            names,
            seen,
            reduce_zero_label=args.reduce_zero_label,
            device=args.device,
        )
        metrics = compute_metrics(conf, seen)
        print(
            f"checkpoint {args.checkpoint} on {len(pairs)} images\n"
            f"{format_table(metrics, names, seen)}"
        )
        report["checkpoint"] = metrics.as_dict(names)
    if args.predictions:
        calibration = CalibrationCounts(len(names)) if args.calibrate else None
        conf, counts = evaluate_predictions(
            args.predictions,
            pairs,
            names,
            reduce_zero_label=args.reduce_zero_label,
            calibration=calibration,
            min_confidence=args.min_confidence,
        )
        counts["pixels"] = pixel_outcomes(conf)  # unlabelled apart from wrong
        metrics = compute_metrics(conf, seen)
        print(f"predictions {args.predictions}: {counts}\n{format_table(metrics, names, seen)}")
        report["predictions"] = {**metrics.as_dict(names), "counts": counts}
        if calibration is not None:
            report["calibration"] = write_calibration(calibration, args)
    if args.json:
        with fsspec.open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    missed = report.get("calibration", {}).get("recommended_min_score", 0) is None
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
