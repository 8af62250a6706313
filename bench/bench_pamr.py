"""PAMR (NACLIP's refinement) side by side: eager float32 (the papers'), eager in a compute dtype,
compiled float32, compiled compute dtype - time per batch, ATen ops, generated kernels, and how
many labels each variant changes against eager float32.

    python bench/bench_pamr.py              # CPU: batch 1, 336x448, 21 and 171 rows, eager only
    python bench/bench_pamr.py --compile    # CPU with the compiled columns (compiles take minutes)
    python bench/bench_pamr.py --device cuda --batch 32 --repeats 5   # all four columns
    python bench/bench_pamr.py --rows 21 --agreement bf16 fp16        # + agreement, 12 photos

Scores are synthetic but shaped like NACLIP's: each real photo's ground-truth mask (VOC, ADE20K,
CamVid from ``../shared/data``) as one-hot rows, averaged over 16x16 patches, upsampled
(bilinear) and noised at the patch level, on a cosine-like scale (0.2 +- 0.05): agreement then
measures PAMR's numerics, not a model. Without ``../shared`` the bench stops with the reason.
Ops are counted with ``bench/dispatch_count.py`` in eager mode (at 32x32: the count does not
depend on the size); kernels are Inductor's generated kernel count for the compiled call
(compiled once per shape and dtype, untimed: compile seconds printed apart). Times are the best
of ``--repeats`` calls; label agreement is over the batch (``--agreement``: over
``--photos`` photos of each set). "before #23" is the previous PAMR (``tests/legacy_pamr.py``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from legacy_pamr import LegacyPAMR  # noqa: E402
from tiny_models import DATA_ROOT  # noqa: E402

from bench.dispatch_count import count_ops  # noqa: E402
from zegclip.devices import PRECISIONS  # noqa: E402
from zegclip.models.trainfree.pamr import PAMR  # noqa: E402

SETS = (  # folder, image glob, mask folder, mask suffix
    ("voc2012-val-sample", "images/*", "masks", ".png"),
    ("ade20k-val-sample", "images/*.jpg", "masks", ".png"),
    ("camvid", "test/*.jpg", "testannot", ".png"),
)


def labelled_photos(size: tuple[int, int], per_set: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to ``per_set`` photos of each ``../shared/data`` set with their masks, resized to
    ``size`` (H, W), the sets interleaved (VOC, ADE20K, CamVid, VOC, ...): (H, W, 3) uint8 RGB
    (bilinear) and (H, W) int64 labels (nearest)."""
    dsize = (size[1], size[0])
    sets = []
    for folder, pattern, masks, suffix in SETS:
        pairs = []
        for path in sorted((DATA_ROOT / folder).glob(pattern))[:per_set]:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            mask = cv2.imread(str(DATA_ROOT / folder / masks / (path.stem + suffix)), 0)
            rgb = cv2.resize(rgb, dsize, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST).astype(np.int64)
            pairs.append((rgb, mask))
        sets.append(pairs)
    return [pair for group in itertools.zip_longest(*sets) for pair in group if pair is not None]


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


def timed(fn, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    """(best seconds of ``repeats`` calls, the last call's result)."""
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def eager_ops(pamr, rows: int, dtype: torch.dtype | None, device: str) -> int:
    """ATen ops of one eager PAMR call (independent of the image size: counted at 32x32)."""
    images, logits = torch.rand(1, 3, 32, 32), torch.randn(1, rows, 32, 32)
    args = (images.to(device), logits.to(device)) + (() if dtype is None else (dtype,))
    return count_ops(lambda: pamr(*args))[0]


def row(name: str, fn, reference: torch.Tensor | None, args: argparse.Namespace) -> list:
    """[name, ms, eager ops, compiled kernels, compile s, agreement %] of one variant."""
    ops = kernels = compile_s = ""
    if name.startswith("compiled"):
        from torch._inductor import metrics

        metrics.reset()
        compile_s = f"{timed(fn, 1, args.device)[0]:.0f}"
        kernels = metrics.generated_kernel_count
    seconds, out = timed(fn, args.repeats, args.device)
    labels = out.argmax(1)
    same = (
        "" if reference is None else f"{100 * (labels == reference).double().mean().item():.3f} %"
    )
    return [name, f"{1000 * seconds:,.0f}", ops, kernels, compile_s, same], labels


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    photos = labelled_photos(args.size, args.photos)
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
        "| labels = eager fp32 |"
    )
    print("|---|---|---|---|---|---|---|")
    pamr = PAMR()
    compiled = torch.compile(pamr, dynamic=False)
    batch = [photos[i % len(photos)] for i in range(args.batch)]
    for rows in args.rows:
        images, logits = (t.to(args.device) for t in pamr_inputs(batch, rows))
        variants = [("eager fp32", pamr, None), ("eager fp32, before #23", LegacyPAMR(), None)]
        variants.append((f"eager {args.dtype}", pamr, dtype))
        if args.compile if args.compile is not None else args.device.startswith("cuda"):
            variants += [
                ("compiled fp32", compiled, None),
                (f"compiled {args.dtype}", compiled, dtype),
            ]
        reference = None
        with torch.inference_mode():
            for name, module, dt in variants:
                inputs = (images, logits) + (() if dt is None else (dt,))
                cells, labels = row(name, functools.partial(module, *inputs), reference, args)
                reference = labels if reference is None else reference
                if name.startswith("eager"):
                    cells[2] = eager_ops(module, rows, dt, args.device)
                print(f"| {rows} | " + " | ".join(map(str, cells)) + " |", flush=True)
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
            print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="images per PAMR call")
    parser.add_argument("--size", type=int, nargs=2, default=(336, 448), metavar=("H", "W"))
    parser.add_argument("--rows", type=int, nargs="+", default=(21, 171))
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--photos", type=int, default=4, help="photos per data set (3 sets)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the compiled columns (default: on CUDA only; a CPU compile takes minutes)",
    )
    parser.add_argument(
        "--agreement",
        nargs="*",
        default=(),
        help="also tabulate label agreement over all photos for these dtypes (bf16 fp16)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
