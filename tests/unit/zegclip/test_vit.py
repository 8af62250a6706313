"""Positional-table rules of the shared ViT embedding, against re-derivations written here.

The training-free rule is re-derived from scratch: PyTorch's bicubic (cubic convolution, A = -0.75,
border-clamped taps) evaluated by hand in float64 at the source coordinates that a *given*
``scale_factor`` implies, ``x = (i + 0.5) / scale - 0.5``, with scale = (g + 0.1) / side as in the
methods' ``interpolate_pos_encoding``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from tiny_models import TINY_CLIP

from zegclip.clip import ClipSpec
from zegclip.models.trainfree.model import build_frozen_clip
from zegclip.models.vit import bilinear_positional, embed_tokens, reference_positional

# (table side, grid): ViT-B/16 (side 14) at 224/448 windows and odd crops, the tiny CLIP (32)
GRIDS = [
    (14, (28, 28)),
    (14, (21, 28)),
    (14, (7, 33)),
    (14, (13, 20)),
    (32, (14, 14)),
    (32, (28, 21)),
]


def random_table(side: int, width: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1 + side * side, width, generator=g)


def cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Cubic-convolution weights of the taps at offsets -1, 0, 1, 2 for fraction ``t``."""

    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def resample_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) bicubic resampling at the coordinates ``scale`` implies (no corner align)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        x0 = math.floor(x)
        for k, w in zip(range(x0 - 1, x0 + 3), cubic_weights(x - x0)):
            m[i, min(max(k, 0), n_in - 1)] += w
    return m


def reference_table(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The methods' rule: class entry kept, spatial table resampled with scale (g + 0.1) / side."""
    side = math.isqrt(pos.shape[0] - 1)
    if grid == (side, side):
        return pos.double()
    gh, gw = grid
    rows = resample_matrix(side, gh, (gh + 0.1) / side)
    cols = resample_matrix(side, gw, (gw + 0.1) / side)
    table = pos[1:].double().numpy().reshape(side, side, -1)
    spatial = np.einsum("hy,yxc,wx->hwc", rows, table, cols).reshape(gh * gw, -1)
    return torch.cat([pos[:1].double(), torch.from_numpy(spatial)])


@pytest.mark.parametrize(("side", "grid"), GRIDS)
def test_reference_rule_matches_the_rederivation(side, grid):
    pos = random_table(side)
    ours = reference_positional(pos, grid, torch.float32)
    assert ours.shape == (1 + grid[0] * grid[1], pos.shape[1]) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), reference_table(pos, grid), atol=2e-5, rtol=0)
    assert torch.equal(ours[0], pos[0])  # class-token entry kept as is


def test_reference_rule_differs_from_size_resizes():
    """``scale_factor`` with +0.1 is not ``size=``: neither torch's nor timm's resampler does it."""
    pos = random_table(14)
    ours = reference_positional(pos, (28, 28), torch.float32)
    by_size = resample_abs_pos_embed(pos[None], [28, 28], [14, 14], 1, "bicubic", False)[0]
    assert (ours - by_size).abs().max() > 1e-2


def test_reference_rule_identity_and_dtype():
    pos = random_table(14)
    assert torch.equal(reference_positional(pos, (14, 14), torch.float32), pos)
    half = reference_positional(pos, (28, 28), torch.bfloat16)  # computed in float32, then cast
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, reference_positional(pos, (28, 28), torch.float32).bfloat16())


def official_bilinear(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """ZegCLIP's ``VPTCLIPVisionTransformer``: spatial table resized bilinearly with ``size=``."""
    spatial = pos[1:].reshape(1, 32, 32, -1).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], spatial.flatten(2).transpose(1, 2)[0]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid", [(32, 32), (40, 40), (32, 45), (20, 27)])
def test_bilinear_rule_is_the_official_interpolate(grid, dtype):
    """ZegCLIP's rule: table cast to the activations' dtype first, then resized in it."""
    pos = random_table(32).to(dtype)
    assert torch.equal(bilinear_positional(pos.float(), grid, dtype), official_bilinear(pos, grid))


def test_timm_resampler_matches_only_in_float32():
    """Why timm's ``resample_abs_pos_embed`` is not used: it resizes bfloat16 tables in float32."""
    pos = random_table(32)
    timm = resample_abs_pos_embed(pos[None], [40, 40], [32, 32], 1, "bilinear", False)[0]
    assert torch.equal(timm, official_bilinear(pos, (40, 40)))
    half = pos.bfloat16()
    timm = resample_abs_pos_embed(half[None], [40, 40], [32, 32], 1, "bilinear", False)[0]
    assert not torch.equal(timm, official_bilinear(half, (40, 40)))


def test_embed_tokens_per_family_rule():
    torch.manual_seed(0)
    model = build_frozen_clip(ClipSpec(model=TINY_CLIP, pretrained=None), method="clearclip")
    v = model.visual
    x = torch.randn(2, 3, 448, 320)  # a (28, 20) grid against the tiny CLIP's 32 x 32 table
    with torch.no_grad():
        tokens, grid = model.embed_tokens(x)
        pos = reference_table(v.positional_embedding, (28, 20)).float()
        patches = v.conv1(x).flatten(2).transpose(1, 2)
        cls = (v.class_embedding + pos[0]).expand(2, 1, -1)
        expected = v.ln_pre(torch.cat([cls, patches + pos[1:]], dim=1))
        twice, _ = embed_tokens(v, x, bilinear_positional, class_twice=True)
        once, _ = embed_tokens(v, x, bilinear_positional)
    assert grid == (28, 20)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(twice[:, 0], once[:, 0])  # ZegCLIP counts the class embedding twice
    torch.testing.assert_close(twice[:, 1:], once[:, 1:])
