"""Run ``pipeline.run.run_label_job`` in a fresh process with its own local Ray.

For tests that need a driver they can kill or an environment (S3 endpoint) of their own. The
model is the colour-threshold predictor of ``tests/fakes.py``; ``--slow-s`` makes each batch
take at least that long, so a test can interrupt a run part-way. Prints the summary as JSON.

Usage: ``python tests/integration/label_subprocess.py INPUT OUTPUT [--retry-errors]
[--shard-size N] [--batch-size N] [--slow-s S]``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import fakes  # noqa: E402
from ray import cloudpickle  # noqa: E402

from pipeline.config import LabelJobConfig  # noqa: E402
from pipeline.run import init_ray, run_label_job, shutdown_on_signals  # noqa: E402

MODEL = {"name": "colour-threshold", "version": 1}


class SlowColourPredictor(fakes.ColourPredictor):
    """The colour predictor, taking at least ``slow_s`` seconds per batch."""

    slow_s = 0.0

    def predict(self, images):
        time.sleep(self.slow_s)
        return super().predict(images)


def main() -> None:
    """Parse arguments, run the job, print the summary JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--retry-errors", action="store_true")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--slow-s", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    SlowColourPredictor.slow_s = args.slow_s
    cloudpickle.register_pickle_by_value(fakes)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = LabelJobConfig(
        input=args.input,
        output=args.output,
        vocab="colours.txt",
        class_names=fakes.COLOUR_CLASSES,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        num_gpus_per_actor=0,
        max_error_rate=1.0,
        retry_errors=args.retry_errors,
    )
    with shutdown_on_signals():
        init_ray(num_cpus=2)
        summary = run_label_job(cfg, SlowColourPredictor, fakes.CountingEncoder(), MODEL)
    print(json.dumps({"images": summary.images, "errors": summary.errors}))


if __name__ == "__main__":
    main()
