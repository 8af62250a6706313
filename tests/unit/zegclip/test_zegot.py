"""ZegOT on a tiny random CLIP: shapes, gradients, prompt encoding, checkpoints, labeler path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY_CLIP

import zegclip
from zegclip import ClipSpec
from zegclip.io.checkpoint import read_header
from zegclip.models.zegot.config import ZegOTConfig
from zegclip.models.zegot.model import ZegOT, build_zegot

NAMES = ["car", "road", "sky", "tree", "building", "pole", "person"]


def tiny_zegot_config(**overrides) -> ZegOTConfig:
    """2-block width-64 CLIP, both blocks aligned, 3 prompts of 4 context tokens."""
    base = dict(
        clip=ClipSpec(model=TINY_CLIP, pretrained=None),
        num_prompts=3,
        layers=(-2, -1),
        seen_classes=("car", "road"),
    )
    base.update(overrides)
    return ZegOTConfig(**base)


@pytest.fixture(scope="module")
def model() -> ZegOT:
    torch.manual_seed(0)
    m = build_zegot(tiny_zegot_config())
    with torch.no_grad():  # break the identity init so the checks exercise every parameter
        for p in m.align.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def checkpoint(model: ZegOT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zegot") / "tiny-zegot.safetensors"
    return zegclip.save_checkpoint(model, path, embed_clip=True)


@pytest.mark.parametrize("num_classes", [1, 7])
def test_shapes_and_ranges(model: ZegOT, num_classes: int) -> None:
    with torch.inference_mode():
        emb = model.encode_vocabulary(NAMES[:num_classes])
        logits = model.mask_logits(torch.randn(2, 3, 64, 96), emb)
        scores = model.crop_scores(torch.randn(2, 3, 64, 96), emb, None)
    assert emb.shape == (num_classes, 3, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(num_classes, 3))
    assert logits.shape == (2, num_classes, 4, 6) and torch.isfinite(logits).all()
    assert scores.shape == (2, num_classes, 64, 96)
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0


def test_only_prompts_and_alignment_get_gradients(model: ZegOT) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    emb = model.encode_vocabulary(NAMES[:3])  # differentiable outside no_grad
    model.mask_logits(torch.randn(2, 3, 64, 64), emb).sigmoid().mean().backward()
    model.eval()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(model.trainable_state_dict())
    assert all(n.startswith(("prompts.", "align.")) for n in with_grad)
    assert all(float(model.get_parameter(n).grad.abs().sum()) > 0 for n in with_grad)
    assert not any(p.requires_grad for p in model.visual.parameters())
    assert not any(p.requires_grad for p in model.text.parameters())


def test_train_mode_keeps_clip_in_eval(model: ZegOT) -> None:
    model.train()
    try:
        assert model.align.training and not model.visual.training and not model.text.training
    finally:
        model.eval()


def test_initial_contexts_reproduce_clip_templates() -> None:
    torch.manual_seed(1)
    m = build_zegot(tiny_zegot_config(num_prompts=2))
    with torch.no_grad():
        emb = m.encode_vocabulary(["car", "traffic light"])
        for n, prefix in enumerate(("a photo of a", "a portrait of a")):
            tokens = m.tokenizer([f"{prefix} car.", f"{prefix} traffic light."])
            ref = F.normalize(m.text.encode_text(tokens).float(), dim=-1)
            torch.testing.assert_close(emb[:, n], ref, atol=1e-5, rtol=1e-5)


def test_permuting_vocabulary_permutes_scores(model: ZegOT) -> None:
    x = torch.randn(1, 3, 64, 64)
    order = [2, 0, 1]
    with torch.inference_mode():
        emb = model.encode_vocabulary(NAMES[:3])
        base = model.mask_logits(x, emb)
        permuted = model.mask_logits(x, model.encode_vocabulary([NAMES[i] for i in order]))
    torch.testing.assert_close(permuted, base[:, order], atol=1e-4, rtol=1e-4)


def test_rejects_two_dimensional_embeddings(model: ZegOT) -> None:
    with pytest.raises(ValueError, match="class embeddings"):
        model.mask_logits(torch.randn(1, 3, 32, 32), torch.randn(4, 64))


def test_config_round_trip_and_validation() -> None:
    cfg = tiny_zegot_config(sinkhorn_eps=0.1)
    assert ZegOTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ZegOTConfig.from_dict({**cfg.to_dict(), "decoder_layers": 3})
    with pytest.raises(ValueError, match="layers"):
        build_zegot(tiny_zegot_config(layers=(-3, -1)))  # the tiny ViT has 2 blocks


def test_checkpoint_round_trip(model: ZegOT, checkpoint: Path) -> None:
    assert json.loads(read_header(checkpoint)["zegclip_config"])["family"] == "zegot"
    loaded = zegclip.load_model(checkpoint)
    assert isinstance(loaded, ZegOT) and loaded.config == model.config
    for key, value in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        emb = model.encode_vocabulary(NAMES)
        torch.testing.assert_close(loaded.encode_vocabulary(NAMES), emb, atol=0, rtol=0)
        torch.testing.assert_close(
            loaded.mask_logits(x, emb), model.mask_logits(x, emb), atol=0, rtol=0
        )
    replica = zegclip.load_model(checkpoint, with_text=False)
    assert replica.text is None
    with pytest.raises(RuntimeError, match="no text tower"):
        replica.encode_vocabulary(NAMES)


def test_vocabulary_is_differentiable_only_in_train_mode(model: ZegOT) -> None:
    assert not model.encode_vocabulary(NAMES[:2]).requires_grad  # eval: labeler gets plain data
    model.train()
    try:
        assert model.encode_vocabulary(NAMES[:2]).requires_grad
    finally:
        model.eval()
