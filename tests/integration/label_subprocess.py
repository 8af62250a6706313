"""Run ``pipeline.run.run_label_job`` in a fresh process with its own local Ray.

For tests that need a driver they can kill or an environment (S3 endpoint) of their own. The
model is the colour-threshold predictor of ``tests/fakes.py``; ``--slow-s`` makes each batch
take at least that long, so a test can interrupt a run part-way; ``--pause-at plan,finish``
sleeps ``--pause-s`` before planning / before the final summary, printing ``PAUSED <step>
<unix time>`` and ``RESUMED <step> <unix time>`` lines. Prints the summary as JSON; exit codes
as ``jobs/label.py`` (75 output busy, 4 lease lost), with ``ATTEMPT <unix time>`` printed when
the run tries to take the lease.

Usage: ``python tests/integration/label_subprocess.py INPUT OUTPUT [--retry-errors]
[--shard-size N] [--batch-size N] [--slow-s S] [--lease-ttl S] [--if-busy exit|wait]
[--wait-timeout S] [--pause-at STEPS] [--pause-s S]``
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

from pipeline import lease, run  # noqa: E402
from pipeline.config import LabelJobConfig  # noqa: E402
from pipeline.run import run_label_job, shutdown_on_signals  # noqa: E402

MODEL = {"name": "colour-threshold", "version": 1}


class SlowColourPredictor(fakes.ColourPredictor):
    """The colour predictor, taking at least ``slow_s`` seconds per batch."""

    slow_s = 0.0

    def predict(self, images):
        time.sleep(self.slow_s)
        return super().predict(images)


def _pausing(step: str, fn, pause_s: float):
    """``fn`` preceded by a printed, timed pause."""

    def wrapper(*args, **kwargs):
        print(f"PAUSED {step} {time.time()}", flush=True)
        time.sleep(pause_s)
        print(f"RESUMED {step} {time.time()}", flush=True)
        return fn(*args, **kwargs)

    return wrapper


def main() -> int:
    """Parse arguments, run the job, print the summary JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--retry-errors", action="store_true")
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--slow-s", type=float, default=0.0)
    parser.add_argument("--lease-ttl", type=float, default=300.0)
    parser.add_argument("--if-busy", default="exit")
    parser.add_argument("--wait-timeout", type=float, default=0.0)
    parser.add_argument("--pause-at", default="")
    parser.add_argument("--pause-s", type=float, default=0.0)
    parser.add_argument("--start-when", default=None, help="wait until this file exists")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(levelname)s %(message)s")
    while args.start_when and not Path(args.start_when).exists():
        time.sleep(0.02)
    if "plan" in args.pause_at:
        run.plan_job = _pausing("plan", run.plan_job, args.pause_s)
    if "finish" in args.pause_at:
        run._finish = _pausing("finish", run._finish, args.pause_s)
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
        lease_ttl=args.lease_ttl,
        if_busy=args.if_busy,
        wait_timeout=args.wait_timeout,
    )
    print(f"ATTEMPT {time.time()}", flush=True)
    try:
        with shutdown_on_signals():  # Ray starts after the lease is taken and the plan made
            summary = run_label_job(cfg, SlowColourPredictor, fakes.CountingEncoder(), MODEL)
    except lease.OutputBusy as e:
        logging.warning("%s", e)
        return lease.EXIT_BUSY
    except lease.LeaseLost as e:
        logging.error("lease lost: %s", e)
        return lease.EXIT_LEASE_LOST
    print(f"RUN_ID {summary.run_id}")
    print(json.dumps({"images": summary.images, "errors": summary.errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
