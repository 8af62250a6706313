"""CPU cost of ZegCLIP inference against the bare open_clip ViT-B/16 backbone, in one process.

Everything timed here runs in this process on the same random-weight ViT-B/16 architecture
(QuickGELU, positional grid at 512) and the same inputs, interleaved repeat by repeat:

* ``backbone``: open_clip's own ``VisionTransformer.forward`` on one 512x512 crop (the floor any
  ZegCLIP implementation pays; PyTorch's MHA fast path off, as in our predictor on CPU);
* ``ours, crop``: ``ZegCLIP.crop_scores`` on the same crop (deep prompts + decoder + upsample);
* ``ours, image``: ``SegPredictor.predict`` on one 375x500 photo (resize, 2 sliding windows,
  stitch, resize back, sigmoid, argmax).

Configs: VOC (10 prompt tokens, 20 classes) and COCO-Stuff (100 tokens, 171 classes).

The official implementation is NOT run here (it needs mmseg/mmcv). Its cost relative to the same
bare backbone is quoted as an external reference from ``../shared/reference/perf-anchors.md``
(measured once by whoever wrote that document, on this kind of machine, separate processes):
official crop / backbone and image / backbone ratios. Compare those ratios with ours, never the
seconds, which drift with the machine's load.

    python bench/bench_zegclip.py [--threads 2] [--repeats 5] [--configs voc,coco]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from importlib.resources import files

import numpy as np
import torch

import zegclip
from zegclip import ClipSpec, ZegCLIPConfig
from zegclip.clip import build_clip

CONFIGS = {"voc": (10, 20), "coco": (100, 171)}
# External reference (perf-anchors.md, not measured by this script): the official code's medians
# in seconds, and open_clip's bare ViT-B/16 visual at 512 (MHA fast path off) in the same document.
REFERENCE_BACKBONE_S = 0.76
REFERENCE_OFFICIAL_S = {
    ("voc", "crop"): 0.86,
    ("voc", "image"): 1.70,
    ("coco", "crop"): 1.38,
    ("coco", "image"): 3.50,
}
VIT_B16 = ClipSpec(model="ViT-B-16", pretrained=None, quick_gelu=True)


def photo() -> np.ndarray:
    """(375, 500, 3) uint8 RGB: scikit-image's bundled coffee photo (400x600) resized."""
    import cv2

    data = (files("skimage") / "data" / "coffee.png").read_bytes()
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (500, 375), interpolation=cv2.INTER_AREA)


def timed(fn) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_config(name: str, repeats: int) -> dict[str, float]:
    """Median seconds of backbone, our crop and our image, interleaved, for one config."""
    tokens, classes = CONFIGS[name]
    torch.manual_seed(0)
    model = zegclip.build_zegclip(ZegCLIPConfig(clip=VIT_B16, num_prompt_tokens=tokens))
    model.drop_text_tower()
    backbone = build_clip(VIT_B16, load_weights=False).visual
    emb = torch.nn.functional.normalize(torch.randn(classes, 512), dim=-1)
    crop = torch.randn(1, 3, 512, 512)
    image = photo()
    predictor = zegclip.SegPredictor(model, emb.numpy(), np.arange(classes), classes)

    @torch.inference_mode()
    def run_backbone():
        backbone(crop)

    @torch.inference_mode()
    def run_crop():
        model.crop_scores(crop, emb)

    levels = {
        "backbone": run_backbone,
        "crop": run_crop,
        "image": lambda: predictor.predict([image]),
    }
    times: dict[str, list[float]] = {k: [] for k in levels}
    torch.backends.mha.set_fastpath_enabled(False)
    for fn in levels.values():
        fn()  # warm-up
    for _ in range(repeats):
        for level, fn in levels.items():
            times[level].append(timed(fn))
    return {level: statistics.median(t) for level, t in times.items()}


def print_rows(name: str, medians: dict[str, float]) -> None:
    """Measured seconds and ratios; the official ratio is the external reference."""
    base = medians["backbone"]
    print(f"| {name} | backbone, 512x512 crop | {base:.2f} | 1.00 | 1.00 (reference) |")
    for level, label in (("crop", "512x512 crop"), ("image", "375x500 image")):
        official = REFERENCE_OFFICIAL_S[(name, level)] / REFERENCE_BACKBONE_S
        print(
            f"| {name} | ours, {label} | {medians[level]:.2f} | {medians[level] / base:.2f} "
            f"| {official:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", default="voc,coco")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, float32, random weights"
    )
    print("medians of", args.repeats, "interleaved repeats; official ratio = external reference")
    print("(perf-anchors.md: official seconds / bare backbone seconds, not measured here)\n")
    print("| config | what | seconds (measured) | x backbone (measured) | official x backbone |")
    print("|---|---|---|---|---|")
    for name in args.configs.split(","):
        print_rows(name, bench_config(name, args.repeats))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
