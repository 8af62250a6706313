"""Official-format checkpoints: conversion, and our forward pass against the official equations.

The reference below is written independently from the official code's documented semantics
(reference §1.2-1.5 and §8), directly on the official state-dict keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zegclip
from zegclip.io.checkpoint import CheckpointError
from zegclip.io.convert import convert_official
from zegclip.preprocess import official_resize_shape, preprocess, slide_windows
from zegclip.train.datasets import seen_classes

W, LAYERS, TEXT_W, TEXT_LAYERS, EMBED, TOKENS, DEC_LAYERS, FFN = 128, 2, 128, 2, 128, 3, 3, 256


def _official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.05: torch.randn(*shape, generator=g) * s  # noqa: E731
    sd = {
        "backbone.class_embedding": r(W, s=0.5),
        "backbone.conv1.weight": r(W, 3, 16, 16),
        "backbone.positional_embedding": r(1025, W, s=0.2),
        "backbone.proj": r(W, EMBED, s=0.1),
        "backbone.prompt_embeddings": r(1, TOKENS, W, s=0.5),
        "backbone.deep_prompt_embeddings": r(LAYERS - 1, TOKENS, W, s=0.5),
        "backbone.prompt_proj.weight": r(W, W, s=0.1),
        "backbone.prompt_proj.bias": r(W),
        "text_encoder.token_embedding.weight": r(512, TEXT_W),  # small: text is not encoded here
        "text_encoder.positional_embedding": r(77, TEXT_W),
        "text_encoder.text_projection": r(TEXT_W, EMBED),
        "decode_head.q_proj.weight": r(EMBED, 2 * EMBED, s=0.1),
        "decode_head.q_proj.bias": r(EMBED),
        "decode_head.loss_decode.criterion.empty_weight": torch.ones(16),
    }
    for name in ("ln_pre", "ln_post", "prompt_norm"):
        sd[f"backbone.{name}.weight"] = 1 + r(W)
        sd[f"backbone.{name}.bias"] = r(W)
    sd["text_encoder.ln_final.weight"] = 1 + r(TEXT_W)
    sd["text_encoder.ln_final.bias"] = r(TEXT_W)
    for prefix, width, layers in (("backbone", W, LAYERS), ("text_encoder", TEXT_W, TEXT_LAYERS)):
        for i in range(layers):
            b = f"{prefix}.transformer.resblocks.{i}."
            sd.update(
                {
                    b + "attn.in_proj_weight": r(3 * width, width, s=0.1),
                    b + "attn.in_proj_bias": r(3 * width),
                    b + "attn.out_proj.weight": r(width, width),
                    b + "attn.out_proj.bias": r(width),
                    b + "ln_1.weight": 1 + r(width),
                    b + "ln_1.bias": r(width),
                    b + "ln_2.weight": 1 + r(width),
                    b + "ln_2.bias": r(width),
                    b + "mlp.c_fc.weight": r(4 * width, width),
                    b + "mlp.c_fc.bias": r(4 * width),
                    b + "mlp.c_proj.weight": r(width, 4 * width),
                    b + "mlp.c_proj.bias": r(width),
                }
            )
    for i in range(DEC_LAYERS):
        b = f"decode_head.decoder_1.layers.{i}."
        for lin in ("q", "k", "v", "proj"):
            sd[f"{b}multihead_attn.{lin}.weight"] = r(EMBED, EMBED, s=0.2)
            sd[f"{b}multihead_attn.{lin}.bias"] = r(EMBED)
        sd[b + "self_attn.in_proj_weight"] = r(3 * EMBED, EMBED)  # present, never used
        for norm in ("norm1", "norm2", "norm3"):
            sd[f"{b}{norm}.weight"] = 1 + r(EMBED)
            sd[f"{b}{norm}.bias"] = r(EMBED)
        sd.update(
            {
                b + "linear1.weight": r(FFN, EMBED),
                b + "linear1.bias": r(FFN),
                b + "linear2.weight": r(EMBED, FFN),
                b + "linear2.bias": r(EMBED),
            }
        )
    return sd


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sd = _official_state_dict()
    path = tmp_path_factory.mktemp("official") / "voc_inductive.pth"
    torch.save(
        {"meta": {"iter": 20000}, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path
    )
    return sd, path


def _ln(x, sd, name, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _clip_block(x, sd, b, heads):
    h = _ln(x, sd, b + "ln_1")
    q, k, v = (h @ sd[b + "attn.in_proj_weight"].T + sd[b + "attn.in_proj_bias"]).chunk(3, -1)
    split = lambda t: t.reshape(*t.shape[:2], heads, -1).transpose(1, 2)  # noqa: E731
    attn = (split(q) @ split(k).transpose(-1, -2) / (W // heads) ** 0.5).softmax(-1)
    out = (attn @ split(v)).transpose(1, 2).reshape(x.shape)
    x = x + out @ sd[b + "attn.out_proj.weight"].T + sd[b + "attn.out_proj.bias"]
    h = _ln(x, sd, b + "ln_2") @ sd[b + "mlp.c_fc.weight"].T + sd[b + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU (OpenAI CLIP)
    return x + h @ sd[b + "mlp.c_proj.weight"].T + sd[b + "mlp.c_proj.bias"]


def reference_vision(sd, images):
    """Official VPTCLIPVisionTransformer forward: (global (B, D), patches (B, D, h, w))."""
    x = F.conv2d(images, sd["backbone.conv1.weight"], stride=16)
    b, _, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls, pos = sd["backbone.class_embedding"], sd["backbone.positional_embedding"]
    x = torch.cat([cls.expand(b, 1, W), x], 1)
    x = x + torch.cat([(pos[0] + cls)[None], pos[1:]], 0)  # class embedding counted twice
    x = _ln(x, sd, "backbone.ln_pre")
    proj = lambda p: p @ sd["backbone.prompt_proj.weight"].T + sd["backbone.prompt_proj.bias"]  # noqa
    x = torch.cat([x[:, :1], proj(sd["backbone.prompt_embeddings"]).expand(b, -1, -1), x[:, 1:]], 1)
    for i in range(LAYERS):
        if i > 0:
            deep = proj(sd["backbone.deep_prompt_embeddings"][i - 1])
            x = torch.cat([x[:, :1], deep.expand(b, -1, -1), x[:, 1 + TOKENS :]], 1)
        x = _clip_block(x, sd, f"backbone.transformer.resblocks.{i}.", W // 64)
    x = _ln(_ln(x, sd, "backbone.prompt_norm", 1e-6), sd, "backbone.ln_post") @ sd["backbone.proj"]
    patches = x[:, -h * w :].transpose(1, 2).reshape(b, EMBED, h, w)
    return F.normalize(x[:, 0], dim=-1), F.normalize(patches, dim=1)


def reference_mask_logits(sd, images, text):
    """Official ATMSingleHeadSeg: relationship descriptor + TPN decoder, last-layer logits."""
    g, patches = reference_vision(sd, images)
    b, d, h, w = patches.shape
    mem = patches.flatten(2).transpose(1, 2)
    q = torch.cat([g[:, None] * text[None], text[None].expand(b, -1, -1)], -1)
    q = q @ sd["decode_head.q_proj.weight"].T + sd["decode_head.q_proj.bias"]
    heads = EMBED // 64
    lin = lambda t, n: t @ sd[n + ".weight"].T + sd[n + ".bias"]  # noqa: E731
    split = lambda t: t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    for i in range(DEC_LAYERS):
        p = f"decode_head.decoder_1.layers.{i}."
        keys = split(lin(mem, p + "multihead_attn.k")).transpose(-1, -2)
        logits = split(lin(q, p + "multihead_attn.q")) @ keys * (EMBED // heads) ** -0.5
        out = (logits.softmax(-1) @ split(lin(mem, p + "multihead_attn.v"))).transpose(1, 2)
        q = _ln(q + lin(out.reshape(q.shape), p + "multihead_attn.proj"), sd, p + "norm2")
        q = _ln(q + lin(lin(q, p + "linear1").relu(), p + "linear2"), sd, p + "norm3")
    return logits.mean(1).reshape(b, -1, h, w)


def test_converted_mask_logits_match_the_official_equations(official):
    sd, path = official
    model = zegclip.load_model(path)
    text = F.normalize(torch.randn(5, EMBED, generator=torch.Generator().manual_seed(1)), dim=-1)
    x = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.mask_logits(x, text)
        ref = reference_mask_logits(sd, x, text)
    assert ours.shape == (2, 5, 32, 32)
    assert ref.abs().max() > 0.1  # a non-degenerate comparison
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_converted_slide_scores_match_reference_slide(official):
    sd, path = official
    model = zegclip.load_model(path)
    text = F.normalize(torch.randn(3, EMBED, generator=torch.Generator().manual_seed(3)), dim=-1)
    x = torch.randn(1, 3, 512, 700, generator=torch.Generator().manual_seed(4))
    seen = torch.tensor([True, False, True])
    total, count = torch.zeros(1, 3, 512, 700), torch.zeros(1, 1, 512, 700)
    with torch.no_grad():
        for y1, y2, x1, x2 in slide_windows(512, 700):
            logit = reference_mask_logits(sd, x[..., y1:y2, x1:x2], text)
            s = F.interpolate(logit, size=(512, 512), mode="bilinear", align_corners=False)
            total[..., y1:y2, x1:x2] += s.sigmoid() - 0.1 * seen.view(1, 3, 1, 1)
            count[..., y1:y2, x1:x2] += 1
        ours = model.slide_scores(x, text, seen=seen)
    assert torch.allclose(ours, total / count, atol=1e-5)


def test_converter_infers_architecture_and_seen_classes(official, tmp_path):
    _, path = official
    model = convert_official(path, seen_classes=seen_classes("voc"))
    cfg = model.config
    assert cfg.num_prompt_tokens == TOKENS and cfg.decoder_layers == DEC_LAYERS
    assert cfg.decoder_heads == EMBED // 64 and cfg.decoder_ffn_dim == FFN
    assert cfg.clip.config["vision_cfg"]["layers"] == LAYERS and cfg.clip.image_size == 512
    assert cfg.clip.quick_gelu and cfg.templates == ("a photo of a {}",)
    assert model.seen_mask(["person", "sheep"]).tolist() == [True, False]
    out = zegclip.save_checkpoint(model, tmp_path / "converted.safetensors", embed_clip=True)
    reloaded = zegclip.load_model(out)
    x = torch.randn(1, 3, 512, 512)
    text = F.normalize(torch.randn(2, EMBED), dim=-1)
    with torch.no_grad():
        assert torch.equal(model.mask_logits(x, text), reloaded.mask_logits(x, text))


@pytest.mark.parametrize("damage", ["unknown_key", "missing_key", "bad_shape", "not_a_dict"])
def test_converter_rejects_malformed_checkpoints(tmp_path, damage):
    sd = _official_state_dict(seed=5)
    if damage == "unknown_key":
        sd["decode_head.aux_head.weight"] = torch.zeros(3)
    elif damage == "missing_key":
        del sd["decode_head.decoder_1.layers.1.linear2.weight"]
    elif damage == "bad_shape":
        sd["backbone.deep_prompt_embeddings"] = torch.zeros(LAYERS - 1, TOKENS, W + 1)
    blob = [1, 2, 3] if damage == "not_a_dict" else {"state_dict": sd}
    torch.save(blob, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError):
        convert_official(tmp_path / "bad.pth")


def test_official_resize_rule_examples():
    assert official_resize_shape(512, 512) == (512, 512)
    assert official_resize_shape(300, 451) == (512, 770)
    assert official_resize_shape(400, 600) == (512, 768)
    assert official_resize_shape(700, 300) == (1195, 512)


def test_preprocess_normalises_with_imagenet_statistics():
    image = np.full((512, 512, 3), (123, 116, 104), dtype=np.uint8)
    x = preprocess(image)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    expected = ((np.array([123, 116, 104]) - mean) / std).astype(np.float32)
    assert x.shape == (1, 3, 512, 512) and x.dtype == torch.float32
    assert np.allclose(x[0, :, 0, 0].numpy(), expected, atol=1e-6)


def test_slide_windows_follow_mmseg():
    assert slide_windows(512, 512) == [(0, 512, 0, 512)]
    assert slide_windows(512, 770) == [(0, 512, 0, 512), (0, 512, 258, 770)]
    windows = slide_windows(1195, 512)
    assert len(windows) == 3 and windows[-1] == (683, 1195, 0, 512)


def test_driver_check_reads_official_keys_without_building(official, tmp_path):
    from zegclip.validate import check_checkpoint

    check_checkpoint(str(official[1]))  # module.-prefixed state_dict inside an mmcv dict
    sd = _official_state_dict(seed=5)
    sd["decode_head.aux_head.weight"] = torch.zeros(3)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"--checkpoint .*bad\.pth: 1 official keys"):
        check_checkpoint(str(tmp_path / "bad.pth"))


def test_converted_checkpoint_without_suffix_passes_the_label_checks(official, tmp_path, capsys):
    """``zegclip convert-official SRC model``: the CLI adds the suffix; a checkpoint saved under
    a bare name anyway is told by its bytes, as the loader does."""
    from zegclip.cli import main as cli_main
    from zegclip.io.checkpoint import is_safetensors
    from zegclip.validate import check_checkpoint

    _, path = official
    convert = ["convert-official", str(path), str(tmp_path / "model"), "--seen-classes", "voc"]
    assert cli_main(convert) == 0
    assert f"-> {tmp_path / 'model.safetensors'} (" in capsys.readouterr().out
    check_checkpoint(str(tmp_path / "model.safetensors"))
    bare = tmp_path / "bare"
    bare.write_bytes((tmp_path / "model.safetensors").read_bytes())
    assert is_safetensors(bare) and not is_safetensors(path)  # path: a torch zip
    check_checkpoint(str(bare))
    zegclip.check_spec(zegclip.LabelerSpec(checkpoint=str(bare)))
    assert zegclip.load_model(bare).seen_mask(["person", "sheep"]).tolist() == [True, False]
    (tmp_path / "text").write_text("{ not a checkpoint, but starts like JSON")
    assert not is_safetensors(tmp_path / "text")
    with pytest.raises(CheckpointError, match="--checkpoint"):
        check_checkpoint(str(tmp_path / "text"))
