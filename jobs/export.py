"""Export a labelling run's pre-labels to formats training code and annotation tools read.

Usage::

    python jobs/export.py s3://bucket/label-run --format mmseg --out s3://bucket/mmseg/
    python jobs/export.py runs/camvid --format coco --out exports/coco --split 0.1 \\
        --min-confidence 0.5 --classes "car,truck=car,road"

Formats: mmseg (img_dir/ + ann_dir/ index PNGs), hf (Hugging Face Parquet shards), coco (COCO
JSON with one RLE per class per image), cvat (Segmentation mask 1.1), labelstudio (tasks with
brush pre-annotations), fiftyone (ImageSegmentationDirectory). Image file names are never taken
from the input: each image id maps to a safe, collision-free name, listed in image_names.jsonl.
Re-running skips shards already exported. See docs/export.md.

One export at a time per ``--out`` (lease ``<out>/_lease.json``, as for jobs/label.py): a second
export into the same folder while one runs does nothing and exits 75.

Exit codes: 0 done; 2 configuration error (nothing was written); 75 skipped: another live
export holds ``--out`` (``--if-busy wait`` waits for it instead).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python jobs/export.py` puts jobs/, not the repo, on the path
    sys.path.insert(0, str(REPO_ROOT))

from jobs.flags import JobHelpFormatter  # noqa: E402
from pipeline import lease as leases  # noqa: E402
from pipeline.export import options, runner  # noqa: E402

logger = logging.getLogger("jobs.export")

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """Flags of the export job."""
    p = argparse.ArgumentParser(
        prog="jobs/export.py", description=__doc__, formatter_class=JobHelpFormatter
    )
    p.add_argument("run", metavar="RUN", help="output folder/URI of a labelling run")
    p.add_argument(
        "--format", required=True, choices=sorted(runner.FORMATS), help="output format (see above)"
    )
    p.add_argument("--out", required=True, help="export folder or URI (created; not inside RUN)")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        help="pixels whose confidence is below this (0..1) become ignore (255)",
    )
    p.add_argument(
        "--min-labelled",
        type=float,
        default=0.0,
        help="skip images whose labelled fraction (0..1, after the other options) is below this",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="comma list or file of NAME or NAME=NEW entries: keep, rename, merge (same NEW); "
        "unlisted classes become ignore. Default: the run's vocabulary",
    )
    p.add_argument(
        "--split",
        type=float,
        default=0.0,
        metavar="VAL_FRACTION",
        help="fraction of images (stable hash of the image id) put in the val split",
    )
    p.add_argument(
        "--image-format",
        choices=options.IMAGE_FORMATS,
        default=options.IMAGE_AUTO,
        help="auto: keep each image's bytes (mmseg: non-PNG images become PNG when the run mixes "
        "formats, as mmseg reads one suffix); png: write every image as PNG (lossless)",
    )
    p.add_argument("--ray", action="store_true", help="run one Ray task per shard")
    p.add_argument("--overwrite", action="store_true", help="delete --out's contents first")
    p.add_argument(
        "--if-busy",
        choices=leases.IF_BUSY_CHOICES,
        default="exit",
        help="another export writes --out: exit (code 75) or wait for it (up to an hour)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    opts = options.ExportOptions(
        min_confidence=args.min_confidence,
        min_labelled=args.min_labelled,
        classes=options.class_entries_from_flag(args.classes),
        val_fraction=args.split,
        image_format=args.image_format,
    )
    try:  # before the lease: a configuration error leaves no folder or lease file behind
        runner.check_export(args.run, args.format, args.out, opts)
    except (options.OptionError, FileNotFoundError) as e:
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    try:
        with leases.hold(args.out, job="export", if_busy=args.if_busy):
            return _export(args, opts)
    except leases.OutputBusy as e:
        logger.warning("%s", e)
        return leases.EXIT_BUSY


def _export(args: argparse.Namespace, opts: options.ExportOptions) -> int:
    """Plan (``--overwrite`` deletes here) and run the export; the caller holds the lease."""
    try:
        plan = runner.plan_export(args.run, args.format, args.out, opts, overwrite=args.overwrite)
    except (options.OptionError, FileNotFoundError) as e:
        logger.error("configuration error: %s", e)
        return EXIT_CONFIG
    if args.ray:
        from pipeline.run import init_ray

        init_ray()
    summary = runner.run_export(plan, use_ray=args.ray)
    print(
        f"exported {summary.images} images ({summary.skipped} skipped) from "
        f"{summary.shards_written} shards ({summary.shards_skipped} already done) "
        f"to {args.out} in {summary.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
