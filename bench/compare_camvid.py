"""ZegCLIP vs ZegOT on a CamVid subset: same tiny CLIP, data, split, steps and recipe.

Trains each family in-process with ``jobs/train.py`` and scores it with ``jobs/evaluate.py``
(generalised zero-shot: all 11 classes as queries, seen-class shift), then prints a table.
With a random-weight tiny CLIP the text tower cannot name unseen classes, so unseen IoU measures
the machinery, not zero-shot quality; run with ``--clip-model ViT-B-16 --clip-pretrained openai``
on a machine that has the weights for meaningful numbers.

    python bench/compare_camvid.py [--steps 600] [--train-images 16] [--val-images 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import zegclip  # noqa: E402
from jobs import evaluate, train  # noqa: E402

TINY_CLIP = str(REPO / "tests" / "data" / "tiny-test.json")  # 2-layer test CLIP
CAMVID = REPO / ".." / "shared" / "data" / "camvid"
UNSEEN = "car,pedestrian"


def link_subset(split: str, count: int, root: Path) -> tuple[str, str]:
    """Symlink the first ``count`` pairs of a CamVid split (the data is never copied)."""
    images, masks = root / split / "images", root / split / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for image in sorted((CAMVID / split).glob("*.jpg"))[:count]:
        (images / image.name).symlink_to(image.resolve())
        mask = CAMVID / f"{split}annot" / f"{image.stem}.png"
        (masks / mask.name).symlink_to(mask.resolve())
    return str(images), str(masks)


def train_and_evaluate(model: str, args, data: dict, out: Path) -> dict:
    """One family: train, then evaluate on the training and validation subsets."""
    images, masks = data["train"]
    flags = [
        "--model",
        model,
        "--images",
        images,
        "--masks",
        masks,
        "--classes",
        str(CAMVID / "classes.txt"),
        "--unseen",
        UNSEEN,
        "--output",
        str(out),
        "--clip-model",
        args.clip_model,
        "--clip-pretrained",
        args.clip_pretrained,
        "--crop-size",
        "128",
        "--scale",
        "512,128",
        "--max-iters",
        str(args.steps),
        "--batch-size",
        "4",
        "--warmup-iters",
        "20",
        "--lr",
        str(args.lr),
        "--log-every",
        str(args.steps),
        "--checkpoint-every",
        str(args.steps),
        "--decoder-ffn-dim",
        "128",
    ]
    if args.clip_model == TINY_CLIP:
        flags += ["--zegot-layers=-2,-1"]  # the tiny ViT has 2 blocks
    start = time.perf_counter()
    train.main(flags)
    train_s = time.perf_counter() - start
    ckpt = str(out / "model_final.safetensors")
    result = {
        "model": model,
        "train_s": train_s,
        "trainable": zegclip.count_trainable(zegclip.load_model(ckpt).train()),
    }
    for split in ("train", "val"):
        report = out / f"{split}.json"
        evaluate.main(
            [
                "--checkpoint",
                ckpt,
                "--images",
                data[split][0],
                "--masks",
                data[split][1],
                "--classes",
                str(CAMVID / "classes.txt"),
                "--unseen",
                UNSEEN,
                "--json",
                str(report),
            ]
        )
        result[split] = json.loads(report.read_text())["checkpoint"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train-images", type=int, default=16)
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--clip-model", default=TINY_CLIP)
    parser.add_argument("--clip-pretrained", default="none", help="open_clip tag; none = random")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = {
            "train": link_subset("train", args.train_images, root),
            "val": link_subset("val", args.val_images, root),
        }
        rows = [train_and_evaluate(m, args, data, root / m) for m in ("zegclip", "zegot")]
    print(f"\nCamVid, unseen = {UNSEEN}, {args.steps} steps, {args.clip_model}")
    print("| model | trainable | train s | train mIoU(S) | val mIoU(S) | val mIoU(U) | val hIoU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['trainable']:,} | {r['train_s']:.0f} "
            f"| {r['train']['miou_seen']} | {r['val']['miou_seen']} "
            f"| {r['val']['miou_unseen']} | {r['val']['hiou']} |"
        )


if __name__ == "__main__":
    main()
