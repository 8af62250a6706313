"""ATen ops per image, host round-trips per batch and images/s of ``SegPredictor.predict`` at
batch 1 and batch 32 (tiny random CLIP, CPU), as the pipeline calls it (prepared images +
original sizes), 64 crops per forward as on a GPU.

    python bench/bench_finish.py            # 480x360 CamVid photos from ../shared/data
    python bench/bench_finish.py --repeats 5

Ops and round-trips are counted with ``bench/dispatch_count.py`` (what it counts is documented
there); images/s is the best of ``--repeats`` timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from dispatch_count import OpCounter  # noqa: E402
from tiny_models import DATA_ROOT, TINY_CLIP  # noqa: E402

import zegclip  # noqa: E402
from zegclip.models.trainfree.model import build_frozen_clip  # noqa: E402
from zegclip.predictor import SegPredictor  # noqa: E402

VOC = "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person"
NAMES = VOC.split() + ["potted plant", "sheep", "sofa", "train", "tv monitor"]
MAX_CROPS = 64


def photos(n: int) -> list[np.ndarray]:
    """``n`` CamVid test photos (480x360 RGB), cycled when there are fewer."""
    paths = sorted((DATA_ROOT / "camvid" / "test").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no CamVid photos under {DATA_ROOT / 'camvid' / 'test'}")
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths[:n]]
    return [images[i % len(images)] for i in range(n)]


def predictor(mode: str, **kwargs) -> SegPredictor:
    """Tiny ZegCLIP (15 seen VOC classes, as an inductive checkpoint) or tiny NACLIP."""
    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model=TINY_CLIP, pretrained=None)
    if mode == "zegclip":
        config = zegclip.ZegCLIPConfig(
            clip=clip, num_prompt_tokens=4, decoder_ffn_dim=128, seen_classes=tuple(NAMES[:15])
        )
        model = zegclip.build_zegclip(config)
    else:
        model = build_frozen_clip(clip, method="naclip")
    with torch.inference_mode():
        emb = model.encode_vocabulary(NAMES, templates=["a photo of a {}."])
    model.drop_text_tower()
    return SegPredictor(
        model,
        emb,
        np.arange(len(NAMES)),
        len(NAMES),
        seen=model.seen_mask(NAMES),
        min_score=model.default_min_score,
        max_crops=MAX_CROPS,
        **kwargs,
    )


def measure(pred: SegPredictor, images: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Ops/image, round-trips/batch (with their kinds) and images/s of one ``predict`` call."""
    prepared = [pred.scorer.prepare(img) for img in images]
    sizes = [img.shape[:2] for img in images]
    pred.predict(prepared, sizes)  # warm-up
    with OpCounter() as counter:
        pred.predict(prepared, sizes)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        pred.predict(prepared, sizes)
        best = min(best, time.perf_counter() - start)
    return {
        "ops/image": counter.total / len(images),
        "round-trips/batch": counter.sync_total,
        "kinds": dict(counter.syncs),
        "images/s": len(images) / best if repeats else float("nan"),  # --repeats 0: counts only
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modes", nargs="+", default=["zegclip", "naclip"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        "| mode | batch | ATen ops/image | round-trips/batch | images/s (CPU) | round-trip kinds |"
    )
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        pred = predictor(mode)
        for batch in args.batches:
            r = measure(pred, photos(batch), args.repeats)
            print(
                f"| {mode} | {batch} | {r['ops/image']:.0f} | {r['round-trips/batch']} | "
                f"{r['images/s']:.2f} | {r['kinds']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
