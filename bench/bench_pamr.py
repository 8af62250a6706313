"""PAMR (NACLIP's refinement) side by side: eager float32 (the papers'), eager in a compute dtype,
compiled float32, compiled compute dtype - time per batch, ATen ops, generated kernels, and how
many labels each variant changes against eager float32.

    python bench/bench_pamr.py                      # CPU: batch 2, 336x448, 21 and 171 rows
    python bench/bench_pamr.py --device cuda --batch 32 --dtype bf16

Scores are synthetic but shaped like NACLIP's: each real photo's ground-truth mask (VOC, ADE20K,
CamVid from ``../shared/data``) as one-hot rows, averaged over 16x16 patches, upsampled
(bilinear) and noised at the patch level, on a cosine-like scale (0.2 +- 0.05): agreement then
measures PAMR's numerics, not a model. Without ``../shared`` the bench stops with the reason.
Ops are counted with ``bench/dispatch_count.py`` in eager mode; kernels are Inductor's generated
kernel count for the compiled call (both compiled columns compile once, untimed: compile seconds
printed apart). Times are the best of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tiny_models import DATA_ROOT  # noqa: E402

from bench.dispatch_count import count_ops  # noqa: E402
from zegclip.devices import PRECISIONS  # noqa: E402
from zegclip.models.trainfree.pamr import PAMR  # noqa: E402

SETS = (  # folder, image glob, mask folder, mask suffix
    ("voc2012-val-sample", "images/*.jpg", "masks", ".png"),
    ("ade20k-val-sample", "images/*.jpg", "masks", ".png"),
    ("camvid", "test/*.jpg", "testannot", ".png"),
)


def labelled_photos(size: tuple[int, int], per_set: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``per_set`` photos of each ``../shared/data`` set with their masks, resized to
    ``size`` (H, W): (H, W, 3) uint8 RGB (bilinear) and (H, W) int64 labels (nearest)."""
    out = []
    for folder, pattern, masks, suffix in SETS:
        for path in sorted((DATA_ROOT / folder).glob(pattern))[:per_set]:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            mask = cv2.imread(str(DATA_ROOT / folder / masks / (path.stem + suffix)), 0)
            dsize = (size[1], size[0])
            out.append(
                (
                    cv2.resize(rgb, dsize, interpolation=cv2.INTER_LINEAR),
                    cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST).astype(np.int64),
                )
            )
    return out


def synthetic_logits(labels: np.ndarray, rows: int, seed: int = 0) -> torch.Tensor:
    """(H, W) labels -> (1, rows, H, W) float32 NACLIP-like cosines: one-hot of ``label % rows``
    averaged over 16x16 patches, plus patch-level N(0, 0.3) noise, bilinearly upsampled, mapped
    to ``0.2 + 0.05 * x``."""
    generator = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(torch.from_numpy(labels % rows), rows).permute(2, 0, 1)[None].float()
    patches = F.avg_pool2d(onehot, 16, ceil_mode=True)
    patches = patches + 0.3 * torch.randn(patches.shape, generator=generator)
    up = F.interpolate(patches, size=labels.shape, mode="bilinear", align_corners=False)
    return 0.2 + 0.05 * up


def pamr_inputs(photos, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos -> ((N, 3, H, W) float32 images in [0, 1], (N, rows, H, W) synthetic logits)."""
    images = torch.stack(
        [torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 for rgb, _ in photos]
    )
    logits = torch.cat([synthetic_logits(lab, rows, seed=i) for i, (_, lab) in enumerate(photos)])
    return images, logits


def agreement(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Fraction of pixels whose argmax over rows (dim 1) equals ``labels``."""
    return (scores.float().argmax(1) == labels).double().mean().item()


def label_agreement(photos, rows: int, dtype: torch.dtype, device: str = "cpu") -> float:
    """Pixels labelled alike by eager float32 PAMR and eager ``dtype`` PAMR (one photo at a
    time; synthetic NACLIP-like logits with ``rows`` rows)."""
    pamr = PAMR()
    same = total = 0
    for photo in photos:
        images, logits = (t.to(device) for t in pamr_inputs([photo], rows))
        reference = pamr(images, logits).argmax(1)
        same += (pamr(images, logits, dtype).argmax(1) == reference).sum().item()
        total += reference.numel()
    return same / total


def best_time(fn, repeats: int, device: str) -> float:
    """Best seconds of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def compiled_kernels(fn) -> tuple[int, float]:
    """(Inductor kernels generated, seconds) for the first (compiling) call of ``fn``."""
    from torch._inductor import metrics

    metrics.reset()
    start = time.perf_counter()
    fn()
    return metrics.generated_kernel_count, time.perf_counter() - start


def row(rows: int, name: str, call, reference: torch.Tensor, args: argparse.Namespace) -> str:
    """One table row: time, eager ops or compiled kernels and compile time, agreement."""
    ops = kernels = compile_s = ""
    if name.startswith("compiled"):
        kernels, seconds = compiled_kernels(call)
        compile_s = f"{seconds:.0f}"
    else:
        ops = count_ops(call)[0]
    ms = 1000 * best_time(call, args.repeats, args.device)
    same = 100 * agreement(reference, call())
    return f"| {rows} | {name} | {ms:,.0f} | {ops} | {kernels} | {compile_s} | {same:.3f} % |"


def run(args: argparse.Namespace) -> None:
    photos = labelled_photos(args.size)
    if not photos:
        raise SystemExit(
            f"no labelled photos under {DATA_ROOT} (../shared/data): nothing to measure"
        )
    dtype = PRECISIONS[args.dtype]
    print(
        f"# PAMR, batch {args.batch} at {args.size[0]}x{args.size[1]}, device {args.device}, "
        f"compute dtype {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| rows | variant | ms / batch | ATen ops (eager) | kernels (compiled) | compile s "
        "| labels = eager fp32 (batch) |"
    )
    print("|---|---|---|---|---|---|---|")
    pamr = PAMR()
    for rows in args.rows:
        batch = [photos[i % len(photos)] for i in range(args.batch)]
        images, logits = (t.to(args.device) for t in pamr_inputs(batch, rows))
        with torch.inference_mode():
            reference = pamr(images, logits).argmax(1)
            variants = [("eager fp32", pamr, None), (f"eager {args.dtype}", pamr, dtype)]
            if not args.no_compile:
                compiled = torch.compile(pamr, dynamic=False)
                variants += [
                    ("compiled fp32", compiled, None),
                    (f"compiled {args.dtype}", compiled, dtype),
                ]
            for name, fn, dt in variants:
                print(row(rows, name, functools.partial(fn, images, logits, dt), reference, args))
    if args.agreement:
        print(
            f"\n# label agreement with eager fp32 PAMR over {len(photos)} photos "
            f"({args.size[0]}x{args.size[1]}, synthetic NACLIP-like logits), eager"
        )
        print("| rows | " + " | ".join(args.agreement) + " |")
        print("|---|" + "---|" * len(args.agreement))
        for rows in args.rows:
            cells = [
                f"{100 * label_agreement(photos, rows, PRECISIONS[p], args.device):.3f} %"
                for p in args.agreement
            ]
            print(f"| {rows} | " + " | ".join(cells) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="images per PAMR call")
    parser.add_argument("--size", type=int, nargs=2, default=(336, 448), metavar=("H", "W"))
    parser.add_argument("--rows", type=int, nargs="+", default=(21, 171))
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="eager columns only")
    parser.add_argument(
        "--agreement", nargs="*", default=("bf16", "fp16"), help="dtypes of the agreement table"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
