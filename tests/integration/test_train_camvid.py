"""End-to-end training of the tiny model on real CamVid images (CPU).

* in-process: a few hundred steps lower the loss and make seen-class IoU on the training images
  far exceed chance; the evaluate job reads the checkpoint back;
* Ray Train: a 2-worker DDP run (gloo on CPU) writes a checkpoint that loads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import wait_for_free_cpus
from PIL import Image
from tiny_models import DATA_ROOT, TINY_CLIP, requires_shared_data

import zegclip
from jobs import train
from zegclip.text import load_text_embeddings
from zegclip.train.metrics import compute_metrics, confusion_matrix

REPO = Path(__file__).resolve().parents[1].parent
CAMVID = DATA_ROOT / "camvid"
CLASSES = str(CAMVID / "classes.txt")
UNSEEN = "car,pedestrian"
NUM_IMAGES = 16

pytestmark = [pytest.mark.integration, pytest.mark.slow, requires_shared_data]


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> tuple[str, str]:
    """Links to the first 16 CamVid training pairs (the shared data is never copied)."""
    root = tmp_path_factory.mktemp("camvid16")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for image in sorted((CAMVID / "train").glob("*.jpg"))[:NUM_IMAGES]:
        (root / "images" / image.name).symlink_to(image.resolve())
        mask = CAMVID / "trainannot" / f"{image.stem}.png"
        (root / "masks" / mask.name).symlink_to(mask.resolve())
    return str(root / "images"), str(root / "masks")


def _flags(images: str, masks: str, output: Path, *extra: str) -> list[str]:
    return [
        "--images",
        images,
        "--masks",
        masks,
        "--classes",
        CLASSES,
        "--unseen",
        UNSEEN,
        "--output",
        str(output),
        "--clip-model",
        TINY_CLIP,
        "--clip-pretrained",
        "none",
        "--decoder-ffn-dim",
        "128",
        "--crop-size",
        "128",
        "--scale",
        "512,128",
        "--warmup-iters",
        "20",
        "--lr",
        "2e-4",
        *extra,
    ]


def _distinct_embeddings(path: Path, num_classes: int) -> str:
    """Random well-separated class embeddings for the tiny model's 64-d space.

    A randomly initialised text tower maps CamVid's names to nearly parallel vectors (cosine up
    to 0.97), which no head can tell apart; a real CLIP's embeddings are distinct. The official
    configs also load precomputed embeddings from ``.npy`` (``load_text_embedding``).
    """
    emb = np.random.default_rng(0).standard_normal((num_classes, 64)).astype(np.float32)
    np.save(path, emb)
    return str(path)


def _seen_miou(model, images: str, masks: str, emb, seen: np.ndarray) -> tuple[float, float]:
    """Seen-class mIoU on the training images with seen-class queries, and a constant baseline."""
    seen_ids = np.flatnonzero(seen)
    num = len(seen)
    conf = np.zeros((num, num + 1), dtype=np.int64)
    base = np.zeros_like(conf)
    for image_path in sorted(Path(images).iterdir()):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        gt = np.asarray(Image.open(Path(masks) / f"{image_path.stem}.png")).astype(np.int64)
        gt = np.where(np.isin(gt, seen_ids), gt, 255)
        with torch.no_grad():
            scores = model.slide_scores(model.preprocess(image), emb[seen_ids])
        scores = torch.nn.functional.interpolate(scores, size=gt.shape, mode="bilinear")
        pred = seen_ids[scores[0].argmax(0).numpy()]
        conf += confusion_matrix(gt, pred, num)
        base += confusion_matrix(gt, np.full_like(gt, 3), num)  # always "road", the majority
    return compute_metrics(conf, seen).miou_seen, compute_metrics(base, seen).miou_seen


def test_tiny_model_learns_camvid_seen_classes(subset, tmp_path, caplog):
    images, masks = subset
    out = tmp_path / "run"
    names = zegclip.load_vocabulary(CLASSES).names
    emb_path = _distinct_embeddings(tmp_path / "camvid_emb.npy", len(names))
    caplog.set_level(logging.INFO, logger="jobs.train")
    flags = _flags(
        images,
        masks,
        out,
        "--max-iters",
        "600",
        "--batch-size",
        "4",
        "--log-every",
        "20",
        "--checkpoint-every",
        "300",
        "--load-threads",
        "2",
        "--text-embeddings",
        emb_path,
    )
    assert train.main(flags) == 0
    losses = [
        json.loads(r.getMessage().split(" ", 2)[2])["loss"]
        for r in caplog.records
        if r.getMessage().startswith("step ")
    ]
    assert len(losses) == 30
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses

    model = zegclip.load_model(out / "model_final.safetensors").eval()
    seen = np.array([n not in UNSEEN.split(",") for n in names])
    emb = load_text_embeddings(emb_path, len(names))
    miou, baseline = _seen_miou(model, images, masks, emb, seen)
    assert baseline < 0.06  # a constant labelling scores a few percent over 9 seen classes
    print(
        f"loss {losses[0]:.2f} -> {np.mean(losses[-3:]):.2f}; "
        f"seen mIoU {miou:.3f} vs {baseline:.3f}"
    )
    assert miou > 4 * baseline and miou > 0.10, (miou, baseline)


def test_ray_train_two_workers_writes_loadable_checkpoint(subset, tmp_path, ray_local):
    """Uses the session Ray (repo on the workers' PYTHONPATH, so they import jobs.train)."""
    wait_for_free_cpus(2)  # both workers need a whole CPU of the 2-CPU test cluster
    images, masks = subset
    out = tmp_path / "ray-run"
    flags = _flags(
        images,
        masks,
        out,
        "--max-iters",
        "4",
        "--batch-size",
        "1",
        "--log-every",
        "2",
        "--checkpoint-every",
        "2",
        "--num-workers",
        "2",
        "--load-threads",
        "0",
        "--self-train-from",
        "2",
    )
    assert train.main(flags) == 0
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4
    model = zegclip.load_model(latest["model"])
    assert model.config.seen_classes == tuple(
        n for n in zegclip.load_vocabulary(CLASSES).names if n not in UNSEEN.split(",")
    )
    assert model.config.seen_shift == 0.0  # self-trained: no inductive seen-class shift
    assert (out / "model_final.safetensors").is_file()
