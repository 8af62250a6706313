"""Trainable parameters and CPU inference time of ZegCLIP vs ZegOT on ViT-B/16 (random weights).

Usage: ``python bench/bench_zegot.py [--classes 20] [--repeats 3] [--threads 2]``

Both models are built with ``ClipSpec(model="ViT-B-16", pretrained=None)`` (random CLIP weights:
parameter counts and compute are those of the real model, scores are meaningless). Time is the
median wall time of ``crop_scores`` on one 512 x 512 crop (a whole 512 x 512 image is one
window), after one warm-up run, with the class embeddings precomputed as labelling jobs do;
runs of the two models are interleaved so machine load affects both alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zegclip import ClipSpec, ZegCLIPConfig, build_zegclip, count_trainable  # noqa: E402
from zegclip.models.zegot.config import ZegOTConfig  # noqa: E402
from zegclip.models.zegot.model import build_zegot  # noqa: E402

VOC_NAMES = [f"class {i}" for i in range(200)]


def seconds_per_image(
    models: dict[str, torch.nn.Module], num_classes: int, repeats: int
) -> dict[str, float]:
    """Median seconds of one 512 x 512 ``crop_scores`` call per model, runs interleaved.

    Interleaving keeps the comparison fair on a machine shared with other work.
    """
    image = torch.randn(1, 3, 512, 512)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        embs = {n: m.encode_vocabulary(VOC_NAMES[:num_classes]) for n, m in models.items()}
        for name, model in models.items():
            model.crop_scores(image, embs[name], None)  # warm-up
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model.crop_scores(image, embs[name], None)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20, help="vocabulary size (VOC: 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = ClipSpec(model="ViT-B-16", pretrained=None)
    models = {
        "ZegCLIP": build_zegclip(ZegCLIPConfig(clip=clip)),
        "ZegOT": build_zegot(ZegOTConfig(clip=clip)),
    }
    secs = seconds_per_image(models, args.classes, args.repeats)
    rows = [(name, count_trainable(m), secs[name]) for name, m in models.items()]
    base = rows[0][1]
    print(
        f"ViT-B/16, 512x512, {args.classes} classes, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| model | trainable params | vs ZegCLIP | CPU s/image |\n|---|---|---|---|")
    for name, params, secs in rows:
        print(f"| {name} | {params:,} | x{base / params:.1f} lighter | {secs:.2f} |")


if __name__ == "__main__":
    main()
