"""CPU seconds per image: training-free frozen-CLIP variants vs ZegCLIP, ViT-B/16, random weights.

One 512x512 RGB image (a VOC sample photo, resized) goes through ``SegPredictor`` with each model's
own preprocessing and sliding windows, 21 vocabulary rows. Weights are random (speed only).

Usage: ``python bench/bench_trainfree.py [--threads 2] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import zegclip
from zegclip import ClipSpec, SegPredictor, ZegCLIPConfig
from zegclip.models.trainfree.model import build_frozen_clip

PHOTO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "voc2012-val-sample"
NUM_ROWS = 21
VIT_B16 = ClipSpec(model="ViT-B-16", pretrained=None)


def load_image() -> np.ndarray:
    """(512, 512, 3) uint8 RGB: a VOC sample photo when present, else seeded noise."""
    paths = sorted((PHOTO / "images").glob("*.png"))
    if not paths:
        return np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    image = cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(image, (512, 512), interpolation=cv2.INTER_LINEAR))


def models() -> dict[str, torch.nn.Module]:
    """Label -> scorer, all ViT-B/16 with random weights, text towers dropped."""
    out = {}
    for method in ("maskclip", "sclip", "clearclip", "naclip"):
        out[method] = build_frozen_clip(VIT_B16, method=method, with_text=False)
    out["naclip (PAMR off)"] = build_frozen_clip(
        VIT_B16, method="naclip", with_text=False, pamr=False
    )
    out["zegclip"] = zegclip.build_zegclip(ZegCLIPConfig(clip=VIT_B16), with_text=False)
    return out


def seconds_per_image(predictor: SegPredictor, image: np.ndarray, repeats: int) -> float:
    """Median wall time of ``repeats`` predictions after one warm-up."""
    predictor.predict([image])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict([image])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = load_image()
    rows = []
    for name, model in models().items():
        emb = torch.nn.functional.normalize(torch.randn(NUM_ROWS, model_dim(model)), dim=-1)
        predictor = SegPredictor(model, emb, np.arange(NUM_ROWS), NUM_ROWS)
        size = tuple(model.preprocess(image).shape[-2:])
        crop = model.windows(*size)[0]
        rows.append(
            (
                name,
                size,
                len(model.windows(*size)),
                crop[1] - crop[0],
                seconds_per_image(predictor, image, args.repeats),
            )
        )
    print(f"torch {torch.__version__}, {args.threads} threads, 512x512 image, {NUM_ROWS} rows")
    print(f"{'model':<20} {'input':>10} {'windows':>8} {'crop':>5} {'s/image':>8}")
    for name, size, windows, crop, secs in rows:
        print(f"{name:<20} {size[0]:>4}x{size[1]:<5} {windows:>8} {crop:>5} {secs:>8.2f}")


def model_dim(model: torch.nn.Module) -> int:
    """D of the joint embedding space (512 for ViT-B/16)."""
    visual = model.visual if hasattr(model, "visual") else model.backbone.visual
    return visual.proj.shape[1]


if __name__ == "__main__":
    main()
