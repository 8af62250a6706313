"""PNG settings for label and confidence maps: encoded size vs CPU time on one core.

Label maps: CamVid ground-truth annotations (480x360, blocky like real predictions).
Confidence maps: a 23x30 patch-level field of scores upsampled bilinearly to 360x480 and
quantised to uint8, the shape of a real model's confidence (patch 16 on a 512-short-side input).

Usage: ``python bench/bench_png.py [--images 20]``
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ANNOTATIONS = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid" / "testannot"
)


def pil_png(level: int):
    def encode(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    return encode


def cv2_png(level: int, strategy: int):
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
    return lambda array: cv2.imencode(".png", array, params)[1].tobytes()


ENCODERS = {
    "PIL level 1": pil_png(1),
    "PIL level 3 (before)": pil_png(3),
    "PIL level 6 (PIL default)": pil_png(6),
    "cv2 level 1, RLE": cv2_png(1, cv2.IMWRITE_PNG_STRATEGY_RLE),
    "cv2 level 3, RLE": cv2_png(3, cv2.IMWRITE_PNG_STRATEGY_RLE),
    "cv2 level 1, filtered": cv2_png(1, cv2.IMWRITE_PNG_STRATEGY_FILTERED),
}


def maps(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    paths = sorted(ANNOTATIONS.glob("*.png"))[:n]
    if not paths:
        sys.exit(f"no annotations under {ANNOTATIONS}")
    labels = [np.asarray(Image.open(p)).astype(np.uint8) for p in paths]
    rng = np.random.default_rng(0)
    conf = []
    for label in labels:
        field = rng.random((23, 30)).astype(np.float32)
        up = cv2.resize(field, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
        conf.append(np.rint(up * 255).astype(np.uint8))
    return labels, conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    labels, conf = maps(args.images)
    print("| encoder | label map ms | label KiB | confidence ms | confidence KiB |")
    print("|---|---|---|---|---|")
    for name, encode in ENCODERS.items():
        row = [name]
        for arrays in (labels, conf):
            start = time.perf_counter()
            sizes = [len(encode(a)) for a in arrays]
            row += [f"{1000 * (time.perf_counter() - start) / len(arrays):.2f}"]
            row += [f"{np.mean(sizes) / 1024:.1f}"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
