"""ZegCLIP model: shapes, gradients, checkpoints, vocabulary permutation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tiny_zegclip import tiny_config

import zegclip


@pytest.mark.parametrize("names", [["cat"], ["car", "road", "sky", "tree", "person", "bus", "dog"]])
def test_shapes_for_one_and_many_classes(tiny_model, names):
    emb = tiny_model.encode_vocabulary(names)
    assert emb.shape == (len(names), 64) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(names)), atol=1e-5)
    with torch.no_grad():
        logits = tiny_model.mask_logits(torch.randn(2, 3, 512, 512), emb)
        scores = tiny_model.slide_scores(torch.randn(1, 3, 512, 700), emb)
    assert logits.shape == (2, len(names), 32, 32)
    assert scores.shape == (1, len(names), 512, 700)
    assert torch.isfinite(logits).all() and ((scores >= 0) & (scores <= 1)).all()


def test_gradients_reach_prompts_relation_decoder_and_nothing_in_clip():
    torch.manual_seed(0)
    model = zegclip.build_zegclip(tiny_config()).train()
    emb = model.encode_vocabulary(["car", "road", "sky"])
    model.mask_logits(torch.randn(2, 3, 256, 256), emb).sigmoid().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    trainable = [n for n in grads if n.startswith("head.") or "prompt" in n]
    # As in the official head, the mask is the last layer's q.k logits: that layer's value path,
    # output projection and FFN never influence it (the official code runs DDP with
    # find_unused_parameters=True for this reason).
    last = "head.layers.2."
    unused = [n for n in trainable if n.startswith(last) and ".q." not in n and ".k." not in n]
    assert len(unused) == 12
    assert any(n.startswith("head.relation.") for n in trainable)
    assert any("deep_prompt_embeddings" in n for n in trainable)
    for name in trainable:
        if name in unused:
            assert grads[name] is None, name
        else:
            assert grads[name] is not None and grads[name].abs().sum() > 0, name
    frozen = [n for n in grads if n not in trainable]
    assert any(n.startswith("backbone.visual.") for n in frozen)
    assert any(n.startswith("text.") for n in frozen)
    for name in frozen:
        assert grads[name] is None, name


def test_trainable_parameter_count_matches_the_official_formula():
    model = zegclip.build_zegclip(tiny_config(num_prompt_tokens=5))
    width, layers, dim, ffn = 64, 2, 64, 128
    prompts = layers * 5 * width + (width * width + width) + 2 * width  # P, proj, norm
    relation = 2 * dim * dim + dim
    decoder = 3 * (4 * (dim * dim + dim) + 2 * 2 * dim + dim * ffn + ffn + ffn * dim + dim)
    assert zegclip.count_trainable(model) == prompts + relation + decoder


def test_checkpoint_round_trip_gives_identical_outputs(tiny_model, tiny_checkpoint):
    loaded = zegclip.load_model(tiny_checkpoint)
    x = torch.randn(1, 3, 512, 512)
    emb = tiny_model.encode_vocabulary(["car", "sky"])
    with torch.no_grad():
        assert torch.equal(tiny_model.mask_logits(x, emb), loaded.mask_logits(x, emb))
    assert torch.equal(emb, loaded.encode_vocabulary(["car", "sky"]))
    assert loaded.config == tiny_model.config


def test_checkpoint_without_clip_source_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="embed_clip=True"):
        zegclip.save_checkpoint(tiny_model, tmp_path / "x.safetensors", embed_clip=False)


def test_checkpoint_references_clip_weights_instead_of_embedding_them(tiny_model, tmp_path):
    """Frozen CLIP referenced by path: the file holds only trainable tensors, and loading it
    rebuilds CLIP from the referenced weights with identical outputs."""
    clip_file = tmp_path / "tiny_clip.pt"
    clip_state = {f"visual.{k}": v for k, v in tiny_model.backbone.visual.state_dict().items()}
    clip_state.update(
        {k: v for k, v in tiny_model.text.state_dict().items() if not k.startswith("visual.")}
    )
    torch.save(clip_state, clip_file)
    config = dataclasses.replace(
        tiny_model.config,
        clip=dataclasses.replace(tiny_model.config.clip, pretrained=str(clip_file)),
    )
    referencing = zegclip.build_zegclip(config, load_clip_weights=False)
    referencing.load_state_dict(tiny_model.state_dict())
    path = zegclip.save_checkpoint(referencing, tmp_path / "ref.safetensors", embed_clip=False)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert keys == set(tiny_model.trainable_state_dict())
    assert all(k.startswith(("head.", "backbone.prompt", "backbone.deep")) for k in keys)
    loaded = zegclip.load_model(path)
    x = torch.randn(1, 3, 512, 512)
    emb = tiny_model.encode_vocabulary(["car", "sky"])
    with torch.no_grad():
        assert torch.allclose(tiny_model.mask_logits(x, emb), loaded.mask_logits(x, emb), atol=1e-6)


def test_permuting_the_vocabulary_permutes_the_scores(tiny_model):
    names = ["car", "road", "sky", "tree"]
    perm = [2, 0, 3, 1]
    emb = tiny_model.encode_vocabulary(names)
    x = torch.randn(1, 3, 512, 600)
    seen = torch.tensor([True, True, False, False])
    with torch.no_grad():
        base = tiny_model.slide_scores(x, emb, seen=seen)
        permuted = tiny_model.slide_scores(x, emb[perm], seen=seen[perm])
    assert torch.allclose(base[:, perm], permuted, atol=1e-6)


def test_seen_classes_are_shifted_by_exactly_0_1(tiny_model):
    emb = tiny_model.encode_vocabulary(["car", "sky"])
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        plain = tiny_model.slide_scores(x, emb)
        shifted = tiny_model.slide_scores(x, emb, seen=torch.tensor([True, False]))
    assert torch.allclose(plain[:, 0] - 0.1, shifted[:, 0], atol=1e-6)
    assert torch.equal(plain[:, 1], shifted[:, 1])


def test_seen_mask_matches_checkpoint_seen_classes(tiny_model):
    assert tiny_model.seen_mask(["Car", "sky", "road"]).tolist() == [True, False, True]


def test_slide_scores_average_overlapping_windows(tiny_model):
    emb = tiny_model.encode_vocabulary(["car"])
    x = torch.randn(1, 3, 512, 900)
    with torch.no_grad():
        scores = tiny_model.slide_scores(x, emb)
        left = tiny_model.crop_scores(x[..., :512], emb)
        right = tiny_model.crop_scores(x[..., 388:900], emb)
    assert torch.allclose(scores[..., :388], left[..., :388])
    assert torch.allclose(scores[..., 512:], right[..., 124:])
    overlap = (left[..., 388:] + right[..., :124]) / 2
    assert torch.allclose(scores[..., 388:512], overlap, atol=1e-6)


def test_text_free_replica_refuses_to_encode(tiny_checkpoint):
    replica = zegclip.load_model(tiny_checkpoint, with_text=False)
    assert replica.text is None
    with pytest.raises(RuntimeError, match="precomputed"):
        replica.encode_vocabulary(["car"])


def test_predictor_matches_slide_scores_resized(tiny_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)
    emb = tiny_model.encode_vocabulary(["car", "road", "sky"])
    predictor = zegclip.SegPredictor(tiny_model, emb.numpy(), np.arange(3), 3, min_score=None)
    pred = predictor.predict([image, image[:200, :333]])
    with torch.no_grad():
        scores = tiny_model.slide_scores(zegclip.preprocess(image), emb)
    ref = torch.nn.functional.interpolate(scores, size=(300, 451), mode="bilinear")
    assert np.array_equal(pred[0].label_map, ref.argmax(1)[0].numpy().astype(np.uint8))
    expected = np.rint(ref.max(1).values[0].numpy().clip(0, 1) * 255)  # uint8 quantisation
    assert np.abs(pred[0].confidence.astype(int) - expected).max() <= 1
    assert pred[1].label_map.shape == (200, 333)
    for p in pred:
        assert p.class_counts.sum() == p.label_map.size


def test_small_crops_follow_the_official_upsample_then_resize_order(tiny_model):
    emb = tiny_model.encode_vocabulary(["car", "sky"])
    crop = torch.randn(1, 3, 480, 480)
    with torch.no_grad():
        logits = tiny_model.mask_logits(crop, emb)
        ours = tiny_model.crop_scores(crop, emb, torch.tensor([True, False]))
    up = torch.nn.functional.interpolate(logits, size=(512, 512), mode="bilinear").sigmoid()
    up = up - 0.1 * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    expected = torch.nn.functional.interpolate(up, size=(480, 480), mode="bilinear")
    assert torch.allclose(ours, expected, atol=1e-6)
