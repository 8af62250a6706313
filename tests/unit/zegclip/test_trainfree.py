"""Training-free frozen-CLIP mode: last-block equations, PAMR, predictor behaviour, labeler path."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN as CLIP_MEAN
from open_clip.constants import OPENAI_DATASET_STD as CLIP_STD
from open_clip.transformer import ResidualAttentionBlock
from tiny_models import TINY_CLIP

import zegclip
from zegclip.clip import ClipSpec, WeightsError, build_clip
from zegclip.models.trainfree.attention import forward_last_block, neighbourhood_bias, split_qkv
from zegclip.models.trainfree.model import build_frozen_clip
from zegclip.models.trainfree.pamr import PAMR
from zegclip.predictor import BACKGROUND, SegPredictor, _mha_fastpath
from zegclip.templates import IMAGENET80

METHODS = ("maskclip", "sclip", "clearclip", "naclip")
TINY = ClipSpec(model=TINY_CLIP, pretrained=None)


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {m: build_frozen_clip(TINY, method=m, with_text=False) for m in METHODS}


def random_block(width: int = 64, heads: int = 2) -> ResidualAttentionBlock:
    torch.manual_seed(1)
    block = ResidualAttentionBlock(width, heads).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.3)
    return block


def reference_bias(h: int, w: int, std: float = 5.0) -> torch.Tensor:
    """NACLIP's Gaussian term written out pair by pair."""
    pos = [(y, x) for y in range(h) for x in range(w)]
    bias = torch.zeros(1 + h * w, 1 + h * w)
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            bias[1 + i, 1 + j] = math.exp(-((yi - yj) ** 2 + (xi - xj) ** 2) / (2 * std**2))
    return bias


def reference_last_block(block, x, method, grid):
    """The papers' equations, head by head, from the raw in_proj/out_proj weights."""
    width = x.shape[-1]
    heads = block.attn.num_heads
    hd = width // heads
    y = block.ln_1(x)
    wq, wk, wv = block.attn.in_proj_weight.split(width)
    bq, bk, bv = block.attn.in_proj_bias.split(width)
    q, k, v = y @ wq.T + bq, y @ wk.T + bk, y @ wv.T + bv
    outs = []
    for h in range(heads):
        qh, kh, vh = (t[..., h * hd : (h + 1) * hd] for t in (q, k, v))
        s = hd**-0.5
        if method == "maskclip":
            attn = torch.eye(x.shape[1])
        elif method == "sclip":
            attn = torch.softmax(qh @ qh.mT * s, -1) + torch.softmax(kh @ kh.mT * s, -1)
        elif method == "clearclip":
            attn = torch.softmax(qh @ qh.mT * s, -1)
        else:
            attn = torch.softmax(kh @ kh.mT * s + reference_bias(*grid), -1)
        outs.append(attn @ vh)
    a = block.attn.out_proj(torch.cat(outs, dim=-1))
    if method in ("maskclip", "sclip"):  # residual and FFN kept
        x1 = x + a
        return x1 + block.mlp(block.ln_2(x1))
    return a


def test_split_qkv_reproduces_multihead_attention():
    block = random_block()
    y = torch.randn(2, 13, 64)
    q, k, v = split_qkv(block, y)
    assert q.shape == (2, 2, 13, 32)
    mixed = torch.softmax(q @ k.mT * 32**-0.5, -1) @ v
    ours = block.attn.out_proj(mixed.transpose(1, 2).flatten(2))
    theirs = block.attn(y, y, y, need_weights=False)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_last_block_matches_paper_equations(method):
    block = random_block()
    grid = (3, 4)
    x = torch.randn(2, 1 + 12, 64)
    bias = neighbourhood_bias(grid) if method == "naclip" else None
    with torch.no_grad():
        ours = forward_last_block(block, x, method, bias=bias)
        expected = reference_last_block(block, x, method, grid)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_residual_and_ffn_presence():
    """Removing the residual makes the output invariant to rescaling x (ln_1 absorbs it)."""
    block = random_block()
    x = torch.randn(1, 13, 64)
    with torch.no_grad():
        for method, keeps in (("maskclip", True), ("sclip", True), ("clearclip", False)):
            a, b = forward_last_block(block, x, method), forward_last_block(block, 3 * x, method)
            assert torch.allclose(a, b, atol=1e-4) is not keeps, method


def test_neighbourhood_bias_shape_and_values():
    bias = neighbourhood_bias((3, 4), std=5.0)
    assert bias.shape == (13, 13)
    torch.testing.assert_close(bias, reference_bias(3, 4))
    assert bias[0].abs().sum() == 0 and bias[:, 0].abs().sum() == 0  # CLS excluded
    assert torch.allclose(bias[1:, 1:].diagonal(), torch.ones(12))
    assert bias[1, 2].item() == pytest.approx(math.exp(-1 / 50))  # horizontal neighbour
    assert bias[1, 12].item() == pytest.approx(math.exp(-(4 + 9) / 50))  # (0,0)-(2,3)


def test_encode_dense_is_clip_with_modified_last_block(models):
    model = models["naclip"]
    x = torch.randn(1, 3, 512, 512)  # the tiny CLIP's native grid: open_clip's table applies
    v = model.visual
    with torch.no_grad():
        tokens, grid = model.embed_tokens(x)
        torch.testing.assert_close(tokens, v._embeds(x))  # open_clip's own embedding
        t = v.transformer.resblocks[0](tokens)
        t = reference_last_block(v.transformer.resblocks[1], t, "naclip", grid)
        expected = F.normalize(v.ln_post(t[:, 1:]) @ v.proj, dim=-1)
        expected = expected.transpose(1, 2).reshape(1, -1, *grid)
        torch.testing.assert_close(model.encode_dense(x), expected, atol=1e-5, rtol=1e-4)


def test_recipes_and_defaults(models):
    assert models["naclip"].pamr is not None and models["sclip"].pamr is None
    assert models["naclip"].default_templates == IMAGENET80
    assert models["naclip"].default_min_score == 0.1
    assert models["maskclip"].default_min_score is None
    # built at the CLIP's native size (the tiny CLIP's 512 = 32 x 32), never at the crop size
    assert models["naclip"].visual.positional_embedding.shape[0] == 1 + 32 * 32
    assert models["clearclip"].visual.positional_embedding.shape[0] == 1 + 32 * 32
    assert not models["sclip"].seen_mask(["a", "b"]).any()
    assert not any(p.requires_grad for p in models["sclip"].parameters())
    with pytest.raises(ValueError, match="clearclip, maskclip, naclip, sclip"):
        build_frozen_clip(TINY, method="vanilla")


def test_preprocess_short_side_and_clip_normalisation(models):
    grey = np.broadcast_to(np.round(np.array(CLIP_MEAN) * 255).astype(np.uint8), (300, 400, 3))
    x = models["naclip"].preprocess(np.ascontiguousarray(grey))
    assert x.shape == (1, 3, 336, 448) and x.dtype == torch.float32
    expected = (np.round(np.array(CLIP_MEAN) * 255) / 255 - CLIP_MEAN) / CLIP_STD
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor(expected, dtype=torch.float32))
    assert models["clearclip"].preprocess(np.ascontiguousarray(grey)).shape[-2:] == (448, 597)


def test_crop_cosines_for_any_crop_size_and_scaled_softmax_activation(models):
    emb = F.normalize(torch.randn(5, 64), dim=-1)
    model = models["sclip"]
    with torch.no_grad():
        s = model.crop_scores(torch.randn(2, 3, 200, 218), emb, None)
    assert s.shape == (2, 5, 200, 218) and s.abs().max() <= 1 + 1e-5  # cosines
    probs = model.activate(s[0])
    torch.testing.assert_close(probs.sum(0), torch.ones(200, 218))
    torch.testing.assert_close(probs, (model.recipe.logit_scale * s[0]).softmax(0))


@pytest.fixture(scope="module")
def window_case(models):
    """ClearCLIP, a 448x448 image (one window) and 3 text rows taken from the image's own patch
    features so that every row wins somewhere; plus the rows' crop scores (S, H, W)."""
    model = models["clearclip"]
    rng = np.random.default_rng(0)
    image = cv2.resize(
        rng.integers(0, 256, (14, 14, 3), dtype=np.uint8),
        (448, 448),
        interpolation=cv2.INTER_NEAREST,
    )
    x = model.preprocess(image)
    assert model.windows(*x.shape[-2:]) == [(0, 448, 0, 448)]
    with torch.no_grad(), _mha_fastpath(False):  # the predictor's CPU attention path
        feats = model.encode_dense(x)[0].flatten(1).T  # (h*w, D)
        emb = feats[torch.linspace(0, feats.shape[0] - 1, 3).long()]
        # one window at the original size: the predictor's result is activate(crop cosines)
        scores = model.activate(model.crop_scores(x, emb, None)[0])  # (S, H, W)
    return model, image, emb, scores


def test_single_window_prediction_equals_whole_image_scores(window_case):
    model, image, emb, scores = window_case
    pred = SegPredictor(model, emb, np.arange(3), 3).predict([image])[0]
    confidence, labels = scores.max(0)
    np.testing.assert_array_equal(pred.label_map, labels.numpy().astype(np.uint8))
    np.testing.assert_allclose(pred.confidence, _quantised(confidence), atol=1)
    assert len(np.unique(pred.label_map)) == 3


def test_synonyms_take_the_max(window_case):
    model, image, emb, scores = window_case
    pred = SegPredictor(model, emb, np.array([0, 0, 1]), 2).predict([image])[0]
    first = torch.maximum(scores[0], scores[1])
    np.testing.assert_allclose(pred.confidence, _quantised(torch.maximum(first, scores[2])), atol=1)
    np.testing.assert_array_equal(pred.label_map, (scores[2] > first).numpy().astype(np.uint8))


def test_background_rows_and_min_score_leave_pixels_unlabelled(window_case):
    model, image, emb, scores = window_case
    pred = SegPredictor(model, emb, np.array([0, 1, BACKGROUND]), 2).predict([image])[0]
    background = (scores.argmax(0) == 2).numpy()
    assert background.any() and (pred.label_map[background] == 255).all()
    assert (pred.label_map[~background] < 2).all()
    assert pred.class_counts.sum() == (~background).sum()

    threshold = float(np.median(scores.max(0).values.numpy()))
    pred = SegPredictor(model, emb, np.arange(3), 3, min_score=threshold).predict([image])[0]
    low = scores.max(0).values.numpy() < threshold
    assert low.any() and (pred.label_map[low] == 255).all() and (pred.label_map[~low] < 3).all()


def test_sliding_windows_cover_preprocessed_image(models):
    model = models["naclip"]
    windows = model.windows(336, 448)
    assert len(windows) == 6 and all(y2 - y1 == 224 == x2 - x1 for y1, y2, x1, x2 in windows)
    covered = np.zeros((336, 448), dtype=int)
    for y1, y2, x1, x2 in windows:
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def reference_pamr(image: np.ndarray, mask: np.ndarray, dilations, steps) -> np.ndarray:
    """PAMR pixel by pixel: (C, H, W) image, (K, H, W) mask."""
    _, h, w = image.shape
    offsets = [
        (dy * d, dx * d)
        for d in dilations
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    ]
    alpha = np.zeros((len(offsets), h, w))
    for y in range(h):
        for x in range(w):
            nbr = [(min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)) for oy, ox in offsets]
            samples = []
            for start in range(0, len(nbr), 8):
                samples += [(y, x)] + nbr[start : start + 8]
            sigma = np.std([image[:, a, b] for a, b in samples], axis=0, ddof=1)  # (C,)
            kappa = [
                -np.mean(np.abs(image[:, y, x] - image[:, a, b]) / (1e-8 + 0.1 * sigma))
                for a, b in nbr
            ]
            e = np.exp(np.array(kappa) - max(kappa))
            alpha[:, y, x] = e / e.sum()
    for _ in range(steps):
        new = np.zeros_like(mask)
        for p, (oy, ox) in enumerate(offsets):
            ys = np.clip(np.arange(h) + oy, 0, h - 1)
            xs = np.clip(np.arange(w) + ox, 0, w - 1)
            new += alpha[p] * mask[:, ys][:, :, xs]
        mask = new
    return mask


def test_pamr_matches_pixelwise_definition_and_ignores_normalisation():
    rng = np.random.default_rng(0)
    image = rng.random((3, 7, 9))
    mask = rng.random((2, 7, 9))
    pamr = PAMR(num_iter=3, dilations=(1, 2))
    out = pamr(torch.tensor(image)[None].float(), torch.tensor(mask)[None].float())[0]
    np.testing.assert_allclose(out.numpy(), reference_pamr(image, mask, (1, 2), 3), atol=1e-5)
    scale = torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1)
    renorm = pamr((torch.tensor(image)[None].float() - 0.4) * scale, torch.tensor(mask)[None])
    torch.testing.assert_close(renorm[0].float(), out, atol=1e-4, rtol=1e-4)


def read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def test_labeler_path_with_local_clip_weights(tmp_path, sample_photos):
    saved = build_clip(TINY)
    with torch.no_grad():  # differ from the seeded random build, so the load is what is tested
        saved.visual.conv1.weight.normal_(generator=torch.Generator().manual_seed(3))
    weights = tmp_path / "tiny_clip.pt"
    torch.save(saved.state_dict(), weights)
    spec = zegclip.LabelerSpec(
        checkpoint=None,
        clip_model=TINY_CLIP,
        clip_pretrained=None,
        clip_weights=str(weights),
        background=("sky", "wall"),
        device="cpu",
    )
    vocab = zegclip.Vocabulary.from_names([("person", "people"), "dog", "car"])
    zegclip.check_spec(spec)
    emb = zegclip.encode_vocabulary_for(spec, vocab, use_cache=False)
    assert emb.shape == (6, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    predictor = zegclip.build_predictor(spec, vocab, emb)
    scorer = predictor.scorer
    assert scorer.method == "naclip" and scorer.text is None and predictor.min_score == 0.1
    torch.testing.assert_close(scorer.visual.conv1.weight, saved.visual.conv1.weight)

    image = read_rgb(sample_photos.pngs(1)[0])
    pred = predictor.predict([image])[0]
    assert pred.label_map.shape == image.shape[:2] and pred.label_map.dtype == np.uint8
    assert set(np.unique(pred.label_map)) <= {0, 1, 2, 255}
    assert pred.confidence.dtype == np.uint8 and pred.confidence.shape == image.shape[:2]
    assert pred.class_counts.sum() == (pred.label_map != 255).sum()


def test_missing_or_corrupt_clip_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="--clip-weights"):
        build_frozen_clip(ClipSpec(model=TINY_CLIP, pretrained=str(tmp_path / "none.pt")))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="--clip-weights"):
        build_frozen_clip(ClipSpec(model=TINY_CLIP, pretrained=str(bad)))


def test_clip_weights_file_keeps_the_tags_quick_gelu():
    spec = zegclip.LabelerSpec(
        clip_model="ViT-B-16", clip_pretrained="openai", clip_weights="/weights/ViT-B-16-openai.bin"
    )
    assert spec.clip_spec.pretrained == "/weights/ViT-B-16-openai.bin"
    assert spec.clip_spec.quick_gelu is True  # OpenAI weights were trained with QuickGELU
    assert (
        zegclip.LabelerSpec(
            clip_model=TINY_CLIP, clip_pretrained=None, clip_weights="/w.pt"
        ).clip_spec.quick_gelu
        is False
    )


def test_predictor_averages_logits_then_pamr_then_resizes_then_softmax(models):
    """The papers' order: window logits averaged, PAMR on the stitched map, resize, softmax."""
    model = models["naclip"]
    assert model.pamr is not None
    image = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    emb = F.normalize(torch.randn(3, 64, generator=torch.Generator().manual_seed(2)), dim=-1)
    x = model.preprocess(image)
    total = torch.zeros(3, *x.shape[-2:])
    count = torch.zeros(x.shape[-2:])
    with torch.no_grad(), _mha_fastpath(False):
        for y1, y2, x1, x2 in model.windows(*x.shape[-2:]):
            total[:, y1:y2, x1:x2] += model.crop_scores(x[..., y1:y2, x1:x2], emb)[0]
            count[y1:y2, x1:x2] += 1
        refined = model.refine(total / count, x)
    resized = F.interpolate(refined[None], size=(120, 200), mode="bilinear")[0]
    expected = model.activate(resized)
    assert len(model.windows(*x.shape[-2:])) > 1
    pred = SegPredictor(model, emb, np.arange(3), 3).predict([image])[0]
    np.testing.assert_allclose(pred.confidence, _quantised(expected.max(0).values), atol=1)
    assert (pred.label_map == expected.argmax(0).numpy()).mean() > 0.999


def _quantised(confidence: torch.Tensor) -> np.ndarray:
    """Float confidence -> the predictor's uint8 ``round(255 * clip(c, 0, 1))``, as int."""
    return np.rint(confidence.numpy().clip(0, 1) * 255).astype(int)


@pytest.mark.parametrize("kind", ["csa", "qq", "kk_neighbour"])
def test_fused_attention_equals_the_explicit_weights(kind):
    from zegclip.models.trainfree.attention import attention_weights, fused_attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 1 + 6 * 7, 32, generator=g) for _ in range(3))
    bias = neighbourhood_bias((6, 7))
    expected = attention_weights(kind, q, k, bias) @ v
    torch.testing.assert_close(fused_attend(kind, q, k, v, bias), expected, atol=1e-6, rtol=1e-5)


def test_min_score_in_use_follows_the_predictor_rule() -> None:
    """run.json's threshold: --min-score, else the recipe's, else the mask scorers'."""
    from zegclip.io.registry import FAMILY_LOADERS
    from zegclip.labeler import LabelerSpec, min_score_in_use
    from zegclip.models.mask_scorer import MaskLogitScorer
    from zegclip.models.trainfree.model import RECIPES
    from zegclip.models.zegclip.model import ZegCLIP
    from zegclip.models.zegot.model import ZegOT

    for method, recipe in RECIPES.items():
        got = min_score_in_use(LabelerSpec(method=method))
        assert got == {"value": recipe.min_score, "default": True}
    assert min_score_in_use(LabelerSpec(method="naclip", min_score=0.3)) == {
        "value": 0.3,
        "default": False,
    }
    # every checkpoint family is a mask scorer; a new family must revisit min_score_in_use
    assert set(FAMILY_LOADERS) == {"zegclip", "zegot"}
    assert issubclass(ZegCLIP, MaskLogitScorer) and issubclass(ZegOT, MaskLogitScorer)
    got = min_score_in_use(LabelerSpec(checkpoint="m.safetensors"))
    assert got == {"value": MaskLogitScorer.default_min_score, "default": True}
