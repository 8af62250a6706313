"""Training internals: pseudo-labels, optimiser groups, schedule, exact resume (tiny model, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import DATA_ROOT, TINY_CLIP, requires_shared_data

import zegclip
from zegclip.train.augment import AugmentConfig
from zegclip.train.data import PairSource, folder_pairs
from zegclip.train.loop import (
    MaskLogits,
    TrainConfig,
    Trainer,
    build_optimizer,
    inductive_targets,
    pseudo_labels,
    scheduled_lr,
    seen_vector,
    set_lr,
)
from zegclip.train.state import find_latest, load_training_state, save_training_checkpoint

CAMVID = DATA_ROOT / "camvid"


def tiny_model(seed: int = 0) -> zegclip.ZegCLIP:
    torch.manual_seed(seed)
    cfg = zegclip.ZegCLIPConfig(
        clip=zegclip.ClipSpec(model=TINY_CLIP, pretrained=None),
        decoder_ffn_dim=128,
        seen_classes=("sky", "road"),
    )
    return zegclip.build_zegclip(cfg)


def test_pseudo_labels_only_touch_unseen_gt_pixels():
    seen = torch.tensor([True, False, False])
    labels = torch.tensor([[[0, 1], [2, 255]]])
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 50.0  # the seen class wins everywhere but must never be chosen
    logits[0, 1, 0, 1] = 3.0  # pixel (0,1): GT unseen 1 -> predicted unseen 1
    logits[0, 1, 1, 0] = 4.0  # pixel (1,0): GT unseen 2 but unseen 1 scores higher -> 1
    logits[0, 2, 1, 1] = 9.0  # ignore pixel stays ignore whatever the scores
    out = pseudo_labels(logits, labels, seen)
    assert out.tolist() == [[[0, 1], [1, 255]]]


def test_inductive_targets_map_seen_and_ignore_unseen():
    seen = torch.tensor([True, False, True])
    labels = torch.tensor([[[0, 1, 2, 255]]])
    assert inductive_targets(labels, seen).tolist() == [[[0, 255, 1, 255]]]


def test_seen_vector_rejects_unknown_names():
    assert seen_vector(["a", "B"], ["b"]).tolist() == [True, False]
    with pytest.raises(ValueError, match="not in the classes"):
        seen_vector(["a"], ["z"])


def test_param_groups_lr_mult_and_no_decay_on_norms():
    model = tiny_model()
    cfg = TrainConfig(lr=2e-5, weight_decay=0.01, lr_mult=10.0)
    opt = build_optimizer(model, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(by_param) == len(names) == sum(1 for _ in names)
    assert sum(p.numel() for p in names.values()) == zegclip.count_trainable(model)
    for name, p in names.items():
        group = by_param[id(p)]
        assert group["lr"] == pytest.approx(2e-4), name
        is_norm = "prompt_norm" in name or ".norm2." in name or ".norm3." in name
        assert group["weight_decay"] == (0.0 if is_norm else 0.01), name
    assert by_param[id(names["backbone.prompt_embeddings"])]["weight_decay"] == 0.01
    frozen = [p for n, p in model.named_parameters() if n.startswith(("backbone.visual", "text."))]
    assert frozen and all(id(p) not in by_param for p in frozen)


def test_schedule_values():
    cfg = TrainConfig(max_iters=100, warmup_iters=10, lr=2e-5)
    assert scheduled_lr(2e-4, 0, 100, cfg) == pytest.approx(2e-4 * 1e-6)
    regular = (2e-4 - 1e-6) * 0.95**0.9 + 1e-6
    assert scheduled_lr(2e-4, 5, 100, cfg) == pytest.approx(regular * (1 - 0.5 * (1 - 1e-6)))
    assert scheduled_lr(2e-4, 50, 100, cfg) == pytest.approx((2e-4 - 1e-6) * 0.5**0.9 + 1e-6)
    assert scheduled_lr(2e-4, 100, 100, cfg) == pytest.approx(1e-6)
    # Self-training restarts warm-up + poly over the remaining iterations.
    st = TrainConfig(max_iters=100, warmup_iters=10, self_train_from=60, schedule_iters=120)
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_mult": 1.0}])
    assert set_lr(opt, 59, st) == pytest.approx((2e-5 - 1e-6) * (1 - 59 / 120) ** 0.9 + 1e-6)
    assert set_lr(opt, 60, st) == pytest.approx(2e-5 * 1e-6, rel=1e-3)
    assert set_lr(opt, 80, st) == pytest.approx((2e-5 - 1e-6) * 0.5**0.9 + 1e-6)
    assert math.isclose(opt.param_groups[0]["lr"], set_lr(opt, 80, st))


def _trainer(model, cfg) -> Trainer:
    names = (CAMVID / "classes.txt").read_text().split()
    source = PairSource(
        folder_pairs(str(CAMVID / "train"), str(CAMVID / "trainannot"))[:4], len(names)
    )
    seen = seen_vector(names, ["car", "pedestrian"])
    emb = model.encode_vocabulary(names)
    aug = AugmentConfig(crop_size=32, scale=(128, 32))
    forward = MaskLogits(model, names, emb)
    return Trainer(model, cfg, source, aug, forward, seen, device=torch.device("cpu"))


@requires_shared_data
def test_resume_reproduces_uninterrupted_run(tmp_path):
    # 4 steps straight vs 2 + resume + 2; self-training switches on at step 3.
    cfg = TrainConfig(max_iters=4, batch_size=2, warmup_iters=2, lr=1e-3, self_train_from=3)
    straight = _trainer(tiny_model(), cfg)
    for _ in range(4):
        straight.train_one()

    first = _trainer(tiny_model(), cfg)
    for _ in range(2):
        first.train_one()
    out = str(tmp_path / "run")
    save_training_checkpoint(
        out, first.model, first.state_dict(), embed_clip=True, transductive=False
    )
    latest = find_latest(out)
    assert latest["step"] == 2
    resumed = _trainer(zegclip.load_model(latest["model"]), cfg)
    resumed.load_state_dict(load_training_state(latest["state"]))
    metrics = [resumed.train_one() for _ in range(2)]
    assert [m["transductive"] for m in metrics] == [0.0, 1.0]

    a, b = straight.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.stream.position == straight.stream.position
    assert not torch.equal(
        a["head.relation.q_proj.weight"],
        tiny_model().trainable_state_dict()["head.relation.q_proj.weight"],
    )
