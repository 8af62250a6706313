"""Peak memory of one prediction: 20 and 171 classes, a 480x360 and a 12-megapixel photo, the
class reduction chunked (default ``max_elements``) or not, ZegCLIP and training-free NACLIP.

Every case runs in a fresh subprocess (so no case inherits another's peak), on the pipeline's
``sizes`` path: the photo is resized to the model's short side first (as the decode tasks do),
then ``SegPredictor.predict([prepared], [(H, W)])`` runs once. Reported per case:

* CPU: the process's resident set before ``predict`` (model, predictor and photo ready) and its
  peak during ``predict`` (``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
  Linux). "added" = peak - before: what one prediction costs on top of the loaded model.
* GPU (``--device cuda``): ``torch.cuda.max_memory_allocated`` during ``predict`` and
  ``memory_allocated`` before it.

Models: ViT-B/16 with random weights (memory does not depend on the values); ZegCLIP with the
VOC config (10 prompt tokens) for 20 classes and the COCO-Stuff config (100 tokens) for 171;
NACLIP with PAMR, as published. Photos: scikit-image's bundled ``coffee.png`` cropped to 4:3 and
resized to 480x360 (bilinear), or upscaled to 4000x3000 (bicubic). A case whose unchunked
full-resolution tensors alone would exceed ``--max-gb`` is listed as not run, with the estimate.

Usage: ``python bench/bench_memory.py [--device cpu] [--threads 2] [--max-gb 6]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = {"480x360": (360, 480), "4000x3000": (3000, 4000)}  # name -> (H, W)
UNCHUNKED = 2**62  # max_elements large enough that every vocabulary is one chunk
# Full-size float32 tensors alive at once in an unchunked reduction (resized rows, activated
# rows; the training-free softmax also scales them): a lower bound used to skip huge cases.
UNCHUNKED_COPIES = {"zegclip": 2, "naclip": 3}


def photo(size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: scikit-image's coffee photo, cropped to 4:3, resized to ``size``."""
    import cv2

    raw = cv2.imdecode(
        np.frombuffer((files("skimage") / "data" / "coffee.png").read_bytes(), np.uint8),
        cv2.IMREAD_COLOR,
    )
    rgb = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)  # 400x600
    h, w = rgb.shape[:2]
    crop = rgb[:, (w - h * 4 // 3) // 2 :][:, : h * 4 // 3]  # 400x533, centred
    grow = size[0] > crop.shape[0]
    interpolation = cv2.INTER_CUBIC if grow else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(crop, size[::-1], interpolation=interpolation))


def build_predictor(family: str, classes: int, chunked: bool, device: str):
    """A ``SegPredictor`` on a random ViT-B/16 model with ``classes`` random unit embeddings."""
    import torch

    import zegclip
    from zegclip.models.trainfree.model import build_frozen_clip

    torch.manual_seed(0)
    clip = zegclip.ClipSpec(model="ViT-B-16", pretrained=None, quick_gelu=True)
    if family == "zegclip":
        tokens = 10 if classes <= 20 else 100  # the VOC and COCO-Stuff configs
        config = zegclip.ZegCLIPConfig(clip=clip, num_prompt_tokens=tokens)
        model = zegclip.build_zegclip(config, with_text=False)
    else:
        model = build_frozen_clip(clip, method=family, with_text=False)
    model = model.to(device)
    emb = torch.nn.functional.normalize(torch.randn(classes, 512), dim=-1).numpy()
    extra = {} if chunked else {"max_elements": UNCHUNKED}
    return zegclip.SegPredictor(
        model,
        emb,
        np.arange(classes),
        classes,
        min_score=model.default_min_score,
        device=device,
        **extra,
    )


def status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_case(family: str, classes: int, photo_name: str, chunked: bool, device: str) -> dict:
    """One prediction; memory and seconds (see module docstring)."""
    import gc

    import torch

    predictor = build_predictor(family, classes, chunked, device)
    image = photo(PHOTOS[photo_name])
    prepared = predictor.scorer.prepare(image)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = status_mb("VmRSS")
    peak_reset = reset_peak_rss()
    gpu_before = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else None
    start = time.perf_counter()
    (prediction,) = predictor.predict([prepared], [image.shape[:2]])
    seconds = time.perf_counter() - start
    assert prediction.label_map.shape == image.shape[:2]
    return {
        "rss_before_mb": before,
        "rss_peak_mb": status_mb("VmHWM"),
        "peak_reset": peak_reset,
        "gpu_before_mb": gpu_before,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "seconds": seconds,
    }


def estimate_unchunked_gb(family: str, classes: int, photo_name: str) -> float:
    """Lower bound of an unchunked reduction's full-size float32 tensors, GB."""
    h, w = PHOTOS[photo_name]
    return UNCHUNKED_COPIES[family] * classes * h * w * 4 / 1e9


def child(args: argparse.Namespace) -> None:
    """Run the case named by ``--case`` and print its JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    family, classes, photo_name, mode = args.case.split(",")
    print(json.dumps(run_case(family, int(classes), photo_name, mode == "chunked", args.device)))


def spawn(case: str, args: argparse.Namespace) -> dict:
    """``case`` in a fresh interpreter; its JSON result."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, __file__, "--case", case, "--device", args.device]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"failed": done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(family: str, classes: int, photo_name: str, mode: str, r: dict, device: str) -> str:
    """One Markdown table row."""
    head = f"| {family} | {classes} | {photo_name} | {mode} |"
    if "skipped" in r or "failed" in r:
        return f"{head} {r.get('skipped') or 'failed: ' + str(r['failed'])} | | | |"
    if device == "cuda":
        added = r["gpu_peak_mb"] - r["gpu_before_mb"]
        gpu = f"{r['gpu_before_mb']:.0f} | {r['gpu_peak_mb']:.0f} | {added:.0f}"
        return f"{head} {gpu} | {r['seconds']:.2f} |"
    reset = "" if r["peak_reset"] else " (peak not reset)"
    added = r["rss_peak_mb"] - r["rss_before_mb"]
    return (
        f"{head} {r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f}{reset} | {added:.0f} "
        f"| {r['seconds']:.2f} |"
    )


def main() -> None:
    """Spawn every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip larger unchunked cases")
    parser.add_argument("--families", default="zegclip,naclip")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.case:
        child(args)
        return
    unit = "GPU MiB allocated" if args.device == "cuda" else "process RSS MB"
    print(
        f"\nViT-B/16 random weights, device {args.device}, {args.threads} torch threads; {unit}\n"
    )
    print("| family | classes | photo | reduction | before | peak | added | s |")
    print("|---|---|---|---|---|---|---|---|")
    for family in args.families.split(","):
        for classes in (20, 171):
            for photo_name in PHOTOS:
                for mode in ("chunked", "one chunk"):
                    estimate = estimate_unchunked_gb(family, classes, photo_name)
                    if mode == "one chunk" and estimate > args.max_gb:
                        why = f"not run: needs > {estimate:.1f} GB (--max-gb {args.max_gb:g})"
                        r = {"skipped": why}
                    else:
                        case = f"{family},{classes},{photo_name},{mode.replace('one ', 'one')}"
                        r = spawn(case, args)
                    print(row(family, classes, photo_name, mode, r, args.device), flush=True)


if __name__ == "__main__":
    main()
