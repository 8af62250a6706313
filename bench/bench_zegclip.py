"""CPU cost of ZegCLIP inference (ViT-B/16, random weights) against the official anchors.

Prints a table of median seconds for: one 512x512 crop (backbone + head) and one 375x500 image
through ``SegPredictor`` (resize, 2 slide windows, stitch, resize back, argmax), for the VOC
config (10 prompt tokens, 20 classes) and the COCO-Stuff config (100 tokens, 171 classes).
Official numbers measured on this machine are in ../shared/reference/perf-anchors.md.

    python bench/bench_zegclip.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

import zegclip
from zegclip import ClipSpec, ZegCLIPConfig

ANCHOR_GEMM_GFLOPS = 415.0  # fp32 GEMM ceiling when the anchors were measured (perf-anchors.md)
OFFICIAL_SECONDS = {
    ("voc", "crop"): 0.86,
    ("voc", "image"): 1.70,
    ("coco", "crop"): 1.38,
    ("coco", "image"): 3.50,
}
CONFIGS = {"voc": (10, 20), "coco": (100, 171)}


def gemm_gflops(threads: int) -> float:
    """Current fp32 GEMM throughput: this shared machine's speed drifts, so the table also shows
    our time rescaled to the machine speed at which the official anchors were taken."""
    a, w = torch.randn(1035, 768), torch.randn(3072, 768)
    seconds = _median_seconds(lambda: torch.nn.functional.linear(a, w), 10)
    return 2 * 1035 * 768 * 3072 / seconds / 1e9


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_config(name: str, repeats: int) -> list[tuple[str, str, float]]:
    """Median seconds of one crop and one 375x500 image for a named config."""
    tokens, classes = CONFIGS[name]
    torch.manual_seed(0)
    model = zegclip.build_zegclip(
        ZegCLIPConfig(
            clip=ClipSpec(model="ViT-B-16", pretrained=None, quick_gelu=True),
            num_prompt_tokens=tokens,
        )
    )
    model.drop_text_tower()
    emb = torch.nn.functional.normalize(torch.randn(classes, 512), dim=-1)
    crop = torch.randn(1, 3, 512, 512)
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    predictor = zegclip.SegPredictor(model, emb.numpy(), np.arange(classes), classes)

    def run_crop():
        with torch.inference_mode():
            model.crop_scores(crop, emb)

    rows = [(name, "crop", _median_seconds(run_crop, repeats))]
    rows.append((name, "image", _median_seconds(lambda: predictor.predict([image]), repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", default="voc,coco")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed = gemm_gflops(args.threads) / ANCHOR_GEMM_GFLOPS
    print(f"GEMM now {speed * ANCHOR_GEMM_GFLOPS:.0f} GFLOP/s = {speed:.2f} x the anchors' machine")
    print("| config | input | ours (s) | ours at anchor speed (s) | official anchor (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        for config, what, seconds in bench_config(name, args.repeats):
            anchor = OFFICIAL_SECONDS[(config, what)]
            label = "512x512 crop" if what == "crop" else "375x500 image"
            scaled = seconds * speed
            print(
                f"| {config} | {label} | {seconds:.2f} | {scaled:.2f} | {anchor:.2f} "
                f"| {scaled / anchor:.2f} |"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB, torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
