"""One plumbing run for ``bench_pipeline.py --plumbing``: a no-op predictor, driver peak RSS.

Runs ``pipeline.run.run_label_job`` from whatever ``pipeline`` is first on ``PYTHONPATH`` (this
tree, or an older checkout for the before/after comparison) on a folder of images, with a
predictor that returns a constant label map at once, so only read + decode + encode + write
(and the driver's part in it) is measured. Prints one JSON line.

Usage: ``PYTHONPATH=TREE python bench/plumbing_run.py INPUT_DIR OUTPUT_DIR``
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

CLASSES = ("a", "b", "c")


class ConstantPrediction:
    """``label_map`` (H, W) uint8 all 0, ``confidence`` (H, W) float32 all 1, counts (3,)."""

    def __init__(self, height: int, width: int) -> None:
        self.label_map = np.zeros((height, width), dtype=np.uint8)
        self.confidence = np.ones((height, width), dtype=np.float32)
        self.class_counts = np.array([height * width, 0, 0], dtype=np.int64)


class NoOpPredictor:
    """Returns a constant label map per image without looking at it."""

    def __init__(self, embeddings: np.ndarray) -> None:
        del embeddings

    def predict(self, images):
        return [ConstantPrediction(*image.shape[:2]) for image in images]


def encode_vocabulary() -> np.ndarray:
    """(3, 8) float32 placeholder embedding."""
    return np.eye(len(CLASSES), 8, dtype=np.float32)


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; unlike ``ru_maxrss`` it is not inherited
    from the parent across ``exec``). Linux only."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    """Run once; print ``{"images", "seconds", "images_per_s", "driver_peak_rss_mb"}``."""
    from ray import cloudpickle

    from pipeline.config import LabelJobConfig
    from pipeline.run import init_ray, run_label_job

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    init_ray(include_dashboard=False)
    cfg = LabelJobConfig(
        input=sys.argv[1],
        output=sys.argv[2],
        vocab="bench",
        class_names=CLASSES,
        batch_size=16,
        concurrency="1",
        num_gpus_per_actor=0.0,
        shard_size=256,
        max_error_rate=0.0,
    )
    start = time.perf_counter()
    summary = run_label_job(cfg, NoOpPredictor, encode_vocabulary, {"name": "no-op"})
    seconds = time.perf_counter() - start
    result = {
        "images": summary.images,
        "seconds": seconds,
        "images_per_s": summary.images_per_s,
        "driver_peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
