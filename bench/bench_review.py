"""Time of the review report (``pipeline.review.build_report``) for a run of N images.

Builds a synthetic labelling run on local disk: N small JPEGs (320x240, smooth colour fields
plus noise) labelled by the colour-dominance rule of the test predictor (3 classes, dark pixels
unlabelled), written with the pipeline's own writer in shards of 256 with ``class_stats.parquet``,
``run.json`` and 1% error rows. Then times the report for each ``--samples`` value; the sample
bounds the overlays drawn, so its time should barely depend on N.

Usage: ``python bench/bench_review.py [--images 1000] [--samples 64 1000] [--workers 2]``
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import encode, schema, write  # noqa: E402
from pipeline.review import build_report  # noqa: E402

CLASSES = ("red", "green", "blue")
SHARD = 256
W, H = 320, 240


def _image(rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: three random linear colour ramps plus noise."""
    yy, xx = np.mgrid[0:H, 0:W] / max(W, H)
    channels = [
        rng.uniform(0, 255) + rng.uniform(-200, 200) * (xx * a + yy * (1 - a))
        for a in rng.uniform(0, 1, 3)
    ]
    rgb = np.stack(channels, axis=2) + rng.normal(0, 12, (H, W, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _row(i: int, folder: Path, rng: np.random.Generator) -> dict:
    name = f"img_{i:05d}.jpg"
    uri = str(folder / name)
    if i % 100 == 99:  # 1% error rows
        return {
            schema.IMAGE_ID: name,
            schema.SOURCE_URI: uri,
            schema.SHARD_ID: "",
            schema.STATUS: "error",
            schema.ERROR: "OSError: synthetic decode failure",
        }
    rgb = _image(rng)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    (folder / name).write_bytes(buf.getvalue())
    f = rgb.astype(np.float32)
    labels = f.argmax(axis=2).astype(np.uint8)
    labels[f.max(axis=2) < 40] = 255
    conf = f.max(axis=2) / (f.sum(axis=2) + 1e-6)
    counts = np.bincount(labels[labels < 3], minlength=3)
    present = np.flatnonzero(counts)
    means = [float(conf[labels == c].mean()) for c in present]
    return {
        schema.IMAGE_ID: name,
        schema.SOURCE_URI: uri,
        schema.SHARD_ID: "",
        schema.WIDTH: W,
        schema.HEIGHT: H,
        schema.MASK: {"bytes": encode.encode_png(labels), "path": None},
        schema.CONFIDENCE: {
            "bytes": encode.encode_png(encode.quantise_confidence(conf)),
            "path": None,
        },
        schema.CLASS_PIXEL_COUNTS: counts.tolist(),
        schema.PRESENT_CLASSES: present.tolist(),
        schema.PRESENT_MEAN_CONFIDENCE: means,
        schema.STATUS: "ok",
        schema.ERROR: None,
    }


def make_run(root: Path, n: int) -> str:
    """Write N images under ``root/in`` and their synthetic run under ``root/run``."""
    rng = np.random.default_rng(0)
    (root / "in").mkdir(parents=True)
    out = str(root / "run")
    out_schema = schema.output_schema(CLASSES, {"name": "synthetic"}, "bench")
    markers = []
    for s, start in enumerate(range(0, n, SHARD)):
        rows = [_row(i, root / "in", rng) for i in range(start, min(n, start + SHARD))]
        for r in rows:
            r[schema.SHARD_ID] = f"shard-{s:04d}"
        table = pa.Table.from_pylist(rows, schema=out_schema)
        marker = {"rows": table.num_rows, "class_stats": write.part_class_stats(table, 3)}
        marker["errors"] = sum(r[schema.STATUS] == "error" for r in rows)
        write.write_part_files(out, f"shard-{s:04d}", table, marker)
        markers.append(marker)
    write.write_class_stats(out, write.class_stats_table(CLASSES, markers))
    write.write_run_file(
        out,
        {
            "run_id": "bench",
            "vocabulary": list(CLASSES),
            "model": {"name": "synthetic"},
            "output_totals": {"images": n, "shards": len(markers)},
        },
    )
    return out


def main() -> None:
    """Build the run, time the report per sample size, print a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--samples", type=int, nargs="+", default=[64, 1000])
    p.add_argument("--workers", type=int, default=os.cpu_count())
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        t0 = time.perf_counter()
        run = make_run(Path(tmp), args.images)
        print(f"synthetic run: {args.images} images of {W}x{H} in {time.perf_counter() - t0:.1f} s")
        print(f"{'sample':>6}  {'workers':>7}  {'seconds':>7}")
        for sample in args.samples:
            result = build_report(
                run, f"{tmp}/report-{sample}", sample=sample, workers=args.workers
            )
            print(f"{result.sampled:>6}  {args.workers:>7}  {result.seconds:7.2f}")


if __name__ == "__main__":
    main()
