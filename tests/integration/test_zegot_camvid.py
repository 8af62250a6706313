"""A tiny ZegOT trains on real CamVid images (CPU) and labels through the labeler path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tiny_models import DATA_ROOT, TINY_CLIP, requires_shared_data

import zegclip
from zegclip import ClipSpec
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.model import build_zegot
from zegclip.preprocess import normalize
from zegclip.train.loop import (
    MaskLogits,
    StepBatch,
    TrainConfig,
    build_optimizer,
    seen_vector,
    train_step,
)
from zegclip.train.metrics import compute_metrics, confusion_matrix

pytestmark = [pytest.mark.integration, requires_shared_data]
CAMVID = DATA_ROOT / "camvid"
UNSEEN = ("pedestrian", "bicyclist")
SIZE = (224, 160)  # (width, height): 14 x 10 patches of the tiny ViT
NUM_IMAGES = 4
STEPS = 20


def load_camvid(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` evenly spaced images (B, 3, 160, 224) and labels (B, 160, 224), void -> 255."""
    paths = sorted((CAMVID / split).glob("*.jpg"))
    paths = paths[:: len(paths) // count][:count]
    images, labels = [], []
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(CAMVID / f"{split}annot" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        images.append(normalize(cv2.resize(rgb, SIZE, interpolation=cv2.INTER_AREA))[0])
        mask = cv2.resize(mask, SIZE, interpolation=cv2.INTER_NEAREST).astype(np.int64)
        labels.append(torch.from_numpy(np.where(mask >= 11, 255, mask)))
    return torch.stack(images), torch.stack(labels)


def seen_miou(logits: torch.Tensor, labels: torch.Tensor, seen: torch.Tensor) -> float:
    """mIoU over seen classes of argmax-over-seen predictions (unseen/void pixels ignored)."""
    seen_ids = torch.nonzero(seen).flatten()
    pred = seen_ids[logits.argmax(dim=1)].numpy()
    gt = labels.numpy().copy()
    gt[~np.isin(gt, seen_ids.numpy())] = 255
    conf = sum(confusion_matrix(g, p, len(seen)) for g, p in zip(gt, pred))
    return compute_metrics(conf).miou


def test_tiny_zegot_trains_on_camvid() -> None:
    names = (CAMVID / "classes.txt").read_text().split()
    seen = seen_vector(names, UNSEEN)
    images, labels = load_camvid("train", NUM_IMAGES)
    torch.manual_seed(0)
    config = ZegOTConfig(
        clip=ClipSpec(model=TINY_CLIP, pretrained=None),
        layers=(-2, -1),
        seen_classes=tuple(n for n, s in zip(names, seen) if s),
    )
    model = build_zegot(config)
    cfg = TrainConfig(
        max_iters=STEPS, batch_size=NUM_IMAGES, lr=1e-4, warmup_iters=0, precision="fp32"
    )
    optimizer = build_optimizer(model, cfg)
    forward = MaskLogits(model, names)  # re-encodes the vocabulary every step: contexts train
    losses = []
    for step in range(STEPS):
        model.train()
        out = train_step(forward, optimizer, StepBatch(images, labels, seen), step, cfg)
        losses.append(out["loss"])
    model.eval()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses

    with torch.inference_mode():
        emb = model.encode_vocabulary(names)
        logits = model.mask_logits(images, emb[seen])
    logits = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear")
    miou = seen_miou(logits, labels, seen)
    majority = torch.bincount(labels[labels != 255].flatten(), minlength=len(names)).argmax()
    majority_logits = (
        torch.nn.functional.one_hot(
            torch.full_like(labels, int(torch.nonzero(seen).flatten().tolist().index(majority))),
            int(seen.sum()),
        )
        .permute(0, 3, 1, 2)
        .float()
    )
    chance = seen_miou(majority_logits, labels, seen)
    assert miou > 2 * chance, (miou, chance)


def test_labeler_runs_a_zegot_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = ZegOTConfig(
        clip=ClipSpec(model=TINY_CLIP, pretrained=None), num_prompts=3, layers=(-2, -1)
    )
    path = zegclip.save_checkpoint(build_zegot(config), tmp_path / "z.safetensors", embed_clip=True)
    spec = zegclip.LabelerSpec(checkpoint=str(path), device="cpu")
    vocab = zegclip.Vocabulary.from_names([("car", "vehicle"), "road", "sky"])
    emb = zegclip.encode_vocabulary_for(spec, vocab)
    assert emb.shape == (4, 3, 64) and emb.dtype == np.float32  # a row per synonym, N prompts
    predictor = zegclip.build_predictor(spec, vocab, emb)
    assert predictor.text_emb.shape == (4, 3, 64)
    image_path = sorted((CAMVID / "test").glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    (pred,) = predictor.predict([image])
    assert pred.label_map.shape == image.shape[:2] and pred.label_map.dtype == np.uint8
    labelled = pred.label_map[pred.label_map != 255]
    assert labelled.size == 0 or int(labelled.max()) < 3
    assert int(pred.class_counts.sum()) == labelled.size
